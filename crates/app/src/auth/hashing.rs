//! The password-hashing pool: a few OS threads (one per core by default), each owning
//! one reusable argon2 buffer, fed by a bounded queue.
//!
//! Why: every argon2id computation needs 19 MiB. Run on the general blocking pool, a
//! login flood had hundreds running at once (gigabytes, never given back) while holding
//! pooled database connections. Here at most `workers` computations run and at most
//! `queue` wait; beyond that a request is refused at once (503, `Retry-After`). One
//! client network (an IPv4 address or an IPv6 /64) may hold at most `per_client` of the
//! places, queued or running (429 beyond), so one flooding address cannot fill the queue
//! and lock the account owner out.
//!
//! Callers hold no database connection while they wait: they read the user first, then
//! ask the pool, then write the session.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use super::client::ClientNetwork;
use super::password::{self, ArgonMemory};
use crate::domain::Password;
use crate::error::InternalError;
use crate::metrics::AppMetrics;
use crate::settings::HashingSettings;

/// A worker idle this long gives its 19 MiB buffer back.
const IDLE_RELEASE: Duration = Duration::from_secs(60);

/// What to compute.
pub enum HashingJob {
    /// A new hash for sign-up.
    Hash(Password),
    /// Check a log-in against the stored hash.
    Verify {
        password: Password,
        stored_hash: String,
    },
    /// A log-in for a name that has no account: the same work, always `false`.
    VerifyUnknownAccount(Password),
}

/// The result of a [`HashingJob`].
#[derive(Debug)]
pub enum HashingOutcome {
    Hashed(Result<String, InternalError>),
    Verified(bool),
}

/// Why the pool would not take a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HashingRefusal {
    /// Every place in the queue is taken.
    #[error("the server is busy checking passwords; try again in a moment")]
    QueueFull,
    /// This client already holds its share of the queue.
    #[error("too many log-in or sign-up attempts at once from your address")]
    ClientOverShare,
    /// The workers are gone (shutting down).
    #[error("password hashing is unavailable")]
    Stopped,
}

struct QueuedJob {
    job: HashingJob,
    reply: oneshot::Sender<HashingOutcome>,
    /// Frees the client's place when the job is done or dropped.
    _share: SharePlace,
}

/// The pool. Cheap to share behind an `Arc`.
pub struct HashingPool {
    sender: SyncSender<QueuedJob>,
    shares: Arc<Mutex<HashMap<ClientNetwork, usize>>>,
    per_client: usize,
    metrics: Arc<AppMetrics>,
}

impl std::fmt::Debug for HashingPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashingPool")
            .field("per_client", &self.per_client)
            .finish_non_exhaustive()
    }
}

struct SharePlace {
    shares: Arc<Mutex<HashMap<ClientNetwork, usize>>>,
    network: Option<ClientNetwork>,
}

