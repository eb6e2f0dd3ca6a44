//! Command-line options of `privatehub-soak` (what `scripts/soak` passes through).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};

pub const HELP: &str = "\
privatehub-soak [options]   (scripts/soak builds the release binaries and runs this)
  --minutes N                 churn duration (default 60)
  --warmup-minutes N          warm-up before the memory reference (default 10; half the
                              run when it is shorter than 20 minutes)
  --viewers N                 viewer bots coming and going at once, at most (default 40)
  --viewer-stay S1-S2         seconds a viewer stays (default 10-60)
  --viewer-gap S1-S2          seconds before a viewer slot joins again (default 0.5-2)
  --chatters N                signed-in chat sockets at once (default 10)
  --anonymous N               anonymous chat sockets at once (default 10)
  --chat-stay S1-S2           seconds a chat socket stays (default 10-60)
  --chat-interval S1-S2       seconds between one user's messages (default 1.5-3)
  --publisher-reconnect S     seconds between publisher reconnects (default 300)
  --bitrate-kbps N            publisher video bitrate (default 500)
  --fps N                     publisher frame rate (default 30)
  --sample-secs S             sampling period (default 10)
  --settle-secs S             wait after every client left before the last sample (default 20)
  --bin-dir DIR               where privatehub-app and privatehub-media are (default target/release)
  --out-dir DIR               raw samples, logs, plot (default target/soak)
  --doc FILE                  report to update, section \"## Soak\" (default docs/reliability.md)
  --svg FILE                  plot for the report (default docs/soak-memory.svg)
  --no-docs                   write the report and plot under --out-dir only
  --note TEXT                 a sentence added to the report (repeatable)
";

/// A random range of seconds, `a-b`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SecondsRange {
    pub min: f64,
    pub max: f64,
}

impl SecondsRange {
    pub fn parse(text: &str) -> anyhow::Result<SecondsRange> {
        let (min, max) = text.split_once('-').unwrap_or((text, text));
        let min: f64 = min.trim().parse().context("range start")?;
        let max: f64 = max.trim().parse().context("range end")?;
        if !(min >= 0.0 && max >= min) {
            bail!("bad range {text}: want a-b with 0 <= a <= b");
        }
        Ok(SecondsRange { min, max })
    }

    /// A uniformly random duration inside the range.
    pub fn pick(&self) -> Duration {
        let seconds = if self.max > self.min {
            rand::random_range(self.min..self.max)
        } else {
            self.min
        };
        Duration::from_secs_f64(seconds)
    }
}

impl std::fmt::Display for SecondsRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}–{} s", self.min, self.max)
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub minutes: f64,
    pub warmup_minutes: f64,
    /// The warm-up is half the run (the run is shorter than 20 minutes).
    pub warmup_is_half: bool,
    pub viewers: usize,
    pub viewer_stay: SecondsRange,
    pub viewer_gap: SecondsRange,
    pub chatters: usize,
    pub anonymous: usize,
    pub chat_stay: SecondsRange,
    pub chat_interval: SecondsRange,
    pub publisher_reconnect: Duration,
    pub bitrate_kbps: u32,
    pub fps: u32,
    pub sample_every: Duration,
    pub settle: Duration,
    pub bin_dir: PathBuf,
    pub out_dir: PathBuf,
    pub doc: PathBuf,
    pub svg: PathBuf,
    pub write_docs: bool,
    pub notes: Vec<String>,
}

/// Runs shorter than this use their first half as warm-up.
const SHORT_RUN_MINUTES: f64 = 20.0;
const DEFAULT_WARMUP_MINUTES: f64 = 10.0;

