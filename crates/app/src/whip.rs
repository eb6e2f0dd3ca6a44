//! The app's side of WHIP ingest: which WHIP-published lives the media server still
//! reports, the sweep that ends the ones it no longer does, and the client for the media
//! server's internal API (ending publishes, deleting recordings).
//!
//! The media server reports every WHIP publish it holds every few seconds
//! (`/internal/v1/whip/sync`) and says at once when one ends (`/internal/v1/whip/ended`).
//! The report is the backstop for what a direct call can miss: a media server that
//! crashed or restarted, or an `ended` call lost while the app was down.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use privatehub_protocol::cluster::WhipEvent;
use tokio::sync::mpsc;

use privatehub_protocol::LiveId;
use privatehub_protocol::internal_api::{
    EndPublishesRequest, EndPublishesResponse, InternalCaller, issue_internal_token,
};
use privatehub_protocol::recordings::RecordingsDeleteRequest;

use crate::db::users::UserId;
use crate::db::{self, lives};
use crate::error::InternalError;
use crate::state::AppState;

/// Longest pause between two sweeps.
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);
/// How long WHIP stays refused after the owner ended a WHIP live on the site, or after
/// a live the browser took over ended: OBS reconnects by itself when the server closes
/// its connection, and would otherwise start a new live within seconds.
pub const WHIP_HOLD_AFTER_END: Duration = Duration::from_secs(60);

/// Why `whip/start` refuses a user for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// The browser took this live over: refused while it is current.
    WhileCurrent(LiveId),
    /// Refused until then.
    Until(Instant),
}
/// Longest wait for one internal API call to the media server.
const MEDIA_CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// When each WHIP live was last reported (or started).
#[derive(Debug)]
pub struct WhipLives {
    /// Where changes go for the other instances (set when several share Redis).
    mirror: OnceLock<mpsc::UnboundedSender<WhipEvent>>,
    /// Lives found at start-up count from here: the media server has had no chance yet.
    started_at: Instant,
    /// `WHIP_UNREPORTED_LIVE_SECONDS`: the media server reports every 5 s, so the
    /// default of 30 s is several missed reports.
    unreported_after: Duration,
    last_reported: Mutex<HashMap<LiveId, Instant>>,
    /// Users whose WHIP publishes are refused for now, by user id.
    holds: Mutex<HashMap<i64, Hold>>,
}

impl WhipLives {
    pub fn new(unreported_after: Duration) -> Self {
        WhipLives {
            started_at: Instant::now(),
            unreported_after,
            last_reported: Mutex::new(HashMap::new()),
            holds: Mutex::new(HashMap::new()),
            mirror: OnceLock::new(),
        }
    }

    /// From now on every change is also sent to `mirror` (the cluster link).
    pub fn mirror_to(&self, mirror: mpsc::UnboundedSender<WhipEvent>) {
        let _ = self.mirror.set(mirror);
    }

    fn mirror(&self, event: WhipEvent) {
        if let Some(mirror) = self.mirror.get() {
            let _ = mirror.send(event);
        }
    }

    /// A change another instance made.
    pub fn apply_remote(&self, event: WhipEvent) {
        let now = Instant::now();
        match event {
            WhipEvent::Reported { live_id } => {
                self.lock().insert(live_id, now);
            }
            WhipEvent::Forget { live_id } => {
                self.lock().remove(&live_id);
            }
            WhipEvent::HoldWhileCurrent { user_id, live_id } => {
                self.holds().insert(user_id, Hold::WhileCurrent(live_id));
            }
            WhipEvent::HoldFor { user_id, ms } => {
                self.holds()
                    .insert(user_id, Hold::Until(now + Duration::from_millis(ms)));
            }
            WhipEvent::LiveEnded { user_id, live_id } => {
                self.end_hold_while_current(user_id, live_id, now);
            }
        }
    }

