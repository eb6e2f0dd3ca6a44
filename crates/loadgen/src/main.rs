//! `privatehub-loadgen run …` runs one load run and prints its JSON report;
//! `privatehub-loadgen summarize …` turns many reports into the benchmark documents.
//! `privatehub-loadgen help` lists the options.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use privatehub_loadgen::summary::{SummaryInputs, write_summary};
use privatehub_loadgen::{RunConfig, RunReport, ServerTarget, StreamSpec, VerifyMode, run};

const HELP: &str = "\
privatehub-loadgen run --server privatehub|janus [options]
  --url URL              signaling WebSocket (privatehub: ws://127.0.0.1:PORT/ws, janus: ws://127.0.0.1:8188/)
  --secret S             MEDIA_TOKEN_SECRET (privatehub)
  --live-id N            live to publish into and watch (privatehub, default 1)
  --origin O             Origin header (privatehub, default http://127.0.0.1)
  --room N               Janus VideoRoom room created for the run (default 4242)
  --viewers N            viewer bots (default 10)
  --bitrate-kbps N       video bitrate (default 2000)
  --fps N                video frame rate (default 30)
  --keyframe-interval N  frames between periodic keyframes (default 60)
  --no-audio             video only
  --simulcast            publish three simulcast layers (q/h/f at 1/10, 1/3, 1 of the bitrate)
  --bind IP              address the bots bind and announce (default 127.0.0.1)
  --threads N            viewer driver threads (default 2)
  --verify MODE          viewer verification: sampled (default; loss from every packet's RTP
                         header, SRTP decryption and delays for 1 frame in 16 per stream) or
                         full (str0m decrypts every packet; for correctness runs)
  --join-concurrency N   viewers signaling at once (default 32)
  --join-timeout S       seconds to wait for every viewer's first keyframe (default 20)
  --warmup S             seconds between the joins and the window (default 2)
  --duration S           measurement window in seconds (default 10)
  --server-pid PID       server process to measure (CPU, RSS)
  --metrics-url URL      server's Prometheus endpoint, scraped around the window
  --out FILE             also write the JSON report to FILE

privatehub-loadgen summarize --out-json FILE --out-md FILE --svg-dir DIR [--quick] [--conditions TEXT] REPORT.json...
";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("run") => run_command(&args[1..]),
        Some("summarize") => summarize_command(&args[1..]),
        _ => {
            print!("{HELP}");
            Ok(())
        }
    }
}

/// `--key value` options, `--flag` switches and positional arguments.
struct Options {
    values: HashMap<String, String>,
    flags: Vec<String>,
    positional: Vec<String>,
}

impl Options {
    fn parse(args: &[String], switches: &[&str]) -> anyhow::Result<Options> {
        let mut options = Options {
            values: HashMap::new(),
            flags: Vec::new(),
            positional: Vec::new(),
        };
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            if let Some(name) = arg.strip_prefix("--") {
                if switches.contains(&name) {
                    options.flags.push(name.to_owned());
                } else {
                    let value = iter
                        .next()
                        .with_context(|| format!("--{name} needs a value"))?;
                    options.values.insert(name.to_owned(), value.clone());
                }
            } else {
                options.positional.push(arg.clone());
            }
        }
        Ok(options)
    }

    fn get<T: std::str::FromStr>(&self, name: &str, default: T) -> anyhow::Result<T> {
        match self.values.get(name) {
            Some(value) => value
                .parse()
                .map_err(|_| anyhow::anyhow!("--{name}: cannot parse {value:?}")),
            None => Ok(default),
        }
    }

    fn string(&self, name: &str) -> Option<String> {
        self.values.get(name).cloned()
    }

    fn flag(&self, name: &str) -> bool {
        self.flags.iter().any(|flag| flag == name)
    }
}

fn run_command(args: &[String]) -> anyhow::Result<()> {
    let options = Options::parse(args, &["no-audio", "simulcast"])?;
    let server = options
        .string("server")
        .context("--server privatehub|janus")?;
    let target = match server.as_str() {
        "privatehub" => ServerTarget::PrivateHub {
            ws_url: options.string("url").context("--url")?,
            origin: options
                .string("origin")
                .unwrap_or_else(|| "http://127.0.0.1".into()),
            secret: options.string("secret").context("--secret")?,
            live_id: options.get("live-id", 1)?,
        },
        "janus" => ServerTarget::Janus {
            ws_url: options
                .string("url")
                .unwrap_or_else(|| "ws://127.0.0.1:8188/".into()),
            room: options.get("room", 4242)?,
        },
        other => bail!("unknown --server {other}"),
    };
    let config = RunConfig {
        target,
        viewers: options.get("viewers", 10)?,
        stream: StreamSpec {
            video_kbps: options.get("bitrate-kbps", 2000)?,
            fps: options.get("fps", 30)?,
            keyframe_interval_frames: options.get("keyframe-interval", 60)?,
            audio: !options.flag("no-audio"),
            simulcast: options.flag("simulcast"),
        },
        bind_ip: options.get("bind", IpAddr::from([127, 0, 0, 1]))?,
        driver_threads: options.get("threads", 2)?,
        join_concurrency: options.get("join-concurrency", 32)?,
        join_timeout: Duration::from_secs_f64(options.get("join-timeout", 20.0)?),
        warmup: Duration::from_secs_f64(options.get("warmup", 2.0)?),
        window: Duration::from_secs_f64(options.get("duration", 10.0)?),
        metrics_url: options.string("metrics-url"),
        verify: match options.string("verify") {
            Some(mode) => mode
                .parse()
                .map_err(|error: String| anyhow::anyhow!("--verify: {error}"))?,
            None => VerifyMode::default(),
        },
        server_pid: options
            .values
            .get("server-pid")
            .map(|pid| pid.parse())
            .transpose()?,
    };
    let report = run(&config)?;
    let json = serde_json::to_string_pretty(&report)?;
    println!("{json}");
    if let Some(path) = options.string("out") {
        std::fs::write(&path, format!("{json}\n")).with_context(|| format!("write {path}"))?;
    }
    Ok(())
}

fn summarize_command(args: &[String]) -> anyhow::Result<()> {
    let options = Options::parse(args, &["quick"])?;
    let mut reports: Vec<RunReport> = Vec::new();
    for path in &options.positional {
        let text = std::fs::read_to_string(path).with_context(|| format!("read {path}"))?;
        reports.push(serde_json::from_str(&text).with_context(|| format!("parse {path}"))?);
    }
    let inputs = SummaryInputs {
        reports,
        conditions: options.string("conditions").unwrap_or_default(),
        quick: options.flag("quick"),
        out_json: PathBuf::from(options.string("out-json").context("--out-json")?),
        out_md: options.string("out-md").map(PathBuf::from),
        svg_dir: options.string("svg-dir").map(PathBuf::from),
    };
    write_summary(&inputs)
}
