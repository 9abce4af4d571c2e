//! Real Qdrant servers for tests: the shared one `QDRANT_URL` names (started
//! by `scripts/test` when a server binary is at hand, or any server a user
//! points it at), and servers of a test's own, started from the binary
//! `PERSONAS_QDRANT_BIN` names, for cases that restart or configure one.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use personas::vectors::edge::EdgeIndex;
use personas::vectors::server::QdrantIndex;
use personas::vectors::setup::AnyIndex;

/// Prints past the test harness's capture, so a run's log shows what was skipped.
pub fn skipped(test: &str, reason: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
}

/// The shared server's gRPC URL, or `None` (and a SKIPPED line) without one.
pub fn shared_url(test: &str) -> Option<String> {
    match std::env::var("QDRANT_URL") {
        Ok(url) => Some(url),
        Err(_) => {
            skipped(
                test,
                "QDRANT_URL is not set (e.g. http://localhost:6334; scripts/test starts a server when it finds one)",
            );
            None
        }
    }
}

/// A collection name no other test (or earlier run) uses.
pub fn unique_collection() -> String {
    format!("personas_test_{}", uuid::Uuid::new_v4().simple())
}

/// Which implementation of the vector index a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Edge,
    Server,
}

/// An index of either kind, opened empty for one test.
pub struct TestIndex {
    pub index: AnyIndex,
    /// Kept as long as the points are needed.
    pub collection: Option<ServerCollection>,
}

/// A collection of the shared server, dropped when the test is done so that
/// a user's own server is not left littered with test collections.
#[derive(Clone)]
pub struct ServerCollection {
    url: String,
    api_key: Option<String>,
    name: String,
}

impl ServerCollection {
    async fn open(&self, dimension: usize) -> AnyIndex {
        AnyIndex::Server(
            QdrantIndex::open(&self.url, self.api_key.as_deref(), &self.name, dimension)
                .await
                .unwrap(),
        )
    }
}

impl Drop for ServerCollection {
    fn drop(&mut self) {
        // The fields, not a clone of `self`: a clone would run this again when it goes.
        let (url, api_key, name) = (self.url.clone(), self.api_key.clone(), self.name.clone());
        // Drop runs inside the test's runtime, which cannot be blocked on: another thread.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok(index) = QdrantIndex::connect(&url, api_key.as_deref(), &name) {
                    let _ = index.drop_collection().await;
                }
            });
        })
        .join();
    }
}

impl TestIndex {
    /// `None` (and a SKIPPED line) for the server backend without `QDRANT_URL`.
    pub async fn open(backend: Backend, test: &str, directory: &Path, dimension: usize) -> Option<TestIndex> {
        match backend {
            Backend::Edge => Some(TestIndex {
                index: AnyIndex::Edge(EdgeIndex::open(&directory.join("vectors"), dimension).await.unwrap()),
                collection: None,
            }),
            Backend::Server => {
                let collection = ServerCollection {
                    url: shared_url(test)?,
                    api_key: std::env::var("QDRANT_API_KEY").ok(),
                    name: unique_collection(),
                };
                Some(TestIndex {
                    index: collection.open(dimension).await,
                    collection: Some(collection),
                })
            }
        }
    }

    /// Loses every point, as a deleted data directory or a dropped
    /// collection does, and opens the index again, empty.
    pub async fn wipe(self, directory: &Path, dimension: usize) -> TestIndex {
        let TestIndex { index, collection } = self;
        match index {
            AnyIndex::Edge(index) => {
                // The shard flushes on drop: it must be gone before its files are.
                drop(index);
                std::fs::remove_dir_all(directory.join("vectors")).unwrap();
            }
            AnyIndex::Server(index) => index.drop_collection().await.unwrap(),
        }
        let index = match &collection {
            None => AnyIndex::Edge(EdgeIndex::open(&directory.join("vectors"), dimension).await.unwrap()),
            Some(collection) => collection.open(dimension).await,
        };
        TestIndex { index, collection }
    }
}

/// A Qdrant server of this test's own, on free loopback ports with its
/// storage in a temporary directory; stopped (SIGTERM) when dropped.
pub struct OwnServer {
    binary: PathBuf,
    storage: tempfile::TempDir,
    api_key: Option<String>,
    pub http_port: u16,
    pub grpc_port: u16,
    child: Option<Child>,
}

impl OwnServer {
    /// `None` (and a SKIPPED line) when no server binary is named.
    pub fn start(test: &str, api_key: Option<&str>) -> Option<OwnServer> {
        let Some(binary) = std::env::var_os("PERSONAS_QDRANT_BIN").map(PathBuf::from) else {
            skipped(
                test,
                "PERSONAS_QDRANT_BIN does not name a Qdrant server binary (scripts/test sets it when it finds one)",
            );
            return None;
        };
        let mut server = OwnServer {
            binary,
            storage: tempfile::tempdir().unwrap(),
            api_key: api_key.map(str::to_string),
            http_port: free_port(),
            grpc_port: free_port(),
            child: None,
        };
        server.launch();
        Some(server)
    }

    /// The gRPC URL, as `QDRANT_URL` takes it.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server is running").id()
    }

    fn launch(&mut self) {
        let storage = self.storage.path();
        let mut command = Command::new(&self.binary);
        command
            .current_dir(storage)
            .env("QDRANT__SERVICE__HOST", "127.0.0.1")
            .env("QDRANT__SERVICE__HTTP_PORT", self.http_port.to_string())
            .env("QDRANT__SERVICE__GRPC_PORT", self.grpc_port.to_string())
            .env("QDRANT__STORAGE__STORAGE_PATH", storage.join("storage"))
            .env("QDRANT__STORAGE__SNAPSHOTS_PATH", storage.join("snapshots"))
            .env("QDRANT__TELEMETRY_DISABLED", "true")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(key) = &self.api_key {
            command.env("QDRANT__SERVICE__API_KEY", key);
        }
        self.child = Some(command.spawn().expect("the Qdrant server starts"));
        let started = Instant::now();
        // Ready when the HTTP health check answers and the gRPC port accepts.
        loop {
            let healthy = personas::commands::http_probe::request(self.http_port, "GET", "/healthz", &[], b"")
                .is_ok_and(|answer| answer.status == 200);
            if healthy && std::net::TcpStream::connect(("127.0.0.1", self.grpc_port)).is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("the Qdrant server exited at start: {status}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the Qdrant server was not ready within 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, and waits until the process is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// SIGKILL: the server gets no chance to flush or answer.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same storage and ports.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Starts it after a `stop` or `kill`.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the server is still running");
        self.launch();
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port nothing listens on now (the kernel's pick, released at once).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
