//! Several app instances behind one load balancer, sharing what must be shared through
//! Redis (`REDIS_URL`): room events (chat messages, deletions, bans, lives starting and
//! ending), viewer counts (`viewer_sets.rs`) and rate limits (`login_limits.rs`,
//! `chat_limits.rs`). Without `REDIS_URL` nothing here runs and the app works alone.
//!
//! The chat server never waits on Redis: it sends [`ClusterCommand`]s to the one
//! [`link::ClusterLink`] task and gets [`ClusterReport`]s back. Request handlers that
//! want a shared counter (log-ins) use the link's current connection, and fall back to
//! the instance's own limits while Redis is away.

pub mod chat_limits;
pub mod events;
mod link;
pub mod login_limits;
pub mod viewer_sets;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use redis::aio::MultiplexedConnection;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::mpsc;

pub use self::events::{ClusterCommand, ClusterReport, RoomEvent};
use crate::metrics::AppMetrics;
use crate::viewers::ViewerCounts;
use crate::whip::WhipLives;

/// The link's current command connection, `None` while Redis is away.
#[derive(Debug, Clone, Default)]
pub struct SharedConnection(Arc<Mutex<Option<(MultiplexedConnection, Instant)>>>);

impl SharedConnection {
    fn set(&self, connection: Option<MultiplexedConnection>) {
        *self.lock() = connection.map(|connection| (connection, Instant::now()));
    }

    /// A handle on the connection (cheap: it is multiplexed), if Redis is reachable.
    pub fn get(&self) -> Option<MultiplexedConnection> {
        self.lock()
            .as_ref()
            .map(|(connection, _)| connection.clone())
    }

    /// Whether Redis has been reachable for at least `how_long` without a break.
    pub fn connected_for(&self, how_long: std::time::Duration) -> bool {
        self.lock()
            .as_ref()
            .is_some_and(|(_, since)| since.elapsed() >= how_long)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(MultiplexedConnection, Instant)>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// This instance's part in a cluster: held in the app state when `REDIS_URL` is set.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// Random per process: tells this instance's events and viewer sets from others'.
    pub instance: String,
    pub connection: SharedConnection,
}

/// What [`Cluster::start`] gives the chat server: where to send commands, where
/// reports arrive.
pub struct ChatLink {
    pub commands: mpsc::UnboundedSender<ClusterCommand>,
    pub reports: mpsc::UnboundedReceiver<ClusterReport>,
}

impl Cluster {
    /// Parses `url` and spawns the link task (it connects, and reconnects, by itself;
    /// an unreachable Redis at start is not an error). Must run inside the runtime.
    pub fn start(
        url: &SecretString,
        viewer_counts: ViewerCounts,
        whip_lives: Arc<WhipLives>,
        metrics: Arc<AppMetrics>,
    ) -> Result<(Cluster, ChatLink), redis::RedisError> {
        let client = redis::Client::open(url.expose_secret())?;
        let instance = random_instance_id();
        let connection = SharedConnection::default();
        let (command_sender, commands) = mpsc::unbounded_channel();
        let (report_sender, reports) = mpsc::unbounded_channel();
        let (whip_sender, whip_events) = mpsc::unbounded_channel();
        whip_lives.mirror_to(whip_sender);
        let link = link::ClusterLink {
            client,
            instance: instance.clone(),
            commands,
            reports: report_sender,
            shared: connection.clone(),
            viewer_counts,
            subscribed: HashSet::new(),
            viewer_sets: HashMap::new(),
            sends: 0,
            whip_lives,
            whip_events,
            metrics,
        };
        tokio::spawn(link.run());
        Ok((
            Cluster {
                instance,
                connection,
            },
            ChatLink {
                commands: command_sender,
                reports,
            },
        ))
    }
}

/// The next report for the chat server's loop, or never when the instance is alone.
pub async fn next_report(
    reports: &mut Option<mpsc::UnboundedReceiver<ClusterReport>>,
) -> Option<ClusterReport> {
    match reports {
        Some(reports) => reports.recv().await,
        None => std::future::pending().await,
    }
}

fn random_instance_id() -> String {
    let bytes: [u8; 8] = rand::random();
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

pub(crate) fn now_unix_ms() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}
