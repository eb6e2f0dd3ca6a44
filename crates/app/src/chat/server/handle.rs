//! The chat server's interface: [`ChatHandle`], the closed [`Command`] enum it sends,
//! and the types that cross the task boundary.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytestring::ByteString;
use privatehub_edge::websocket::Outbox;
use privatehub_protocol::LiveId;
use privatehub_protocol::app_socket::{AppClientMessage, AppServerMessage, LiveSummary};

use super::Fanout;
use tokio::sync::mpsc;

use crate::auth::client::ClientNetwork;
use crate::auth::session::SessionKey;
use crate::db::users::UserId;
use crate::domain::Username;

/// A message queued for one socket: its JSON text, serialized once however many sockets
/// of a room get it (cloning shares the bytes), with when it was queued (for the
/// delivery-delay histogram).
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub json: ByteString,
    pub kind: OutgoingKind,
    pub queued_at: Instant,
}

/// What the socket's loop must know of a message it forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutgoingKind {
    /// A chat line: its delay is observed.
    ChatMessage,
    /// The last message before the socket closes for a restart.
    ServerRestarting,
    Other,
}

impl Outgoing {
    /// `message` serialized; `None` (logged) if it cannot be, which a derived
    /// `Serialize` of these types never does.
    pub fn new(message: &AppServerMessage, queued_at: Instant) -> Option<Outgoing> {
        let json = serde_json::to_string(message)
            .map_err(|error| tracing::error!(%error, "serializing a socket message failed"))
            .ok()?;
        let kind = match message {
            AppServerMessage::ChatMessage { .. } => OutgoingKind::ChatMessage,
            AppServerMessage::ServerRestarting { .. } => OutgoingKind::ServerRestarting,
            _ => OutgoingKind::Other,
        };
        Some(Outgoing {
            json: ByteString::from(json),
            kind,
            queued_at,
        })
    }
}

/// Identifies one socket connection to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(u64);

impl ConnId {
    pub(super) fn next() -> ConnId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        ConnId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// The signed-in user behind a socket.
#[derive(Debug, Clone)]
pub struct ChatUser {
    pub id: UserId,
    pub username: Username,
    /// The log-in session the socket was opened with.
    pub session: SessionKey,
}

/// Everything the server can be asked to do.
#[derive(Debug)]
pub enum Command {
    /// A socket opened; `outbox` receives what the server sends it.
    Connect {
        conn: ConnId,
        user: Option<ChatUser>,
        network: Option<ClientNetwork>,
        outbox: Outbox,
        /// The fan-out task of the socket's worker.
        fanout: Option<Fanout>,
    },
    /// A log-in session ended: its sockets are closed.
    SessionEnded { session: SessionKey },
    /// The app is stopping: every socket is told and closed; `done` fires once the
    /// notices are queued.
    Shutdown {
        done: tokio::sync::oneshot::Sender<()>,
    },
    /// A socket closed.
    Disconnect { conn: ConnId },
    /// A socket sent a message.
    Client {
        conn: ConnId,
        message: AppClientMessage,
    },
    /// `POST /api/lives/start` created a live.
    LiveStarted {
        channel: Username,
        live: LiveSummary,
    },
    /// `POST /api/lives/stop` ended a live.
    LiveEnded { channel: Username, live: LiveId },
}

/// Cloneable handle to the [`ChatServer`] task. Sending never blocks.
#[derive(Debug, Clone)]
pub struct ChatHandle {
    pub(super) commands: mpsc::UnboundedSender<Command>,
}

impl ChatHandle {
    /// Registers a socket and returns its id.
    pub fn connect(
        &self,
        user: Option<ChatUser>,
        network: Option<ClientNetwork>,
        outbox: Outbox,
        fanout: Option<Fanout>,
    ) -> ConnId {
        let conn = ConnId::next();
        self.send(Command::Connect {
            conn,
            user,
            network,
            outbox,
            fanout,
        });
        conn
    }

    /// Closes every socket opened with `session` (log-out).
    pub fn session_ended(&self, session: SessionKey) {
        self.send(Command::SessionEnded { session });
    }

    /// Tells every socket the server is restarting and closes them; returns once the
    /// notices are queued (or the chat server is gone).
    pub async fn shutdown(&self) {
        let (done, queued) = tokio::sync::oneshot::channel();
        self.send(Command::Shutdown { done });
        let _ = queued.await;
    }

    pub fn disconnect(&self, conn: ConnId) {
        self.send(Command::Disconnect { conn });
    }

    pub fn client_message(&self, conn: ConnId, message: AppClientMessage) {
        self.send(Command::Client { conn, message });
    }

    /// Tells the channel's room that a live started.
    pub fn live_started(&self, channel: Username, live: LiveSummary) {
        self.send(Command::LiveStarted { channel, live });
    }

    /// Tells the channel's room that its live ended.
    pub fn live_ended(&self, channel: Username, live: LiveId) {
        self.send(Command::LiveEnded { channel, live });
    }

    fn send(&self, command: Command) {
        if self.commands.send(command).is_err() {
            tracing::error!("the chat server has stopped; command dropped");
        }
    }
}