impl Drop for SharePlace {
    fn drop(&mut self) {
        let Some(network) = self.network else {
            return;
        };
        let mut shares = lock(&self.shares);
        if let Some(held) = shares.get_mut(&network) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                shares.remove(&network);
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl HashingPool {
    /// Starts `settings.workers` threads.
    pub fn start(settings: HashingSettings, metrics: Arc<AppMetrics>) -> std::io::Result<Self> {
        let (sender, receiver) = sync_channel::<QueuedJob>(settings.queue);
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..settings.workers {
            let receiver = receiver.clone();
            let metrics = metrics.clone();
            std::thread::Builder::new()
                .name(format!("password-hash-{index}"))
                .spawn(move || work(&receiver, &metrics))?;
        }
        Ok(HashingPool {
            sender,
            shares: Arc::new(Mutex::new(HashMap::new())),
            per_client: settings.per_client,
            metrics,
        })
    }

    /// Queues `job` for `network` and waits for its outcome.
    pub async fn run(
        &self,
        network: Option<ClientNetwork>,
        job: HashingJob,
    ) -> Result<HashingOutcome, HashingRefusal> {
        let share = self.take_share(network)?;
        let (reply, outcome) = oneshot::channel();
        let queued = QueuedJob {
            job,
            reply,
            _share: share,
        };
        match self.sender.try_send(queued) {
            Ok(()) => {
                self.metrics.hash_queued.fetch_add(1, Relaxed);
            }
            Err(TrySendError::Full(_)) => {
                self.metrics.refused_hash_queue_full.fetch_add(1, Relaxed);
                return Err(HashingRefusal::QueueFull);
            }
            Err(TrySendError::Disconnected(_)) => return Err(HashingRefusal::Stopped),
        }
        outcome.await.map_err(|_| HashingRefusal::Stopped)
    }

    /// Verifies a log-in; `None` stored hash means the account does not exist.
    pub async fn verify(
        &self,
        network: Option<ClientNetwork>,
        password: Password,
        stored_hash: Option<String>,
    ) -> Result<bool, HashingRefusal> {
        let job = match stored_hash {
            Some(stored_hash) => HashingJob::Verify {
                password,
                stored_hash,
            },
            None => HashingJob::VerifyUnknownAccount(password),
        };
        match self.run(network, job).await? {
            HashingOutcome::Verified(matches) => Ok(matches),
            HashingOutcome::Hashed(_) => Ok(false),
        }
    }

    /// Hashes a new password.
    pub async fn hash(
        &self,
        network: Option<ClientNetwork>,
        password: Password,
    ) -> Result<Result<String, InternalError>, HashingRefusal> {
        match self.run(network, HashingJob::Hash(password)).await? {
            HashingOutcome::Hashed(result) => Ok(result),
            HashingOutcome::Verified(_) => Err(HashingRefusal::Stopped),
        }
    }

    fn take_share(&self, network: Option<ClientNetwork>) -> Result<SharePlace, HashingRefusal> {
        if let Some(network) = network {
            let mut shares = lock(&self.shares);
            let held = shares.entry(network).or_insert(0);
            if *held >= self.per_client {
                drop(shares);
                self.metrics.refused_hash_client_share.fetch_add(1, Relaxed);
                return Err(HashingRefusal::ClientOverShare);
            }
            *held += 1;
        }
        Ok(SharePlace {
            shares: self.shares.clone(),
            network,
        })
    }
}

/// One worker: takes jobs until the pool is dropped, reusing one buffer.
fn work(receiver: &Mutex<Receiver<QueuedJob>>, metrics: &AppMetrics) {
    let mut memory = ArgonMemory::default();
    loop {
        let next = lock(receiver).recv_timeout(IDLE_RELEASE);
        let queued = match next {
            Ok(queued) => queued,
            Err(RecvTimeoutError::Timeout) => {
                release(&mut memory, metrics);
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => {
                release(&mut memory, metrics);
                return;
            }
        };
        metrics.hash_queued.fetch_sub(1, Relaxed);
        // The requester gave up (client went away): skip the 19 MiB of work.
        if queued.reply.is_closed() {
            metrics.hash_abandoned.fetch_add(1, Relaxed);
            continue;
        }
        let held_before = memory.held_bytes();
        metrics.hash_running.fetch_add(1, Relaxed);
        let outcome = match queued.job {
            HashingJob::Hash(password) => {
                HashingOutcome::Hashed(password::hash_password(&password, &mut memory))
            }
            HashingJob::Verify {
                password,
                stored_hash,
            } => HashingOutcome::Verified(password::verify_password(
                &password,
                &stored_hash,
                &mut memory,
            )),
            HashingJob::VerifyUnknownAccount(password) => {
                password::spend_like_a_verification(&password, &mut memory);
                HashingOutcome::Verified(false)
            }
        };
        metrics.hash_running.fetch_sub(1, Relaxed);
        metrics.hash_completed.fetch_add(1, Relaxed);
        let grown = memory.held_bytes().saturating_sub(held_before);
        metrics.hash_memory_bytes.fetch_add(grown as i64, Relaxed);
        let _ = queued.reply.send(outcome);
    }
}

fn release(memory: &mut ArgonMemory, metrics: &AppMetrics) {
    let held = memory.held_bytes();
    if held > 0 {
        *memory = ArgonMemory::default();
        metrics.hash_memory_bytes.fetch_sub(held as i64, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(workers: usize, queue: usize, per_client: usize) -> (HashingPool, Arc<AppMetrics>) {
        let metrics = Arc::new(AppMetrics::default());
        let settings = HashingSettings {
            workers,
            queue,
            per_client,
        };
        (
            HashingPool::start(settings, metrics.clone()).unwrap(),
            metrics,
        )
    }

    fn network(raw: &str) -> Option<ClientNetwork> {
        Some(ClientNetwork::of(raw.parse().unwrap()))
    }

    fn password() -> Password {
        Password::for_login("correct horse".into()).unwrap()
    }

    #[tokio::test]
    async fn hashes_and_verifies() {
        let (pool, metrics) = pool(1, 4, 4);
        let hash = pool
            .hash(
                network("192.0.2.1"),
                Password::parse("correct horse".into()).unwrap(),
            )
            .await
            .unwrap()
            .unwrap();
        assert!(
            pool.verify(None, password(), Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(!pool.verify(None, password(), None).await.unwrap());
        assert_eq!(metrics.hash_completed.load(Relaxed), 3);
        // One worker, one buffer, however many jobs it ran.
        assert_eq!(metrics.hash_memory_bytes.load(Relaxed), 19 * 1024 * 1024);
    }

    #[tokio::test]
    async fn a_flood_is_refused_not_queued_and_others_keep_a_place() {
        let (pool, metrics) = pool(1, 3, 2);
        let pool = Arc::new(pool);
        let mut flood = Vec::new();
        for _ in 0..40 {
            let pool = pool.clone();
            flood.push(tokio::spawn(async move {
                pool.verify(network("2001:db8:1:2::7"), password(), None)
                    .await
            }));
        }
        // The owner, from another network, still gets a place.
        let owner = pool.verify(network("192.0.2.9"), password(), None).await;
        assert_eq!(owner, Ok(false));
        let mut refused_share = 0;
        for task in flood {
            match task.await.unwrap() {
                Ok(_) => {}
                Err(HashingRefusal::ClientOverShare) => refused_share += 1,
                Err(other) => panic!("unexpected refusal {other:?}"),
            }
        }
        assert!(refused_share >= 38 - 2, "refused {refused_share} of 40");
        assert!(metrics.hash_completed.load(Relaxed) <= 1 + 40 - refused_share as u64);
    }

    #[tokio::test]
    async fn a_full_queue_answers_at_once() {
        let (pool, metrics) = pool(1, 1, 100);
        let pool = Arc::new(pool);
        let mut tasks = Vec::new();
        for n in 0..10 {
            let pool = pool.clone();
            tasks.push(tokio::spawn(async move {
                pool.verify(network(&format!("192.0.2.{n}")), password(), None)
                    .await
            }));
        }
        let mut full = 0;
        for task in tasks {
            if task.await.unwrap() == Err(HashingRefusal::QueueFull) {
                full += 1;
            }
        }
        assert!(full >= 1, "some of 10 must find the queue of 1 full");
        assert_eq!(metrics.refused_hash_queue_full.load(Relaxed), full);
    }
}
