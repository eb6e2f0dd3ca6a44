//! Building and running the server: open and migrate the database, bind, and wire
//! state, extractor configuration, middleware and routes together.

use std::net::TcpListener;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use anyhow::Context;

use crate::auth::csrf::csrf_middleware;
use crate::body_deadline::body_deadline;
use crate::chat::server::MessageIdSource;
use crate::chat::server::message_ids::MESSAGE_ID_BLOCK;
use crate::db::{self, sessions};
use crate::error::{MAX_BODY_BYTES, json_error_handler, path_error_handler, query_error_handler};
use crate::middleware::{api_errors_as_json, request_log, security_headers};
use crate::routes;
use crate::settings::Settings;
use crate::state::AppState;

/// A bound, ready-to-run app.
pub struct Application {
    port: u16,
    server: Server,
    state: AppState,
}

impl Application {
    /// Opens (creating if needed) and migrates the database, then binds
    /// `settings.bind:settings.port` (port 0 picks a free port; see [`Self::port`]).
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let database = settings.database.display_for_log();
        if settings.database.is_postgres() && settings.redis_url.is_none() {
            tracing::warn!(
                "DATABASE_URL is PostgreSQL but REDIS_URL is not set: Redis is needed as \
                 soon as more than one instance runs"
            );
        }
        let location = settings.database.clone();
        let options = settings.database_pool;
        let pool = tokio::task::spawn_blocking(move || db::build_pool(&location, options))
            .await
            .context("database set-up task")?
            .with_context(|| format!("opening the database ({database})"))?;
        let migrate_pool = pool.clone();
        let applied = tokio::task::spawn_blocking(move || {
            let applied = db::run_migrations(&migrate_pool)?;
            let mut connection = migrate_pool.get()?;
            let expired = sessions::delete_expired(&mut connection, db::now_unix())
                .map_err(|error| db::DbSetupError::Migration(error.to_string()))?;
            // Instances sharing PostgreSQL take chat ids from its sequence.
            let message_ids = if db::is_postgres(&connection) {
                db::chat::reserve_message_ids(&mut connection, MESSAGE_ID_BLOCK)
                    .map(MessageIdSource::Sequence)
            } else {
                db::chat::max_message_id(&mut connection).map(MessageIdSource::After)
            }
            .map_err(|error| db::DbSetupError::Migration(error.to_string()))?;
            Ok::<_, db::DbSetupError>((applied, expired, message_ids))
        })
        .await
        .context("database set-up task")??;
        tracing::info!(
            %database,
            migrations = applied.0,
            expired_sessions = applied.1,
            "database ready"
        );

        let listener = TcpListener::bind((settings.bind, settings.port))
            .with_context(|| format!("binding {}:{}", settings.bind, settings.port))?;
        let port = listener.local_addr()?.port();
        let state = AppState::new(pool, settings, applied.2)
            .context("starting the password-hashing threads")?;
        let server = run(listener, state.clone())?;
        Ok(Application {
            port,
            server,
            state,
        })
    }

    /// The port actually bound.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The shared state (database pool, settings, viewer counts).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until the future is dropped (tests) or the server is stopped.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }

    /// Serves until SIGTERM or SIGINT, then stops gracefully: every socket is told
    /// `server:restarting` and closed, requests in flight get up to
    /// [`SHUTDOWN_TIMEOUT`] to finish, and the future returns.
    pub async fn run_until_signalled(self) -> std::io::Result<()> {
        let handle = self.server.handle();
        let chat = self.state.chat.clone();
        tokio::spawn(async move {
            let signal = wait_for_stop_signal().await;
            tracing::info!(signal, "stopping: telling sockets the server restarts");
            chat.shutdown().await;
            handle.stop(true).await;
        });
        self.server.await
    }
}

/// How long a stopping app waits for requests and sockets to finish.
pub const SHUTDOWN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

async fn wait_for_stop_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = tokio::signal::ctrl_c() => "SIGINT",
        },
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops gracefully");
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}

/// Starts serving on `listener`.
pub fn run(listener: TcpListener, state: AppState) -> std::io::Result<Server> {
    let workers = state.settings.workers;
    let data = web::Data::new(state);
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(
                web::JsonConfig::default()
                    .limit(MAX_BODY_BYTES)
                    .error_handler(json_error_handler),
            )
            .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
            .app_data(web::PathConfig::default().error_handler(path_error_handler))
            .app_data(web::QueryConfig::default().error_handler(query_error_handler))
            .wrap(from_fn(csrf_middleware))
            .wrap(from_fn(body_deadline))
            .wrap(from_fn(api_errors_as_json))
            .wrap(security_headers(&data.settings))
            .wrap(from_fn(request_log))
            .configure(routes::configure)
            .default_service(web::to(routes::not_found))
    })
    .on_connect(privatehub_edge::connection::limit_stuck_writes)
    .listen(listener)?
    // Signals are handled by `Application::run_until_signalled`, which tells the
    // sockets first.
    .disable_signals()
    .shutdown_timeout(SHUTDOWN_TIMEOUT.as_secs());
    if let Some(workers) = workers {
        server = server.workers(workers);
    }
    Ok(server.run())
}
