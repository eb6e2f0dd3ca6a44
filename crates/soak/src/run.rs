//! One soak run, step by step: start the services, set up the accounts and the live,
//! churn while sampling, let every client leave, settle, stop the services, judge.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use privatehub_loadgen::StreamSpec;
use privatehub_loadgen::bot::SoloBots;
use privatehub_loadgen::proc_stats::CpuClock;

use crate::app_api::AppClient;
use crate::chat::{ChatSlot, run_slot, source_address};
use crate::logs::LogScan;
use crate::media_bots::{MediaTarget, run_publisher, run_viewer_slot};
use crate::options::Options;
use crate::plot::{Marker, Panel, Series, render};
use crate::report::{
    Environment, Parameters, RunRecord, ServiceRecord, render_section, with_section, write_raw,
};
use crate::sampler::{Phase, Sample, Sampler, open_files_by_kind};
use crate::services::{Service, Stack};
use crate::tally::Tally;
use crate::{environment, verdict};

/// The live's owner (the publisher's account).
const CHANNEL: &str = "soakhost";
/// Wait after set-up before the baseline sample, longer than the app's HTTP keep-alive
/// (5 s), so the set-up's idle connections are closed again.
const QUIET_BEFORE_BASELINE: Duration = Duration::from_secs(7);
/// Longest wait for the clients to leave once the churn ends.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn soak(options: &Options) -> anyhow::Result<RunRecord> {
    let started = Instant::now();
    let started_at = environment::now_utc();
    let (commit, uncommitted) = environment::build_state();
    std::fs::create_dir_all(&options.out_dir)?;
    let mut stack =
        tokio::task::block_in_place(|| Stack::start(&options.bin_dir, &options.out_dir))?;
    println!(
        "soak: app {} (pid {}), media {} (pid {}, UDP {}-{}); logs in {}",
        stack.app_url,
        stack.app.pid(),
        stack.media_url,
        stack.media.pid(),
        stack.rtc_ports.0,
        stack.rtc_ports.1,
        options.out_dir.display()
    );
    let mut sampler = Sampler::new(
        started,
        stack.app.pid(),
        stack.media.pid(),
        &stack.app_url,
        &stack.media_url,
    );
    let tally = Arc::new(Tally::new(started));
    let mut samples: Vec<Sample> = Vec::new();
    let take = |sampler: &mut Sampler, samples: &mut Vec<Sample>, phase: Phase, tally: &Tally| {
        let sample = tokio::task::block_in_place(|| {
            sampler.sample(
                phase,
                tally
                    .viewers_active
                    .load(std::sync::atomic::Ordering::Relaxed),
                tally
                    .chat_sockets_active
                    .load(std::sync::atomic::Ordering::Relaxed),
            )
        });
        samples.push(sample);
    };
    take(&mut sampler, &mut samples, Phase::Setup, &tally);

    // Set-up through the app's real API.
    let owner = AppClient::signup(&stack.app_url, CHANNEL, None).await?;
    let live_id = owner.start_live("Soak test").await?;
    let mut chat_users = Vec::new();
    for index in 0..options.chatters {
        let source = Some(source_address(index).into());
        chat_users
            .push(AppClient::signup(&stack.app_url, &format!("soakchat{index}"), source).await?);
    }
    println!(
        "soak: live {live_id} of {CHANNEL} started, {} chat users signed up",
        chat_users.len()
    );
    tokio::time::sleep(QUIET_BEFORE_BASELINE).await;
    take(&mut sampler, &mut samples, Phase::Setup, &tally);
    let baseline = samples.last().cloned().context("no baseline sample")?;
    let baseline_kinds = (
        open_files_by_kind(stack.app.pid()),
        open_files_by_kind(stack.media.pid()),
    );

    // Churn.
    let churn_start = started.elapsed();
    let warmup_end = churn_start + options.warmup();
    let churn_end = churn_start + options.duration();
    let own_cpu = CpuClock::default();
    let own_cpu_start = own_cpu.cpu_time(None).unwrap_or_default();
    let target = MediaTarget {
        ws_url: stack.media_ws_url.clone(),
        origin: stack.app_url.clone(),
        channel: CHANNEL.to_owned(),
        runtime: tokio::runtime::Handle::current(),
        bots: Arc::new(SoloBots::new(Ipv4Addr::LOCALHOST.into())?),
    };
    let mut threads = Vec::new();
    {
        let (target, tally) = (target.clone(), tally.clone());
        let stream = StreamSpec {
            video_kbps: options.bitrate_kbps,
            fps: options.fps,
            keyframe_interval_frames: options.fps * 2,
            audio: true,
            simulcast: false,
        };
        let reconnect = options.publisher_reconnect;
        threads.push(std::thread::spawn(move || {
            run_publisher(target, owner, stream, reconnect, tally)
        }));
    }
    for index in 0..options.viewers {
        let (target, tally) = (target.clone(), tally.clone());
        let (stay, gap) = (options.viewer_stay, options.viewer_gap);
        threads.push(std::thread::spawn(move || {
            run_viewer_slot(index, target, stay, gap, tally)
        }));
    }
    let mut tasks = Vec::new();
    let slots = chat_users
        .into_iter()
        .map(Some)
        .chain((0..options.anonymous).map(|_| None));
    for (index, user) in slots.enumerate() {
        let slot = ChatSlot {
            index,
            app_url: stack.app_url.clone(),
            channel: CHANNEL.to_owned(),
            user,
            stay: options.chat_stay,
            interval: options.chat_interval,
        };
        tasks.push(tokio::spawn(run_slot(slot, tally.clone())));
    }
    drop(target);
    println!(
        "soak: churn for {} minutes (warm-up {} minutes): {} viewer slots, {} signed-in and {} anonymous chat slots",
        options.minutes,
        options.warmup_minutes,
        options.viewers,
        options.chatters,
        options.anonymous
    );

    let mut interrupted = false;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut next_sample = tokio::time::Instant::now() + options.sample_every;
    let mut next_progress = Instant::now();
    while started.elapsed() < churn_end {
        let wake = next_sample
            .min(tokio::time::Instant::now() + churn_end.saturating_sub(started.elapsed()));
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            _ = &mut ctrl_c => {
                interrupted = true;
                break;
            }
        }
        if tokio::time::Instant::now() < next_sample {
            continue;
        }
        next_sample += options.sample_every;
        let phase = if started.elapsed() < warmup_end {
            Phase::Warmup
        } else {
            Phase::Churn
        };
        take(&mut sampler, &mut samples, phase, &tally);
        if !(stack.app.check_running() && stack.media.check_running()) {
            println!("soak: a service exited; ending the churn");
            break;
        }
        if Instant::now() >= next_progress {
            next_progress = Instant::now() + Duration::from_secs(60);
            print_progress(samples.last(), &tally, churn_start, started);
        }
    }
    let churn_end_actual = started.elapsed();
    let own_cpu_end = own_cpu.cpu_time(None).unwrap_or_default();

    // Every client leaves.
    tally.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let leave_deadline = tokio::time::Instant::now() + LEAVE_TIMEOUT;
    for task in tasks {
        let _ = tokio::time::timeout_at(leave_deadline, task).await;
    }
    tokio::task::block_in_place(|| {
        for thread in threads {
            let _ = thread.join();
        }
    });
    println!("soak: every client left; settling for {:?}", options.settle);
    let settle_end = tokio::time::Instant::now() + options.settle;
    loop {
        let now = tokio::time::Instant::now();
        let wait = options
            .sample_every
            .min(settle_end.saturating_duration_since(now));
        tokio::time::sleep(wait).await;
        take(&mut sampler, &mut samples, Phase::Drain, &tally);
        if tokio::time::Instant::now() >= settle_end {
            break;
        }
    }
    let end_kinds = (
        open_files_by_kind(stack.app.pid()),
        open_files_by_kind(stack.media.pid()),
    );
    let stayed_up = (stack.app.check_running(), stack.media.check_running());
    let (app_clean, media_clean) =
        tokio::task::block_in_place(|| (stack.app.stop(), stack.media.stop()));

    let churn_samples: Vec<&Sample> = samples
        .iter()
        .filter(|sample| matches!(sample.phase, Phase::Warmup | Phase::Churn))
        .collect();
    let end = samples.last().cloned().context("no samples")?;
    let churn_wall = (churn_end_actual - churn_start).as_secs_f64().max(1e-3);
    let service_record =
        |service: &Service,
         pick: fn(&Sample) -> &crate::sampler::ProcessSample,
         stayed_up: bool,
         clean_stop: bool,
         kinds: [std::collections::BTreeMap<String, u64>; 2]| {
            let memory_series: Vec<(f64, u64)> = churn_samples
                .iter()
                .map(|sample| (sample.t_s, pick(sample).rss_kb))
                .collect();
            let cpu: Vec<f64> = churn_samples
                .iter()
                .skip(1)
                .map(|sample| pick(sample).cpu_pct)
                .collect();
            ServiceRecord {
                name: service.name.to_owned(),
                memory: verdict::memory(
                    &memory_series,
                    warmup_end.as_secs_f64(),
                    churn_end_actual.as_secs_f64(),
                ),
                open_files: verdict::open_files(
                    pick(&baseline).open_files,
                    samples
                        .iter()
                        .map(|sample| pick(sample).open_files)
                        .max()
                        .unwrap_or(0),
                    pick(&end).open_files,
                ),
                open_files_by_kind: kinds,
                threads: [
                    pick(&baseline).threads,
                    samples
                        .iter()
                        .map(|sample| pick(sample).threads)
                        .max()
                        .unwrap_or(0),
                    pick(&end).threads,
                ],
                rss_after_drain_kb: pick(&end).rss_kb,
                cpu_mean_pct: mean(&cpu),
                log: LogScan::read(&service.log_path),
                stayed_up,
                clean_stop,
                exit: service
                    .exit
                    .map_or("still running".to_owned(), |status| status.to_string()),
            }
        };
    let app = service_record(
        &stack.app,
        |sample| &sample.app,
        stayed_up.0,
        app_clean,
        [baseline_kinds.0, end_kinds.0],
    );
    let media = service_record(
        &stack.media,
        |sample| &sample.media,
        stayed_up.1,
        media_clean,
        [baseline_kinds.1, end_kinds.1],
    );
    let machine: Vec<f64> = churn_samples
        .iter()
        .skip(1)
        .map(|sample| sample.machine_cpu_pct)
        .collect();
    Ok(RunRecord {
        parameters: Parameters {
            minutes: options.minutes,
            warmup_minutes: options.warmup_minutes,
            warmup_is_half: options.warmup_is_half,
            interrupted,
            sample_secs: options.sample_every.as_secs_f64(),
            settle_secs: options.settle.as_secs_f64(),
            viewers: options.viewers,
            viewer_stay: options.viewer_stay.to_string(),
            viewer_gap: options.viewer_gap.to_string(),
            chatters: options.chatters,
            anonymous: options.anonymous,
            chat_stay: options.chat_stay.to_string(),
            chat_interval: options.chat_interval.to_string(),
            publisher_reconnect_secs: options.publisher_reconnect.as_secs_f64(),
            bitrate_kbps: options.bitrate_kbps,
            fps: options.fps,
            notes: options.notes.clone(),
        },
        environment: Environment {
            started_at,
            commit,
            uncommitted,
            cpu_model: environment::cpu_model(),
            cores: environment::cores(),
            memory_gib: environment::memory_gib(),
            kernel: environment::kernel(),
            app_env: stack.app_env.clone(),
            media_env: stack.media_env.clone(),
        },
        churn_start_s: churn_start.as_secs_f64(),
        warmup_end_s: warmup_end.as_secs_f64(),
        churn_end_s: churn_end_actual.as_secs_f64(),
        app,
        media,
        clients: tally.snapshot(),
        machine_cpu_mean_pct: mean(&machine),
        soak_cpu_mean_pct: (own_cpu_end.saturating_sub(own_cpu_start)).as_secs_f64() * 100.0
            / churn_wall,
        other_processes: sampler.other_processes(),
        samples,
    })
}

fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

fn print_progress(sample: Option<&Sample>, tally: &Tally, churn_start: Duration, started: Instant) {
    let Some(sample) = sample else { return };
    println!(
        "soak: {:>5.1} min  app {:.1} MiB {} fds  media {:.1} MiB {} fds  viewers {}  chat {}  failures {}",
        (started.elapsed() - churn_start).as_secs_f64() / 60.0,
        sample.app.rss_kb as f64 / 1024.0,
        sample.app.open_files,
        sample.media.rss_kb as f64 / 1024.0,
        sample.media.open_files,
        sample.viewers_active,
        sample.chat_sockets_active,
        tally.failure_count(),
    );
}

/// Raw data under the output directory, the plot, and the report section.
pub fn write_outputs(options: &Options, record: &RunRecord) -> anyhow::Result<()> {
    write_raw(&options.out_dir, record)?;
    let svg = plot(record);
    std::fs::write(options.out_dir.join("soak-memory.svg"), &svg)?;
    if let Some(parent) = options.svg.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&options.svg, &svg)?;
    let svg_link = if options.svg.parent() == options.doc.parent() {
        options
            .svg
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        std::path::absolute(&options.svg)?.display().to_string()
    };
    let existing = std::fs::read_to_string(&options.doc).ok();
    let document = with_section(existing.as_deref(), &render_section(record, &svg_link));
    if let Some(parent) = options.doc.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&options.doc, document)?;
    println!(
        "soak: wrote {}, {} and {}",
        options.doc.display(),
        options.svg.display(),
        options.out_dir.join("soak.json").display()
    );
    Ok(())
}

