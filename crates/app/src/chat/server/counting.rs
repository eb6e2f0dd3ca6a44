//! The viewer count of a room, as `docs/protocol.md` defines it, and how it reaches the
//! room, the lives API and the stored peak.

use std::time::{Duration, Instant};

use privatehub_protocol::LiveId;
use privatehub_protocol::app_socket::AppServerMessage;

use super::{ChatServer, ConnId, Room};
use crate::auth::client::ClientNetwork;
use crate::auth::session::SessionKey;
use crate::db::{self, chat};
use crate::error::InternalError;

/// Least time between two writes of raised peaks.
pub(super) const PEAK_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Who a viewer is, for the viewer count (`docs/protocol.md`, "Viewer count"): the tabs
/// of one signed-in session count once, anonymous sockets once per client network.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum ViewerKey {
    Session(SessionKey),
    Network(ClientNetwork),
    /// Address unknown (never for TCP): the socket alone.
    Socket(ConnId),
}

impl Room {
    /// The viewer count as `docs/protocol.md` defines it: over all instances when
    /// they share rooms (this instance's own viewers are part of that union, so the
    /// higher of the two is the fresher).
    pub(super) fn viewer_count(&self) -> u32 {
        let local = u32::try_from(self.viewers.len()).unwrap_or(u32::MAX);
        local.max(self.cluster_count.unwrap_or(0))
    }

    pub(super) fn add_viewer(&mut self, viewer: &ViewerKey) {
        let sockets = self.viewers.entry(viewer.clone()).or_insert(0);
        *sockets += 1;
        self.viewers_dirty |= *sockets == 1;
    }

    pub(super) fn remove_viewer(&mut self, viewer: &ViewerKey) {
        if let Some(sockets) = self.viewers.get_mut(viewer) {
            *sockets -= 1;
            if *sockets == 0 {
                self.viewers.remove(viewer);
                self.viewers_dirty = true;
            }
        }
    }
}

impl ChatServer {
    /// Records the room's viewer count for the lives API and the live's peak. Members
    /// hear about it with the next [`ChatServer::push_counts`].
    pub(super) fn record_count(&mut self, key: &str) {
        let Some(room) = self.rooms.get_mut(key) else {
            return;
        };
        let count = room.viewer_count();
        let Some(live) = &room.live else {
            return;
        };
        self.viewers.set(live.live_id, count);
        // Written with the next flush, not per arriving viewer: a join storm of
        // thousands would otherwise be thousands of database tasks.
        room.unstored_peak = room.unstored_peak.max(count);
    }

    /// Writes every room's new peak in one database task, at most once per
    /// [`PEAK_FLUSH_INTERVAL`]. (Ending a live stores the in-memory peak anyway; this keeps
    /// it across a crash.)
    pub(super) fn flush_peaks(&mut self) {
        if self.last_peak_flush.elapsed() < PEAK_FLUSH_INTERVAL {
            return;
        }
        self.last_peak_flush = Instant::now();
        let raised: Vec<(LiveId, u32)> = self
            .rooms
            .values_mut()
            .filter(|room| room.unstored_peak > room.stored_peak)
            .filter_map(|room| {
                room.stored_peak = room.unstored_peak;
                room.live
                    .as_ref()
                    .map(|live| (live.live_id, room.stored_peak))
            })
            .collect();
        if raised.is_empty() {
            return;
        }
        let pool = self.pool.clone();
        tokio::spawn(async move {
            let result = db::run(&pool, move |connection| {
                for (live_id, count) in raised {
                    chat::raise_peak_viewers(connection, live_id, count)
                        .map_err(InternalError::from)?;
                }
                Ok::<(), InternalError>(())
            })
            .await;
            if let Err(error) = result {
                tracing::warn!(%error, "storing peak viewers failed");
            }
        });
    }

    /// Sends `live:viewers` to every room whose count changed since the last push.
    pub(super) fn push_counts(&mut self) {
        let changed: Vec<(String, String, u32)> = self
            .rooms
            .iter_mut()
            .filter(|(_, room)| room.sent_count != Some(room.viewer_count()))
            .map(|(key, room)| {
                let count = room.viewer_count();
                room.sent_count = Some(count);
                (key.clone(), room.channel.to_string(), count)
            })
            .collect();
        for (key, channel, count) in changed {
            self.broadcast(&key, AppServerMessage::LiveViewers { channel, count });
        }
    }
}
