//! Fan-out on the sockets' own threads. Each actix worker runs one [`Fanout`] task;
//! a socket opened on that worker is registered with it. The chat server sends a
//! broadcast once per worker, with that worker's members of the room, and each worker
//! queues it into its own sockets' outboxes. The serial part of a broadcast in the chat
//! task is one send per worker, the per-member work runs on every core at once, and
//! waking a socket's task is a local wake, not a wake across threads.
//!
//! Everything the chat server sends a socket goes through the socket's worker, so a
//! socket receives the server's messages in the order they were sent.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use privatehub_edge::websocket::{Outbox, OutboxError};
use tokio::sync::mpsc;

use super::{ConnId, Outgoing, OutgoingKind};
use crate::metrics::AppMetrics;

/// What the chat server asks a worker to queue.
#[derive(Debug)]
pub(super) enum FanoutJob {
    /// One message for these sockets of the worker.
    Broadcast {
        outgoing: Outgoing,
        members: Arc<[(ConnId, Outbox)]>,
    },
    /// One message for one socket.
    Direct {
        conn: ConnId,
        outbox: Outbox,
        outgoing: Outgoing,
    },
}

/// The way to one worker's fan-out task.
#[derive(Debug, Clone)]
pub struct Fanout {
    pub(super) id: usize,
    jobs: mpsc::UnboundedSender<FanoutJob>,
}

impl Fanout {
    /// This worker's fan-out task, started with the first socket of the thread. Call
    /// on an actix worker (a local task set).
    pub fn for_this_worker(metrics: &Arc<AppMetrics>) -> Fanout {
        thread_local! {
            static THIS_WORKER: RefCell<Option<Fanout>> = const { RefCell::new(None) };
        }
        THIS_WORKER.with(|cell| {
            let mut cell = cell.borrow_mut();
            if let Some(fanout) = cell.as_ref().filter(|fanout| !fanout.jobs.is_closed()) {
                return fanout.clone();
            }
            let fanout = Fanout::spawn(metrics.clone());
            *cell = Some(fanout.clone());
            fanout
        })
    }

    fn spawn(metrics: Arc<AppMetrics>) -> Fanout {
        static NEXT_ID: AtomicUsize = AtomicUsize::new(0);
        let (jobs, mut queue) = mpsc::unbounded_channel::<FanoutJob>();
        actix_web::rt::spawn(async move {
            while let Some(job) = queue.recv().await {
                match job {
                    FanoutJob::Broadcast { outgoing, members } => {
                        for (conn, outbox) in members.iter() {
                            let _ = queue_into(*conn, outbox, outgoing.clone(), &metrics);
                        }
                    }
                    FanoutJob::Direct {
                        conn,
                        outbox,
                        outgoing,
                    } => {
                        let _ = queue_into(conn, &outbox, outgoing, &metrics);
                    }
                }
            }
        });
        Fanout {
            id: NEXT_ID.fetch_add(1, Relaxed),
            jobs,
        }
    }

    /// Hands `job` to the worker; false if its task is gone (the worker stopped).
    pub(super) fn send(&self, job: FanoutJob) -> bool {
        self.jobs.send(job).is_ok()
    }
}

/// Queues `outgoing` for one socket. A socket whose outbox is full is cut: its loop
/// ends and tells the chat server, which forgets it.
pub(super) fn queue_into(
    conn: ConnId,
    outbox: &Outbox,
    outgoing: Outgoing,
    metrics: &AppMetrics,
) -> Result<(), OutboxError> {
    let queued = match outgoing.kind {
        OutgoingKind::ChatMessage => outbox.timed_text(outgoing.json, outgoing.queued_at),
        OutgoingKind::ServerRestarting | OutgoingKind::Other => outbox.text(outgoing.json),
    };
    if queued == Err(OutboxError::Full) {
        tracing::warn!(?conn, "socket too slow; dropping it");
        metrics.sockets_dropped_slow.fetch_add(1, Relaxed);
        outbox.cut();
    }
    queued
}
