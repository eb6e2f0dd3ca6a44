//! The chat's rate limit over every instance: the same sliding window as one instance
//! keeps ([`CHAT_RATE_MAX`] messages per [`CHAT_RATE_WINDOW`]), as a sorted set of send
//! times per user in Redis, on Redis's clock. The instance whose message fills the
//! window tells every instance on [`LIMITS_CHANNEL`], so the user's next message is
//! refused wherever it is sent. The chat server never waits for this: a message sent
//! on another instance in the same instant can slip through (at most one per instance).

use std::sync::LazyLock;
use std::time::Duration;

pub use privatehub_protocol::cluster::LimitNotice;
use redis::aio::MultiplexedConnection;
use redis::{RedisResult, Script};

use crate::chat::server::{CHAT_RATE_MAX, CHAT_RATE_WINDOW};
use crate::db::users::UserId;

/// Where "this user is limited" notices go.
pub const LIMITS_CHANNEL: &str = "privatehub:chat-limits";

/// Adds a send and answers how long until the window has room again (0: it has).
static COUNT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local time = redis.call('TIME')
        local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
        local window = tonumber(ARGV[1])
        redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
        redis.call('ZADD', KEYS[1], now, ARGV[3])
        redis.call('PEXPIRE', KEYS[1], window)
        if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
          return 0
        end
        local oldest = tonumber(redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2])
        return math.max(oldest + window - now, 1)
        ",
    )
});

/// Counts one message of `user` (`send_id` unique per send); `Some(wait)` when it
/// filled the window.
pub async fn count_send(
    connection: &mut MultiplexedConnection,
    user: UserId,
    send_id: &str,
) -> RedisResult<Option<Duration>> {
    let window_ms = u64::try_from(CHAT_RATE_WINDOW.as_millis()).unwrap_or(u64::MAX);
    let wait_ms: i64 = COUNT
        .key(format!("privatehub:rate:chat:{}", user.0))
        .arg(window_ms)
        .arg(CHAT_RATE_MAX)
        .arg(send_id)
        .invoke_async(connection)
        .await?;
    Ok((wait_ms > 0).then(|| Duration::from_millis(u64::try_from(wait_ms).unwrap_or(1))))
}
