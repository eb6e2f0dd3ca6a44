//! [`ClusterLink`]: the one task that talks to Redis for the chat server.
//!
//! It owns a command connection and a subscriber connection. While Redis is away it
//! keeps what it must restore (the rooms it is subscribed to, its viewer sets) and
//! reconnects with a growing pause; the chat goes on locally meanwhile (messages are
//! stored by each instance's writer, so they appear in history after a reload).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use privatehub_protocol::LiveId;
use privatehub_protocol::cluster::{SessionEnvelope, WhipEnvelope};
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use redis::{AsyncConnectionConfig, RedisError};
use tokio::sync::mpsc;

use super::chat_limits::{self, LIMITS_CHANNEL, LimitNotice};
use super::events::{
    ClusterCommand, ClusterReport, RoomEnvelope, RoomEvent, room_channel, room_key,
};
use super::{SharedConnection, now_unix_ms, viewer_sets};
use crate::db::users::UserId;
use crate::metrics::AppMetrics;
use crate::viewers::ViewerCounts;
use crate::whip::{WhipEvent, WhipLives};

/// Rewrites of this instance's viewer sets (well inside their expiry).
const HEARTBEAT: Duration = Duration::from_secs(2);
/// Shared counts of the lives this instance has rooms for are read this often.
const COUNT_INTERVAL: Duration = Duration::from_millis(500);
/// Every live's shared count (for the lives listing) is read this often.
const LISTING_INTERVAL: Duration = Duration::from_secs(1);
/// Connecting, and each command, give up after this long.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
const FIRST_RETRY: Duration = Duration::from_millis(200);
const LONGEST_RETRY: Duration = Duration::from_secs(2);
/// Commands taken from the queue into one pipeline.
const BATCH: usize = 256;

struct Connected {
    commands: MultiplexedConnection,
    sink: PubSubSink,
    stream: PubSubStream,
}

/// Why [`ClusterLink::serve`] returned.
enum Stop {
    /// The chat server is gone: the task ends.
    Closed,
    Lost(RedisError),
}

impl From<RedisError> for Stop {
    fn from(error: RedisError) -> Stop {
        Stop::Lost(error)
    }
}

pub(super) struct ClusterLink {
    pub(super) client: redis::Client,
    pub(super) instance: String,
    pub(super) commands: mpsc::UnboundedReceiver<ClusterCommand>,
    pub(super) reports: mpsc::UnboundedSender<ClusterReport>,
    pub(super) shared: SharedConnection,
    pub(super) viewer_counts: ViewerCounts,
    pub(super) subscribed: HashSet<String>,
    /// This instance's viewers per live it has a room for (possibly none).
    pub(super) viewer_sets: HashMap<LiveId, Vec<String>>,
    /// Messages counted so far (names each send in the shared window).
    pub(super) sends: u64,
    /// What other instances report of WHIP publishes is applied here.
    pub(super) whip_lives: Arc<WhipLives>,
    /// And this instance's changes arrive here, for the others.
    pub(super) whip_events: mpsc::UnboundedReceiver<WhipEvent>,
    pub(super) metrics: Arc<AppMetrics>,
}

/// Where WHIP state changes go (every instance listens).
const WHIP_CHANNEL: &str = "privatehub:whip";
/// Where log-outs go, so every instance closes the session's sockets.
const SESSIONS_CHANNEL: &str = "privatehub:sessions-ended";

impl ClusterLink {
    pub(super) async fn run(mut self) {
        let mut retry = FIRST_RETRY;
        let mut reachable = true;
        loop {
            match self.connect().await {
                Ok(connected) => {
                    if !reachable {
                        tracing::info!("Redis is reachable again; chat is shared across instances");
                        let _ = self.reports.send(ClusterReport::Resynced);
                    }
                    retry = FIRST_RETRY;
                    match self.serve(connected).await {
                        Stop::Closed => return,
                        Stop::Lost(error) => {
                            tracing::warn!(%error, "lost Redis; chat and counts stay local to this instance until it returns");
                            reachable = false;
                        }
                    }
                }
                Err(error) => {
                    if reachable {
                        tracing::warn!(%error, "cannot reach Redis; chat and counts stay local to this instance until it returns");
                    }
                    reachable = false;
                }
            }
            self.shared.set(None);
            self.metrics.redis_connected.store(0, Ordering::Relaxed);
            // What other instances contribute is unknown now: counts fall back to this
            // instance's own until Redis is back.
            self.viewer_counts.set_shared(HashMap::new());
            let _ = self.reports.send(ClusterReport::Disconnected);
            if !self.pause(retry).await {
                return;
            }
            retry = (retry * 2).min(LONGEST_RETRY);
        }
    }

