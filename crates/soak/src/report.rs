//! The run's record: raw samples (JSON and CSV under the output directory) and the
//! `## Soak` section of `docs/reliability.md`, which this rewrites and nothing else.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::logs::LogScan;
use crate::sampler::{OtherProcess, Sample};
use crate::tally::TallySnapshot;
use crate::verdict::{MEMORY_TOLERANCE, MemoryVerdict, OPEN_FILES_ALLOWANCE, OpenFilesVerdict};

/// Heading of the section this tool owns.
pub const SECTION_HEADING: &str = "## Soak";

/// The document as first written, before any soak run.
const SKELETON_INTRO: &str = "\
# Reliability

How PrivateHub holds up over time and under bad input and failures. Three sections:

- [Soak](#soak): both services for an hour under constant viewer, chat and publisher
  churn; memory, open files, log errors and client failures (`scripts/soak`).
- [Fuzzing](#fuzzing): the parsers and protocol handlers fed random and malformed input.
- [Faults](#faults): what happens when a service, the database or the network fails.
";

const FUZZING_PLACEHOLDER: &str = "## Fuzzing\n\n_Being written; see below once filled in._\n";
const FAULTS_PLACEHOLDER: &str = "## Faults\n\n_Being written; see below once filled in._\n";

/// One service's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceRecord {
    pub name: String,
    pub memory: Option<MemoryVerdict>,
    pub open_files: OpenFilesVerdict,
    /// Open files by kind before the churn and after every client left.
    pub open_files_by_kind: [BTreeMap<String, u64>; 2],
    /// Threads: baseline, peak, end.
    pub threads: [u64; 3],
    /// RSS after every client left, KiB.
    pub rss_after_drain_kb: u64,
    pub cpu_mean_pct: f64,
    pub log: LogScan,
    /// Whether it ran until the soak stopped it.
    pub stayed_up: bool,
    /// Whether it exited by itself with status 0 on SIGTERM.
    pub clean_stop: bool,
    pub exit: String,
}

/// Where the machine and the build stood.
#[derive(Debug, Clone, Serialize)]
pub struct Environment {
    pub started_at: String,
    pub commit: String,
    /// Tracked files under crates/ and migrations/ that differed from the commit.
    pub uncommitted: Vec<String>,
    pub cpu_model: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub app_env: Vec<(String, String)>,
    pub media_env: Vec<(String, String)>,
}

/// How the churn was set up.
#[derive(Debug, Clone, Serialize)]
pub struct Parameters {
    pub minutes: f64,
    pub warmup_minutes: f64,
    pub warmup_is_half: bool,
    pub interrupted: bool,
    pub sample_secs: f64,
    pub settle_secs: f64,
    pub viewers: usize,
    pub viewer_stay: String,
    pub viewer_gap: String,
    pub chatters: usize,
    pub anonymous: usize,
    pub chat_stay: String,
    pub chat_interval: String,
    pub publisher_reconnect_secs: f64,
    pub bitrate_kbps: u32,
    pub fps: u32,
    pub notes: Vec<String>,
}

/// Everything one run produced.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub parameters: Parameters,
    pub environment: Environment,
    pub churn_start_s: f64,
    pub warmup_end_s: f64,
    pub churn_end_s: f64,
    pub app: ServiceRecord,
    pub media: ServiceRecord,
    pub clients: TallySnapshot,
    pub machine_cpu_mean_pct: f64,
    pub soak_cpu_mean_pct: f64,
    pub other_processes: Vec<OtherProcess>,
    pub samples: Vec<Sample>,
}

impl RunRecord {
    pub fn memory_pass(&self) -> bool {
        [&self.app, &self.media]
            .iter()
            .all(|service| service.memory.as_ref().is_some_and(|memory| memory.pass))
    }

    pub fn files_pass(&self) -> bool {
        self.app.open_files.pass && self.media.open_files.pass
    }

    pub fn logs_pass(&self) -> bool {
        self.app.log.problem_lines() == 0 && self.media.log.problem_lines() == 0
    }

    pub fn client_failures(&self) -> u64 {
        self.clients
            .failures
            .values()
            .map(|record| record.count)
            .sum()
    }

    pub fn services_pass(&self) -> bool {
        [&self.app, &self.media]
            .iter()
            .all(|service| service.stayed_up && service.clean_stop)
    }

    pub fn pass(&self) -> bool {
        self.memory_pass()
            && self.files_pass()
            && self.logs_pass()
            && self.client_failures() == 0
            && self.services_pass()
            && !self.parameters.interrupted
    }
}

/// Writes `soak.json` and `samples.csv` into `dir`.
pub fn write_raw(dir: &Path, record: &RunRecord) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("soak.json"),
        serde_json::to_string_pretty(record)? + "\n",
    )?;
    let mut csv = String::from(
        "t_s,phase,app_rss_kb,app_open_files,app_threads,app_cpu_pct,media_rss_kb,media_open_files,media_threads,media_cpu_pct,app_sockets_open,media_peers,media_signaling_sockets,viewers_active,chat_sockets_active,machine_cpu_pct\n",
    );
    let optional = |value: Option<f64>| value.map(|v| v.to_string()).unwrap_or_default();
    for sample in &record.samples {
        let _ = writeln!(
            csv,
            "{:.1},{},{},{},{},{:.1},{},{},{},{:.1},{},{},{},{},{},{:.1}",
            sample.t_s,
            serde_json::to_value(sample.phase)?
                .as_str()
                .unwrap_or_default(),
            sample.app.rss_kb,
            sample.app.open_files,
            sample.app.threads,
            sample.app.cpu_pct,
            sample.media.rss_kb,
            sample.media.open_files,
            sample.media.threads,
            sample.media.cpu_pct,
            optional(sample.app_sockets_open),
            optional(sample.media_peers),
            optional(sample.media_signaling_sockets),
            sample.viewers_active,
            sample.chat_sockets_active,
            sample.machine_cpu_pct,
        );
    }
    std::fs::write(dir.join("samples.csv"), csv)?;
    Ok(())
}

