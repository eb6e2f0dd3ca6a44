//! [`AppState`]: what every handler can reach, registered once as `web::Data`.

use std::sync::Arc;

use crate::auth::hashing::HashingPool;
use crate::auth::rate_limit::{LoginRateLimiter, SignupRateLimiter};
use crate::chat::{ChatHandle, ChatServer};
use crate::cluster::Cluster;
use crate::db::DbPool;
use crate::metrics::AppMetrics;
use crate::settings::Settings;
use crate::stream_keys::StreamKeySealer;
use crate::viewers::ViewerCounts;
use crate::whip::{MediaApi, WhipLives};
use privatehub_edge::limits::SocketLimiter;

/// Shared application state. Cloning is cheap (everything is behind `Arc`s).
#[derive(Debug, Clone)]
pub struct AppState {
    pub pool: DbPool,
    pub settings: Arc<Settings>,
    pub login_limiter: Arc<LoginRateLimiter>,
    pub signup_limiter: Arc<SignupRateLimiter>,
    /// Every argon2 computation runs here, never on the request's thread.
    pub hashing: Arc<HashingPool>,
    /// Open `/ws` sockets per client network.
    pub sockets: Arc<SocketLimiter>,
    pub metrics: Arc<AppMetrics>,
    pub viewers: ViewerCounts,
    /// The chat server behind `/ws`.
    pub chat: ChatHandle,
    /// Seals and opens stored stream keys.
    pub stream_keys: StreamKeySealer,
    /// WHIP lives as the media server reports them.
    pub whip_lives: Arc<WhipLives>,
    /// The media server's internal API.
    pub media_api: MediaApi,
    /// Shared with the other instances through Redis (`REDIS_URL`), or `None` alone.
    pub cluster: Option<Cluster>,
}

impl AppState {
    /// Also spawns the chat server and writer tasks, so it must run inside the tokio
    /// runtime, and starts the password-hashing threads.
    /// `message_ids` says where chat message ids come from.
    pub fn new(
        pool: DbPool,
        settings: Settings,
        message_ids: crate::chat::server::MessageIdSource,
    ) -> std::io::Result<AppState> {
        let metrics = Arc::new(AppMetrics::default());
        metrics
            .redis_connected
            .store(-1, std::sync::atomic::Ordering::Relaxed);
        let viewers = ViewerCounts::default();
        let whip_lives = Arc::new(WhipLives::new(settings.whip_unreported_live));
        let (cluster, chat_link) = match &settings.redis_url {
            Some(url) => {
                let (cluster, link) =
                    Cluster::start(url, viewers.clone(), whip_lives.clone(), metrics.clone())
                        .map_err(|error| std::io::Error::other(format!("REDIS_URL: {error}")))?;
                tracing::info!(instance = %cluster.instance, "sharing chat, viewer counts and rate limits through Redis");
                (Some(cluster.clone()), Some((cluster.instance, link)))
            }
            None => (None, None),
        };
        let (chat_server, chat_writer, chat) = ChatServer::new(
            pool.clone(),
            viewers.clone(),
            metrics.clone(),
            message_ids,
            settings.chat_write_give_up,
            chat_link,
        );
        tokio::spawn(chat_server.run());
        tokio::spawn(chat_writer.run());
        let state = AppState {
            chat,
            pool,
            stream_keys: StreamKeySealer::new(&settings.stream_key_secret),
            whip_lives,
            media_api: MediaApi::new(&settings.media_internal_url),
            login_limiter: Arc::new(LoginRateLimiter::new(settings.login_rate_limit)),
            signup_limiter: Arc::new(SignupRateLimiter::new(settings.signup_rate_limit)),
            hashing: Arc::new(HashingPool::start(settings.hashing, metrics.clone())?),
            // Loopback is not exempt: behind nginx every client would share it.
            sockets: SocketLimiter::new(settings.max_sockets_per_ip, 0),
            metrics,
            settings: Arc::new(settings),
            viewers,
            cluster,
        };
        tokio::spawn(crate::whip::sweep_abandoned_lives(state.clone()));
        Ok(state)
    }
}
