//! `privatehub-app`: reads the configuration, migrates the database, serves.
//! `privatehub-app copy-database --from sqlite://FILE --to postgres://URL` copies a
//! SQLite database into PostgreSQL (see `db::copy`).

use anyhow::Context;
use privatehub_app::db::{self, DatabaseLocation};
use privatehub_app::settings::{LogFormat, parse_database_url};
use privatehub_app::{Application, Settings, telemetry};
use secrecy::ExposeSecret;

#[tokio::main]
async fn main() {
    if let Err(error) = run().await {
        // `{:#}` prints the whole cause chain on one line, e.g.
        // "reading the configuration: configuration error in APP_PORT: ...".
        eprintln!("privatehub-app: {error:#}");
        std::process::exit(1);
    }
}

async fn run() -> anyhow::Result<()> {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    match arguments.first().map(String::as_str) {
        None => serve().await,
        Some("copy-database") => copy_database(&arguments[1..]),
        Some(other) => anyhow::bail!(
            "unknown command {other:?}; usage: privatehub-app \
             [copy-database --from sqlite://FILE --to postgres://URL]"
        ),
    }
}

/// `copy-database --from sqlite://FILE --to postgres://URL`: prints each table's row
/// counts; fails (exit 1) if the copy fails or the counts differ.
fn copy_database(arguments: &[String]) -> anyhow::Result<()> {
    const USAGE: &str =
        "usage: privatehub-app copy-database --from sqlite://FILE --to postgres://URL";
    let mut from = None;
    let mut to = None;
    let mut rest = arguments.iter();
    while let Some(flag) = rest.next() {
        let slot = match flag.as_str() {
            "--from" => &mut from,
            "--to" => &mut to,
            _ => anyhow::bail!("unexpected argument {flag:?}; {USAGE}"),
        };
        *slot = Some(
            rest.next()
                .with_context(|| format!("{flag} needs a value; {USAGE}"))?,
        );
    }
    let (Some(from), Some(to)) = (from, to) else {
        anyhow::bail!("{USAGE}");
    };
    let from = parse_database_url(from).map_err(|error| anyhow::anyhow!("--from: {error}"))?;
    let to = parse_database_url(to).map_err(|error| anyhow::anyhow!("--to: {error}"))?;
    let (DatabaseLocation::Sqlite(source), DatabaseLocation::Postgres(target)) = (&from, &to)
    else {
        anyhow::bail!("--from must be a SQLite file and --to a PostgreSQL URL; {USAGE}");
    };
    println!(
        "copying {} to {}",
        from.display_for_log(),
        to.display_for_log()
    );
    let counts = db::copy::copy_sqlite_to_postgres(source, target.expose_secret())
        .context("copying the database")?;
    for count in &counts {
        println!(
            "{:<14} {:>10} rows in the source, {:>10} in the target",
            count.table, count.source, count.target
        );
    }
    println!("copy complete: every table has the same row count on both sides");
    Ok(())
}

async fn serve() -> anyhow::Result<()> {
    // Logs first, so warnings while reading the settings show. LOG_FORMAT is peeked
    // here and validated properly by `Settings::from_env`.
    let _ = dotenvy::dotenv();
    let format = match std::env::var("LOG_FORMAT").as_deref() {
        Ok("json") => LogFormat::Json,
        _ => LogFormat::Text,
    };
    telemetry::init_tracing(format);
    let settings = Settings::from_env().context("reading the configuration")?;
    let public_origin = settings.public_origin.to_string();
    let application = Application::build(settings).await?;
    tracing::info!(port = application.port(), url = %public_origin, "privatehub-app listening");
    application
        .run_until_signalled()
        .await
        .context("running the server")?;
    tracing::info!("stopped");
    Ok(())
}
