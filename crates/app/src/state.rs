//! [`AppState`]: what every handler can reach, registered once as `web::Data`.

use std::sync::Arc;

use crate::auth::rate_limit::LoginRateLimiter;
use crate::chat::{ChatHandle, ChatServer};
use crate::db::DbPool;
use crate::settings::Settings;
use crate::viewers::ViewerCounts;

/// Shared application state. Cloning is cheap (everything is behind `Arc`s).
#[derive(Debug, Clone)]
pub struct AppState {
    pub pool: DbPool,
    pub settings: Arc<Settings>,
    pub login_limiter: Arc<LoginRateLimiter>,
    pub viewers: ViewerCounts,
    /// The chat server behind `/ws`.
    pub chat: ChatHandle,
}

impl AppState {
    /// Also spawns the chat server task, so it must run inside the tokio runtime.
    pub fn new(pool: DbPool, settings: Settings) -> AppState {
        let viewers = ViewerCounts::default();
        let (chat_server, chat) = ChatServer::new(pool.clone(), viewers.clone());
        tokio::spawn(chat_server.run());
        AppState {
            chat,
            pool,
            login_limiter: Arc::new(LoginRateLimiter::new(settings.login_rate_limit)),
            settings: Arc::new(settings),
            viewers,
        }
    }
}
