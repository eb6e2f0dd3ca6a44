//! A throwaway coturn (Debian's `turnserver`) on loopback, configured from the shipped
//! `deploy/coturn/turnserver.conf` with only its addresses, ports, secret and log
//! changed, so the tests exercise the configuration operators install.

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_tcp_port;

const TURNSERVER: &str = "/usr/bin/turnserver";

/// Settings of the shipped file the test replaces (their lines are dropped).
const REPLACED_KEYS: &[&str] = &[
    "listening-port",
    "tls-listening-port",
    "listening-ip",
    "relay-ip",
    "external-ip",
    "static-auth-secret",
    "realm",
    "server-name",
    "cert",
    "pkey",
    "allowed-peer-ip",
    "syslog",
    "simple-log",
    "pidfile",
    "log-file",
];

/// A running coturn; dropped, it is killed and its directory removed.
pub struct TurnServer {
    /// TURN over UDP and TCP, on 127.0.0.1.
    pub port: u16,
    /// TURN over TLS (`turns:`), when started with [`TurnServer::start_with_tls`]: a
    /// self-signed certificate for 127.0.0.1, so clients must not verify it.
    pub tls_port: Option<u16>,
    /// Its `static-auth-secret`.
    pub secret: String,
    child: Child,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

/// The shipped coturn configuration.
pub fn shipped_coturn_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/coturn/turnserver.conf")
}

impl TurnServer {
    /// Starts coturn with `secret` on a free loopback port. Relaying is allowed to
    /// 127.0.0.1 only: the explicit exception the shipped file's `allowed-peer-ip`
    /// makes for the media server's address.
    pub fn start(secret: &str) -> TurnServer {
        Self::start_on(free_tcp_port(), secret)
    }

    /// Like [`TurnServer::start`], with TURN over TLS on a second port too.
    pub fn start_with_tls(secret: &str) -> TurnServer {
        Self::launch(free_tcp_port(), secret, Some(free_tcp_port()))
    }

    /// Like [`TurnServer::start`] on a given port (e.g. the port of one just stopped).
    pub fn start_on(port: u16, secret: &str) -> TurnServer {
        Self::launch(port, secret, None)
    }

    fn launch(port: u16, secret: &str, tls_port: Option<u16>) -> TurnServer {
        assert!(
            Path::new(TURNSERVER).exists(),
            "{TURNSERVER} is needed: run scripts/install-test-deps (Debian package coturn)"
        );
        let dir = tempfile::tempdir().expect("coturn directory");
        let shipped =
            std::fs::read_to_string(shipped_coturn_config()).expect("read shipped coturn config");
        let mut config: Vec<String> = shipped
            .lines()
            .filter(|line| {
                let key = line.split('=').next().unwrap_or("").trim();
                !REPLACED_KEYS.contains(&key)
            })
            .map(str::to_owned)
            .collect();
        let log_path = dir.path().join("turnserver.log");
        config.extend([
            "listening-ip=127.0.0.1".to_owned(),
            "relay-ip=127.0.0.1".to_owned(),
            format!("listening-port={port}"),
            format!("static-auth-secret={secret}"),
            "realm=privatehub.test".to_owned(),
            // The media server listens on loopback here: coturn refuses loopback peers
            // unless told, and then the shipped deny-all still applies to all but it.
            "allow-loopback-peers".to_owned(),
            "allowed-peer-ip=127.0.0.1".to_owned(),
            format!("log-file={}", log_path.display()),
            "simple-log".to_owned(),
            "verbose".to_owned(),
            format!("pidfile={}", dir.path().join("turnserver.pid").display()),
        ]);
        match tls_port {
            Some(tls_port) => {
                let (cert, key) = crate::nginx::self_signed_certificate(dir.path());
                config.extend([
                    format!("tls-listening-port={tls_port}"),
                    format!("cert={}", cert.display()),
                    format!("pkey={}", key.display()),
                ]);
            }
            // TURN over UDP and TCP only.
            None => config.push("no-tls".to_owned()),
        }
        let config_path = dir.path().join("turnserver.conf");
        std::fs::write(&config_path, config.join("\n") + "\n").expect("write coturn config");
        let child = Command::new(TURNSERVER)
            .arg("-c")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start turnserver");
        let mut server = TurnServer {
            port,
            tls_port,
            secret: secret.to_owned(),
            child,
            log_path,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        let listening = |port: u16| TcpStream::connect(("127.0.0.1", port)).is_ok();
        while !listening(port) || tls_port.is_some_and(|tls_port| !listening(tls_port)) {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("turnserver exited with {status}\n{}", server.log_tail(40));
            }
            assert!(
                Instant::now() < deadline,
                "turnserver did not listen on 127.0.0.1:{port}\n{}",
                server.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// The whole log so far (coturn writes it with a date in the name next to the
    /// configured path, so every file of that stem is read).
    pub fn log(&self) -> String {
        let mut text = String::new();
        let Some(dir) = self.log_path.parent() else {
            return text;
        };
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|entry| entry.path())
                    .filter(|path| {
                        path.file_name()
                            .and_then(|name| name.to_str())
                            .is_some_and(|name| {
                                name.starts_with("turnserver") && name.ends_with(".log")
                            })
                    })
                    .collect()
            })
            .unwrap_or_default();
        paths.sort();
        for path in paths {
            if let Ok(mut file) = std::fs::File::open(path) {
                let _ = file.read_to_string(&mut text);
            }
        }
        text
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log();
        let all: Vec<&str> = text.lines().collect();
        format!(
            "--- last log lines of turnserver ---\n{}",
            all[all.len().saturating_sub(lines)..].join("\n")
        )
    }

    /// Stops it (SIGKILL) and waits, keeping the port free for [`TurnServer::start_on`].
    pub fn stop(mut self) -> u16 {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.port
    }
}

impl Drop for TurnServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
