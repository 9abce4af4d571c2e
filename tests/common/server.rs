//! The real `personas serve` binary on a registry built in the test, and
//! plain HTTP requests to it over a socket.

use std::io::{BufRead, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A running `personas serve`, stopped with SIGTERM when dropped.
pub struct Server {
    child: Child,
    pub base: String,
    pub log: mpsc::Receiver<String>,
}

impl Server {
    pub fn start(repo: &Path) -> Server {
        Server::start_with(repo, &[])
    }

    /// Starts the server with extra environment variables (tokens, modes…).
    pub fn start_with(repo: &Path, environment: &[(&str, &str)]) -> Server {
        Server::start_args(repo, &[], environment)
    }

    /// Starts the server with extra arguments (`--sync`…) and environment variables.
    pub fn start_args(repo: &Path, arguments: &[&str], environment: &[(&str, &str)]) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_personas"));
        command
            .arg("serve")
            .args(arguments)
            .arg("--repo")
            .arg(repo)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(repo.join(".personas"))
            .env_remove("DATABASE_URL")
            .env_remove("QDRANT_URL")
            .env_remove("PERSONAS_TOKENS")
            .env_remove("PERSONAS_PRIVATE")
            .env_remove("PERSONAS_WRITE_MODE")
            .env_remove("PERSONAS_BOT")
            .env("RUST_LOG", "warn,personas=info")
            .stderr(Stdio::piped());
        for (name, value) in environment {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("personas serve starts");
        let (sender, log) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        // From here on, dropping the server (a failed assertion too) stops the process.
        let mut server = Server {
            child,
            base: String::new(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while server.base.is_empty() {
            let line = server
                .log
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("serve announces its address within a minute");
            if let Some(rest) = line.strip_prefix("serving ") {
                server.base = rest
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .trim_end_matches('/')
                    .to_string();
            }
        }
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Kills the server with SIGKILL (no chance to clean up) and waits for it to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the server as a service manager would and returns its exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "serve did not stop within 30 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.terminate();
        }
    }
}

/// One HTTP answer, its body as text.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.body))
    }
}

/// Sends one request (`url` as `http://127.0.0.1:PORT/path`) over a fresh
/// connection, with the client the benchmarks use.
pub fn request(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let rest = url.strip_prefix("http://127.0.0.1:").expect("a local http URL");
    let (port, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(port, path)| (port, format!("/{path}")));
    let answer = personas::commands::http_probe::request(port.parse().unwrap(), method, &path, headers, body)
        .unwrap_or_else(|error| panic!("{method} {url}: {error:#}"));
    Reply {
        status: answer.status,
        headers: answer.headers,
        body: String::from_utf8_lossy(&answer.body).into_owned(),
    }
}

/// A plain GET: (status, body).
pub fn http_get(url: &str) -> (u16, String) {
    let reply = request("GET", url, &[], b"");
    (reply.status, reply.body)
}

pub fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "{what} did not happen within {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    started.elapsed()
}

/// Prints past the test harness's capture, so CI logs show the figure.
pub fn report(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// API tokens of each role for the write tests, and the `PERSONAS_TOKENS`
/// value that configures them (each with its own commit identity).
pub const EDITOR: &str = "prs_test_editor_token_0123456789abcdef";
pub const READER: &str = "prs_test_reader_token_0123456789abcdef";
pub const MAINTAINER: &str = "prs_test_maintainer_token_0123456789ab";

pub fn token_list() -> String {
    [
        ("editor", EDITOR, "Ada Editor <ada@example.org>"),
        ("reader", READER, "Rita Reader <rita@example.org>"),
        ("maintainer", MAINTAINER, "Max Maintainer <max@example.org>"),
    ]
    .iter()
    .map(|(role, token, identity)| format!("{role} {} {identity}", personas::access::TokenHash::of(token)))
    .collect::<Vec<_>>()
    .join("\n")
}
