//! A service binary running as a child process, its output in a log file, killed on drop.

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// Source folders whose changes make a built binary stale, per binary.
fn source_dirs(binary_name: &str) -> &'static [&'static str] {
    match binary_name {
        "privatehub-app" => &["crates/app", "crates/protocol", "migrations"],
        "privatehub-media" => &["crates/media", "crates/protocol"],
        _ => &["crates/protocol"],
    }
}

/// A running service. Dropping it kills the process; if the test is panicking, the tail
/// of the service's log is printed to help explain the failure.
pub struct ServiceProcess {
    name: String,
    child: Child,
    log_path: PathBuf,
    working_dir: PathBuf,
    env: Vec<(String, String)>,
}

impl ServiceProcess {
    /// Starts binary `name` in `working_dir` with `env` added to a minimal environment
    /// (PATH, HOME and RUST_LOG from the test's own environment only).
    pub fn spawn(name: &str, working_dir: &Path, env: &[(String, String)]) -> ServiceProcess {
        let log_path = working_dir.join(format!("{name}.log"));
        let log = File::create(&log_path).expect("create service log file");
        let child = start_child(name, working_dir, env, log);
        ServiceProcess {
            name: name.to_owned(),
            child,
            log_path,
            working_dir: working_dir.to_owned(),
            env: env.to_vec(),
        }
    }

    /// Starts the service again with the same settings (same ports, same data), its
    /// output appended to the same log. Kills the old process first if it still runs.
    pub fn restart(&mut self) {
        self.kill();
        let log = File::options()
            .append(true)
            .open(&self.log_path)
            .expect("reopen service log file");
        self.child = start_child(&self.name, &self.working_dir, &self.env, log);
    }

    /// Sends SIGTERM, as systemd does to stop a service.
    pub fn terminate(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {} failed", self.child.id());
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn start_child(name: &str, working_dir: &Path, env: &[(String, String)], log: File) -> Child {
    let binary = binary_path(name);
    let mut command = Command::new(&binary);
    command
        .current_dir(working_dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", working_dir)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log handle"))
        .stderr(log);
    for (key, value) in env {
        command.env(key, value);
    }
    command
        .spawn()
        .unwrap_or_else(|error| panic!("start {}: {error}", binary.display()))
}

impl ServiceProcess {
    /// Process id, e.g. to read its CPU time or memory from /proc.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Path of the file that receives the service's stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(&self.log_path) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    /// The last `lines` lines of the log, headed by the service name.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log();
        let all: Vec<&str> = text.lines().collect();
        let start = all.len().saturating_sub(lines);
        format!(
            "--- last log lines of {} ---\n{}",
            self.name,
            all[start..].join("\n")
        )
    }

    /// Kills the process (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let _ = writeln!(std::io::stderr(), "{}", self.log_tail(60));
        }
    }
}

/// Path of a workspace binary next to the running test executable
/// (`target/<profile>/deps/test-xxxx` → `target/<profile>/<name>`). Panics with the fix
/// when it is missing or older than the sources.
pub fn binary_path(name: &str) -> PathBuf {
    let test_executable = std::env::current_exe().expect("path of the test executable");
    let profile_dir = test_executable
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    let binary = profile_dir.join(name);
    let built = std::fs::metadata(&binary)
        .and_then(|metadata| metadata.modified())
        .unwrap_or_else(|_| {
            panic!(
                "{} is missing: run `cargo build --workspace --bins` first (scripts/test does)",
                binary.display()
            )
        });
    let root = workspace_root();
    if let Some(newest) = source_dirs(name)
        .iter()
        .filter_map(|dir| newest_modification(&root.join(dir)))
        .max()
        && newest > built + Duration::from_secs(1)
    {
        panic!(
            "{} is older than the sources: run `cargo build --workspace --bins` first",
            binary.display()
        );
    }
    binary
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/testkit sits two levels below the workspace root")
        .to_path_buf()
}

fn newest_modification(path: &Path) -> Option<SystemTime> {
    let metadata = std::fs::metadata(path).ok()?;
    if metadata.is_file() {
        return metadata.modified().ok();
    }
    let mut newest = None;
    for entry in std::fs::read_dir(path).ok()?.flatten() {
        let child = entry.path();
        // Tests and docs do not go into the binary: neither do `tests/` folders nor
        // `tests.rs` unit-test modules (cargo does not relink for them, so counting them
        // would call a fresh binary stale).
        if child
            .file_name()
            .is_some_and(|name| name == "tests" || name == "target" || name == "tests.rs")
        {
            continue;
        }
        newest = newest.max(newest_modification(&child));
    }
    newest
}

/// Polls `url` (plain `http://host:port/path`) until it answers 200 or `timeout` passes.
pub fn wait_for_http_ok(url: &str, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut last_error = String::from("no attempt made");
    while Instant::now() < deadline {
        match http_get_status(url) {
            Ok(200) => return Ok(()),
            Ok(status) => last_error = format!("status {status}"),
            Err(error) => last_error = error,
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("{url}: {last_error} after {timeout:?}"))
}

fn http_get_status(url: &str) -> Result<u16, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("only http:// URLs are supported: {url}"))?;
    let (authority, path) = match rest.find('/') {
        Some(index) => (&rest[..index], &rest[index..]),
        None => (rest, "/"),
    };
    let mut stream = TcpStream::connect(authority).map_err(|error| error.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|error| error.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|error| error.to_string())?;
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .split_whitespace()
        .nth(1)
        .and_then(|status| status.parse().ok())
        .ok_or_else(|| "no HTTP status line".to_string())
}
