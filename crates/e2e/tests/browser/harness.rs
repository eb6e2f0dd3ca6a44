//! Chromedriver and headless Chromium sessions, one per simulated user, plus polling
//! helpers with bounded timeouts.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// Poll interval of every `wait_*` helper.
const POLL: Duration = Duration::from_millis(100);

/// A `chromedriver` child process on a free loopback port, killed on drop.
pub struct ChromeDriver {
    child: Child,
    pub url: String,
    log_path: PathBuf,
    _log_dir: tempfile::TempDir,
}

impl ChromeDriver {
    pub async fn start() -> ChromeDriver {
        assert!(
            Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists(),
            "{CHROMEDRIVER} and {CHROMIUM} are needed: run scripts/install-test-deps"
        );
        let log_dir = tempfile::tempdir().expect("chromedriver log directory");
        let log_path = log_dir.path().join("chromedriver.log");
        let port = privatehub_testkit::free_tcp_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log_path.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let driver = ChromeDriver {
            child,
            url,
            log_path,
            _log_dir: log_dir,
        };
        let status_url = format!("{}/status", driver.url);
        wait_until("chromedriver answers /status", Duration::from_secs(20), || async {
            matches!(reqwest::get(&status_url).await, Ok(response) if response.status().is_success())
        })
        .await;
        driver
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Extra switches for one browser (e.g. `--ignore-certificate-errors` behind nginx).
#[derive(Default, Clone)]
pub struct BrowserOptions {
    pub extra_args: Vec<String>,
    /// Chromium preferences set through chromedriver (`goog:chromeOptions.prefs`).
    pub prefs: Option<Value>,
}

impl BrowserOptions {
    /// A browser whose WebRTC may not use UDP except through a proxy or TURN relay, as
    /// on networks that block UDP. (The command-line switch of the same name did not
    /// stop UDP here; the preference does.)
    pub fn without_udp() -> BrowserOptions {
        BrowserOptions {
            extra_args: Vec::new(),
            prefs: Some(json!({ "webrtc.ip_handling_policy": "disable_non_proxied_udp" })),
        }
    }
}

/// One headless Chromium: one simulated user with its own profile and cookies.
pub struct Browser {
    pub name: String,
    pub client: Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub async fn open(driver: &ChromeDriver, name: &str, options: &BrowserOptions) -> Browser {
        let profile = tempfile::tempdir().expect("browser profile directory");
        let mut args: Vec<String> = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream",
            "--allow-loopback-in-peer-connection",
        ]
        .iter()
        .map(|arg| arg.to_string())
        .collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        args.push("--window-size=1280,860".into());
        args.extend(options.extra_args.iter().cloned());
        let mut chrome_options = json!({ "binary": CHROMIUM, "args": args });
        if let Some(prefs) = &options.prefs {
            chrome_options["prefs"] = prefs.clone();
        }
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": chrome_options,
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        // Both rustls providers are compiled into this binary; pick one explicitly.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = ClientBuilder::rustls()
            .expect("rustls connector")
            .capabilities(capabilities)
            .connect(&driver.url)
            .await
            .unwrap_or_else(|error| {
                panic!("start Chromium for {name}: {error}\n{}", driver.log_tail())
            });
        Browser {
            name: name.to_owned(),
            client,
            _profile: profile,
        }
    }

    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|error| panic!("{}: open {url}: {error}", self.name));
    }

    /// Runs `body` as the body of a function (it may `return` a value or a promise).
    pub async fn js(&self, body: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(body, args)
            .await
            .unwrap_or_else(|error| panic!("{}: script failed: {error}\n{body}", self.name))
    }

    /// Like [`Browser::js`] but returns `None` on a script error (e.g. mid-navigation).
    pub async fn try_js(&self, body: &str) -> Option<Value> {
        self.client.execute(body, vec![]).await.ok()
    }

    pub async fn click(&self, selector: &str) {
        self.client
            .find(Locator::Css(selector))
            .await
            .unwrap_or_else(|error| panic!("{}: find {selector}: {error}", self.name))
            .click()
            .await
            .unwrap_or_else(|error| panic!("{}: click {selector}: {error}", self.name));
    }

    pub async fn type_into(&self, selector: &str, text: &str) {
        let element = self
            .client
            .find(Locator::Css(selector))
            .await
            .unwrap_or_else(|error| panic!("{}: find {selector}: {error}", self.name));
        element.clear().await.ok();
        element
            .send_keys(text)
            .await
            .unwrap_or_else(|error| panic!("{}: type into {selector}: {error}", self.name));
    }

    /// Polls the JS `expression` (which may be a promise) until it is truthy.
    pub async fn wait_js(&self, what: &str, expression: &str, timeout: Duration) {
        let script = format!("return (async () => !!(await ({expression})))();");
        let deadline = Instant::now() + timeout;
        loop {
            if self.try_js(&script).await == Some(Value::Bool(true)) {
                return;
            }
            if Instant::now() >= deadline {
                let state = self
                    .try_js(
                        "return 'state: ' + document.querySelector('#live-status')?.dataset.state \
                         + '\\n' + (window.privatehubDebug?.log ?? []).slice(-25).join('\\n');",
                    )
                    .await
                    .and_then(|value| value.as_str().map(str::to_owned))
                    .unwrap_or_default();
                panic!(
                    "{}: timed out after {timeout:?} waiting for {what} ({expression});\npage {state}",
                    self.name
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The value of the numeric JS `expression` (which may be a promise), NaN on error.
    pub async fn number(&self, expression: &str) -> f64 {
        self.try_js(&format!(
            "return (async () => Number(await ({expression})))();"
        ))
        .await
        .and_then(|value| value.as_f64())
        .unwrap_or(f64::NAN)
    }

    /// Waits until the numeric `expression` rises by more than `by` from its value now.
    /// A counter that restarts (a new peer connection or media element) restarts the
    /// baseline from its new value.
    pub async fn wait_rising(&self, what: &str, expression: &str, by: f64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut baseline = self.number(expression).await;
        let mut last = baseline;
        loop {
            let value = self.number(expression).await;
            if !value.is_nan() {
                if baseline.is_nan() || value < last {
                    baseline = value;
                }
                last = value;
                if value - baseline > by {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{}: timed out after {timeout:?} waiting for {what} ({expression}) to rise by {by}: \
                 from {baseline} to {last}",
                self.name
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Saves a PNG screenshot to every path in `paths`.
    pub async fn screenshot(&self, paths: &[PathBuf]) {
        let png = self
            .client
            .screenshot()
            .await
            .unwrap_or_else(|error| panic!("{}: screenshot: {error}", self.name));
        for path in paths {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).expect("create screenshot directory");
            }
            std::fs::write(path, &png).expect("write screenshot");
        }
    }

    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    /// A test that panics drops its browsers without closing their sessions, and killing
    /// chromedriver does not stop the Chromium it started: without this, Chromium
    /// processes of a failed test outlived it (found still decoding video 13 minutes
    /// later, under a benchmark).
    fn drop(&mut self) {
        kill_processes_with_arg(&format!(
            "--user-data-dir={}",
            self._profile.path().display()
        ));
    }
}

/// Kills (SIGKILL) every process whose command line has `arg` as one argument.
fn kill_processes_with_arg(arg: &str) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    let pids: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            name.parse::<u32>().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            cmdline
                .split(|byte| *byte == 0)
                .any(|part| part == arg.as_bytes())
                .then_some(name)
        })
        .collect();
    if !pids.is_empty() {
        let _ = Command::new("kill")
            .arg("-KILL")
            .args(&pids)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Polls an async condition until true or panics after `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/e2e sits two levels below the workspace root")
        .to_path_buf()
}

/// `target/e2e-artifacts/<name>` under the workspace root.
pub fn artifact_path(name: &str) -> PathBuf {
    workspace_root()
        .join("target")
        .join("e2e-artifacts")
        .join(name)
}
