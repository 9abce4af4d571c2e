//! The managed PostgreSQL cluster used when no `DATABASE_URL` is given: the
//! system's `initdb`/`pg_ctl` run a private cluster under the data directory,
//! listening only on a Unix socket inside it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The role and database the project uses inside its own cluster.
pub const ROLE: &str = "personas";
pub const DATABASE: &str = "personas";

/// Oldest server major version the schema is written for.
const MIN_MAJOR: u32 = 14;

/// Account that runs the server when we are root: PostgreSQL refuses to run as root.
const SERVICE_USER: &str = "postgres";

#[derive(Debug)]
pub struct LocalCluster {
    bin_dir: PathBuf,
    data_dir: PathBuf,
    run_as: Option<String>,
    /// Whether this process started the server (and so stops it).
    started_here: bool,
}

impl LocalCluster {
    /// Locates the server binaries and prepares (but does not start) a cluster in `data_dir`.
    pub fn new(data_dir: &Path) -> anyhow::Result<Self> {
        let bin_dir = find_bin_dir()?;
        let run_as = if rustix::process::geteuid().is_root() {
            Some(SERVICE_USER.to_string())
        } else {
            None
        };
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create the database directory {}", data_dir.display()))?;
        let data_dir = std::path::absolute(data_dir)?;
        Ok(LocalCluster {
            bin_dir,
            data_dir,
            run_as,
            started_here: false,
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The connection URL, over the Unix socket in the data directory.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{ROLE}@localhost/{database}?host={}",
            self.data_dir.display()
        )
    }

    fn command(&self, program: &str) -> Command {
        let binary = self.bin_dir.join(program);
        match &self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.arg("-u").arg(user).arg("--").arg(binary);
                command
            }
            None => Command::new(binary),
        }
    }

    fn run(&self, mut command: Command, what: &str) -> anyhow::Result<String> {
        let output = command
            .output()
            .with_context(|| format!("cannot run {what} ({command:?})"))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if !output.status.success() {
            bail!("{what} failed: {}", text.trim());
        }
        Ok(text)
    }

    fn is_initialized(&self) -> bool {
        self.data_dir.join("PG_VERSION").is_file()
    }

    /// Gives the service account the data directory, and checks it can reach it.
    fn prepare_ownership(&self) -> anyhow::Result<()> {
        let Some(user) = &self.run_as else { return Ok(()) };
        self.run(
            {
                let mut command = Command::new("chown");
                command.arg("-R").arg(format!("{user}:")).arg(&self.data_dir);
                command
            },
            "chown of the database directory",
        )?;
        let mut probe = Command::new("runuser");
        probe.args(["-u", user, "--", "test", "-w"]).arg(&self.data_dir);
        if !probe.status().map(|status| status.success()).unwrap_or(false) {
            bail!(
                "running as root, the managed PostgreSQL runs as the `{user}` account, which cannot reach {}; \
                 make its parent directories traversable (chmod o+x) or choose another --data-dir",
                self.data_dir.display()
            );
        }
        Ok(())
    }

    /// Initializes the cluster on first use and starts it unless it is running already.
    pub fn start(&mut self) -> anyhow::Result<()> {
        if !self.is_initialized() {
            self.prepare_ownership()?;
            let mut initdb = self.command("initdb");
            initdb.arg("-D").arg(&self.data_dir).args([
                "-U",
                ROLE,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ]);
            self.run(initdb, "initdb")?;
        } else {
            self.prepare_ownership()?;
        }
        if self.is_running() {
            return Ok(());
        }
        // A postmaster.pid left by a crash names a process that is gone;
        // PostgreSQL itself recognises that and starts over it.
        let log = self.data_dir.join("server.log");
        // `wal_init_zero=off`: a new cluster creates its WAL files as a sync
        // fills them (730 MB for 100,000 versions), and zero-filling each
        // before use made a first full sync 15% slower (21.0 s against 18.7 s
        // at 10,000 personas × 10). Space still runs out the same way on a
        // full disk, at the write instead of at the file's creation.
        let mut start = self.command("pg_ctl");
        start
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(&log)
            .arg("-o")
            .arg(format!(
                "-c listen_addresses='' -k {} -c max_connections=200 -c fsync=on -c wal_init_zero=off",
                self.data_dir.display()
            ))
            .args(["-w", "-t", "60", "start"]);
        if let Err(error) = self.run(start, "pg_ctl start") {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(10).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!("{error}\nserver log ({}):\n{}", log.display(), tail.join("\n"));
        }
        self.started_here = true;
        Ok(())
    }

    pub fn is_running(&self) -> bool {
        let mut status = self.command("pg_ctl");
        status.arg("-D").arg(&self.data_dir).arg("status");
        status.output().map(|output| output.status.success()).unwrap_or(false)
    }

    /// Stops the server (fast shutdown: sessions end, no data is lost).
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if !self.is_running() {
            return Ok(());
        }
        let mut stop = self.command("pg_ctl");
        stop.arg("-D").arg(&self.data_dir).args(["-m", "fast", "-w", "stop"]);
        self.run(stop, "pg_ctl stop")?;
        self.started_here = false;
        Ok(())
    }

    /// Stops the server only if this process started it: a cluster shared
    /// with another running `personas` keeps serving that process.
    pub fn stop_if_started_here(&mut self) -> anyhow::Result<()> {
        if self.started_here { self.stop() } else { Ok(()) }
    }
}

/// Finds `initdb`: `pg_config --bindir`, then PATH, then `/usr/lib/postgresql/<newest>/bin`.
fn find_bin_dir() -> anyhow::Result<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output()
        && output.status.success()
    {
        candidates.push(PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()));
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path));
    }
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<(u32, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let major = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
                Some((major, entry.path().join("bin")))
            })
            .collect();
        versions.sort_by_key(|(major, _)| std::cmp::Reverse(*major));
        candidates.extend(versions.into_iter().map(|(_, path)| path));
    }
    for directory in candidates {
        if directory.join("initdb").is_file() && directory.join("pg_ctl").is_file() {
            let major = server_major(&directory);
            match major {
                Some(major) if major < MIN_MAJOR => continue,
                _ => return Ok(directory),
            }
        }
    }
    bail!(
        "no PostgreSQL {MIN_MAJOR}+ server binaries (initdb, pg_ctl) found on PATH, via pg_config or under \
         /usr/lib/postgresql; install them (Debian: apt-get install postgresql) or set DATABASE_URL to use an \
         existing server"
    )
}

fn server_major(bin_dir: &Path) -> Option<u32> {
    let output = Command::new(bin_dir.join("initdb")).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let version = text.split_whitespace().last()?;
    version.split('.').next()?.parse().ok()
}
