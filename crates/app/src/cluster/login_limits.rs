//! The log-in limits every instance shares: failures per account (networks that signed
//! in to it before are exempt) and per client network, per window, as
//! `auth::rate_limit` counts them in one process. An attempt is counted when it starts
//! and uncounted when it succeeds, so concurrent guesses on several instances cannot
//! slip past together. The growing per-(account, network) delay stays per instance.
//!
//! While Redis is unreachable each instance applies only its own limits (logged once
//! by the cluster link); a log-in never fails because Redis is away.

use std::time::Duration;

use redis::Script;
use std::sync::LazyLock;

use super::Cluster;
use crate::auth::client::ClientNetwork;
use crate::domain::Username;
use crate::settings::LoginRateLimitSettings;

/// How long a successful sign-in from a network exempts it (as in one process).
const TRUSTED_FOR: Duration = Duration::from_secs(30 * 24 * 3600);
/// A shared check that takes longer is skipped (local limits still apply).
const CHECK_TIMEOUT: Duration = Duration::from_millis(500);

/// An attempt counted in Redis; report success with [`SharedLoginAttempt::succeeded`].
#[derive(Debug)]
pub struct SharedLoginAttempt {
    cluster: Cluster,
    account_key: String,
    network_key: Option<String>,
    trust_key: Option<String>,
}

static BEGIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local trusted = redis.call('EXISTS', KEYS[3]) == 1
        local account = tonumber(redis.call('GET', KEYS[1]) or '0')
        local network = tonumber(redis.call('GET', KEYS[2]) or '0')
        if not trusted and account >= tonumber(ARGV[2]) then
          return math.max(redis.call('PTTL', KEYS[1]), 1000)
        end
        if network >= tonumber(ARGV[3]) then
          return math.max(redis.call('PTTL', KEYS[2]), 1000)
        end
        redis.call('INCR', KEYS[1])
        redis.call('PEXPIRE', KEYS[1], ARGV[1], 'NX')
        redis.call('INCR', KEYS[2])
        redis.call('PEXPIRE', KEYS[2], ARGV[1], 'NX')
        return 0
        ",
    )
});

impl Cluster {
    /// Counts an attempt on `account` from `network` against the shared limits.
    /// `Err(wait)` when they refuse it; `Ok(None)` when Redis could not be asked.
    pub async fn begin_login(
        &self,
        settings: &LoginRateLimitSettings,
        account: &Username,
        network: Option<ClientNetwork>,
    ) -> Result<Option<SharedLoginAttempt>, Duration> {
        let Some(mut connection) = self.connection.get() else {
            return Ok(None);
        };
        let account_key = format!("privatehub:rate:login:account:{}", account.canonical());
        let network_name = network.map(|network| network.to_string());
        let network_key = network_name
            .as_ref()
            .map(|name| format!("privatehub:rate:login:network:{name}"));
        let trust_key = network_name.as_ref().map(|name| {
            format!(
                "privatehub:rate:login:trusted:{}:{name}",
                account.canonical()
            )
        });
        let window_ms = u64::try_from(settings.window.as_millis()).unwrap_or(u64::MAX);
        // Without a network the network count is a throwaway key nobody reaches.
        let network_limit = if network.is_some() {
            settings.max_per_network
        } else {
            u32::MAX
        };
        let mut invocation = BEGIN.prepare_invoke();
        invocation
            .key(&account_key)
            .key(
                network_key
                    .as_deref()
                    .unwrap_or("privatehub:rate:login:network:none"),
            )
            .key(
                trust_key
                    .as_deref()
                    .unwrap_or("privatehub:rate:login:trusted:none"),
            )
            .arg(window_ms)
            .arg(settings.max_per_account)
            .arg(network_limit);
        let call = invocation.invoke_async::<i64>(&mut connection);
        match tokio::time::timeout(CHECK_TIMEOUT, call).await {
            Ok(Ok(0)) => Ok(Some(SharedLoginAttempt {
                cluster: self.clone(),
                account_key,
                network_key,
                trust_key,
            })),
            Ok(Ok(wait_ms)) => Err(Duration::from_millis(
                u64::try_from(wait_ms).unwrap_or(1000),
            )),
            Ok(Err(error)) => {
                tracing::warn!(%error, "the shared log-in limit could not be checked; local limits apply");
                Ok(None)
            }
            Err(_) => {
                tracing::warn!("the shared log-in limit timed out; local limits apply");
                Ok(None)
            }
        }
    }
}

impl SharedLoginAttempt {
    /// The attempt was never checked (the server refused it first): it does not count.
    pub async fn cancelled(self) {
        self.settle(false).await;
    }

    /// The attempt succeeded: it no longer counts, and its network is trusted for the
    /// account on every instance.
    pub async fn succeeded(self) {
        self.settle(true).await;
    }

    /// Takes the attempt back from the counts; `trust`: and trusts its network.
    async fn settle(self, trust: bool) {
        let Some(mut connection) = self.cluster.connection.get() else {
            return;
        };
        let mut pipe = redis::pipe();
        pipe.decr(&self.account_key, 1).ignore();
        if let Some(network_key) = &self.network_key {
            pipe.decr(network_key, 1).ignore();
        }
        if let Some(trust_key) = self.trust_key.as_ref().filter(|_| trust) {
            pipe.set_ex(trust_key, 1, TRUSTED_FOR.as_secs()).ignore();
        }
        let call = pipe.query_async::<()>(&mut connection);
        if let Ok(Err(error)) = tokio::time::timeout(CHECK_TIMEOUT, call).await {
            tracing::warn!(%error, "recording a successful log-in in Redis failed");
        }
    }
}
