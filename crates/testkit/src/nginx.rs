//! Real nginx (the Debian package) on loopback in front of the services, with the shipped
//! site configuration (`nginx/privatehub.conf.template`, rendered by `nginx/render-config`)
//! and a throw-away self-signed certificate. Runs unprivileged-style: its own prefix,
//! config, logs and pid file in a temporary directory, high loopback ports.
//!
//! The app's `APP_PUBLIC_URL` (checked against `Origin` by the CSRF defence) and the
//! media server's `CORS_ORIGIN` must name the nginx URLs, which are needed before the
//! services start, while nginx needs the services' ports; hence two steps:
//!
//! ```ignore
//! let plan = NginxPlan::new();
//! let stack = start_stack(plan.stack_options(StackOptions::default()));
//! let front = plan.start(&stack);
//! // browsers and clients use front.app_url / front.media_url (https)
//! ```
//!
//! or `let (stack, front) = NginxFront::start_stack(StackOptions::default());`.
//!
//! Names: by default the app's site is `127.0.0.1` and the media site `localhost`, both
//! on one HTTPS port, so every client resolves them without help, and the nginx
//! configuration is exercised exactly as shipped (two `server_name`s on one port). With
//! [`NginxPlan::with_domains`] the sites get real-looking names instead; then clients
//! must map them to 127.0.0.1, e.g. Chromium with [`NginxFront::chromium_args`]
//! (`--host-resolver-rules`) and reqwest with `ClientBuilder::resolve`.
//!
//! The certificate is self-signed: pass `acceptInsecureCerts: true` in WebDriver
//! capabilities, or the flags of [`NginxFront::chromium_args`], or
//! `danger_accept_invalid_certs(true)` to reqwest.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::{RunningStack, StackOptions, free_tcp_port, start_stack};

/// How long nginx may take to open its ports.
const NGINX_START_TIMEOUT: Duration = Duration::from_secs(10);

/// Ports and names chosen before the services start. See the module docs.
#[derive(Debug, Clone)]
pub struct NginxPlan {
    pub https_port: u16,
    pub http_port: u16,
    pub app_domain: String,
    pub media_domain: String,
}

impl Default for NginxPlan {
    fn default() -> Self {
        NginxPlan::new()
    }
}

impl NginxPlan {
    /// Free loopback ports; the app at `127.0.0.1`, the media server at `localhost`.
    pub fn new() -> NginxPlan {
        let https_port = free_tcp_port();
        let http_port = std::iter::repeat_with(free_tcp_port)
            .find(|port| *port != https_port)
            .expect("a second free port");
        NginxPlan {
            https_port,
            http_port,
            app_domain: "127.0.0.1".into(),
            media_domain: "localhost".into(),
        }
    }

    /// Other names for the two sites, e.g. `app.privatehub.test` and
    /// `sfu.privatehub.test` (the certificate covers `*.privatehub.test`). Clients must
    /// then resolve them to 127.0.0.1 themselves.
    pub fn with_domains(mut self, app_domain: &str, media_domain: &str) -> NginxPlan {
        self.app_domain = app_domain.into();
        self.media_domain = media_domain.into();
        self
    }

    /// `https://<app domain>:<port>`, the app's public URL behind nginx.
    pub fn app_url(&self) -> String {
        format!("https://{}:{}", self.app_domain, self.https_port)
    }

    /// `https://<media domain>:<port>`, the media server's public URL behind nginx.
    pub fn media_url(&self) -> String {
        format!("https://{}:{}", self.media_domain, self.https_port)
    }

    /// `options` with the app's and media server's public URLs set to the nginx ones, the
    /// nginx app origin accepted by the media server's CORS check, and the app trusting
    /// nginx's forwarded headers (`TRUST_PROXY_HEADERS=true`), as in production.
    pub fn stack_options(&self, mut options: StackOptions) -> StackOptions {
        options.app_public_url = Some(self.app_url());
        options.media_public_url = Some(self.media_url());
        if !options.extra_cors_origins.contains(&self.app_url()) {
            options.extra_cors_origins.push(self.app_url());
        }
        if !options
            .app_env
            .iter()
            .any(|(name, _)| name == "TRUST_PROXY_HEADERS")
        {
            options
                .app_env
                .push(("TRUST_PROXY_HEADERS".into(), "true".into()));
        }
        options
    }

    /// Starts nginx in front of a running stack.
    pub fn start(self, stack: &RunningStack) -> NginxFront {
        self.start_for_upstreams(stack.app_port, stack.media_port)
    }

    /// Starts nginx in front of whatever listens on loopback `app_port` and `media_port`
    /// (e.g. fake upstreams that record what nginx forwards).
    pub fn start_for_upstreams(self, app_port: u16, media_port: u16) -> NginxFront {
        self.start_for_app_instances(&[app_port], media_port)
    }