    async fn connect(&self) -> Result<Connected, RedisError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT));
        let commands = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let pubsub = tokio::time::timeout(REDIS_TIMEOUT, self.client.get_async_pubsub())
            .await
            .map_err(|_| timed_out())??;
        let (sink, stream) = pubsub.split();
        Ok(Connected {
            commands,
            sink,
            stream,
        })
    }

    /// Waits `how_long` while Redis is away, keeping state current. `false`: closed.
    async fn pause(&mut self, how_long: Duration) -> bool {
        let wait = tokio::time::sleep(how_long);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => return true,
                command = self.commands.recv() => match command {
                    Some(command) => self.remember(&command),
                    None => return false,
                },
                // Lost while Redis is away: the other instances stop sweeping meanwhile
                // (`whip::sweep_abandoned_lives`) and hear the next report.
                Some(_) = self.whip_events.recv() => {}
            }
        }
    }

    /// Keeps what must survive a reconnect.
    fn remember(&mut self, command: &ClusterCommand) {
        match command {
            ClusterCommand::Subscribe { key } => {
                self.subscribed.insert(key.clone());
            }
            ClusterCommand::Unsubscribe { key } => {
                self.subscribed.remove(key);
            }
            ClusterCommand::Viewers { live, viewers } => {
                self.viewer_sets.insert(*live, viewers.clone());
            }
            ClusterCommand::Forget { live } => {
                self.viewer_sets.remove(live);
            }
            ClusterCommand::Publish { .. }
            | ClusterCommand::ChatSent { .. }
            | ClusterCommand::SessionEnded { .. } => {}
        }
    }

    async fn serve(&mut self, mut connected: Connected) -> Stop {
        match self.serve_connected(&mut connected).await {
            Ok(()) => Stop::Closed,
            Err(stop) => stop,
        }
    }

    async fn serve_connected(&mut self, connected: &mut Connected) -> Result<(), Stop> {
        let mut channels: Vec<String> = self
            .subscribed
            .iter()
            .map(|key| room_channel(key))
            .collect();
        channels.extend([LIMITS_CHANNEL, WHIP_CHANNEL, SESSIONS_CHANNEL].map(str::to_owned));
        connected.sink.subscribe(&channels).await?;
        viewer_sets::load_scripts(&mut connected.commands).await?;
        self.rewrite_viewer_sets(&mut connected.commands).await?;
        self.shared.set(Some(connected.commands.clone()));
        self.metrics.redis_connected.store(1, Ordering::Relaxed);
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        let mut counts = tokio::time::interval(COUNT_INTERVAL);
        let mut listing = tokio::time::interval(LISTING_INTERVAL);
        for timer in [&mut heartbeat, &mut counts, &mut listing] {
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        }
        loop {
            tokio::select! {
                command = self.commands.recv() => {
                    let Some(command) = command else { return Ok(()) };
                    let mut batch = vec![command];
                    while batch.len() < BATCH {
                        match self.commands.try_recv() {
                            Ok(command) => batch.push(command),
                            Err(_) => break,
                        }
                    }
                    self.apply(connected, batch).await?;
                }
                Some(event) = self.whip_events.recv() => {
                    let envelope = WhipEnvelope { from: self.instance.clone(), event };
                    if let Ok(payload) = serde_json::to_string(&envelope) {
                        redis::cmd("PUBLISH")
                            .arg(WHIP_CHANNEL)
                            .arg(payload)
                            .query_async::<i64>(&mut connected.commands)
                            .await?;
                    }
                }
                message = connected.stream.next() => {
                    let Some(message) = message else {
                        return Err(Stop::Lost(closed()));
                    };
                    self.received(&message);
                }
                _ = heartbeat.tick() => self.rewrite_viewer_sets(&mut connected.commands).await?,
                _ = counts.tick() => self.read_room_counts(&mut connected.commands).await?,
                _ = listing.tick() => {
                    let counts = viewer_sets::read_counts(&mut connected.commands, now_unix_ms()).await?;
                    self.viewer_counts.set_shared(counts);
                }
            }
        }
    }

    async fn apply(
        &mut self,
        connected: &mut Connected,
        batch: Vec<ClusterCommand>,
    ) -> Result<(), RedisError> {
        let mut publishes = redis::pipe();
        let mut any_publish = false;
        for command in batch {
            self.remember(&command);
            match command {
                ClusterCommand::Subscribe { key } => {
                    connected.sink.subscribe(room_channel(&key)).await?;
                }
                ClusterCommand::Unsubscribe { key } => {
                    connected.sink.unsubscribe(room_channel(&key)).await?;
                }
                ClusterCommand::Viewers { live, viewers } => {
                    viewer_sets::write_sets(
                        &mut connected.commands,
                        &self.instance,
                        [(&live, &viewers)],
                    )
                    .await?;
                }
                ClusterCommand::Forget { live } => {
                    viewer_sets::write_sets(
                        &mut connected.commands,
                        &self.instance,
                        [(&live, &Vec::new())],
                    )
                    .await?;
                }
                ClusterCommand::Publish { key, event } => {
                    if let RoomEvent::LiveEnded { live_id } = &event {
                        viewer_sets::forget_count(&mut connected.commands, *live_id).await?;
                    }
                    let envelope = RoomEnvelope {
                        from: self.instance.clone(),
                        event,
                    };
                    let Ok(payload) = serde_json::to_string(&envelope) else {
                        continue;
                    };
                    publishes.publish(room_channel(&key), payload).ignore();
                    any_publish = true;
                }
                ClusterCommand::ChatSent { user } => {
                    self.count_chat(&mut connected.commands, user).await?;
                }
                ClusterCommand::SessionEnded { session } => {
                    let envelope = SessionEnvelope {
                        from: self.instance.clone(),
                        session,
                    };
                    if let Ok(payload) = serde_json::to_string(&envelope) {
                        publishes.publish(SESSIONS_CHANNEL, payload).ignore();
                        any_publish = true;
                    }
                }
            }
        }
        if any_publish {
            publishes.query_async::<()>(&mut connected.commands).await?;
        }
        Ok(())
    }

    /// Counts a message against the user's limit over all instances; the send that
    /// fills the window tells every instance (`chat_limits.rs`).
    async fn count_chat(
        &mut self,
        connection: &mut MultiplexedConnection,
        user: UserId,
    ) -> Result<(), RedisError> {
        self.sends += 1;
        let send_id = format!("{}:{}", self.instance, self.sends);
        let Some(retry_after) = chat_limits::count_send(connection, user, &send_id).await? else {
            return Ok(());
        };
        let notice = LimitNotice {
            user_id: user.0,
            retry_after_ms: u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX),
        };
        let _ = self
            .reports
            .send(ClusterReport::ChatLimited { user, retry_after });
        if let Ok(payload) = serde_json::to_string(&notice) {
            redis::cmd("PUBLISH")
                .arg(LIMITS_CHANNEL)
                .arg(payload)
                .query_async::<i64>(connection)
                .await?;
        }
        Ok(())
    }

    fn received(&mut self, message: &redis::Msg) {
        let channel = message.get_channel_name();
        let Ok(payload) = message.get_payload::<String>() else {
            return;
        };
        if channel == WHIP_CHANNEL {
            if let Ok(envelope) = serde_json::from_str::<WhipEnvelope>(&payload)
                && envelope.from != self.instance
            {
                self.whip_lives.apply_remote(envelope.event);
            }
            return;
        }
        if channel == SESSIONS_CHANNEL {
            if let Ok(envelope) = serde_json::from_str::<SessionEnvelope>(&payload)
                && envelope.from != self.instance
            {
                let _ = self.reports.send(ClusterReport::SessionEnded {
                    session: envelope.session,
                });
            }
            return;
        }
        if channel == LIMITS_CHANNEL {
            if let Ok(notice) = serde_json::from_str::<LimitNotice>(&payload) {
                let _ = self.reports.send(ClusterReport::ChatLimited {
                    user: UserId(notice.user_id),
                    retry_after: Duration::from_millis(notice.retry_after_ms.max(1)),
                });
            }
            return;
        }
        let Some(key) = room_key(channel) else {
            return;
        };
        let envelope = match serde_json::from_str::<RoomEnvelope>(&payload) {
            Ok(envelope) => envelope,
            Err(error) => {
                tracing::warn!(%error, channel, "ignoring a malformed room event from Redis");
                return;
            }
        };
        if envelope.from == self.instance {
            return;
        }
        let _ = self.reports.send(ClusterReport::Room {
            key: key.to_owned(),
            event: envelope.event,
        });
    }

    async fn rewrite_viewer_sets(
        &mut self,
        connection: &mut MultiplexedConnection,
    ) -> Result<(), RedisError> {
        viewer_sets::write_sets(connection, &self.instance, &self.viewer_sets).await
    }

    async fn read_room_counts(
        &mut self,
        connection: &mut MultiplexedConnection,
    ) -> Result<(), RedisError> {
        let lives: Vec<LiveId> = self.viewer_sets.keys().copied().collect();
        let counts = viewer_sets::count_all(connection, &lives, now_unix_ms()).await?;
        for (live, count) in lives.into_iter().zip(counts) {
            let _ = self.reports.send(ClusterReport::Viewers { live, count });
        }
        Ok(())
    }
}

fn timed_out() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "Redis did not answer in time",
    ))
}

fn closed() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "the Redis subscription closed",
    ))
}
