//! [`ChatServer`]: the single task that owns all rooms, and [`ChatHandle`], the
//! cloneable way to talk to it.
//!
//! A room is a channel (a broadcaster's username) and the sockets that joined it. The
//! server checks who may post, rate-limits, stores messages, and fans events out to
//! each member's bounded outbox. A member whose outbox is full is dropped (its socket
//! closes and its page reconnects) rather than slowing everyone down.

mod clustering;
mod counting;
mod fanout;
mod handle;
mod history;
mod joining;
mod loading;
pub mod message_ids;
mod moderation;
mod storing;

use self::counting::ViewerKey;
pub use self::fanout::Fanout;
use self::fanout::FanoutJob;
pub use self::handle::{ChatHandle, ChatUser, Command, ConnId, Outgoing, OutgoingKind};
pub use self::message_ids::MessageIdSource;
use self::message_ids::MessageIds;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use privatehub_edge::websocket::{CloseCode, Outbox, WebSocketCloseReason};
use privatehub_protocol::LiveId;
use privatehub_protocol::app_socket::{
    AppClientMessage, AppServerMessage, AppSocketErrorCode, ChatMessage, ChatMessageId, LiveSummary,
};
use tokio::sync::mpsc;

use self::storing::PendingMessage;
use super::writer::{ChatWriter, PendingWrite, WriteOutcome, WriteQueue};
use crate::auth::session::SessionKey;
use crate::cluster::{ChatLink, ClusterCommand, ClusterReport, RoomEvent};
use crate::db::users::UserId;
use crate::db::{DbPool, chat};
use crate::domain::{ChatText, ChatTextError, Username};
use crate::metrics::AppMetrics;
use crate::viewers::ViewerCounts;
use privatehub_edge::limits::SlidingWindow;

/// Messages a signed-in user may post per [`CHAT_RATE_WINDOW`], across all their tabs.
pub const CHAT_RATE_MAX: usize = 5;
pub const CHAT_RATE_WINDOW: Duration = Duration::from_secs(5);
/// Viewer counts are pushed to a room at most this often (joins and leaves in between
/// are coalesced), so a crowd arriving does not cost a message per member per arrival.
pub const VIEWER_COUNT_INTERVAL: Duration = Duration::from_millis(250);
/// Pending messages per socket before it is considered too slow and dropped.
pub const OUTBOX_CAPACITY: usize = 256;
/// What `server:restarting` suggests as the earliest reconnect; pages add a random
/// spread so a crowd does not come back in the same instant.
pub const RESTART_RETRY_AFTER_MS: u64 = 1000;

struct Conn {
    user: Option<ChatUser>,
    viewer: ViewerKey,
    outbox: Outbox,
    /// The fan-out task of the socket's worker (`None`: queued from the chat task).
    fanout: Option<Fanout>,
    /// Canonical (lowercase) channel name of the joined room.
    room: Option<String>,
    /// The room it waits to enter while that room loads.
    joining: Option<String>,
}

struct Room {
    channel: Username,
    owner: UserId,
    live: Option<LiveSummary>,
    members: HashSet<ConnId>,
    /// `members` grouped by worker for [`ChatServer::broadcast`]; `None` after a change.
    by_worker: Option<MembersByWorker>,
    /// The current live's recent messages, as the members saw them (`history.rs`).
    history: std::collections::VecDeque<ChatMessage>,
    banned: HashSet<UserId>,
    /// Highest viewer count already written to the database for the current live.
    stored_peak: u32,
    /// Highest viewer count seen, written at the next peak flush when above `stored_peak`.
    unstored_peak: u32,
    /// Members that are not the channel's owner, by viewer, with their socket counts.
    viewers: HashMap<ViewerKey, u32>,
    /// The count last pushed to the members; `None` forces the next push.
    sent_count: Option<u32>,
    /// The count over all instances, as the cluster link last read it.
    cluster_count: Option<u32>,
    /// `viewers` changed since the cluster link last got them.
    viewers_dirty: bool,
}

