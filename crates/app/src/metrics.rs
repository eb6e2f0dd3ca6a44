//! The app's counters and gauges, rendered in the Prometheus text format by
//! `GET /metrics`. Plain atomics, bumped where things happen.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// Every counter and gauge of the app.
#[derive(Debug, Default)]
pub struct AppMetrics {
    /// Password jobs waiting for a hashing worker.
    pub hash_queued: AtomicI64,
    /// Password jobs being computed.
    pub hash_running: AtomicI64,
    pub hash_completed: AtomicU64,
    /// Jobs skipped because their requester went away while queued.
    pub hash_abandoned: AtomicU64,
    /// Bytes of argon2 memory the hashing workers hold.
    pub hash_memory_bytes: AtomicI64,
    pub refused_hash_queue_full: AtomicU64,
    pub refused_hash_client_share: AtomicU64,
    pub refused_login_rate_limited: AtomicU64,
    pub refused_signup_rate_limited: AtomicU64,
    pub refused_socket_cap: AtomicU64,
    pub body_read_timeouts: AtomicU64,
    /// Open `/ws` sockets.
    pub sockets_open: AtomicI64,
    /// Sockets dropped because their outbox was full (the client does not keep up).
    pub sockets_dropped_slow: AtomicU64,
    /// Sockets closed because one send to the client did not complete in time.
    pub sockets_send_timeouts: AtomicU64,
    pub sockets_heartbeat_timeouts: AtomicU64,
    /// Sockets closed because their session logged out.
    pub sockets_ended_by_logout: AtomicU64,
    /// 1 while the cluster link is connected to Redis, 0 while not, -1 alone.
    pub redis_connected: AtomicI64,
    /// Room events from other instances applied here (several instances, Redis).
    pub cluster_room_events: AtomicU64,
    /// Notices that a user reached the chat limit shared by the instances.
    pub cluster_chat_limits: AtomicU64,
    /// Chat messages shown but not yet stored.
    pub chat_write_pending: AtomicI64,
    /// Age of the oldest message in the batch last written or retried, in ms.
    pub chat_write_lag_ms: AtomicI64,
    pub chat_write_retries: AtomicU64,
    /// Messages given up on (their senders were told `not_stored`).
    pub chat_writes_failed: AtomicU64,
    /// Time from a message being queued for a socket to its write completing.
    pub chat_delivery: DeliveryHistogram,
}

/// Upper bounds (seconds) of the delivery-delay histogram (fine around 100 ms, the
/// chat's delivery target).
const DELIVERY_BUCKETS: [f64; 13] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.25, 0.5, 1.0, 5.0,
];

