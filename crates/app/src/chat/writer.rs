//! [`ChatWriter`]: the task that saves chat messages, so that the chat server never
//! waits on SQLite. The server shows a message to the room at once, queues it here, and
//! tells its sender `chat:stored` when this task reports it written.
//!
//! Messages are written in order, in batches of one transaction. A batch that fails
//! (database locked, disk full, I/O error) is retried with a growing pause, for up to
//! `CHAT_WRITE_GIVE_UP_SECONDS`; then its messages are reported as not stored and the
//! task goes on with the next ones, so the chat recovers by itself once the database
//! does.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use privatehub_protocol::app_socket::ChatMessageId;
use tokio::sync::mpsc;

use crate::db::chat::NewMessage;
use crate::db::{self, DbPool, chat};
use crate::error::InternalError;
use crate::metrics::AppMetrics;

/// Messages waiting to be written before new ones are refused (`not_stored`).
pub const WRITE_QUEUE: usize = 10_000;
/// Messages per transaction, at most.
const BATCH: usize = 100;
const FIRST_RETRY: Duration = Duration::from_millis(100);
const LONGEST_RETRY: Duration = Duration::from_secs(2);

/// One message to save, with the id the chat server gave it.
#[derive(Debug, Clone)]
pub struct PendingWrite {
    pub row: NewMessage,
    pub queued_at: Instant,
}

/// What became of a batch.
#[derive(Debug)]
pub enum WriteOutcome {
    Stored(Vec<ChatMessageId>),
    /// Given up after the give-up time; `error` says why (for the log).
    NotStored {
        ids: Vec<ChatMessageId>,
        error: String,
    },
}

/// The writer's input side, held by the chat server.
pub type WriteQueue = mpsc::Sender<PendingWrite>;

/// The writer task. Create with [`ChatWriter::new`], spawn [`ChatWriter::run`].
pub struct ChatWriter {
    queue: mpsc::Receiver<PendingWrite>,
    pool: DbPool,
    /// To the chat server (a channel of its own, so the writer does not keep the
    /// server's command channel alive).
    outcomes: mpsc::UnboundedSender<WriteOutcome>,
    metrics: Arc<AppMetrics>,
    give_up_after: Duration,
}

impl ChatWriter {
    pub fn new(
        pool: DbPool,
        outcomes: mpsc::UnboundedSender<WriteOutcome>,
        metrics: Arc<AppMetrics>,
        give_up_after: Duration,
    ) -> (ChatWriter, WriteQueue) {
        let (sender, queue) = mpsc::channel(WRITE_QUEUE);
        let writer = ChatWriter {
            queue,
            pool,
            outcomes,
            metrics,
            give_up_after,
        };
        (writer, sender)
    }

    /// Runs until the chat server drops its queue.
    pub async fn run(mut self) {
        let mut batch = Vec::with_capacity(BATCH);
        while self.queue.recv_many(&mut batch, BATCH).await > 0 {
            let outcome = self.write_with_retries(&batch).await;
            self.metrics
                .chat_write_pending
                .fetch_sub(batch.len() as i64, Relaxed);
            if self.outcomes.send(outcome).is_err() {
                return;
            }
            batch.clear();
        }
    }

    async fn write_with_retries(&self, batch: &[PendingWrite]) -> WriteOutcome {
        let started = Instant::now();
        let mut pause = FIRST_RETRY;
        let ids = || {
            batch
                .iter()
                .map(|write| ChatMessageId(write.row.id))
                .collect::<Vec<_>>()
        };
        loop {
            let rows: Vec<NewMessage> = batch.iter().map(|write| write.row.clone()).collect();
            let result = db::run(&self.pool, move |connection| {
                chat::insert_messages(connection, &rows).map_err(InternalError::from)
            })
            .await;
            let oldest = batch
                .first()
                .map_or(Duration::ZERO, |w| w.queued_at.elapsed());
            self.metrics
                .chat_write_lag_ms
                .store(oldest.as_millis() as i64, Relaxed);
            match result {
                Ok(()) => {
                    if started.elapsed() > FIRST_RETRY {
                        tracing::info!(
                            messages = batch.len(),
                            after_ms = started.elapsed().as_millis() as u64,
                            "chat messages stored after the database recovered"
                        );
                    }
                    return WriteOutcome::Stored(ids());
                }
                Err(error) if started.elapsed() >= self.give_up_after => {
                    self.metrics
                        .chat_writes_failed
                        .fetch_add(batch.len() as u64, Relaxed);
                    tracing::error!(
                        %error,
                        messages = batch.len(),
                        "chat messages could not be stored; their senders are told"
                    );
                    return WriteOutcome::NotStored {
                        ids: ids(),
                        error: error.0,
                    };
                }
                Err(error) => {
                    if pause == FIRST_RETRY {
                        tracing::warn!(%error, "storing chat messages failed; retrying");
                    }
                    self.metrics.chat_write_retries.fetch_add(1, Relaxed);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(LONGEST_RETRY);
                }
            }
        }
    }
}