    /// Starts nginx in front of several app instances (one upstream `server` each, as
    /// `APP_UPSTREAM=a,b` renders) and one media server.
    pub fn start_for_app_instances(self, app_ports: &[u16], media_port: u16) -> NginxFront {
        let app_upstream = app_ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",");
        let dir = tempfile::Builder::new()
            .prefix("privatehub-nginx-")
            .tempdir()
            .expect("create nginx directory");
        let root = dir.path().to_path_buf();
        let (cert_path, key_path) = self_signed_certificate(&root);
        let acme_webroot = root.join("acme");
        let overrides = [
            ("APP_DOMAIN", self.app_domain.clone()),
            ("MEDIA_DOMAIN", self.media_domain.clone()),
            ("APP_UPSTREAM", app_upstream),
            ("MEDIA_UPSTREAM", format!("127.0.0.1:{media_port}")),
            ("APP_TLS_CERT", cert_path.display().to_string()),
            ("APP_TLS_KEY", key_path.display().to_string()),
            ("MEDIA_TLS_CERT", cert_path.display().to_string()),
            ("MEDIA_TLS_KEY", key_path.display().to_string()),
            ("ACME_WEBROOT", acme_webroot.display().to_string()),
            ("LISTEN_HTTP", format!("127.0.0.1:{}", self.http_port)),
            ("LISTEN_HTTP_V6", String::new()),
            ("LISTEN_HTTPS", format!("127.0.0.1:{}", self.https_port)),
            ("LISTEN_HTTPS_V6", String::new()),
            ("HTTPS_PORT_SUFFIX", format!(":{}", self.https_port)),
        ];
        let site = render_site(&root, &overrides).unwrap_or_else(|error| panic!("{error}"));
        let site_path = root.join("privatehub.conf");
        std::fs::write(&site_path, site).expect("write the rendered site");
        let config_path = write_main_config(&root, &site_path);
        let mut command = Command::new(nginx_binary());
        command
            .arg("-p")
            .arg(&root)
            .arg("-e")
            .arg(root.join("error.log"))
            .arg("-c")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own process group, so the workers can be killed with the master.
            .process_group(0);
        let mut child = command.spawn().expect("start nginx");
        let front_address: SocketAddr = ([127, 0, 0, 1], self.https_port).into();
        let deadline = Instant::now() + NGINX_START_TIMEOUT;
        loop {
            if TcpStream::connect_timeout(&front_address, Duration::from_millis(200)).is_ok() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
                }
                panic!(
                    "nginx exited with {status}: {stderr}\n{}",
                    read(&root.join("error.log"))
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "nginx did not listen on {front_address} within {NGINX_START_TIMEOUT:?}\n{}",
                    read(&root.join("error.log"))
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        NginxFront {
            app_url: self.app_url(),
            media_url: self.media_url(),
            http_url: format!("http://{}:{}", self.app_domain, self.http_port),
            plan: self,
            cert_path,
            key_path,
            acme_webroot,
            site_path,
            config_path,
            child,
            dir,
        }
    }
}

/// nginx running in front of the services; dropped, it is stopped (master and workers)
/// and its directory removed. If the test is panicking, nginx's error log is printed.
pub struct NginxFront {
    /// e.g. `https://127.0.0.1:41234`.
    pub app_url: String,
    /// e.g. `https://localhost:41234`.
    pub media_url: String,
    /// The plain-HTTP side (redirects to HTTPS), on the app's name.
    pub http_url: String,
    pub plan: NginxPlan,
    /// The self-signed certificate (PEM) nginx presents for both names.
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// `ACME_WEBROOT`: files under `.well-known/acme-challenge/` here are served over HTTP.
    pub acme_webroot: PathBuf,
    /// The rendered PrivateHub site, as an operator would install it.
    pub site_path: PathBuf,
    /// The main nginx.conf that includes it.
    pub config_path: PathBuf,
    child: Child,
    dir: tempfile::TempDir,
}

impl NginxFront {
    /// Starts the stack with nginx-facing public URLs, then nginx in front of it.
    pub fn start_stack(options: StackOptions) -> (RunningStack, NginxFront) {
        let plan = NginxPlan::new();
        let stack = start_stack(plan.stack_options(options));
        let front = plan.start(&stack);
        (stack, front)
    }

    /// Chromium flags for this front: map the site names to 127.0.0.1 and trust the
    /// self-signed certificate by its public-key hash (honoured with a custom
    /// `--user-data-dir`, which chromedriver always passes).
    pub fn chromium_args(&self) -> Vec<String> {
        let mut args = vec![format!(
            "--ignore-certificate-errors-spki-list={}",
            spki_sha256_base64(&self.cert_path)
        )];
        let names: Vec<&str> = [&self.plan.app_domain, &self.plan.media_domain]
            .into_iter()
            .map(String::as_str)
            .filter(|name| *name != "localhost" && name.parse::<std::net::IpAddr>().is_err())
            .collect();
        if !names.is_empty() {
            let rules: Vec<String> = names
                .iter()
                .map(|name| format!("MAP {name} 127.0.0.1"))
                .collect();
            args.push(format!("--host-resolver-rules={}", rules.join(",")));
        }
        args
    }