/// A Prometheus histogram of socket delivery delays. Each observation adds to one
/// bucket (its first bound at or above it; rendering sums them): one atomic per
/// delivery, not one per bound.
#[derive(Debug, Default)]
pub struct DeliveryHistogram {
    /// Observations above the previous bound and at most this one; the last slot holds
    /// those above every bound.
    buckets: [AtomicU64; DELIVERY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl DeliveryHistogram {
    pub fn observe(&self, took: std::time::Duration) {
        let seconds = took.as_secs_f64();
        let slot = DELIVERY_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(DELIVERY_BUCKETS.len());
        self.buckets[slot].fetch_add(1, Relaxed);
        self.sum_micros
            .fetch_add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Relaxed);
    }

    fn render(&self, out: &mut String) {
        let name = "app_chat_delivery_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time from a message being queued for a socket to the socket taking it.\n# TYPE {name} histogram"
        );
        let mut cumulative = 0;
        for (bucket, bound) in self.buckets.iter().zip(DELIVERY_BUCKETS) {
            cumulative += bucket.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = cumulative + self.buckets[DELIVERY_BUCKETS.len()].load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

impl AppMetrics {
    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        let mut gauge = |name: &str, help: &str, value: i64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        };
        gauge(
            "app_password_hash_queued",
            "Password jobs waiting for a hashing worker.",
            self.hash_queued.load(Relaxed),
        );
        gauge(
            "app_password_hash_running",
            "Password jobs being computed.",
            self.hash_running.load(Relaxed),
        );
        gauge(
            "app_password_hash_memory_bytes",
            "Argon2 memory held by the hashing workers.",
            self.hash_memory_bytes.load(Relaxed),
        );
        gauge(
            "app_chat_write_pending",
            "Chat messages shown but not yet stored.",
            self.chat_write_pending.load(Relaxed),
        );
        gauge(
            "app_chat_write_lag_ms",
            "Age of the oldest chat message in the last batch written or retried.",
            self.chat_write_lag_ms.load(Relaxed),
        );
        gauge(
            "app_sockets_open",
            "Open /ws sockets.",
            self.sockets_open.load(Relaxed),
        );
        gauge(
            "app_redis_connected",
            "1 while this instance reaches Redis (REDIS_URL), 0 while it does not, -1 without REDIS_URL.",
            self.redis_connected.load(Relaxed),
        );
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        counter(
            "app_password_hash_completed_total",
            "Password jobs computed.",
            self.hash_completed.load(Relaxed),
        );
        counter(
            "app_password_hash_abandoned_total",
            "Queued password jobs skipped because the client went away.",
            self.hash_abandoned.load(Relaxed),
        );
        counter(
            "app_chat_write_retries_total",
            "Chat message batches retried after a database error.",
            self.chat_write_retries.load(Relaxed),
        );
        counter(
            "app_chat_writes_failed_total",
            "Chat messages given up on; their senders were told not_stored.",
            self.chat_writes_failed.load(Relaxed),
        );
        counter(
            "app_body_read_timeouts_total",
            "Requests whose body did not arrive in time (408).",
            self.body_read_timeouts.load(Relaxed),
        );
        counter(
            "app_sockets_dropped_slow_total",
            "Sockets dropped because the client did not read fast enough.",
            self.sockets_dropped_slow.load(Relaxed),
        );
        counter(
            "app_sockets_send_timeouts_total",
            "Sockets closed because a send to the client timed out.",
            self.sockets_send_timeouts.load(Relaxed),
        );
        counter(
            "app_sockets_heartbeat_timeouts_total",
            "Sockets closed because the client went silent.",
            self.sockets_heartbeat_timeouts.load(Relaxed),
        );
        counter(
            "app_sockets_ended_by_logout_total",
            "Sockets closed because their session logged out.",
            self.sockets_ended_by_logout.load(Relaxed),
        );
        counter(
            "app_cluster_room_events_total",
            "Room events from other app instances applied here (through Redis).",
            self.cluster_room_events.load(Relaxed),
        );
        counter(
            "app_cluster_chat_limits_total",
            "Users refused chat for a while because the limit shared by the instances was reached.",
            self.cluster_chat_limits.load(Relaxed),
        );
        self.chat_delivery.render(&mut out);
        let _ = writeln!(
            out,
            "# HELP app_refusals_total Requests refused to protect the server, by reason.\n\
             # TYPE app_refusals_total counter"
        );
        for (reason, value) in [
            ("hash_queue_full", &self.refused_hash_queue_full),
            ("hash_client_share", &self.refused_hash_client_share),
            ("login_rate_limited", &self.refused_login_rate_limited),
            ("signup_rate_limited", &self.refused_signup_rate_limited),
            ("socket_cap", &self.refused_socket_cap),
        ] {
            let _ = writeln!(
                out,
                "app_refusals_total{{reason=\"{reason}\"}} {}",
                value.load(Relaxed)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_once() {
        let metrics = AppMetrics::default();
        metrics.refused_socket_cap.fetch_add(3, Relaxed);
        let text = metrics.render();
        assert!(text.contains("app_refusals_total{reason=\"socket_cap\"} 3"));
        assert_eq!(text.matches("# TYPE app_refusals_total").count(), 1);
        assert!(text.contains("app_password_hash_queued 0"));
    }
}
