//! A throwaway PostgreSQL cluster (Debian's `postgresql` package: `initdb` and
//! `postgres` from `/usr/lib/postgresql/*/bin`) in a temporary directory, on a free
//! loopback port, trust authentication, user `ph`.
//!
//! As root, the cluster belongs to `nobody` (initdb refuses root). The server runs in
//! the foreground as a child of one thread that lives as long as the test binary, with
//! a parent-death signal (`setpriv --pdeathsig KILL`): a server kept in a `static` (never
//! dropped) dies with the test binary instead of outliving it. Dropped, it is stopped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::free_tcp_port;

/// The superuser `initdb` creates (trust authentication, no password).
pub const USER: &str = "ph";

/// How long the server may take to accept connections after a start.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running (or stopped, see [`PostgresServer::stop`]) PostgreSQL cluster.
pub struct PostgresServer {
    pub port: u16,
    bin: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PostgresServer {
    /// Creates a cluster in a new temporary directory and starts it.
    pub fn start() -> PostgresServer {
        let bin = postgres_bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("privatehub-postgres-")
            .tempdir()
            .expect("postgres temp dir");
        let as_nobody = running_as_root();
        if as_nobody {
            // A mktemp directory is 0700 root: hand it to the unprivileged user.
            let status = Command::new("chown")
                .args(["nobody:nogroup"])
                .arg(dir.path())
                .status()
                .expect("run chown");
            assert!(status.success(), "chown of {} failed", dir.path().display());
        }
        let data = dir.path().join("data");
        let mut initdb = unprivileged(&bin.join("initdb"), as_nobody, false);
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", USER, "-E", "UTF8", "--locale=C.UTF-8"])
            .arg("--no-sync")
            .stdin(Stdio::null());
        let output = initdb.output().expect("run initdb");
        assert!(
            output.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let mut server = PostgresServer {
            port: free_tcp_port(),
            bin,
            dir,
            child: None,
        };
        server.start_again();
        server
    }

    /// `postgres://ph@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        self.database_url("postgres")
    }

    /// The URL of database `name` on this server.
    pub fn database_url(&self, name: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates database `name` and returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        assert!(
            name.bytes()
                .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_'),
            "database names here are [a-z0-9_]: {name}"
        );
        let output = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(self.url())
            .args(["-c", &format!("CREATE DATABASE {name}")])
            .stdin(Stdio::null())
            .output()
            .expect("run psql");
        assert!(
            output.status.success(),
            "CREATE DATABASE {name} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        self.database_url(name)
    }

    /// Stops the server at once (`immediate` shutdown, as a crash would); its data stays
    /// for [`PostgresServer::start_again`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGQUIT is the postmaster's immediate shutdown.
            let _ = Command::new("kill")
                .args(["-QUIT", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and data (after
    /// [`PostgresServer::stop`]) and waits until it accepts connections.
    pub fn start_again(&mut self) {
        self.stop();
        let socket_dir = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("postgres log");
        let mut command = unprivileged(&self.bin.join("postgres"), running_as_root(), true);
        command
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-p", &self.port.to_string(), "-h", "127.0.0.1", "-k"])
            .arg(socket_dir)
            // Throwaway data: no fsync (the data survives a stop of the server, not of
            // the machine); commits stay synchronous so a `stop` loses none. Enough
            // connections for parallel tests.
            .args(["-c", "fsync=off", "-c", "max_connections=300"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("postgres log"))
            .stderr(log);
        self.child = Some(spawn_from_lasting_thread(command));
        self.wait_until_ready();
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        // Written by this process (the server writes to the inherited descriptor).
        self.dir.path().join("postgres.log")
    }

    fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args(["-U", USER, "-d", "postgres"])
                .status()
                .is_ok_and(|status| status.success());
            if ready {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("postgres exited ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not accept connections on {}: {}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `/usr/lib/postgresql/<newest>/bin`.
pub fn postgres_bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .expect("no /usr/lib/postgresql/*/bin/initdb: run scripts/install-test-deps")
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

/// `program` run as `nobody` when `as_nobody`, and killed when the thread that
/// started it dies when `die_with_parent` (`setpriv` execs it: no process in between).
fn unprivileged(program: &Path, as_nobody: bool, die_with_parent: bool) -> Command {
    if !as_nobody && !die_with_parent {
        return Command::new(program);
    }
    let mut command = Command::new("setpriv");
    if as_nobody {
        command.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"]);
        // initdb and postgres look at HOME only for files nobody has no access to.
        command.env("HOME", "/tmp");
    }
    if die_with_parent {
        command.args(["--pdeathsig", "KILL"]);
    }
    command.arg(program);
    command
}

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns `command` from one thread that lives as long as the test binary: the
/// parent-death signal fires when the *thread* that spawned a child ends, and test
/// threads end with their test.
fn spawn_from_lasting_thread(command: Command) -> Child {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (sender, receiver) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("postgres-spawner".into())
            .spawn(move || {
                // The static sender is never dropped, so this loop never ends.
                for (mut command, reply) in receiver {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("spawn the postgres spawner thread");
        Mutex::new(sender)
    });
    let (reply, answer) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .send((command, reply))
        .expect("the spawner thread runs");
    answer
        .recv()
        .expect("the spawner thread answers")
        .expect("start postgres (scripts/install-test-deps installs postgresql)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_creates_a_database_stops_and_starts_again() {
        let mut server = PostgresServer::start();
        let url = server.create_database("kit_check");
        assert!(url.ends_with("/kit_check"), "{url}");
        let port = server.port;
        server.stop();
        server.start_again();
        assert_eq!(server.port, port);
        // The database made before the stop is still there.
        let output = Command::new(server.bin.join("psql"))
            .args(["-X", "-At", "-d", &url, "-c", "SELECT current_database()"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "kit_check");
    }
}