    /// nginx's error log so far.
    pub fn error_log(&self) -> String {
        read(&self.dir.path().join("error.log"))
    }

    /// nginx's access log so far (one line per request).
    pub fn access_log(&self) -> String {
        read(&self.dir.path().join("access.log"))
    }
}

impl Drop for NginxFront {
    fn drop(&mut self) {
        // SIGTERM to the master: fast shutdown, workers included.
        let pid = self.child.id().to_string();
        let _ = shell_kill("-TERM", &pid);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Whatever is left of the process group (workers of a stuck master).
        let _ = shell_kill("-KILL", &format!("-{pid}"));
        let _ = self.child.wait();
        if std::thread::panicking() {
            let _ = writeln!(
                std::io::stderr(),
                "--- nginx error log ---\n{}",
                self.error_log()
            );
        }
    }
}

/// The `nginx` executable: on PATH, else Debian's /usr/sbin/nginx.
pub fn nginx_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nginx"))
            .find(|candidate| candidate.is_file())
    });
    on_path.unwrap_or_else(|| {
        let debian = PathBuf::from("/usr/sbin/nginx");
        assert!(
            debian.is_file(),
            "nginx is not installed: run scripts/install-test-deps (apt-get install nginx)"
        );
        debian
    })
}

/// The repository's `nginx/` directory (template, vars, renderer).
pub fn shipped_nginx_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/testkit sits two levels below the workspace root")
        .join("nginx")
}

/// Renders the shipped site with `nginx/render-config`: the shipped `privatehub.vars`
/// first, then `overrides`. `work_dir` receives the vars file. Errors carry the
/// renderer's message.
pub fn render_site(work_dir: &Path, overrides: &[(&str, String)]) -> Result<String, String> {
    let shipped = shipped_nginx_dir();
    let mut vars = format!("source '{}'\n", shipped.join("privatehub.vars").display());
    for (name, value) in overrides {
        vars.push_str(&format!("{name}='{value}'\n"));
    }
    let vars_path = work_dir.join("test.vars");
    std::fs::write(&vars_path, vars).map_err(|error| error.to_string())?;
    let output = Command::new("bash")
        .arg(shipped.join("render-config"))
        .arg(&vars_path)
        .output()
        .map_err(|error| format!("run render-config: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "render-config failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    String::from_utf8(output.stdout).map_err(|error| error.to_string())
}

/// Writes `nginx.conf` into `root`: foreground, logs/pid/temp files under `root`, the
/// site included inside `http {}` as Debian's sites-enabled would.
pub fn write_main_config(root: &Path, site_path: &Path) -> PathBuf {
    let dir = root.display();
    // As root, workers would otherwise drop to `nobody`, who cannot use this directory.
    let user = if running_as_root() {
        "user root;\n"
    } else {
        ""
    };
    let config = format!(
        "{user}daemon off;
master_process on;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{
    worker_connections 512;
}}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    include {site};
}}
",
        site = site_path.display()
    );
    let path = root.join("nginx.conf");
    std::fs::write(&path, config).expect("write nginx.conf");
    path
}

/// `nginx -t` on `config_path` with prefix `root`.
pub fn test_config(root: &Path, config_path: &Path) -> Output {
    Command::new(nginx_binary())
        .arg("-t")
        .arg("-p")
        .arg(root)
        .arg("-e")
        .arg(root.join("error.log"))
        .arg("-c")
        .arg(config_path)
        .output()
        .expect("run nginx -t")
}

/// A self-signed P-256 certificate for `localhost`, `127.0.0.1`, `::1` and
/// `*.privatehub.test`, valid two days, written to `dir` as (cert.pem, key.pem).
pub fn self_signed_certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let output = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec"])
        .args(["-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=privatehub-test"])
        .args([
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1,DNS:privatehub.test,DNS:*.privatehub.test",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl (scripts/install-test-deps installs it)");
    assert!(
        output.status.success(),
        "openssl req failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    (cert, key)
}

/// base64(SHA-256(SubjectPublicKeyInfo)) of a PEM certificate, as Chromium's
/// `--ignore-certificate-errors-spki-list` wants it.
pub fn spki_sha256_base64(cert_path: &Path) -> String {
    let script = "openssl x509 -in \"$1\" -pubkey -noout | openssl pkey -pubin -outform der \
                  | openssl dgst -sha256 -binary | openssl base64 -A";
    let output = Command::new("sh")
        .args(["-c", script, "sh"])
        .arg(cert_path)
        .output()
        .expect("run openssl");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// `kill SIGNAL TARGET` through the shell's built-in (no procps needed; the workspace
/// forbids the unsafe code a direct `kill(2)` would take).
fn shell_kill(signal: &str, target: &str) -> std::io::Result<std::process::ExitStatus> {
    Command::new("sh")
        .args(["-c", "kill \"$1\" \"$2\"", "sh", signal, target])
        .stderr(Stdio::null())
        .status()
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|output| output.stdout.trim_ascii() == b"0")
        .unwrap_or(false)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
