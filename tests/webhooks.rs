//! Change notifications end to end: a real HTTP receiver in the test, the
//! real `personas serve` on a git repository built here (and, for what only
//! the database can stage, the delivery worker on a real PostgreSQL).
//! Every delivery's HMAC is checked here with the secret, independently of
//! the crate's own signing code.

mod common;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::server::*;
use common::*;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

const SECRET: &str = "a webhook secret nobody else knows";

// ---------------------------------------------------------------- receiver

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Accept,
    /// Answers with this status.
    Fail(u16),
    /// Reads the request and never answers (until the mode changes; then
    /// the connection is closed unanswered).
    Stall,
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    /// Lowercased names.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The status it was answered with; `None`: stalled, never answered.
    answered: Option<u16>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }

    fn signature_is_valid(&self) -> bool {
        let Some(hex) = self
            .header("x-personas-signature-256")
            .and_then(|value| value.strip_prefix("sha256="))
        else {
            return false;
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(&self.body);
        let expected: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        expected == hex
    }
}

struct State {
    mode: Mode,
    up: bool,
    received: Vec<Received>,
}

/// An HTTP/1.1 server on 127.0.0.1 that records every request. It can be
/// told to fail, to stall, or to go away altogether (the port refuses
/// connections) and come back on the same port.
struct Receiver {
    port: u16,
    shared: Arc<(Mutex<State>, Condvar)>,
}

impl Receiver {
    fn start(mode: Mode) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new((
            Mutex::new(State {
                mode,
                up: true,
                received: Vec::new(),
            }),
            Condvar::new(),
        ));
        let accepting = Arc::clone(&shared);
        std::thread::spawn(move || accept_loop(listener, port, accepting));
        Receiver { port, shared }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.shared.0)
    }

    fn set_mode(&self, mode: Mode) {
        self.state().mode = mode;
        self.shared.1.notify_all();
    }

    fn go_down(&self) {
        self.state().up = false;
        // The accept loop notices within its poll and closes the port.
        std::thread::sleep(Duration::from_millis(100));
    }

    fn come_up(&self, mode: Mode) {
        let mut state = self.state();
        state.mode = mode;
        state.up = true;
        drop(state);
        self.shared.1.notify_all();
    }

    fn received(&self) -> Vec<Received> {
        self.state().received.clone()
    }

    /// The requests answered 2xx, in the order they arrived.
    fn accepted(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|request| request.answered.is_some_and(|status| (200..300).contains(&status)))
            .collect()
    }

    /// Waits until `check` holds for what was received.
    fn wait(&self, what: &str, limit: Duration, check: impl Fn(&[Received]) -> bool) {
        let deadline = Instant::now() + limit;
        let mut state = self.state();
        while !check(&state.received) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{what} did not happen within {limit:?}; received: {:#?}",
                state.received.iter().map(summary).collect::<Vec<_>>()
            );
            state = self
                .shared
                .1
                .wait_timeout(state, left.min(Duration::from_millis(100)))
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }
}