/// `existing` (the document, if any) with its Soak section replaced by `body`.
pub fn with_section(existing: Option<&str>, body: &str) -> String {
    let body = body.trim_end();
    let Some(existing) = existing else {
        return format!(
            "{SKELETON_INTRO}\n{SECTION_HEADING}\n\n{body}\n\n{FUZZING_PLACEHOLDER}\n{FAULTS_PLACEHOLDER}"
        );
    };
    let lines: Vec<&str> = existing.lines().collect();
    let start = lines
        .iter()
        .position(|line| line.trim_end() == SECTION_HEADING);
    let Some(start) = start else {
        // No Soak section yet: put it before the first other section, or at the end.
        let before = lines
            .iter()
            .position(|line| line.starts_with("## "))
            .unwrap_or(lines.len());
        let mut out = lines[..before].join("\n").trim_end().to_owned();
        let _ = write!(out, "\n\n{SECTION_HEADING}\n\n{body}\n\n");
        out.push_str(&lines[before..].join("\n"));
        return out.trim_end().to_owned() + "\n";
    };
    let end = lines[start + 1..]
        .iter()
        .position(|line| line.starts_with("## "))
        .map_or(lines.len(), |offset| start + 1 + offset);
    let mut out = lines[..start].join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    let _ = write!(out, "{SECTION_HEADING}\n\n{body}\n");
    if end < lines.len() {
        out.push('\n');
        out.push_str(&lines[end..].join("\n"));
        out.push('\n');
    }
    out
}

fn verdict(pass: bool) -> &'static str {
    if pass { "**PASS**" } else { "**FAIL**" }
}

fn mib(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}