impl Options {
    /// Parses `args` (without the program name); `None` means help was asked for.
    pub fn parse(args: &[String]) -> anyhow::Result<Option<Options>> {
        let mut options = Options {
            minutes: 60.0,
            warmup_minutes: DEFAULT_WARMUP_MINUTES,
            warmup_is_half: false,
            viewers: 40,
            viewer_stay: SecondsRange {
                min: 10.0,
                max: 60.0,
            },
            viewer_gap: SecondsRange { min: 0.5, max: 2.0 },
            chatters: 10,
            anonymous: 10,
            chat_stay: SecondsRange {
                min: 10.0,
                max: 60.0,
            },
            chat_interval: SecondsRange { min: 1.5, max: 3.0 },
            publisher_reconnect: Duration::from_secs(300),
            bitrate_kbps: 500,
            fps: 30,
            sample_every: Duration::from_secs(10),
            settle: Duration::from_secs(20),
            bin_dir: PathBuf::from("target/release"),
            out_dir: PathBuf::from("target/soak"),
            doc: PathBuf::from("docs/reliability.md"),
            svg: PathBuf::from("docs/soak-memory.svg"),
            write_docs: true,
            notes: Vec::new(),
        };
        let mut warmup_given = None;
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            let name = arg
                .strip_prefix("--")
                .with_context(|| format!("unexpected argument {arg}"))?;
            match name {
                "help" | "h" => return Ok(None),
                "no-docs" => {
                    options.write_docs = false;
                    continue;
                }
                _ => {}
            }
            let value = iter
                .next()
                .with_context(|| format!("--{name} needs a value"))?;
            let context = || format!("--{name} {value}");
            match name {
                "minutes" => options.minutes = value.parse().with_context(context)?,
                "warmup-minutes" => warmup_given = Some(value.parse().with_context(context)?),
                "viewers" => options.viewers = value.parse().with_context(context)?,
                "viewer-stay" => options.viewer_stay = SecondsRange::parse(value)?,
                "viewer-gap" => options.viewer_gap = SecondsRange::parse(value)?,
                "chatters" => options.chatters = value.parse().with_context(context)?,
                "anonymous" => options.anonymous = value.parse().with_context(context)?,
                "chat-stay" => options.chat_stay = SecondsRange::parse(value)?,
                "chat-interval" => options.chat_interval = SecondsRange::parse(value)?,
                "publisher-reconnect" => {
                    options.publisher_reconnect =
                        Duration::from_secs_f64(value.parse().with_context(context)?)
                }
                "bitrate-kbps" => options.bitrate_kbps = value.parse().with_context(context)?,
                "fps" => options.fps = value.parse().with_context(context)?,
                "sample-secs" => {
                    options.sample_every =
                        Duration::from_secs_f64(value.parse().with_context(context)?)
                }
                "settle-secs" => {
                    options.settle = Duration::from_secs_f64(value.parse().with_context(context)?)
                }
                "bin-dir" => options.bin_dir = PathBuf::from(value),
                "out-dir" => options.out_dir = PathBuf::from(value),
                "doc" => options.doc = PathBuf::from(value),
                "svg" => options.svg = PathBuf::from(value),
                "note" => options.notes.push(value.clone()),
                _ => bail!("unknown option --{name} (see --help)"),
            }
        }
        if options.minutes.is_nan() || options.minutes <= 0.0 {
            bail!("--minutes must be positive");
        }
        if options.chat_interval.min < 1.0 {
            bail!("--chat-interval below 1 s would break the chat rate limit (5 per 5 s)");
        }
        match warmup_given {
            Some(minutes) => options.warmup_minutes = minutes,
            None if options.minutes < SHORT_RUN_MINUTES => {
                options.warmup_minutes = options.minutes / 2.0;
                options.warmup_is_half = true;
            }
            None => {}
        }
        if options.warmup_minutes >= options.minutes {
            bail!("the warm-up must be shorter than the run");
        }
        if !options.write_docs {
            options.doc = options.out_dir.join("reliability.md");
            options.svg = options.out_dir.join("soak-memory.svg");
        }
        Ok(Some(options))
    }

    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.minutes * 60.0)
    }

    pub fn warmup(&self) -> Duration {
        Duration::from_secs_f64(self.warmup_minutes * 60.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Options {
        let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
        Options::parse(&args).unwrap().unwrap()
    }

    #[test]
    fn short_runs_warm_up_for_half_the_run() {
        let options = parse(&["--minutes", "3"]);
        assert!(options.warmup_is_half);
        assert_eq!(options.warmup_minutes, 1.5);
        let options = parse(&["--minutes", "30"]);
        assert!(!options.warmup_is_half);
        assert_eq!(options.warmup_minutes, 10.0);
        assert_eq!(parse(&[]).minutes, 60.0);
    }

    #[test]
    fn ranges_parse_and_stay_inside() {
        let range = SecondsRange::parse("10-60").unwrap();
        assert_eq!((range.min, range.max), (10.0, 60.0));
        let picked = range.pick().as_secs_f64();
        assert!((10.0..=60.0).contains(&picked));
        assert!(SecondsRange::parse("5-1").is_err());
        let args = vec!["--chat-interval".to_owned(), "0.5-1".to_owned()];
        assert!(Options::parse(&args).is_err());
    }
}
