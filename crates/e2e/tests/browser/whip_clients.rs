//! WHIP and WHEP clients built on a WebRTC stack we did not write, run as child
//! processes: the aiortc scripts of `crates/e2e/python`, in the virtual environment
//! `scripts/install-test-venv` makes. (Debian 12's `simple-whip-client` aborts at start:
//! it links libsoup2 while GStreamer's libnice pulls in libsoup3.)

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use crate::harness::workspace_root;

/// A running client and its JSON event lines.
pub struct ClientProcess {
    pub name: String,
    child: Child,
    /// Read by a task of its own, so a chatty client never blocks on a full pipe.
    lines: UnboundedReceiver<String>,
    seen: Vec<String>,
}

fn python() -> PathBuf {
    let python = workspace_root().join("target/test-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/install-test-venv",
        python.display()
    );
    python
}

fn script(name: &str) -> String {
    workspace_root()
        .join("crates/e2e/python")
        .join(name)
        .display()
        .to_string()
}

impl ClientProcess {
    fn spawn(name: &str, mut command: Command) -> ClientProcess {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("start {name}: {error}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, lines) = unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        ClientProcess {
            name: name.to_owned(),
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// aiortc publishing a test pattern and a tone to `url` with `key`.
    pub fn whip_publish(url: &str, key: &str, extra: &[&str]) -> ClientProcess {
        let mut command = Command::new(python());
        command
            .arg(script("whip_publish.py"))
            .args(["--url", url, "--token", key])
            .args(extra);
        ClientProcess::spawn("aiortc WHIP publisher", command)
    }

    /// aiortc playing `url` until `frames` video frames are decoded.
    pub fn whep_play(url: &str, frames: u32) -> ClientProcess {
        let mut command = Command::new(python());
        command.arg(script("whep_play.py")).args([
            "--url",
            url,
            "--frames",
            &frames.to_string(),
            "--timeout",
            "30",
        ]);
        ClientProcess::spawn("aiortc WHEP player", command)
    }

    /// Waits for the next line matching `accept`; panics with what was seen after
    /// `timeout` or when the process ends.
    pub async fn wait_line(
        &mut self,
        what: &str,
        timeout: Duration,
        accept: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, self.lines.recv()).await;
            match next {
                Ok(Some(line)) => {
                    self.seen.push(line.clone());
                    if accept(&line) {
                        return line;
                    }
                }
                Ok(_) => panic!(
                    "{} ended before {what}; it printed:\n{}",
                    self.name,
                    self.seen.join("\n")
                ),
                Err(_) => panic!(
                    "{} did not report {what} within {timeout:?}; it printed:\n{}",
                    self.name,
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Waits for the JSON event `event` (aiortc scripts) and returns it.
    pub async fn wait_event(&mut self, event: &str, timeout: Duration) -> Value {
        let line = self
            .wait_line(event, timeout, |line| {
                serde_json::from_str::<Value>(line).is_ok_and(|value| value["event"] == event)
            })
            .await;
        serde_json::from_str(&line).expect("JSON event")
    }

    /// SIGTERM (the clients then send `DELETE`), and waits for the exit.
    pub async fn stop(mut self) -> Vec<String> {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        while let Ok(Some(line)) =
            tokio::time::timeout(Duration::from_secs(10), self.lines.recv()).await
        {
            self.seen.push(line);
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        self.seen
    }

    /// Kills the client without letting it say goodbye (a lost connection).
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// Sends `signal` (e.g. `USR1`: the aiortc publisher pauses or resumes its video).
    pub fn signal(&self, signal: &str) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args([&format!("-{signal}"), &pid.to_string()])
                .status();
        }
    }

    /// Waits for the process to exit by itself; its exit code.
    pub async fn exit_code(mut self, timeout: Duration) -> Option<i32> {
        let status = tokio::time::timeout(timeout, self.child.wait()).await;
        status.ok()?.ok()?.code()
    }
}