const APP_COLOR: &str = "#1f77b4";
const MEDIA_COLOR: &str = "#d62728";

fn plot(record: &RunRecord) -> String {
    let minutes = |sample: &Sample| (sample.t_s - record.churn_start_s) / 60.0;
    let series =
        |label: &str, color: &'static str, value: &dyn Fn(&Sample) -> Option<f64>| Series {
            label: label.to_owned(),
            color,
            points: record
                .samples
                .iter()
                .filter_map(|sample| value(sample).map(|v| (minutes(sample), v)))
                .collect(),
        };
    let panels = [
        Panel {
            title: "Resident memory (VmRSS), MiB".into(),
            series: vec![
                series("app", APP_COLOR, &|s| Some(s.app.rss_kb as f64 / 1024.0)),
                series("media", MEDIA_COLOR, &|s| {
                    Some(s.media.rss_kb as f64 / 1024.0)
                }),
            ],
        },
        Panel {
            title: "Open files (/proc/PID/fd)".into(),
            series: vec![
                series("app", APP_COLOR, &|s| Some(s.app.open_files as f64)),
                series("media", MEDIA_COLOR, &|s| Some(s.media.open_files as f64)),
            ],
        },
        Panel {
            title: "Clients".into(),
            series: vec![
                series("app sockets", APP_COLOR, &|s| s.app_sockets_open),
                series("media peers", MEDIA_COLOR, &|s| s.media_peers),
                series("viewer bots", "#2ca02c", &|s| Some(s.viewers_active as f64)),
            ],
        },
    ];
    let at = |t_s: f64| (t_s - record.churn_start_s) / 60.0;
    let markers = [
        Marker {
            x: 0.0,
            label: "churn starts".into(),
        },
        Marker {
            x: at(record.warmup_end_s),
            label: "warm-up ends".into(),
        },
        Marker {
            x: at(record.churn_end_s),
            label: "clients leave".into(),
        },
    ];
    let first = record.samples.first().map_or(0.0, minutes);
    let last = record.samples.last().map_or(1.0, minutes);
    render(
        &panels,
        &markers,
        "minutes since the churn started",
        (first, last),
    )
}