/// Members of a room on one worker, as its fan-out task gets them.
type WorkerMembers = Arc<[(ConnId, Outbox)]>;

/// A room's members as each worker's fan-out task gets them.
struct MembersByWorker {
    groups: Vec<(Fanout, WorkerMembers)>,
    without_worker: Vec<ConnId>,
}

impl MembersByWorker {
    fn group(members: &HashSet<ConnId>, conns: &HashMap<ConnId, Conn>) -> MembersByWorker {
        let mut groups: HashMap<usize, (Fanout, Vec<(ConnId, Outbox)>)> = HashMap::new();
        let mut without_worker = Vec::new();
        for conn in members {
            let Some(state) = conns.get(conn) else {
                continue;
            };
            match &state.fanout {
                Some(fanout) => groups
                    .entry(fanout.id)
                    .or_insert_with(|| (fanout.clone(), Vec::new()))
                    .1
                    .push((*conn, state.outbox.clone())),
                None => without_worker.push(*conn),
            }
        }
        MembersByWorker {
            groups: groups
                .into_values()
                .map(|(fanout, members)| (fanout, Arc::from(members)))
                .collect(),
            without_worker,
        }
    }
}

/// The task that owns all rooms. Create with [`ChatServer::new`], spawn
/// [`ChatServer::run`].
pub struct ChatServer {
    commands: mpsc::UnboundedReceiver<Command>,
    pool: DbPool,
    viewers: ViewerCounts,
    conns: HashMap<ConnId, Conn>,
    rooms: HashMap<String, Room>,
    limits: HashMap<UserId, SlidingWindow>,
    metrics: Arc<AppMetrics>,
    /// Where messages go to be saved, and what the writer reports back.
    writes: WriteQueue,
    outcomes: mpsc::UnboundedReceiver<WriteOutcome>,
    /// Messages shown to their room but not yet reported stored.
    pending: HashMap<ChatMessageId, PendingMessage>,
    /// The ids the next messages get (`message_ids.rs`).
    message_ids: MessageIds,
    /// When raised peaks were last written (see `counting.rs`).
    last_peak_flush: Instant,
    /// Rooms being loaded, with the sockets waiting to enter (`joining.rs`).
    rooms_loading: HashMap<String, joining::Waiting>,
    /// Where spawned database reads and moderation writes report back.
    loaded_sender: mpsc::UnboundedSender<joining::Loaded>,
    loaded: mpsc::UnboundedReceiver<joining::Loaded>,
    /// The cluster link (`crate::cluster`), when several instances share rooms.
    cluster: Option<mpsc::UnboundedSender<ClusterCommand>>,
    cluster_reports: Option<mpsc::UnboundedReceiver<ClusterReport>>,
    /// This instance's id in the cluster (empty alone).
    instance: String,
    /// Users another instance counted past the shared chat limit, until when.
    shared_chat_limits: HashMap<UserId, Instant>,
}