fn memory_cell(memory: &Option<MemoryVerdict>) -> String {
    match memory {
        Some(memory) => format!(
            "{} → {} ({:+.1} %)",
            mib(memory.reference_kb),
            mib(memory.end_kb),
            memory.change_pct
        ),
        None => "no samples".into(),
    }
}

/// The Markdown of the Soak section (without its heading). `svg_link` is the plot's
/// path relative to the document.
pub fn render_section(record: &RunRecord, svg_link: &str) -> String {
    let parameters = &record.parameters;
    let environment = &record.environment;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "`scripts/soak` builds the release binaries, starts both services on free loopback ports
with a temporary database, and keeps them under churn for an hour (`--minutes N` for another
length; `--no-build` to skip the build): one publisher bot (`crates/loadgen`) in a live the
soak creates through the app's API (sign-up, `POST /api/lives/start`, publish token),
reconnecting now and then; viewer bots that fetch a watch token, join, check that a keyframe
arrives, stay a random while and leave; signed-in chat sockets that join the live's room and
post within the chat rate limit, each message checked to come back to its sender, then
log out and in again (a new session, the password hashed again) before the next socket;
and anonymous chat sockets; all of them disconnecting and reconnecting all the time. Every
{} s it samples both processes (RSS from `/proc/PID/status`, open files in `/proc/PID/fd`,
threads, CPU) and their `/metrics` gauges. At the end every client leaves, and after
{} s the last sample is the open-files figure. The driver is `crates/soak`
(`privatehub-soak`); it writes the raw samples, logs and this section's data under
`target/soak/` and exits non-zero on any FAIL.

Criteria: **memory** — the median RSS of the last minute of churn at most
{:.0} % above the median of the minute ending the warm-up (the first 10 minutes; the first
half for runs shorter than 20 minutes; a drop passes); **open files** — after every client
left, at most {} above the count before the churn; **logs** — no WARN or ERROR line in either
service's log (`LOG_FORMAT=json`, `RUST_LOG=info`); **clients** — no bot that failed to
join or never got a keyframe within 10 s, no chat socket that failed to join or was closed
by the server, no chat message not echoed to its sender within 5 s, no failed log-in; **services** — both up
for the whole run and exiting cleanly on SIGTERM.
",
        parameters.sample_secs,
        parameters.settle_secs,
        MEMORY_TOLERANCE * 100.0,
        OPEN_FILES_ALLOWANCE
    );
    let _ = writeln!(
        out,
        "### Latest run: {}, {} minutes, {}\n",
        environment.started_at,
        parameters.minutes,
        verdict(record.pass())
    );
    if parameters.minutes < 60.0 {
        let _ = writeln!(
            out,
            "This run lasted {} minutes (`--minutes {}`); the default is 60.{}\n",
            parameters.minutes,
            parameters.minutes,
            if parameters.warmup_is_half {
                format!(
                    " Being shorter than 20 minutes, it used its first half ({} minutes) as warm-up.",
                    parameters.warmup_minutes
                )
            } else {
                String::new()
            }
        );
    }
    if parameters.interrupted {
        let _ = writeln!(out, "The run was interrupted (Ctrl-C) before its end.\n");
    }
    for note in &parameters.notes {
        let _ = writeln!(out, "{note}\n");
    }
    let (app, media) = (&record.app, &record.media);
    let _ = writeln!(
        out,
        "| Criterion | privatehub-app | privatehub-media | Verdict |\n|---|---|---|---|"
    );
    let _ = writeln!(
        out,
        "| Memory: end of churn vs end of warm-up (≤ +{:.0} %) | {} | {} | {} |",
        MEMORY_TOLERANCE * 100.0,
        memory_cell(&app.memory),
        memory_cell(&media.memory),
        verdict(record.memory_pass())
    );
    let files = |files: &OpenFilesVerdict| {
        format!("{} → {} (peak {})", files.baseline, files.end, files.peak)
    };
    let _ = writeln!(
        out,
        "| Open files: before churn → after every client left (≤ +{}) | {} | {} | {} |",
        OPEN_FILES_ALLOWANCE,
        files(&app.open_files),
        files(&media.open_files),
        verdict(record.files_pass())
    );
    let _ = writeln!(
        out,
        "| WARN/ERROR log lines | {} | {} | {} |",
        app.log.problem_lines(),
        media.log.problem_lines(),
        verdict(record.logs_pass())
    );
    let _ = writeln!(
        out,
        "| Client failures (all clients) | {} | | {} |",
        record.client_failures(),
        verdict(record.client_failures() == 0)
    );
    let up = |service: &ServiceRecord| {
        format!(
            "{}, {}",
            if service.stayed_up { "up" } else { "**died**" },
            if service.clean_stop {
                "clean stop".to_owned()
            } else {
                format!("stop: {}", service.exit)
            }
        )
    };
    let _ = writeln!(
        out,
        "| Services up all run, clean exit on SIGTERM | {} | {} | {} |\n",
        up(app),
        up(media),
        verdict(record.services_pass())
    );
    let _ = writeln!(
        out,
        "![RSS, open files and clients of both services over the run]({svg_link})\n"
    );

    let _ = writeln!(out, "#### Figures\n");
    let _ = writeln!(
        out,
        "| | privatehub-app | privatehub-media |\n|---|---|---|"
    );
    let memory_row = |label: &str, value: &dyn Fn(&MemoryVerdict) -> String| {
        format!(
            "| {label} | {} | {} |",
            app.memory.as_ref().map_or("–".into(), value),
            media.memory.as_ref().map_or("–".into(), value)
        )
    };
    let _ = writeln!(
        out,
        "{}",
        memory_row("RSS at end of warm-up (median of a minute)", &|m| mib(
            m.reference_kb
        ))
    );
    let _ = writeln!(
        out,
        "{}",
        memory_row("RSS at end of churn (median of a minute)", &|m| mib(
            m.end_kb
        ))
    );
    let _ = writeln!(
        out,
        "{}",
        memory_row("Highest RSS after warm-up", &|m| mib(m.max_after_warmup_kb))
    );
    let _ = writeln!(
        out,
        "{}",
        memory_row("RSS trend after warm-up (least squares)", &|m| format!(
            "{:+.0} KiB/min",
            m.slope_kb_per_min
        ))
    );
    let _ = writeln!(
        out,
        "| RSS after every client left | {} | {} |",
        mib(app.rss_after_drain_kb),
        mib(media.rss_after_drain_kb)
    );
    let _ = writeln!(
        out,
        "| Threads: before churn / peak / after | {} / {} / {} | {} / {} / {} |",
        app.threads[0],
        app.threads[1],
        app.threads[2],
        media.threads[0],
        media.threads[1],
        media.threads[2]
    );
    let _ = writeln!(
        out,
        "| CPU during churn (mean, % of one core) | {:.1} % | {:.1} % |",
        app.cpu_mean_pct, media.cpu_mean_pct
    );
    let _ = writeln!(
        out,
        "| Log lines (size) | {} ({:.1} MiB) | {} ({:.1} MiB) |\n",
        app.log.lines,
        app.log.bytes as f64 / 1_048_576.0,
        media.log.lines,
        media.log.bytes as f64 / 1_048_576.0
    );
    for service in [app, media] {
        let [before, after] = &service.open_files_by_kind;
        let changes: Vec<String> = before
            .keys()
            .chain(after.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .filter_map(|kind| {
                let (old, new) = (
                    before.get(kind).copied().unwrap_or(0),
                    after.get(kind).copied().unwrap_or(0),
                );
                (old != new).then(|| format!("`{kind}` {old} → {new}"))
            })
            .collect();
        if !changes.is_empty() {
            let _ = writeln!(
                out,
                "Open files of {} after every client left, against before the churn: {}.\n",
                service.name,
                changes.join(", ")
            );
        }
    }
    let clients = &record.clients;
    let event = |name: &str| clients.events.get(name).copied().unwrap_or(0);
    let latency = |name: &str| {
        clients
            .latencies_ms
            .get(name)
            .map_or("–".to_owned(), |[p50, p95, max]| {
                format!("{p50} / {p95} / {max} ms")
            })
    };
    let churn_minutes = ((record.churn_end_s - record.churn_start_s) / 60.0).max(1e-9);
    let _ = writeln!(
        out,
        "Clients: {} viewer joins ({:.0} per minute), {} with a keyframe, first keyframe p50 / p95 / max {}; \
{} chat sockets opened ({:.0} per minute), {} joined the room; {} chat messages sent, {} echoed, \
echo p50 / p95 / max {}; {} log-out and log-in cycles, p50 / p95 / max {}; {} publisher connections \
({} reconnects leaving first, {} replacing the old one).\n",
        event("viewer_joined"),
        event("viewer_joined") as f64 / churn_minutes,
        event("viewer_got_keyframe"),
        latency("viewer_first_keyframe"),
        event("chat_socket_opened"),
        event("chat_socket_opened") as f64 / churn_minutes,
        event("chat_room_joined"),
        event("chat_message_sent"),
        event("chat_message_echoed"),
        latency("chat_echo"),
        event("chat_user_signed_in_again"),
        latency("log_out_and_in"),
        event("publisher_connected"),
        event("publisher_reconnect_leaving"),
        event("publisher_reconnect_replacing"),
    );

    let _ = writeln!(out, "#### Log lines at WARN or ERROR\n");
    let findings: Vec<(&str, &crate::logs::LogFinding)> = [("app", app), ("media", media)]
        .iter()
        .flat_map(|(name, service)| {
            service
                .log
                .findings
                .iter()
                .map(move |finding| (*name, finding))
        })
        .collect();
    if findings.is_empty() {
        let _ = writeln!(out, "None in either log.\n");
    } else {
        let _ = writeln!(
            out,
            "| Service | Level | Target | Message (digits as #) | Count |\n|---|---|---|---|---|"
        );
        for (service, finding) in &findings {
            let _ = writeln!(
                out,
                "| {service} | {} | `{}` | {} | {} |",
                finding.level,
                finding.target,
                table_text(&finding.message),
                finding.count
            );
        }
        let _ = writeln!(out, "\nFirst line of each, as logged:\n\n```");
        for (service, finding) in &findings {
            let _ = writeln!(out, "{service}: {}", finding.example);
        }
        let _ = writeln!(out, "```\n");
    }

    let _ = writeln!(out, "#### Client failures\n");
    if clients.failures.is_empty() {
        let _ = writeln!(out, "None.\n");
    } else {
        let _ = writeln!(
            out,
            "| Kind | Count | First at | Example |\n|---|---|---|---|"
        );
        for (kind, failure) in &clients.failures {
            let _ = writeln!(
                out,
                "| {kind} | {} | {:.0} s | {} |",
                failure.count,
                failure.first_at_s - record.churn_start_s,
                table_text(&failure.example)
            );
        }
        let _ = writeln!(out);
    }

    let _ = writeln!(out, "#### Parameters\n");
    let _ = writeln!(
        out,
        "- Duration: {} minutes of churn, warm-up {} minutes, a sample every {} s, {} s settling after the clients left.",
        parameters.minutes,
        parameters.warmup_minutes,
        parameters.sample_secs,
        parameters.settle_secs
    );
    let _ = writeln!(
        out,
        "- Viewers: {} slots, each staying {} then pausing {} before joining again (about {:.0} joins per minute measured).",
        parameters.viewers,
        parameters.viewer_stay,
        parameters.viewer_gap,
        event("viewer_joined") as f64 / churn_minutes
    );
    let _ = writeln!(
        out,
        "- Chat: {} signed-in and {} anonymous sockets at a time, each staying {}; one message per signed-in socket every {} after the previous one's echo (the limit is 5 per 5 s per user); a log-out and log-in between a signed-in slot's sockets; sockets and sign-ins from 16 source addresses 127.0.0.10–25.",
        parameters.chatters, parameters.anonymous, parameters.chat_stay, parameters.chat_interval
    );
    let _ = writeln!(
        out,
        "- Publisher: {} kbit/s VP8 at {} fps plus Opus-sized audio; reconnects every {} s, alternately leaving first and publishing anew first (the server replaces the old one).",
        parameters.bitrate_kbps, parameters.fps, parameters.publisher_reconnect_secs
    );
    let settings: Vec<String> = environment
        .app_env
        .iter()
        .filter(|(key, _)| {
            crate::services::APP_LIMITS
                .iter()
                .any(|(limit, _)| limit == key)
        })
        .chain(
            environment
                .media_env
                .iter()
                .filter(|(key, _)| key == "MEDIA_WORKERS"),
        )
        .map(|(key, value)| format!("`{key}={value}`"))
        .collect();
    let _ = writeln!(
        out,
        "- Settings: {}, `LOG_FORMAT=json`, `RUST_LOG=info`, everything else default.",
        settings.join(", ")
    );
    let _ = writeln!(
        out,
        "- Machine: {}, {} cores, {:.0} GiB RAM, Linux {}.",
        environment.cpu_model, environment.cores, environment.memory_gib, environment.kernel
    );
    let build = if environment.uncommitted.is_empty() {
        format!("commit `{}`", environment.commit)
    } else {
        format!(
            "commit `{}` plus uncommitted changes in {} (the working tree at the time)",
            environment.commit,
            environment
                .uncommitted
                .iter()
                .map(|path| format!("`{path}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let _ = writeln!(out, "- Build: release, {build}.");
    let others: Vec<String> = record
        .other_processes
        .iter()
        .take(6)
        .map(|process| {
            format!(
                "{} {:.0} s ({})",
                process.command,
                process.cpu_s,
                if process.processes == 1 {
                    "1 process".to_owned()
                } else {
                    format!("{} processes", process.processes)
                }
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "- Also running: the machine's CPU averaged {:.0} % of all cores during the churn, of which the soak's clients {:.0} % of one core and the two services {:.0} %; CPU time of other processes seen: {}.",
        record.machine_cpu_mean_pct,
        record.soak_cpu_mean_pct,
        app.cpu_mean_pct + media.cpu_mean_pct,
        if others.is_empty() {
            "none".to_owned()
        } else {
            others.join(", ")
        }
    );
    let _ = writeln!(
        out,
        "- Raw data: `target/soak/soak.json` (everything above plus every sample), `target/soak/samples.csv`, the two services' logs in `target/soak/`."
    );
    out
}

/// Text safe inside a Markdown table cell.
fn table_text(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_document_gets_all_three_sections() {
        let text = with_section(None, "run one");
        assert!(text.starts_with("# Reliability"));
        let soak = text.find("## Soak\n\nrun one\n").unwrap();
        let fuzzing = text.find("## Fuzzing").unwrap();
        let faults = text.find("## Faults").unwrap();
        assert!(soak < fuzzing && fuzzing < faults);
    }

    #[test]
    fn only_the_soak_section_is_replaced() {
        let first = with_section(None, "run one");
        let edited = first.replace(
            "## Fuzzing\n\n_Being written; see below once filled in._",
            "## Fuzzing\n\nFuzzed for a day.",
        );
        let second = with_section(Some(&edited), "run two\n\n### Latest run");
        assert!(
            second.contains(
                "## Soak\n\nrun two\n\n### Latest run\n\n## Fuzzing\n\nFuzzed for a day."
            )
        );
        assert!(!second.contains("run one"));
        assert!(second.contains("## Faults"));
        let without = with_section(Some("# Title\n\nintro\n\n## Faults\n\nx\n"), "body");
        assert!(without.contains("intro\n\n## Soak\n\nbody\n\n## Faults"));
    }
}