/// The receiver's state, even after a failed assertion elsewhere poisoned the lock.
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn accept_loop(mut listener: TcpListener, port: u16, shared: Arc<(Mutex<State>, Condvar)>) {
    listener.set_nonblocking(true).unwrap();
    loop {
        let up = lock(&shared.0).up;
        if !up {
            // Closed: connections are refused until it comes back on the same port.
            drop(listener);
            while !lock(&shared.0).up {
                std::thread::sleep(Duration::from_millis(20));
            }
            listener = TcpListener::bind(("127.0.0.1", port)).expect("the port is free again");
            listener.set_nonblocking(true).unwrap();
        }
        match listener.accept() {
            Ok((stream, _)) => {
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || handle(stream, &shared));
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn handle(stream: TcpStream, shared: &(Mutex<State>, Condvar)) {
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 {
            return;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    let length: usize = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let mut stream = reader.into_inner();
    let (state, changed) = shared;
    let mut state = lock(state);
    let mode = state.mode;
    let answered = match mode {
        Mode::Accept => Some(200),
        Mode::Fail(status) => Some(status),
        Mode::Stall => None,
    };
    state.received.push(Received {
        path,
        headers,
        body,
        answered,
    });
    changed.notify_all();
    match answered {
        Some(status) => {
            drop(state);
            let text = if status == 200 { "" } else { "receiver says no" };
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
        }
        None => {
            // Held open, unanswered, until the test changes the mode.
            while state.mode == Mode::Stall {
                state = changed.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
            }
        }
    }
}

fn summary(request: &Received) -> String {
    let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
    format!(
        "{} {:?} {} {} v{} {}",
        request.path,
        request.answered,
        body["type"].as_str().unwrap_or("?"),
        body["persona"]["slug"].as_str().unwrap_or("-"),
        body["version"]["number"],
        body["commit"]["sha"]
            .as_str()
            .map_or("-", |sha| &sha[..7.min(sha.len())])
    )
}

/// What a test expects of one event: kind, persona slug, version number, commit.
type Expected<'a> = (&'a str, &'a str, i64, &'a str);

fn shape(request: &Received) -> (String, String, i64, String) {
    let body = request.json();
    (
        body["type"].as_str().unwrap_or_default().to_string(),
        body["persona"]["slug"].as_str().unwrap_or_default().to_string(),
        body["version"]["number"].as_i64().unwrap_or(-1),
        body["commit"]["sha"].as_str().unwrap_or_default().to_string(),
    )
}

fn assert_events(requests: &[Received], expected: &[Expected<'_>]) {
    let got: Vec<(String, String, i64, String)> = requests.iter().map(shape).collect();
    let wanted: Vec<(String, String, i64, String)> = expected
        .iter()
        .map(|(kind, slug, number, sha)| (kind.to_string(), slug.to_string(), *number, sha.to_string()))
        .collect();
    assert_eq!(got, wanted, "the events, in the order they arrived");
}

/// Everything a receiver may rely on, checked for every request it got.
fn assert_well_formed(requests: &[Received]) {
    for request in requests {
        assert!(request.signature_is_valid(), "bad signature on {}", summary(request));
        let body = request.json();
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(request.header("x-personas-event"), body["type"].as_str());
        assert_eq!(request.header("x-personas-delivery"), body["id"].as_str());
        assert!(
            request
                .header("user-agent")
                .is_some_and(|agent| agent.starts_with("personas/")),
            "{:?}",
            request.header("user-agent")
        );
        uuid::Uuid::parse_str(body["id"].as_str().unwrap()).expect("the event id is a UUID");
    }
}

// ---------------------------------------------------------------- setup

fn traversable_repo() -> TestRepo {
    let repo = TestRepo::new();
    // As root the managed PostgreSQL runs as `postgres`, which must reach the data directory.
    std::fs::set_permissions(repo.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // The data directory (a managed PostgreSQL, the vector index) lives in
    // the repository: it must not be committed, nor rewritten by a reset.
    repo.write(".gitignore", ".personas/\n");
    repo
}

/// A `personas.toml` (outside the repository) with one webhook to `url`.
fn config_file(url: &str, extra: &str) -> (tempfile::TempDir, PathBuf) {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("personas.toml");
    std::fs::write(
        &path,
        format!("[[webhooks]]\nname = \"test\"\nurl = \"{url}\"\nsecret_env = \"TEST_WEBHOOK_SECRET\"\n{extra}"),
    )
    .unwrap();
    (directory, path)
}

fn alice(openness: &str) -> String {
    edit(
        &persona(ID_A, "Alice"),
        "openness = 0.9",
        &format!("openness = {openness}"),
    )
}

fn bob(wit: &str) -> String {
    edit(&persona(ID_B, "Bob"), "wit = 0.5", &format!("wit = {wit}"))
}

/// A fresh database of the shared test cluster, and a runtime to reach it.
fn external_database() -> (tokio::runtime::Runtime, common::db::TestDatabase) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let database = runtime.block_on(common::db::fresh());
    (runtime, database)
}

/// `personas serve` syncing in-process into `database_url`, with `config`.
fn serve_on(repo: &TestRepo, database_url: &str, config: &std::path::Path) -> Server {
    let config = config.to_str().unwrap();
    Server::start_args(
        repo.path(),
        &["--sync"],
        &[
            ("DATABASE_URL", database_url),
            ("PERSONAS_CONFIG", config),
            ("TEST_WEBHOOK_SECRET", SECRET),
        ],
    )
}

fn deliveries(server: &Server) -> Vec<Value> {
    let (status, body) = http_get(&server.url("/api/webhooks/deliveries?webhook=test&limit=500"));
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    body["deliveries"].as_array().unwrap().clone()
}

fn webhook_status(server: &Server) -> Value {
    let (status, body) = http_get(&server.url("/api/webhooks"));
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    body["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|hook| hook["name"] == "test")
        .cloned()
        .unwrap_or_else(|| panic!("no webhook \"test\" in {body}"))
}

// ---------------------------------------------------------------- tests

/// On the embedded defaults: every commit's events arrive signed, complete
/// and in commit order, a force-push announces the retraction, and nothing
/// is announced for a commit on a branch that is not followed or for an
/// edit never committed.
#[test]
fn every_committed_change_arrives_signed_in_commit_order_and_nothing_else() {
    let receiver = Receiver::start(Mode::Accept);
    let repo = traversable_repo();
    repo.write("registry/personas/alice.toml", &alice("0.9"));
    let c0 = repo.commit("add alice");
    let (_config_dir, config) = config_file(&receiver.url("/hooks/secret-path-token"), "from = \"start\"\n");
    let server = Server::start_with(
        repo.path(),
        &[
            ("PERSONAS_CONFIG", config.to_str().unwrap()),
            ("TEST_WEBHOOK_SECRET", SECRET),
        ],
    );
    receiver.wait("the first event", Duration::from_secs(90), |got| !got.is_empty());

    repo.write("registry/personas/alice.toml", &alice("0.95"));
    let c1 = repo.commit("alice: more open");
    repo.write("registry/personas/bob.toml", &bob("0.5"));
    let c2 = repo.commit("add bob");
    // A branch the server does not follow.
    repo.git(&["checkout", "-q", "-b", "side"]);
    repo.write("registry/personas/carol.toml", &persona(ID_C, "Carol"));
    let side = repo.commit("side: add carol");
    repo.git(&["checkout", "-q", "main"]);
    repo.write("registry/personas/bob.toml", &bob("0.6"));
    let c3 = repo.commit("bob: wittier");
    repo.remove("registry/personas/alice.toml");
    let c4 = repo.commit("delete alice");
    // Never committed.
    repo.write("registry/personas/bob.toml", &bob("0.7"));

    let expected = [
        ("version.created", "alice", 1, c0.as_str()),
        ("version.created", "alice", 2, c1.as_str()),
        ("version.created", "bob", 1, c2.as_str()),
        ("version.created", "bob", 2, c3.as_str()),
        ("persona.deleted", "alice", 3, c4.as_str()),
    ];
    receiver.wait("every event", Duration::from_secs(60), |got| {
        got.len() >= expected.len()
    });
    // Anything extra would have arrived by now.
    std::thread::sleep(Duration::from_secs(2));
    let got = receiver.received();
    assert_well_formed(&got);
    assert_events(&got, &expected);
    assert!(got.iter().all(|request| request.path == "/hooks/secret-path-token"));
    assert!(
        got.iter()
            .all(|request| !String::from_utf8_lossy(&request.body).contains(&side))
    );
    let ids: std::collections::HashSet<&str> = got
        .iter()
        .map(|request| request.header("x-personas-delivery").unwrap())
        .collect();
    assert_eq!(ids.len(), got.len(), "every event has its own id");

    // What a consumer needs without a second request.
    let created = got[1].json();
    assert_eq!(created["persona"]["id"], ID_A);
    assert_eq!(created["persona"]["name"], "Alice");
    assert_eq!(created["commit"]["author_name"], "Ada Author");
    assert_eq!(created["commit"]["author_email"], "ada@example.org");
    assert_eq!(
        created["commit"]["message"].as_str().map(str::trim),
        Some("alice: more open")
    );
    assert!(created["commit"]["committed_at"].is_string());
    assert_eq!(created["version"]["change"], "modified");
    assert!(
        created["version"]["content_hash"]
            .as_str()
            .is_some_and(|hash| hash.starts_with("sha256:"))
    );
    assert_eq!(created["version"]["url"], "/api/personas/alice@2");
    let deleted = got[4].json();
    assert_eq!(deleted["version"]["change"], "deleted");

    // Rewritten history: the deletion is retracted, then a new commit lands.
    repo.git(&["reset", "-q", "--hard", &c3]);
    repo.write("registry/personas/bob.toml", &bob("0.8"));
    let c5 = repo.commit("bob: wittier still");
    receiver.wait("the retraction and the new version", Duration::from_secs(60), |got| {
        got.len() >= expected.len() + 2
    });
    std::thread::sleep(Duration::from_secs(1));
    let got = receiver.received();
    assert_well_formed(&got);
    let mut after: Vec<Expected<'_>> = expected.to_vec();
    after.push(("version.retracted", "alice", 3, c4.as_str()));
    after.push(("version.created", "bob", 3, c5.as_str()));
    assert_events(&got, &after);

    // Visible in the API (scheme and host only) and on /status.
    let (_, listing) = http_get(&server.url("/api/webhooks"));
    assert!(
        !listing.contains("secret-path-token") && !listing.contains(SECRET),
        "{listing}"
    );
    let listing: Value = serde_json::from_str(&listing).unwrap();
    let hook = &listing["webhooks"][0];
    assert_eq!(hook["name"], "test");
    assert_eq!(hook["configured"], true);
    assert_eq!(hook["endpoint"], receiver.url(""));
    assert_eq!(hook["pending"], 0);
    assert_eq!(hook["cursor"], listing["newest_event"]);
    assert_eq!(hook["last_delivery"]["state"], "delivered");
    assert_eq!(hook["last_delivery"]["last_status"], 200);
    assert_eq!(hook["events"].as_array().unwrap().len(), 5);
    let log = deliveries(&server);
    assert_eq!(log.len(), after.len());
    assert!(
        log.iter()
            .all(|row| row["state"] == "delivered" && row["attempts"] == 1)
    );
    let (status, page) = http_get(&server.url("/status"));
    assert_eq!(status, 200);
    assert!(
        page.contains("Webhooks") && page.contains("<code>test</code>"),
        "{page}"
    );
    assert!(!page.contains("secret-path-token"));
    let (_, openapi) = http_get(&server.url("/api/openapi.json"));
    let openapi: Value = serde_json::from_str(&openapi).unwrap();
    assert!(openapi["paths"]["/api/webhooks"].is_object());
    assert!(openapi["paths"]["/api/webhooks/deliveries"].is_object());
    let (status, _) = http_get(&server.url("/api/webhooks/deliveries?webhook=nope"));
    assert_eq!(status, 404);
    let (status, _) = http_get(&server.url("/api/webhooks/deliveries?limit=0"));
    assert_eq!(status, 400);
    let mut server = server;
    let status = server.terminate();
    assert!(status.success(), "serve with a webhook exited with {status}");
}

/// A receiver that fails, then is gone altogether, gets every event once it
/// is back, in order; the log shows the attempts and the last error.
#[test]
fn a_failing_then_unreachable_receiver_gets_everything_once_it_is_back() {
    let (_runtime, database) = external_database();
    let receiver = Receiver::start(Mode::Fail(500));
    let repo = traversable_repo();
    repo.write("registry/personas/alice.toml", &alice("0.9"));
    let c0 = repo.commit("add alice");
    let (_config_dir, config) = config_file(&receiver.url("/hook"), "from = \"start\"\n");
    let server = serve_on(&repo, &database.url, &config);

    receiver.wait("two failed attempts", Duration::from_secs(90), |got| got.len() >= 2);
    let failing = &deliveries(&server)[0];
    assert_eq!(failing["state"], "failing");
    assert_eq!(failing["last_status"], 500);
    assert!(
        failing["last_error"]
            .as_str()
            .is_some_and(|error| error.contains("500") && error.contains("receiver says no")),
        "{failing}"
    );
    assert!(failing["next_attempt_at"].is_string());

    receiver.go_down();
    repo.write("registry/personas/alice.toml", &alice("0.91"));
    let c1 = repo.commit("alice: 0.91");
    repo.write("registry/personas/alice.toml", &alice("0.92"));
    let c2 = repo.commit("alice: 0.92");
    // Head of line: the later events wait behind the failing one.
    wait_for("the new events pending", Duration::from_secs(30), || {
        webhook_status(&server)["pending"] == 3
    });
    wait_for("a refused connection in the log", Duration::from_secs(30), || {
        deliveries(&server)[0]["last_error"]
            .as_str()
            .is_some_and(|error| error.contains("cannot connect"))
    });
    let down = &deliveries(&server)[0];
    assert!(down["last_status"].is_null(), "{down}");
    assert!(down["attempts"].as_i64().unwrap() >= 3, "{down}");

    receiver.come_up(Mode::Accept);
    receiver.wait("every event, once back", Duration::from_secs(60), |got| {
        got.iter().filter(|request| request.answered == Some(200)).count() >= 3
    });
    std::thread::sleep(Duration::from_secs(1));
    let accepted = receiver.accepted();
    assert_well_formed(&receiver.received());
    assert_events(
        &accepted,
        &[
            ("version.created", "alice", 1, c0.as_str()),
            ("version.created", "alice", 2, c1.as_str()),
            ("version.created", "alice", 3, c2.as_str()),
        ],
    );
    // Every attempt carried the same event id.
    let first_id = accepted[0].header("x-personas-delivery").unwrap();
    let retried = receiver
        .received()
        .iter()
        .filter(|request| request.answered != Some(200))
        .all(|request| request.header("x-personas-delivery") == Some(first_id));
    assert!(retried, "a later event was sent while the first was failing");

    let log = deliveries(&server);
    assert_eq!(log.len(), 3);
    // Newest event first: the first event is the last row.
    let first = &log[2];
    assert_eq!(first["state"], "delivered");
    assert_eq!(first["last_status"], 200);
    assert!(first["attempts"].as_i64().unwrap() >= 4, "{first}");
    assert!(
        first["last_error"]
            .as_str()
            .is_some_and(|error| error.contains("cannot connect")),
        "{first}"
    );
    assert!(first["delivered_at"].is_string());
    assert!(
        log[..2]
            .iter()
            .all(|row| row["attempts"] == 1 && row["state"] == "delivered")
    );
    assert_eq!(webhook_status(&server)["pending"], 0);
}

/// The server is killed with SIGKILL while a delivery is in flight (the
/// receiver holds the request unanswered); after a restart that event is
/// sent again, with the same id, and everything after it follows.
#[test]
fn killed_mid_delivery_the_server_delivers_after_restart() {
    let (_runtime, database) = external_database();
    let receiver = Receiver::start(Mode::Stall);
    let repo = traversable_repo();
    repo.write("registry/personas/alice.toml", &alice("0.9"));
    let c0 = repo.commit("add alice");
    let (_config_dir, config) = config_file(&receiver.url("/hook"), "from = \"start\"\n");
    let mut server = serve_on(&repo, &database.url, &config);
    receiver.wait("the delivery in flight", Duration::from_secs(90), |got| !got.is_empty());
    server.kill();
    receiver.set_mode(Mode::Accept);
    let stalled = receiver.received()[0].clone();
    assert_eq!(stalled.answered, None);

    // Committed while the server is down.
    repo.write("registry/personas/alice.toml", &alice("0.93"));
    let c1 = repo.commit("alice: 0.93");
    let server = serve_on(&repo, &database.url, &config);
    receiver.wait("the events after the restart", Duration::from_secs(60), |got| {
        got.iter().filter(|request| request.answered == Some(200)).count() >= 2
    });
    std::thread::sleep(Duration::from_secs(1));
    let accepted = receiver.accepted();
    assert_well_formed(&receiver.received());
    assert_events(
        &accepted,
        &[
            ("version.created", "alice", 1, c0.as_str()),
            ("version.created", "alice", 2, c1.as_str()),
        ],
    );
    assert_eq!(
        accepted[0].header("x-personas-delivery"),
        stalled.header("x-personas-delivery"),
        "the redelivery carries the same id"
    );
    assert_eq!(accepted[0].body, stalled.body, "and the same body");
    let log = deliveries(&server);
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(log.iter().all(|row| row["state"] == "delivered"), "{log:?}");
}

// ------------------------------------------------ the worker on the database

mod worker {
    use super::*;
    use personas::webhooks::config::{Secret, StartAt, WebhookConfig};
    use personas::webhooks::deliver::Worker;
    use sqlx::PgPool;

    fn hook(name: &str, url: &str, events: &[&'static str], from: StartAt) -> WebhookConfig {
        WebhookConfig {
            name: name.to_string(),
            url: url.parse().unwrap(),
            secret: Secret::new(SECRET),
            events: events.to_vec(),
            from,
            timeout: Duration::from_secs(5),
        }
    }

    /// Writes one event the way the projection does: in a transaction with
    /// a NOTIFY; `commit: false` rolls it back instead.
    async fn announce(pool: &PgPool, kind: &str, number: i64, commit: bool) {
        let id = uuid::Uuid::new_v4();
        let payload = serde_json::json!({"id": id, "type": kind, "n": number});
        let mut transaction = pool.begin().await.unwrap();
        sqlx::query("INSERT INTO change_events (event_id, kind, commit_sha, payload) VALUES ($1, $2, $3, $4)")
            .bind(id)
            .bind(kind)
            .bind(format!("{number:040x}"))
            .bind(&payload)
            .execute(&mut *transaction)
            .await
            .unwrap();
        personas::store::projection::notify_change(&mut *transaction)
            .await
            .unwrap();
        if commit {
            transaction.commit().await.unwrap();
        } else {
            transaction.rollback().await.unwrap();
        }
    }

    fn numbers(requests: &[Received], path: &str) -> Vec<i64> {
        requests
            .iter()
            .filter(|request| request.path == path)
            .map(|request| request.json()["n"].as_i64().unwrap())
            .collect()
    }

    /// Two workers on one database (two replicas) share the deliveries out:
    /// every committed event reaches each webhook exactly once and in order,
    /// a rolled-back one never; kinds a webhook does not take are skipped;
    /// `from = "now"` starts after what was already there.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replicas_deliver_each_committed_event_once_in_order() {
        let database = common::db::fresh().await;
        let receiver = Receiver::start(Mode::Accept);
        for number in 1..=3 {
            announce(&database.pool, "version.created", number, true).await;
        }
        let hooks = vec![
            hook(
                "all",
                &receiver.url("/all"),
                &personas::webhooks::EVENT_KINDS,
                StartAt::First,
            ),
            hook("labels", &receiver.url("/labels"), &["label.moved"], StartAt::First),
            hook(
                "late",
                &receiver.url("/late"),
                &personas::webhooks::EVENT_KINDS,
                StartAt::Now,
            ),
        ];
        let mut replicas = Vec::new();
        for _ in 0..2 {
            let pool = personas::store::pool::connect(&database.url).await.unwrap();
            let worker = Worker::new(pool, &hooks)
                .unwrap()
                .with_poll_interval(Duration::from_millis(200));
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(worker.run(async {
                let _ = stopped.await;
            }));
            replicas.push((stop, task));
        }
        // Both replicas have created (or found) the cursors before more events come.
        let pool = database.pool.clone();
        let cursors = async {
            loop {
                let count: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_cursors")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                if count == 3 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), cursors).await.unwrap();

        let kinds = [
            "version.created",
            "label.moved",
            "persona.deleted",
            "experiment.changed",
        ];
        let mut committed = vec![1, 2, 3];
        let mut labels = Vec::new();
        for number in 4..=30 {
            let kind = kinds[number as usize % kinds.len()];
            // Every seventh is rolled back: a projection that never committed.
            let commit = number % 7 != 0;
            announce(&database.pool, kind, number, commit).await;
            if commit {
                committed.push(number);
                if kind == "label.moved" {
                    labels.push(number);
                }
            }
        }
        let late: Vec<i64> = committed.iter().copied().filter(|number| *number > 3).collect();
        tokio::task::block_in_place(|| {
            receiver.wait("every delivery", Duration::from_secs(60), |got| {
                numbers(got, "/all").len() >= committed.len()
                    && numbers(got, "/labels").len() >= labels.len()
                    && numbers(got, "/late").len() >= late.len()
            });
        });
        tokio::time::sleep(Duration::from_millis(600)).await;
        let got = receiver.received();
        assert_well_formed(&got);
        assert_eq!(numbers(&got, "/all"), committed);
        assert_eq!(numbers(&got, "/labels"), labels);
        assert_eq!(numbers(&got, "/late"), late);

        // Every cursor is at the newest event: `labels` moved past the kinds it skips.
        let newest: i64 = sqlx::query_scalar("SELECT max(seq) FROM change_events")
            .fetch_one(&database.pool)
            .await
            .unwrap();
        let cursors: Vec<i64> = sqlx::query_scalar("SELECT last_seq FROM webhook_cursors ORDER BY webhook")
            .fetch_all(&database.pool)
            .await
            .unwrap();
        assert_eq!(cursors, vec![newest; 3]);
        let rolled_back: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM webhook_deliveries d JOIN change_events e ON e.seq = d.event_seq
             WHERE e.payload->>'n' IN ('7', '14', '21', '28')",
        )
        .fetch_one(&database.pool)
        .await
        .unwrap();
        assert_eq!(rolled_back, 0);

        for (stop, task) in replicas {
            let _ = stop.send(());
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("the worker stops when told")
                .unwrap();
        }
    }

    /// With the database unreachable the worker logs, retries and still
    /// stops when told: it never takes its process down.
    #[tokio::test]
    async fn without_a_database_the_worker_keeps_trying_and_stops_cleanly() {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let pool = sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(Duration::from_millis(300))
            .connect_lazy(&format!("postgres://nobody@127.0.0.1:{port}/nothing"))
            .unwrap();
        let hooks = [hook(
            "all",
            "http://127.0.0.1:9/",
            &personas::webhooks::EVENT_KINDS,
            StartAt::First,
        )];
        let worker = Worker::new(pool, &hooks).unwrap();
        let started = Instant::now();
        worker.run(tokio::time::sleep(Duration::from_millis(1500))).await;
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}

/// Label moves and experiment changes are announced like versions, with
/// the label's old and new version and the experiment's status.
#[test]
fn label_moves_and_experiment_changes_are_announced() {
    let (_runtime, database) = external_database();
    let receiver = Receiver::start(Mode::Accept);
    let repo = traversable_repo();
    repo.write("registry/personas/alice.toml", &alice("0.9"));
    repo.commit("add alice");
    repo.write("registry/personas/alice.toml", &alice("0.95"));
    repo.commit("alice v2");
    repo.write("registry/labels.toml", "[production]\nalice = 1\n");
    repo.write(
        "registry/experiments/trial.toml",
        "schema = 1\nstatus = \"draft\"\nsalt = \"s1\"\npersona = \"alice\"\n\n[[variants]]\nname = \"a\"\npin = \"production\"\nweight = 1\n\n[[variants]]\nname = \"b\"\npin = 2\nweight = 1\n",
    );
    let defined = repo.commit("production label, trial experiment");
    let (_config_dir, config) = config_file(
        &receiver.url("/hook"),
        "from = \"start\"\nevents = [\"label.moved\", \"experiment.changed\"]\n",
    );
    let _server = serve_on(&repo, &database.url, &config);
    receiver.wait(
        "the first label and experiment events",
        Duration::from_secs(90),
        |got| got.len() >= 2,
    );
    repo.write("registry/labels.toml", "[production]\nalice = 2\n");
    let moved = repo.commit("production: alice v2");
    receiver.wait("the label move", Duration::from_secs(60), |got| got.len() >= 3);
    let events: Vec<Value> = receiver.accepted().iter().map(Received::json).collect();
    assert!(receiver.accepted().iter().all(Received::signature_is_valid));
    let kinds: Vec<&str> = events.iter().map(|event| event["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["label.moved", "experiment.changed", "label.moved"],
        "{events:?}"
    );
    assert_eq!(events[0]["label"]["name"], "production");
    assert_eq!(
        (
            events[0]["label"]["from_version"].clone(),
            events[0]["label"]["to_version"].clone()
        ),
        (Value::Null, serde_json::json!(1))
    );
    assert_eq!(events[0]["persona"]["slug"], "alice");
    assert_eq!(events[0]["commit"]["sha"], defined.as_str());
    assert_eq!(events[1]["experiment"]["name"], "trial");
    assert_eq!(events[1]["experiment"]["status"], "draft");
    assert_eq!(
        (
            events[2]["label"]["from_version"].clone(),
            events[2]["label"]["to_version"].clone()
        ),
        (serde_json::json!(1), serde_json::json!(2))
    );
    assert!(
        events[2]["label"]["to_content_hash"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(events[2]["commit"]["sha"], moved.as_str());
}