impl ChatServer {
    /// The server, the writer task that saves its messages (spawn both), and the
    /// handle. `message_ids` says where message ids come from.
    pub fn new(
        pool: DbPool,
        viewers: ViewerCounts,
        metrics: Arc<AppMetrics>,
        message_ids: MessageIdSource,
        give_up_writes_after: Duration,
        cluster: Option<(String, ChatLink)>,
    ) -> (ChatServer, ChatWriter, ChatHandle) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (outcome_sender, outcomes) = mpsc::unbounded_channel();
        let (loaded_sender, loaded) = mpsc::unbounded_channel();
        let (writer, writes) = ChatWriter::new(
            pool.clone(),
            outcome_sender,
            metrics.clone(),
            give_up_writes_after,
        );
        let server = ChatServer {
            commands: rx,
            pool,
            viewers,
            conns: HashMap::new(),
            rooms: HashMap::new(),
            limits: HashMap::new(),
            metrics,
            writes,
            outcomes,
            pending: HashMap::new(),
            message_ids: MessageIds::new(message_ids),
            last_peak_flush: Instant::now(),
            rooms_loading: HashMap::new(),
            loaded_sender,
            loaded,
            instance: cluster
                .as_ref()
                .map(|(instance, _)| instance.clone())
                .unwrap_or_default(),
            cluster: cluster.as_ref().map(|(_, link)| link.commands.clone()),
            cluster_reports: cluster.map(|(_, link)| link.reports),
            shared_chat_limits: HashMap::new(),
        };
        (server, writer, ChatHandle { commands: tx })
    }

    /// Runs until every [`ChatHandle`] is dropped.
    pub async fn run(mut self) {
        let mut prune = tokio::time::interval(Duration::from_secs(60));
        let mut counts = tokio::time::interval(VIEWER_COUNT_INTERVAL);
        counts.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = counts.tick() => {
                    self.push_counts();
                    self.flush_peaks();
                    self.sync_viewer_sets();
                }
                Some(report) = crate::cluster::next_report(&mut self.cluster_reports) => self.cluster_report(report),
                command = self.commands.recv() => match command {
                    Some(command) => self.handle(command),
                    None => break,
                },
                Some(outcome) = self.outcomes.recv() => self.write_outcome(outcome),
                Some(loaded) = self.loaded.recv() => self.loaded(loaded),
                _ = prune.tick() => {
                    let now = Instant::now();
                    self.limits.retain(|_, limiter| !limiter.is_idle(now));
                    self.shared_chat_limits.retain(|_, until| *until > now);
                }
            }
        }
        tracing::info!("chat server stopped");
    }

    /// Never awaits: database work is spawned and reports back (`joining.rs`).
    fn handle(&mut self, command: Command) {
        match command {
            Command::Connect {
                conn,
                user,
                network,
                outbox,
                fanout,
            } => {
                let viewer = match (&user, network) {
                    (Some(user), _) => ViewerKey::Session(user.session.clone()),
                    (None, Some(network)) => ViewerKey::Network(network),
                    (None, None) => ViewerKey::Socket(conn),
                };
                self.conns.insert(
                    conn,
                    Conn {
                        user,
                        viewer,
                        outbox,
                        fanout,
                        room: None,
                        joining: None,
                    },
                );
            }
            Command::SessionEnded { session } => {
                self.cluster_session_ended(&session);
                self.end_session(&session);
            }
            Command::Shutdown { done } => {
                self.shut_down();
                let _ = done.send(());
            }
            Command::Disconnect { conn } => self.remove_conn(conn),
            Command::Client { conn, message } => self.client_message(conn, message),
            Command::LiveStarted { channel, live } => self.live_started(channel, live),
            Command::LiveEnded { channel, live } => self.live_ended(channel, live),
        }
    }

    fn client_message(&mut self, conn: ConnId, message: AppClientMessage) {
        let Some(state) = self.conns.get(&conn) else {
            return;
        };
        match message {
            AppClientMessage::UserOnline => {
                let username = state.user.as_ref().map(|user| user.username.to_string());
                self.deliver(conn, AppServerMessage::UserOnline { username });
            }
            AppClientMessage::Ping => self.deliver(conn, AppServerMessage::Pong),
            AppClientMessage::LiveJoin { channel } => self.join(conn, &channel),
            AppClientMessage::LiveLeave => self.leave(conn),
            AppClientMessage::ChatSend { text } => {
                if let Err((code, message, retry)) = self.chat_send(conn, &text) {
                    self.deliver_error(conn, code, message, retry);
                }
            }
            AppClientMessage::ChatDelete { message_id } => {
                if let Err((code, message, _)) = self.chat_delete(conn, message_id) {
                    self.deliver_error(conn, code, message, None);
                }
            }
            AppClientMessage::ChatBan { username } => {
                if let Err((code, message, _)) = self.chat_ban(conn, &username) {
                    self.deliver_error(conn, code, message, None);
                }
            }
        }
    }

    /// Takes `conn` out of its room, if any.
    fn leave(&mut self, conn: ConnId) {
        let Some(state) = self.conns.get_mut(&conn) else {
            return;
        };
        state.joining = None;
        let Some(key) = state.room.take() else {
            return;
        };
        let user = state.user.as_ref().map(|user| user.id);
        let viewer = state.viewer.clone();
        let empty = match self.rooms.get_mut(&key) {
            Some(room) => {
                if room.members.remove(&conn) {
                    room.by_worker = None;
                    if user != Some(room.owner) {
                        room.remove_viewer(&viewer);
                    }
                }
                room.members.is_empty()
            }
            None => return,
        };
        if empty {
            // Forget the room; its state is reloaded from the database on the next join.
            if let Some(room) = self.rooms.remove(&key) {
                if let Some(live) = &room.live {
                    self.viewers.set(live.live_id, 0);
                }
                self.cluster_forget_room(&key, room.live_id());
            }
        } else {
            self.record_count(&key);
        }
    }

    /// Takes `conn` out of the server and closes its socket (if it is not closing
    /// already): its page reconnects.
    fn remove_conn(&mut self, conn: ConnId) {
        self.leave(conn);
        if let Some(state) = self.conns.remove(&conn) {
            state.outbox.close(Some(WebSocketCloseReason {
                code: CloseCode::Again,
                description: Some("reconnect".into()),
            }));
        }
    }

    /// Sends `server:restarting` to every socket and drops them all; rooms are
    /// reloaded from the database by the next process.
    fn shut_down(&mut self) {
        let restarting = AppServerMessage::ServerRestarting {
            retry_after_ms: RESTART_RETRY_AFTER_MS,
        };
        let Some(outgoing) = Outgoing::new(&restarting, Instant::now()) else {
            self.conns.clear();
            self.rooms.clear();
            return;
        };
        for (_, state) in self.conns.drain() {
            let _ = state.outbox.text(outgoing.json.clone());
            state.outbox.close(Some(WebSocketCloseReason {
                code: CloseCode::Restart,
                description: Some("server restarting".into()),
            }));
        }
        self.rooms.clear();
    }

    /// Drops every socket of `session`; dropping their outboxes closes them.
    fn end_session(&mut self, session: &SessionKey) {
        let ended: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, state)| {
                state
                    .user
                    .as_ref()
                    .is_some_and(|user| &user.session == session)
            })
            .map(|(conn, _)| *conn)
            .collect();
        for conn in ended {
            self.metrics
                .sockets_ended_by_logout
                .fetch_add(1, Ordering::Relaxed);
            self.remove_conn(conn);
        }
    }

    fn chat_send(&mut self, conn: ConnId, raw_text: &str) -> Result<(), Refusal> {
        let (user, key) = self.member(conn)?;
        let room = self.rooms.get(&key).ok_or_else(not_joined)?;
        let live = room.live.clone().ok_or_else(|| {
            refusal(
                AppSocketErrorCode::NotLive,
                "The chat opens when the live starts.",
            )
        })?;
        if room.banned.contains(&user.id) {
            return Err(refusal(
                AppSocketErrorCode::Banned,
                "You are banned from this chat.",
            ));
        }
        let channel = room.channel.to_string();
        let text = ChatText::parse(raw_text).map_err(|error| match error {
            ChatTextError::Empty => refusal(AppSocketErrorCode::EmptyMessage, &error.to_string()),
            ChatTextError::TooLong => {
                refusal(AppSocketErrorCode::MessageTooLong, &error.to_string())
            }
        })?;
        let now = Instant::now();
        // The window shared by all instances first; a message it refuses does not count
        // in this instance's own.
        let wait = match self.shared_chat_wait(user.id, now) {
            Some(wait) => Some(wait),
            None => self
                .limits
                .entry(user.id)
                .or_insert_with(|| SlidingWindow::new(CHAT_RATE_MAX, CHAT_RATE_WINDOW))
                .try_acquire(now)
                .err(),
        };
        if let Some(wait) = wait {
            return Err((
                AppSocketErrorCode::RateLimited,
                format!(
                    "You are sending messages too fast (at most {CHAT_RATE_MAX} every {} seconds).",
                    CHAT_RATE_WINDOW.as_secs()
                ),
                Some(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1)),
            ));
        }
        // Shown to the room now, saved by the writer; the sender hears `chat:stored`.
        let now_ms = now_unix_ms();
        self.top_up_message_ids();
        let Some(id) = self.message_ids.peek() else {
            tracing::warn!("no chat message id is available (the database is unreachable?)");
            return Err(refusal(
                AppSocketErrorCode::NotStored,
                "The chat cannot save messages right now. Try again in a moment.",
            ));
        };
        let write = PendingWrite {
            row: chat::NewMessage {
                id,
                live: live.live_id,
                author: user.id,
                body: text.as_str().to_owned(),
                sent_at_ms: now_ms,
            },
            queued_at: Instant::now(),
        };
        if self.writes.try_send(write).is_err() {
            tracing::warn!("the chat write queue is full; refusing a message");
            return Err(refusal(
                AppSocketErrorCode::NotStored,
                "The chat cannot save messages right now. Try again in a moment.",
            ));
        }
        self.message_ids.take();
        self.metrics
            .chat_write_pending
            .fetch_add(1, Ordering::Relaxed);
        let message = ChatMessage {
            id: ChatMessageId(id),
            channel,
            live_id: live.live_id,
            username: user.username.to_string(),
            text: text.into_inner(),
            sent_at_ms: now_ms,
        };
        self.pending.insert(
            message.id,
            PendingMessage {
                sender: conn,
                room: key.clone(),
                author: user.id,
                message: message.clone(),
                withdrawn: false,
            },
        );
        if let Some(room) = self.rooms.get_mut(&key) {
            room.remember(message.clone());
        }
        self.cluster_chat_sent(user.id);
        self.publish(
            &key,
            RoomEvent::ChatMessage {
                message: message.clone(),
                author: user.id.0,
            },
        );
        self.broadcast(&key, AppServerMessage::ChatMessage { message });
        Ok(())
    }

    /// A live started through this instance: here, and on every other.
    fn live_started(&mut self, channel: Username, live: LiveSummary) {
        let key = channel.canonical();
        self.publish(&key, RoomEvent::LiveStarted { live: live.clone() });
        self.apply_live_started(&key, live);
    }

    fn live_ended(&mut self, channel: Username, live: LiveId) {
        let key = channel.canonical();
        self.publish(&key, RoomEvent::LiveEnded { live_id: live });
        self.apply_live_ended(&key, live);
    }

    fn apply_live_started(&mut self, key: &str, live: LiveSummary) {
        let key = key.to_owned();
        self.room_changed_while_loading(&key);
        let Some(room) = self.rooms.get_mut(&key) else {
            return;
        };
        room.live = Some(live.clone());
        room.history.clear();
        room.stored_peak = 0;
        room.unstored_peak = 0;
        room.sent_count = None;
        room.cluster_count = None;
        room.viewers_dirty = true;
        let channel = room.channel.to_string();
        self.broadcast(
            &key,
            AppServerMessage::LiveStarted {
                channel: channel.clone(),
                live,
            },
        );
        self.broadcast(
            &key,
            AppServerMessage::ChatHistory {
                channel,
                messages: Vec::new(),
            },
        );
        self.record_count(&key);
    }

    fn apply_live_ended(&mut self, key: &str, live: LiveId) {
        self.viewers.finish(live);
        let key = key.to_owned();
        self.cluster_forget_live(live);
        self.room_changed_while_loading(&key);
        let Some(room) = self.rooms.get_mut(&key) else {
            return;
        };
        if room
            .live
            .as_ref()
            .is_some_and(|current| current.live_id == live)
        {
            room.live = None;
        }
        let channel = room.channel.to_string();
        self.broadcast(
            &key,
            AppServerMessage::LiveEnded {
                channel,
                live_id: live,
            },
        );
    }

    /// The signed-in user of `conn` and the key of the room it joined.
    fn member(&self, conn: ConnId) -> Result<(ChatUser, String), Refusal> {
        let state = self.conns.get(&conn).ok_or_else(not_joined)?;
        let user = state
            .user
            .clone()
            .ok_or_else(|| refusal(AppSocketErrorCode::NotSignedIn, "Sign in to chat."))?;
        let key = state.room.clone().ok_or_else(not_joined)?;
        Ok((user, key))
    }

    fn broadcast(&mut self, key: &str, message: AppServerMessage) {
        // Serialized once, and one clock read, per broadcast rather than per member.
        let Some(outgoing) = Outgoing::new(&message, Instant::now()) else {
            return;
        };
        let Some(room) = self.rooms.get_mut(key) else {
            return;
        };
        let by_worker = room
            .by_worker
            .get_or_insert_with(|| MembersByWorker::group(&room.members, &self.conns));
        let mut direct = by_worker.without_worker.clone();
        for (fanout, members) in &by_worker.groups {
            let job = FanoutJob::Broadcast {
                outgoing: outgoing.clone(),
                members: members.clone(),
            };
            if !fanout.send(job) {
                direct.extend(members.iter().map(|(conn, _)| *conn));
            }
        }
        for member in direct {
            self.deliver_outgoing(member, outgoing.clone());
        }
    }

    /// Queues `message` for `conn`; a socket that cannot keep up is dropped.
    fn deliver(&mut self, conn: ConnId, message: AppServerMessage) {
        if let Some(outgoing) = Outgoing::new(&message, Instant::now()) {
            self.deliver_outgoing(conn, outgoing);
        }
    }

    /// Through the socket's worker when it has one (keeping the order of everything
    /// the server sends it), else straight into its outbox.
    fn deliver_outgoing(&mut self, conn: ConnId, outgoing: Outgoing) {
        let Some(state) = self.conns.get(&conn) else {
            return;
        };
        if let Some(fanout) = &state.fanout {
            let job = FanoutJob::Direct {
                conn,
                outbox: state.outbox.clone(),
                outgoing: outgoing.clone(),
            };
            if fanout.send(job) {
                return;
            }
        }
        if fanout::queue_into(conn, &state.outbox, outgoing, &self.metrics).is_err() {
            self.remove_conn(conn);
        }
    }

    fn deliver_error(
        &mut self,
        conn: ConnId,
        code: AppSocketErrorCode,
        message: String,
        retry_after_ms: Option<u64>,
    ) {
        self.deliver(
            conn,
            AppServerMessage::Error {
                code,
                message,
                retry_after_ms,
                message_id: None,
            },
        );
    }

    fn deliver_unknown_channel(&mut self, conn: ConnId) {
        self.deliver_error(
            conn,
            AppSocketErrorCode::UnknownChannel,
            "There is no such channel.".into(),
            None,
        );
    }

    fn deliver_internal_error(&mut self, conn: ConnId) {
        let (code, message, _) = internal();
        self.deliver_error(conn, code, message, None);
    }
}

/// Why a client request was refused: code, message for the user, retry-after.
type Refusal = (AppSocketErrorCode, String, Option<u64>);

fn refusal(code: AppSocketErrorCode, message: &str) -> Refusal {
    (code, message.to_owned(), None)
}

fn not_joined() -> Refusal {
    refusal(AppSocketErrorCode::NotJoined, "Join a live first.")
}

fn internal() -> Refusal {
    refusal(
        AppSocketErrorCode::Internal,
        "Something went wrong on the server. Try again.",
    )
}

fn now_unix_ms() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}
