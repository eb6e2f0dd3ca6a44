//! Viewer counts over several instances, kept in Redis so that one client counts once
//! however many instances its sockets reach (`docs/protocol.md`, "Viewer count").
//!
//! Each instance keeps, per live, the set of its viewers' keys
//! (`privatehub:viewers:{live}:of:{instance}`), rewritten whenever it changes and at
//! every heartbeat, and expiring soon after: a dead instance's viewers drop out within
//! [`VIEWER_SET_TTL`]. The count is the size of the union of a live's sets, computed
//! in Redis by one script that also stores it in a hash every instance reads for its
//! lives listing. Keys are named inside the scripts, so a single Redis (or a
//! primary with replicas) is required, not Redis Cluster.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use privatehub_protocol::LiveId;
use redis::aio::MultiplexedConnection;
use redis::{RedisResult, Script};

/// How long an instance's viewer set outlives its last rewrite.
pub const VIEWER_SET_TTL: Duration = Duration::from_secs(6);
/// Shared counts older than this are ignored (their instance stopped computing them).
pub const SHARED_COUNT_STALE_MS: i64 = 10_000;
/// The hash of each live's last computed count, `"{count}:{unix_ms}"`.
pub const COUNTS_HASH: &str = "privatehub:viewer_counts";

fn instances_key(live: LiveId) -> String {
    format!("privatehub:viewers:{}:instances", live.0)
}

fn set_prefix(live: LiveId) -> String {
    format!("privatehub:viewers:{}:of:", live.0)
}

/// Loads the scripts into Redis (once per connection: a restarted Redis has none), so
/// [`write_sets`] and [`count_all`] can send them by hash, many in one round trip.
/// Until then the connection is not used.
pub async fn load_scripts(connection: &mut MultiplexedConnection) -> RedisResult<()> {
    WRITE_SET.prepare_invoke().load_async(connection).await?;
    COUNT.prepare_invoke().load_async(connection).await?;
    Ok(())
}

/// Replaces this instance's viewer set of each live given (an empty set removes it), in
/// one round trip (after [`load_scripts`]).
pub async fn write_sets<'a>(
    connection: &mut MultiplexedConnection,
    instance: &str,
    sets: impl IntoIterator<Item = (&'a LiveId, &'a Vec<String>)>,
) -> RedisResult<()> {
    let ttl_ms = u64::try_from(VIEWER_SET_TTL.as_millis()).unwrap_or(u64::MAX);
    let mut pipe = redis::pipe();
    let mut any = false;
    for (live, viewers) in sets {
        any = true;
        pipe.cmd("EVALSHA")
            .arg(WRITE_SET.get_hash())
            .arg(2)
            .arg(instances_key(*live))
            .arg(format!("{}{instance}", set_prefix(*live)))
            .arg(instance)
            .arg(ttl_ms)
            .arg(viewers)
            .ignore();
    }
    if !any {
        return Ok(());
    }
    pipe.query_async::<()>(connection).await
}

/// Each live's viewer count over every instance whose set has not expired, in one
/// round trip (after [`load_scripts`]), in the order given; stored in [`COUNTS_HASH`] too.
pub async fn count_all(
    connection: &mut MultiplexedConnection,
    lives: &[LiveId],
    now_ms: i64,
) -> RedisResult<Vec<u32>> {
    if lives.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for live in lives {
        pipe.cmd("EVALSHA")
            .arg(COUNT.get_hash())
            .arg(2)
            .arg(instances_key(*live))
            .arg(COUNTS_HASH)
            .arg(set_prefix(*live))
            .arg(live.0)
            .arg(now_ms);
    }
    let counts: Vec<i64> = pipe.query_async(connection).await?;
    Ok(counts
        .into_iter()
        .map(|count| u32::try_from(count).unwrap_or(u32::MAX))
        .collect())
}

/// Sums the union of a live's sets and stores it in [`COUNTS_HASH`]; see [`count_all`].
static COUNT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local ids = redis.call('SMEMBERS', KEYS[1])
        local sets = {}
        for _, id in ipairs(ids) do
          local key = ARGV[1] .. id
          if redis.call('EXISTS', key) == 1 then
            sets[#sets + 1] = key
          else
            redis.call('SREM', KEYS[1], id)
          end
        end
        local count = 0
        if #sets == 1 then
          count = redis.call('SCARD', sets[1])
        elseif #sets > 1 then
          count = #redis.call('SUNION', unpack(sets))
        end
        redis.call('HSET', KEYS[2], ARGV[2], count .. ':' .. ARGV[3])
        return count
        ",
    )
});

/// Replaces one instance's set of a live; see [`write_set`]. `SADD` takes at most
/// 4,000 members at a time (Lua's `unpack` has a stack limit).
static WRITE_SET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        redis.call('DEL', KEYS[2])
        if #ARGV > 2 then
          for i = 3, #ARGV, 4000 do
            redis.call('SADD', KEYS[2], unpack(ARGV, i, math.min(i + 3999, #ARGV)))
          end
          redis.call('PEXPIRE', KEYS[2], ARGV[2])
          redis.call('SADD', KEYS[1], ARGV[1])
          redis.call('PEXPIRE', KEYS[1], 86400000)
        else
          redis.call('SREM', KEYS[1], ARGV[1])
        end
        return 1
        ",
    )
});

/// Every live's recent shared count (entries older than [`SHARED_COUNT_STALE_MS`] are
/// left out).
pub async fn read_counts(
    connection: &mut MultiplexedConnection,
    now_ms: i64,
) -> RedisResult<HashMap<LiveId, u32>> {
    let raw: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(COUNTS_HASH)
        .query_async(connection)
        .await?;
    Ok(parse_counts(&raw, now_ms))
}

/// Forgets a live's shared count (it ended).
pub async fn forget_count(connection: &mut MultiplexedConnection, live: LiveId) -> RedisResult<()> {
    redis::cmd("HDEL")
        .arg(COUNTS_HASH)
        .arg(live.0)
        .query_async::<i64>(connection)
        .await
        .map(drop)
}

fn parse_counts(raw: &HashMap<String, String>, now_ms: i64) -> HashMap<LiveId, u32> {
    raw.iter()
        .filter_map(|(live, value)| {
            let live = LiveId(live.parse().ok()?);
            let (count, at_ms) = value.split_once(':')?;
            let at_ms: i64 = at_ms.parse().ok()?;
            (now_ms - at_ms <= SHARED_COUNT_STALE_MS).then_some(())?;
            Some((live, count.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_and_malformed_shared_counts_are_left_out() {
        let raw = HashMap::from([
            ("1".to_owned(), "12:100000".to_owned()),
            ("2".to_owned(), "5:80000".to_owned()),
            ("3".to_owned(), "garbage".to_owned()),
            ("x".to_owned(), "4:100000".to_owned()),
        ]);
        let counts = parse_counts(&raw, 100_500);
        assert_eq!(counts, HashMap::from([(LiveId(1), 12)]));
    }
}
