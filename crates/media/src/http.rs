//! HTTP edge and start-up: `/ws`, `/healthz`, `/metrics`, and [`start`], which binds the
//! UDP sockets, spawns the workers and runs the actix-web server.

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context as _;
use secrecy::ExposeSecret;
use tokio::sync::mpsc::{channel, unbounded_channel};

use crate::AppState;
use crate::config::MediaSettings;
use crate::engine::{Engine, WorkerHandle, core_config};
use crate::metrics::Metrics;
use crate::sfu::{CoreConfig, LocalCandidates};
use crate::worker::{self, WORKER_CHANNEL_CAPACITY, WorkerParts};

/// A running media server (HTTP + workers). Drop does not stop it; call [`RunningServer::stop`].
pub struct RunningServer {
    /// Where `/ws`, `/healthz` and `/metrics` listen.
    pub http_addr: SocketAddr,
    /// The distinct UDP ports the workers bound, in worker order (one when shared).
    pub rtc_ports: Vec<u16>,
    /// The ICE-TCP listener's port, when it runs.
    pub rtc_tcp_port: Option<u16>,
    tcp_task: Option<tokio::task::JoinHandle<()>>,
    server: actix_web::dev::ServerHandle,
    engine: Arc<Engine>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl RunningServer {
    /// Registered (rooms, peers).
    pub fn counts(&self) -> (usize, usize) {
        self.engine.counts()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.engine.metrics
    }

    /// Tells every session the server restarts and gives them up to a second to send
    /// it, closes every peer (their sockets get closed too), stops HTTP and joins the
    /// worker threads.
    pub async fn stop(self) {
        self.engine.announce_restart(RESTART_RETRY_AFTER_MS);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
        while self
            .engine
            .metrics
            .signaling_sockets
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        self.engine.shutdown();
        if let Some(recorder) = self.engine.recorder().cloned() {
            let _ = tokio::task::spawn_blocking(move || {
                recorder.shutdown(std::time::Duration::from_secs(5))
            })
            .await;
        }
        if let Some(task) = &self.tcp_task {
            task.abort();
        }
        self.server.stop(true).await;
        let workers = self.workers;
        let _ = tokio::task::spawn_blocking(move || {
            for worker in workers {
                let _ = worker.join();
            }
        })
        .await;
    }
}

/// What `server_restarting` suggests as the earliest reconnect; pages add a random
/// spread so a whole audience does not come back in the same instant.
pub const RESTART_RETRY_AFTER_MS: u64 = 1000;

/// Starts the media server inside the current tokio runtime.
pub async fn start(settings: MediaSettings) -> anyhow::Result<RunningServer> {
    // `from_env` already refuses these; settings built in code must not bypass it.
    if let Some(problem) = privatehub_protocol::media_token::media_token_secret_problem(
        settings.token_secret.expose_secret(),
    ) {
        anyhow::bail!("MEDIA_TOKEN_SECRET: {problem}");
    }
    let metrics = Arc::new(Metrics::default());
    let shared_port = settings.rtc_udp.is_shared();
    // The TCP listener first: its port (0 in tests picks one) is in every peer's answer.
    let tcp_listener = match settings.rtc_tcp_port {
        Some(port) => {
            let bind = SocketAddr::new(settings.rtc_bind_ip, port);
            let listener = crate::tcp::bind_listener(bind).with_context(|| {
                format!("cannot listen on TCP {bind} (MEDIA_RTC_TCP_PORT/MEDIA_RTC_BIND_IP)")
            })?;
            Some(listener)
        }
        None => None,
    };
    let tcp_announced = match &tcp_listener {
        Some(listener) => Some(SocketAddr::new(
            settings.announced_ip,
            listener.local_addr()?.port(),
        )),
        None => None,
    };
    let mut handles = Vec::new();
    let mut parts = Vec::new();
    let mut inbound_senders = Vec::new();
    let mut inbound_receivers = Vec::new();
    for _ in 0..settings.workers {
        let (tx, rx) = channel(WORKER_CHANNEL_CAPACITY);
        inbound_senders.push(tx);
        inbound_receivers.push(rx);
    }
    let mut tcp_senders = Vec::new();
    let mut ports = Vec::new();
    for (index, inbound) in inbound_receivers.into_iter().enumerate() {
        // A shared port of 0 (tests): the first worker's free port is everyone's.
        let port = match (shared_port, ports.first()) {
            (true, Some(&first)) => first,
            _ => settings.rtc_udp.worker_port(index),
        };
        let bind = SocketAddr::new(settings.rtc_bind_ip, port);
        let socket = worker::bind_socket(bind, shared_port).with_context(|| {
            format!(
                "cannot bind UDP {bind} (MEDIA_RTC_PORT or MEDIA_RTC_MIN_PORT, MEDIA_RTC_BIND_IP)"
            )
        })?;
        let port = socket.local_addr()?.port();
        if !ports.contains(&port) {
            ports.push(port);
        }
        let announced = SocketAddr::new(settings.announced_ip, port);
        let (commands_tx, commands_rx) = unbounded_channel();
        let candidates = LocalCandidates {
            worker: index,
            udp: announced,
            tcp: tcp_announced,
        };
        handles.push(WorkerHandle::new(commands_tx, candidates));
        let workers = inbound_senders
            .iter()
            .enumerate()
            .map(|(k, tx)| (k != index).then(|| tx.clone()))
            .collect();
        let (tcp_tx, tcp_rx) = channel(crate::tcp::TCP_EVENTS_CAPACITY);
        tcp_senders.push(tcp_tx);
        parts.push(WorkerParts {
            index,
            socket,
            announced,
            core_config: CoreConfig {
                worker_index: index,
                tcp_addr: tcp_announced,
                ..core_config(&settings)
            },
            commands: commands_rx,
            inbound,
            workers,
            tcp_events: tcp_rx,
        });
    }
    drop(inbound_senders);
    let (keyframes_tx, mut keyframes_rx) = unbounded_channel();
    let recorder = if settings.recordings.enabled {
        let dir = &settings.recordings.dir;
        Some(
            crate::recording::Recorder::start(
                settings.recordings.clone(),
                metrics.clone(),
                keyframes_tx,
            )
            .with_context(|| {
                format!(
                    "cannot open the recordings directory {} (MEDIA_RECORDINGS_DIR)",
                    dir.display()
                )
            })?,
        )
    } else {
        None
    };
    let engine = Arc::new(Engine::new(
        &settings,
        metrics.clone(),
        handles,
        recorder.clone(),
    )?);
    {
        let engine = engine.clone();
        tokio::spawn(async move {
            while let Some((live, layer)) = keyframes_rx.recv().await {
                engine.request_keyframe(live, layer);
            }
        });
    }
    let tcp_task = tcp_listener.map(|listener| {
        tokio::spawn(crate::tcp::serve(
            listener,
            Arc::new(crate::tcp::TcpShared {
                workers: tcp_senders,
                metrics: metrics.clone(),
                limiter: crate::limits::SocketLimiter::new(
                    settings.max_sockets_per_ip,
                    settings.new_sockets_per_ip_per_sec,
                ),
                max_connections: settings.max_peers,
            }),
        ))
    });
    let mut workers = Vec::new();
    for part in parts {
        workers.push(worker::spawn(part, engine.clone()).context("cannot spawn media worker")?);
    }
    let state = web::Data::new(AppState {
        rtc_ports: ports.clone(),
        rtc_tcp_port: tcp_announced.map(|a| a.port()),
        recorder,
        settings: settings.clone(),
        engine: engine.clone(),
        metrics,
        socket_limiter: crate::limits::SocketLimiter::new(
            settings.max_sockets_per_ip,
            settings.new_sockets_per_ip_per_sec,
        ),
        rtc_builds: tokio::sync::Semaphore::new(
            std::thread::available_parallelism().map_or(2, |n| n.get()),
        ),
        http_sessions: crate::whip::sessions::HttpSessions::default(),
        app_api: crate::whip::app_api::AppApi::new(
            &settings.app_internal_urls,
            settings.token_secret.clone(),
        ),
    });
    tokio::spawn(crate::whip::report_whip_sessions(
        state.clone().into_inner(),
    ));
    tokio::spawn(crate::recording::sync::report_recordings(
        state.clone().into_inner(),
    ));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/ws", web::get().to(crate::signaling::ws_route))
            .route("/healthz", web::get().to(healthz))
            .route("/metrics", web::get().to(metrics_route))
            .configure(crate::whip::configure)
            .route(
                "/recordings/{file}",
                web::get().to(crate::recording::serve::recording_file),
            )
            .route(
                "/recordings/{file}",
                web::head().to(crate::recording::serve::recording_file),
            )
            .service(
                web::scope("/internal/v1")
                    .app_data(
                        web::JsonConfig::default()
                            .limit(privatehub_protocol::internal_api::MAX_INTERNAL_BODY_BYTES),
                    )
                    .route(
                        "/publishers/end",
                        web::post().to(crate::whip::end_publishes),
                    )
                    .route(
                        "/recordings/delete",
                        web::post().to(crate::recording::serve::delete_recordings),
                    ),
            )
    })
    .on_connect(privatehub_edge::connection::limit_stuck_writes)
    .workers(2)
    .shutdown_timeout(2)
    .bind((settings.bind, settings.http_port))
    .with_context(|| {
        format!(
            "cannot bind HTTP {}:{} (MEDIA_BIND/MEDIA_SERVER_PORT)",
            settings.bind, settings.http_port
        )
    })?;
    let http_addr = *server
        .addrs()
        .first()
        .context("HTTP server has no address")?;
    let server = server.run();
    let handle = server.handle();
    tokio::spawn(server);
    tracing::info!(
        http = %http_addr,
        announced_ip = %settings.announced_ip,
        rtc_bind_ip = %settings.rtc_bind_ip,
        rtc_ports = ?ports,
        rtc_port_mode = settings.rtc_udp.mode_name(),
        rtc_tcp = ?tcp_announced,
        workers = settings.workers,
        max_sockets_per_ip = settings.max_sockets_per_ip,
        new_sockets_per_ip_per_sec = settings.new_sockets_per_ip_per_sec,
        trust_proxy_headers = settings.trust_proxy_headers,
        "media server started: {}",
        crate::announce::what_is_announced(settings.announced_ip, &ports, tcp_announced),
    );
    for warning in crate::announce::announced_address_warnings(&settings) {
        tracing::warn!("{warning}");
    }
    Ok(RunningServer {
        http_addr,
        rtc_ports: ports,
        rtc_tcp_port: tcp_announced.map(|a| a.port()),
        tcp_task,
        server: handle,
        engine,
        workers,
    })
}

async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    let (rooms, peers) = state.engine.counts();
    HttpResponse::Ok().json(serde_json::json!({
        "status": "ok",
        "announced_ip": state.settings.announced_ip.to_string(),
        "rtc_ports": state.rtc_ports,
        "rtc_port_mode": state.settings.rtc_udp.mode_name(),
        "rtc_tcp_port": state.rtc_tcp_port,
        "workers": state.settings.workers,
        "rooms": rooms,
        "peers": peers,
    }))
}

async fn metrics_route(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
