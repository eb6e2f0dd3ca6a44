//! `privatehub-chat-bench prepare --database PATH --lives L --senders S --out plan.json`
//! `privatehub-chat-bench run --app-url URL --plan plan.json --sockets-per-live N
//!     --rate MSGS_PER_S [--warmup S] [--duration S] [--app-pid PID]
//!     [--source-addresses K] [--stall-database PATH --stall-seconds S]
//!     [--reconnect-storm SPREAD_S] [--out report.json]`

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use privatehub_chat_bench::load::{LoadOptions, run};
use privatehub_chat_bench::plan::{Plan, prepare};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_default();
    let mut options = std::collections::HashMap::new();
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        options.insert(flag.trim_start_matches("--").to_owned(), value);
    }
    let get = |name: &str| options.get(name).cloned();
    let number = |name: &str, default: f64| -> anyhow::Result<f64> {
        get(name).map_or(Ok(default), |value| {
            value.parse().with_context(|| format!("--{name}"))
        })
    };
    match command.as_str() {
        "prepare" => {
            let database = get("database").context("--database")?;
            let plan = prepare(
                &database,
                number("lives", 1.0)? as usize,
                number("senders", 20.0)? as usize,
            )?;
            let json = serde_json::to_string_pretty(&plan)?;
            match get("out") {
                Some(path) => std::fs::write(path, json)?,
                None => println!("{json}"),
            }
        }
        "run" => {
            let plan: Plan =
                serde_json::from_str(&std::fs::read_to_string(get("plan").context("--plan")?)?)?;
            let load = LoadOptions {
                app_urls: get("app-url")
                    .context("--app-url")?
                    .split(',')
                    .map(str::to_owned)
                    .collect(),
                plan,
                sockets_per_live: number("sockets-per-live", 100.0)? as usize,
                messages_per_second: number("rate", 5.0)?,
                warmup: Duration::from_secs_f64(number("warmup", 3.0)?),
                duration: Duration::from_secs_f64(number("duration", 10.0)?),
                app_pids: get("app-pid")
                    .map(|pids| {
                        pids.split(',')
                            .map(str::parse)
                            .collect::<Result<Vec<u32>, _>>()
                    })
                    .transpose()?
                    .unwrap_or_default(),
                source_addresses: number("source-addresses", 20.0)? as u8,
                settle: Duration::from_secs_f64(number("settle", 1.0)?),
                stall_database: match get("stall-database") {
                    Some(path) => Some((
                        PathBuf::from(path),
                        Duration::from_secs_f64(number("stall-seconds", 3.0)?),
                    )),
                    None => None,
                },
                reconnect_storm: get("reconnect-storm")
                    .map(|seconds| seconds.parse().map(Duration::from_secs_f64))
                    .transpose()
                    .context("--reconnect-storm")?,
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            let report = runtime.block_on(run(load))?;
            let json = serde_json::to_string_pretty(&report)?;
            if let Some(path) = get("out") {
                std::fs::write(path, &json)?;
            }
            println!("{json}");
        }
        other => bail!("unknown command {other:?}: prepare or run"),
    }
    Ok(())
}
