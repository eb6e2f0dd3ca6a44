//! `privatehub-app`: reads the configuration, migrates the database, serves.

use anyhow::Context;
use privatehub_app::{Application, Settings, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Logs first (text until the settings say otherwise), so set-up warnings show.
    telemetry::init_tracing(privatehub_app::settings::LogFormat::Text);
    let settings = Settings::from_env().context("reading the configuration")?;
    let public_origin = settings.public_origin.to_string();
    let application = Application::build(settings).await?;
    tracing::info!(port = application.port(), url = %public_origin, "privatehub-app listening");
    application.run_until_stopped().await.context("running the server")
}