    fn holds(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Hold>> {
        self.holds
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The browser took `live` over from WHIP: WHIP is refused while it is current.
    pub fn hold_while_current(&self, user: UserId, live: LiveId) {
        self.holds().insert(user.0, Hold::WhileCurrent(live));
        self.mirror(WhipEvent::HoldWhileCurrent {
            user_id: user.0,
            live_id: live,
        });
    }

    /// The owner ended a WHIP live on the site: WHIP is refused for a while.
    pub fn hold_after_end(&self, user: UserId, now: Instant) {
        self.holds()
            .insert(user.0, Hold::Until(now + WHIP_HOLD_AFTER_END));
        self.mirror(WhipEvent::HoldFor {
            user_id: user.0,
            ms: u64::try_from(WHIP_HOLD_AFTER_END.as_millis()).unwrap_or(u64::MAX),
        });
    }

    /// `live` ended: a hold while it was current becomes a hold for a while.
    pub fn live_ended(&self, user: UserId, live: LiveId, now: Instant) {
        self.end_hold_while_current(user.0, live, now);
        self.mirror(WhipEvent::LiveEnded {
            user_id: user.0,
            live_id: live,
        });
    }

    fn end_hold_while_current(&self, user_id: i64, live: LiveId, now: Instant) {
        let mut holds = self.holds();
        if holds.get(&user_id) == Some(&Hold::WhileCurrent(live)) {
            holds.insert(user_id, Hold::Until(now + WHIP_HOLD_AFTER_END));
        }
    }

    /// Whether `whip/start` must refuse the user now (`current`: their current live).
    pub fn is_held(&self, user: UserId, current: Option<LiveId>, now: Instant) -> bool {
        let mut holds = self.holds();
        let held = match holds.get(&user.0) {
            None => false,
            Some(Hold::WhileCurrent(live)) => current == Some(*live),
            Some(Hold::Until(until)) => now < *until,
        };
        if !held {
            holds.remove(&user.0);
        }
        held
    }

    pub fn reported(&self, live: LiveId, now: Instant) {
        self.lock().insert(live, now);
        self.mirror(WhipEvent::Reported { live_id: live });
    }

    pub fn forget(&self, live: LiveId) {
        self.lock().remove(&live);
        self.mirror(WhipEvent::Forget { live_id: live });
    }

    /// Whether a current WHIP live went unreported for too long.
    fn is_abandoned(&self, live: LiveId, now: Instant) -> bool {
        let last = self.lock().get(&live).copied().unwrap_or(self.started_at);
        now.duration_since(last) > self.unreported_after
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<LiveId, Instant>> {
        self.last_reported
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Ends WHIP lives the media server stopped reporting. Runs for the app's lifetime.
pub async fn sweep_abandoned_lives(state: AppState) {
    let every = SWEEP_INTERVAL.min(state.settings.whip_unreported_live / 3);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // With several instances the media server reports to one of them, and the
        // others hear of it through Redis: while Redis is away (and for a while after
        // it returns) what this instance knows may be stale, so it ends nothing.
        if let Some(cluster) = &state.cluster
            && !cluster
                .connection
                .connected_for(state.settings.whip_unreported_live)
        {
            continue;
        }
        let current = db::run(&state.pool, |connection| {
            lives::list_current_whip(connection).map_err(InternalError::from)
        })
        .await;
        let current = match current {
            Ok(current) => current,
            Err(error) => {
                tracing::warn!(%error, "cannot list WHIP lives; trying again later");
                continue;
            }
        };
        let now = Instant::now();
        for live in current {
            if !state.whip_lives.is_abandoned(live.id, now) {
                continue;
            }
            tracing::warn!(
                username = %live.username,
                live_id = %live.id,
                "no media server reports this WHIP live any more: ending it"
            );
            if let Err(error) =
                crate::routes::lives::finish_live(&state, live.user_id, Some(live.id)).await
            {
                tracing::warn!(%error, live_id = %live.id, "cannot end an abandoned WHIP live");
            }
            state.whip_lives.forget(live.id);
        }
    }
}

/// Client of the media server's internal API.
#[derive(Debug, Clone)]
pub struct MediaApi {
    client: reqwest::Client,
    base_url: String,
}

/// A call to the media server's internal API failed.
#[derive(Debug, thiserror::Error)]
#[error("media server internal API: {0}")]
pub struct MediaApiError(String);

impl MediaApi {
    pub fn new(base_url: &str) -> Self {
        let client = reqwest::Client::builder()
            .timeout(MEDIA_CALL_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        MediaApi {
            client,
            base_url: base_url.trim_end_matches('/').to_owned(),
        }
    }

    /// Ends the user's WHIP publishes that hold a key older than `key_generation`.
    pub async fn end_publishes(
        &self,
        secret: &[u8],
        request: &EndPublishesRequest,
    ) -> Result<usize, MediaApiError> {
        let response = self
            .post(secret, "/internal/v1/publishers/end", request)
            .await?;
        let body: EndPublishesResponse = response
            .json()
            .await
            .map_err(|error| MediaApiError(error.to_string()))?;
        Ok(body.ended)
    }

    /// Asks the media server to delete these recordings now (answered 204). Best
    /// effort: every sync answer repeats the request until they are reported deleted.
    pub async fn delete_recordings(
        &self,
        secret: &[u8],
        request: &RecordingsDeleteRequest,
    ) -> Result<(), MediaApiError> {
        self.post(secret, "/internal/v1/recordings/delete", request)
            .await
            .map(drop)
    }

    /// POSTs `body` to `path` with a fresh internal token; a non-2xx answer is an error.
    async fn post(
        &self,
        secret: &[u8],
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<reqwest::Response, MediaApiError> {
        let token = issue_internal_token(InternalCaller::App, secret, path)
            .map_err(|error| MediaApiError(error.to_string()))?;
        let response = self
            .client
            .post(format!("{}{path}", self.base_url))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .map_err(|error| MediaApiError(error.without_url().to_string()))?;
        if !response.status().is_success() {
            return Err(MediaApiError(format!("status {}", response.status())));
        }
        Ok(response)
    }
}
