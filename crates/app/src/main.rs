//! `privatehub-app`: reads the configuration, migrates the database, serves.

use anyhow::Context;
use privatehub_app::settings::LogFormat;
use privatehub_app::{Application, Settings, telemetry};

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
