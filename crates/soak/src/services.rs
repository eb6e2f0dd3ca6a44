//! Starts the release binaries of both services on free loopback ports with a temporary
//! data directory, JSON logs at `info` into files under the output directory, and the
//! per-address limits raised for the churn. (testkit's `ServiceProcess` finds binaries
//! next to a test executable, so it cannot start `target/release` from here; its port
//! helpers are reused.)

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use privatehub_testkit::{free_tcp_port, free_udp_port_range, wait_for_http_ok};

/// How long a service may take to answer `/healthz`.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a service may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Media workers (one UDP port each).
const MEDIA_WORKERS: u16 = 2;

/// Settings the soak gives the app besides addresses and the secret: the per-address
/// caps are for many people behind one NAT, and every soak client comes from loopback.
pub const APP_LIMITS: &[(&str, &str)] = &[
    ("APP_MAX_SOCKETS_PER_IP", "200"),
    ("SIGNUP_MAX_PER_IP", "1000"),
];

/// One running service.
pub struct Service {
    pub name: &'static str,
    child: Child,
    pub log_path: PathBuf,
    /// Set once the process has exited (and been reaped).
    pub exit: Option<ExitStatus>,
}

impl Service {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it still runs; records the exit status when it does not.
    pub fn check_running(&mut self) -> bool {
        if self.exit.is_none()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            self.exit = Some(status);
        }
        self.exit.is_none()
    }

    /// SIGTERM (as systemd stops it), then SIGKILL if it has not exited in time.
    /// Returns whether it exited by itself, cleanly.
    pub fn stop(&mut self) -> bool {
        if !self.check_running() {
            return false;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if !self.check_running() {
                return self.exit.is_some_and(|status| status.success());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        self.exit = self.child.wait().ok();
        false
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if self.check_running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Both services and where they listen.
pub struct Stack {
    pub app: Service,
    pub media: Service,
    pub app_url: String,
    pub media_url: String,
    pub media_ws_url: String,
    pub rtc_ports: (u16, u16),
    /// Environment given to each (secret redacted), for the report.
    pub app_env: Vec<(String, String)>,
    pub media_env: Vec<(String, String)>,
    _data: tempfile::TempDir,
}

impl Stack {
    /// Starts the media server, then the app, and waits for both `/healthz`.
    pub fn start(bin_dir: &Path, log_dir: &Path) -> anyhow::Result<Stack> {
        let data = tempfile::tempdir().context("temporary data directory")?;
        let secret: String = (0..32)
            .map(|_| format!("{:02x}", rand::random::<u8>()))
            .collect();
        let app_port = free_tcp_port();
        let media_port = free_tcp_port();
        let rtc_ports = free_udp_port_range(MEDIA_WORKERS);
        let app_url = format!("http://127.0.0.1:{app_port}");
        let media_url = format!("http://127.0.0.1:{media_port}");
        let media_env: Vec<(String, String)> = [
            ("MEDIA_BIND", "127.0.0.1".to_owned()),
            ("MEDIA_SERVER_PORT", media_port.to_string()),
            ("MEDIA_ANNOUNCED_IP", "127.0.0.1".to_owned()),
            ("MEDIA_RTC_MIN_PORT", rtc_ports.0.to_string()),
            ("MEDIA_RTC_MAX_PORT", rtc_ports.1.to_string()),
            ("MEDIA_WORKERS", MEDIA_WORKERS.to_string()),
            ("CORS_ORIGIN", app_url.clone()),
            ("LOG_FORMAT", "json".to_owned()),
            ("RUST_LOG", "info".to_owned()),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect();
        let database = data.path().join("app").join("privatehub.sqlite");
        let mut app_env: Vec<(String, String)> = [
            ("APP_BIND", "127.0.0.1".to_owned()),
            ("APP_PORT", app_port.to_string()),
            ("APP_PUBLIC_URL", app_url.clone()),
            ("MEDIA_PUBLIC_URL", media_url.clone()),
            ("DATABASE_URL", database.display().to_string()),
            ("LOG_FORMAT", "json".to_owned()),
            ("RUST_LOG", "info".to_owned()),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect();
        app_env.extend(
            APP_LIMITS
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned())),
        );
        let with_secret = |env: &[(String, String)]| {
            let mut env = env.to_vec();
            env.push(("MEDIA_TOKEN_SECRET".into(), secret.clone()));
            env
        };
        let media = spawn(
            "privatehub-media",
            bin_dir,
            &data.path().join("media"),
            log_dir,
            &with_secret(&media_env),
        )?;
        wait_healthy(&media_url, &media)?;
        let app = spawn(
            "privatehub-app",
            bin_dir,
            &data.path().join("app"),
            log_dir,
            &with_secret(&app_env),
        )?;
        wait_healthy(&app_url, &app)?;
        Ok(Stack {
            app,
            media,
            media_ws_url: format!("ws://127.0.0.1:{media_port}/ws"),
            app_url,
            media_url,
            rtc_ports,
            app_env,
            media_env,
            _data: data,
        })
    }
}

fn spawn(
    name: &'static str,
    bin_dir: &Path,
    working_dir: &Path,
    log_dir: &Path,
    env: &[(String, String)],
) -> anyhow::Result<Service> {
    let binary = bin_dir.join(name);
    if !binary.is_file() {
        bail!(
            "{} is missing: run `cargo build --release --bins` (scripts/soak does)",
            binary.display()
        );
    }
    std::fs::create_dir_all(working_dir)?;
    std::fs::create_dir_all(log_dir)?;
    let log_path = log_dir.join(format!("{name}.log"));
    let log = File::create(&log_path).with_context(|| format!("create {}", log_path.display()))?;
    let mut command = Command::new(&binary);
    command
        .current_dir(working_dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", working_dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    for (key, value) in env {
        command.env(key, value);
    }
    let child = command
        .spawn()
        .with_context(|| format!("start {}", binary.display()))?;
    Ok(Service {
        name,
        child,
        log_path,
        exit: None,
    })
}

fn wait_healthy(url: &str, service: &Service) -> anyhow::Result<()> {
    wait_for_http_ok(&format!("{url}/healthz"), START_TIMEOUT).map_err(|error| {
        let log = std::fs::read_to_string(&service.log_path).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        anyhow::anyhow!(
            "{} did not become healthy: {error}\n{}",
            service.name,
            tail.join("\n")
        )
    })
}
