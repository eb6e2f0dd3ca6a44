//! `privatehub-soak`: both PrivateHub services under an hour of churn (viewers, chat,
//! publisher reconnects), sampled every 10 s; the verdict goes into the `## Soak` section
//! of `docs/reliability.md`, the plot into `docs/soak-memory.svg`, the raw samples and
//! logs into `target/soak/`. Exits 1 when a criterion fails. Run it with `scripts/soak`.

#![forbid(unsafe_code)]

mod app_api;
mod chat;
mod environment;
mod logs;
mod media_bots;
mod options;
mod plot;
mod report;
mod run;
mod sampler;
mod services;
mod tally;
mod verdict;

use options::{HELP, Options};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(options) = Options::parse(&args)? else {
        print!("{HELP}");
        return Ok(());
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let record = runtime.block_on(run::soak(&options))?;
    let pass = record.pass();
    run::write_outputs(&options, &record)?;
    println!(
        "soak: {} (memory {}, open files {}, logs {}, client failures {}, services {})",
        if pass { "PASS" } else { "FAIL" },
        word(record.memory_pass()),
        word(record.files_pass()),
        word(record.logs_pass()),
        record.client_failures(),
        word(record.services_pass()),
    );
    // Bot threads still winding down must not keep the process.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    std::process::exit(if pass { 0 } else { 1 });
}

fn word(pass: bool) -> &'static str {
    if pass { "pass" } else { "FAIL" }
}
