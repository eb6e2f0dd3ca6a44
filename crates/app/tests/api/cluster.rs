//! Two app instances on one PostgreSQL database and one Redis, as several instances
//! behind a load balancer run: what happens on one reaches the sockets of the other.

use std::net::Ipv4Addr;
use std::time::Duration;

use privatehub_app::db::DatabaseLocation;
use privatehub_testkit::redis::RedisServer;
use secrecy::SecretString;
use serde_json::json;

use privatehub_app::Settings;

use privatehub_protocol::internal_api::InternalCaller;

use crate::helpers::{
    PASSWORD, TestApp, client, fresh_postgres_database, internal, login_from, spawn_app_with,
};
use crate::socket_client::{Socket, session};

/// Long enough for a reconnect to Redis (its pause grows to 2 s) and a count refresh.
const CLUSTER_WAIT: Duration = Duration::from_secs(10);

struct TwoInstances {
    a: TestApp,
    b: TestApp,
    redis: RedisServer,
}

async fn two_instances() -> TwoInstances {
    two_instances_with(|_| {}).await
}

async fn two_instances_with(customize: impl Fn(&mut Settings) + Clone) -> TwoInstances {
    let redis = RedisServer::start();
    let database = tokio::task::spawn_blocking(fresh_postgres_database)
        .await
        .expect("database");
    // Started at once on a new database, as after a host reboot: the migrations run
    // under a lock, once.
    let (a, b) = tokio::join!(
        instance(&database, &redis, customize.clone()),
        instance(&database, &redis, customize)
    );
    TwoInstances { a, b, redis }
}

async fn instance(
    database: &DatabaseLocation,
    redis: &RedisServer,
    customize: impl Fn(&mut Settings),
) -> TestApp {
    let database = database.clone();
    let url = redis.url();
    spawn_app_with(move |settings| {
        settings.database = database;
        settings.redis_url = Some(SecretString::from(url));
        customize(settings);
    })
    .await
}

/// A log-in attempt through `app` from `address` (proxy headers trusted): its status.
async fn login_status(app: &TestApp, address: &str, username: &str, password: &str) -> u16 {
    login_from(app, address, username, password)
        .await
        .status()
        .as_u16()
}

/// Waits until `instances` instances listen to the room `key`'s events.
async fn wait_subscribed(redis: &RedisServer, key: &str, instances: i64) {
    let client = redis::Client::open(redis.url()).expect("redis url");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let deadline = std::time::Instant::now() + CLUSTER_WAIT;
    loop {
        let (_, listening): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(format!("privatehub:room:{key}"))
            .query_async(&mut connection)
            .await
            .expect("PUBSUB NUMSUB");
        if listening >= instances {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{listening} instances listen to {key}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn chat_sent_through_one_instance_reaches_sockets_on_the_other_once_stored() {
    let cluster = two_instances().await;
    let (a, b) = (&cluster.a, &cluster.b);
    let (alice, alice_cookie) = session(a, "alice").await;
    let (_, bob_cookie) = session(a, "bob").await;
    let (_, carol_cookie) = session(b, "carol").await;
    a.start_live(&alice, "Shared").await;

    let mut owner_on_a = Socket::joined(a, Some(&alice_cookie), "alice").await;
    let mut bob_on_a = Socket::joined(a, Some(&bob_cookie), "alice").await;
    let mut carol_on_b = Socket::joined(b, Some(&carol_cookie), "alice").await;
    wait_subscribed(&cluster.redis, "alice", 2).await;

    let mut ids = Vec::new();
    for round in 0..3 {
        carol_on_b
            .send(json!({"type": "chat:send", "text": format!("from b {round}")}))
            .await;
        for socket in [&mut owner_on_a, &mut bob_on_a, &mut carol_on_b] {
            let message = socket.expect("chat:message").await["message"].clone();
            assert_eq!(message["text"], format!("from b {round}"));
            assert_eq!(message["username"], "carol");
            ids.push(message["id"].as_i64().expect("id"));
        }
        bob_on_a
            .send(json!({"type": "chat:send", "text": format!("from a {round}")}))
            .await;
        for socket in [&mut owner_on_a, &mut bob_on_a, &mut carol_on_b] {
            let message = socket.expect("chat:message").await["message"].clone();
            assert_eq!(message["text"], format!("from a {round}"));
            ids.push(message["id"].as_i64().expect("id"));
        }
    }
    // Every socket saw the same id for a message, and no two messages share one.
    let mut distinct: Vec<i64> = ids.chunks(3).map(|seen| seen[0]).collect();
    for seen in ids.chunks(3) {
        assert!(seen.iter().all(|id| *id == seen[0]), "ids {seen:?}");
    }
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 6, "ids {ids:?}");
    a.wait_count("chat_messages", 6).await;

    // A newcomer on either instance gets all six, in the order they were sent.
    let mut late = Socket::open(b, None).await;
    late.send(json!({"type": "live:join", "channel": "alice"}))
        .await;
    let history = late.expect("chat:history").await;
    let texts: Vec<String> = history["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|message| message["text"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        texts,
        [
            "from b 0", "from a 0", "from b 1", "from a 1", "from b 2", "from a 2"
        ]
    );
}

#[tokio::test]
async fn a_ban_through_one_instance_removes_the_messages_shown_on_the_other() {
    let cluster = two_instances().await;
    let (a, b) = (&cluster.a, &cluster.b);
    let (alice, alice_cookie) = session(b, "alice").await;
    let (_, troll_cookie) = session(a, "troll").await;
    a.start_live(&alice, "Moderated").await;
    let mut owner_on_b = Socket::joined(b, Some(&alice_cookie), "alice").await;
    let mut troll_on_a = Socket::joined(a, Some(&troll_cookie), "alice").await;
    let mut viewer_on_a = Socket::joined_from(a, None, "alice", Ipv4Addr::new(127, 0, 0, 7)).await;
    wait_subscribed(&cluster.redis, "alice", 2).await;

    troll_on_a
        .send(json!({"type": "chat:send", "text": "spam"}))
        .await;
    let shown = viewer_on_a.expect("chat:message").await["message"]["id"].clone();
    assert_eq!(
        owner_on_b.expect("chat:message").await["message"]["id"],
        shown
    );
    troll_on_a.expect("chat:stored").await;

    owner_on_b
        .send(json!({"type": "chat:ban", "username": "troll"}))
        .await;
    let deleted = viewer_on_a.expect("chat:deleted").await;
    assert!(
        deleted["message_ids"]
            .as_array()
            .expect("ids")
            .contains(&shown),
        "{deleted}"
    );
    assert_eq!(viewer_on_a.expect("chat:banned").await["username"], "troll");

    // The ban holds on the instance the troll's socket is on.
    troll_on_a
        .send(json!({"type": "chat:send", "text": "again"}))
        .await;
    assert_eq!(troll_on_a.expect("error").await["code"], "banned");
}

#[tokio::test]
async fn the_viewer_count_is_over_both_instances_and_counts_a_session_once() {
    let cluster = two_instances().await;
    let (a, b) = (&cluster.a, &cluster.b);
    let (alice, alice_cookie) = session(a, "alice").await;
    let (_, bob_cookie) = session(a, "bob").await;
    a.start_live(&alice, "Counted").await;
    let mut owner_on_a = Socket::joined(a, Some(&alice_cookie), "alice").await;

    let _anonymous_on_a = Socket::joined_from(a, None, "alice", Ipv4Addr::new(127, 0, 0, 2)).await;
    let _anonymous_on_b = Socket::joined_from(b, None, "alice", Ipv4Addr::new(127, 0, 0, 3)).await;
    let bob_on_b = Socket::joined(b, Some(&bob_cookie), "alice").await;
    owner_on_a.expect_viewers_within(3, CLUSTER_WAIT).await;

    // Bob's second tab lands on the other instance: still one viewer; the same network
    // on both instances counts once too.
    let bob_on_a = Socket::joined(a, Some(&bob_cookie), "alice").await;
    let _same_network_on_b =
        Socket::joined_from(b, None, "alice", Ipv4Addr::new(127, 0, 0, 2)).await;
    let mut third = Socket::joined_from(b, None, "alice", Ipv4Addr::new(127, 0, 0, 3)).await;
    // A newcomer (from a network already counted) gets the count: still 3, so nothing
    // above was counted twice.
    third.expect_viewers_within(3, CLUSTER_WAIT).await;

    // Instance b's lives API shows the count over both instances, and it stays there
    // for several refreshes (a client counted twice would show 4 or 5).
    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + CLUSTER_WAIT;
    let mut reached: Option<std::time::Instant> = None;
    while reached.is_none_or(|at| at.elapsed() < Duration::from_secs(2)) {
        let live: serde_json::Value = b
            .get(&client, "/api/lives/alice")
            .await
            .json()
            .await
            .expect("live json");
        let viewers = live["viewers"].as_u64().expect("viewers");
        assert!(viewers <= 3, "b lists {live}");
        if viewers == 3 && reached.is_none() {
            reached = Some(std::time::Instant::now());
        }
        assert!(std::time::Instant::now() < deadline, "b lists {live}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    drop(bob_on_b);
    drop(bob_on_a);
    owner_on_a.expect_viewers_within(2, CLUSTER_WAIT).await;
}

#[tokio::test]
async fn a_live_started_through_one_instance_opens_the_chat_on_the_other() {
    let cluster = two_instances().await;
    let (a, b) = (&cluster.a, &cluster.b);
    let (alice, _) = session(a, "alice").await;
    let (_, bob_cookie) = session(b, "bob").await;
    let mut bob_on_b = Socket::joined(b, Some(&bob_cookie), "alice").await;
    // Joined before the live: the room exists on b only.
    wait_subscribed(&cluster.redis, "alice", 1).await;
    a.start_live(&alice, "Surprise").await;
    let started = bob_on_b.expect("live:started").await;
    assert_eq!(started["live"]["title"], "Surprise");
    bob_on_b
        .send(json!({"type": "chat:send", "text": "hello"}))
        .await;
    bob_on_b.expect("chat:stored").await;
}

#[tokio::test]
async fn chat_resumes_after_redis_restarts_and_what_was_said_meanwhile_is_in_history() {
    let mut cluster = two_instances().await;
    let (alice, alice_cookie) = session(&cluster.a, "alice").await;
    let (_, bob_cookie) = session(&cluster.b, "bob").await;
    cluster.a.start_live(&alice, "Outage").await;
    let mut owner_on_a = Socket::joined(&cluster.a, Some(&alice_cookie), "alice").await;
    let mut bob_on_b = Socket::joined(&cluster.b, Some(&bob_cookie), "alice").await;
    wait_subscribed(&cluster.redis, "alice", 2).await;

    wait_metric_where(&cluster.a, "app_redis_connected", |up| up == 1).await;
    owner_on_a.expect_viewers_within(1, CLUSTER_WAIT).await;
    cluster.redis.kill();
    wait_metric_where(&cluster.a, "app_redis_connected", |up| up == 0).await;
    // The instance still serves, alone: healthy, with Redis said to be unreachable.
    let health = cluster.a.get(&client(), "/healthz").await;
    assert_eq!(health.status(), 200);
    let health: serde_json::Value = health.json().await.expect("health");
    assert_eq!(health["redis"], "unreachable", "{health}");
    // Bob's instance is out of reach: a counts its own viewers (none) meanwhile, rather
    // than showing the last shared count for ever.
    owner_on_a.expect_viewers_within(0, CLUSTER_WAIT).await;
    // Bob's message is shown and stored on his instance while Redis is away.
    bob_on_b
        .send(json!({"type": "chat:send", "text": "said during the outage"}))
        .await;
    bob_on_b.expect("chat:message").await;
    bob_on_b.expect("chat:stored").await;

    cluster.redis.start_again();
    // The owner's page gets the history again, with the message it missed, without
    // reconnecting.
    let history = owner_on_a.expect_within("chat:history", CLUSTER_WAIT).await;
    assert!(
        history.to_string().contains("said during the outage"),
        "{history}"
    );
    // And messages cross again.
    let deadline = std::time::Instant::now() + CLUSTER_WAIT;
    loop {
        bob_on_b
            .send(json!({"type": "chat:send", "text": "back"}))
            .await;
        if owner_on_a
            .next_matching(Duration::from_millis(1200), |message| {
                message["type"] == "chat:message"
            })
            .await
            .is_some()
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "chat did not resume");
    }
}

#[tokio::test]
async fn log_in_failures_on_both_instances_count_against_one_account_limit() {
    let cluster = two_instances_with(|settings| {
        settings.trust_proxy_headers = true;
        settings.login_rate_limit.max_per_account = 4;
    })
    .await;
    let (a, b) = (&cluster.a, &cluster.b);
    a.user("bob").await;
    let home = "198.51.100.7";
    assert_eq!(login_status(b, home, "bob", PASSWORD).await, 200);
    // Two guesses through each instance: each alone has seen only two failures.
    for (n, app) in [a, b, a, b].into_iter().enumerate() {
        let status = login_status(app, &format!("203.0.113.{n}"), "bob", "guess guess").await;
        assert_eq!(status, 401, "guess {n}");
    }
    for app in [a, b] {
        assert_eq!(
            login_status(app, "203.0.113.99", "bob", PASSWORD).await,
            429
        );
    }
    // The address bob signed in from before (through b) still gets in, on a too.
    assert_eq!(login_status(a, home, "bob", PASSWORD).await, 200);
}

#[tokio::test]
async fn the_chat_limit_holds_over_both_instances() {
    let cluster = two_instances().await;
    let (a, b) = (&cluster.a, &cluster.b);
    let (alice, _) = session(a, "alice").await;
    let (_, bob_cookie) = session(a, "bob").await;
    a.start_live(&alice, "Limited").await;
    let mut bob_on_a = Socket::joined(a, Some(&bob_cookie), "alice").await;
    let mut bob_on_b = Socket::joined(b, Some(&bob_cookie), "alice").await;
    // One message through a, four through b: the window (5) is full.
    let sends = [&mut bob_on_a, &mut bob_on_b];
    let [on_a, on_b] = sends;
    on_a.send(json!({"type": "chat:send", "text": "1"})).await;
    on_a.expect("chat:stored").await;
    for n in 2..=5 {
        on_b.send(json!({"type": "chat:send", "text": n.to_string()}))
            .await;
        on_b.expect("chat:stored").await;
    }
    // a has seen one message of bob's: only the shared window can refuse him there,
    // once the notice that b filled it has reached a.
    wait_metric(a, "app_cluster_chat_limits_total", 1).await;
    on_a.send(json!({"type": "chat:send", "text": "6"})).await;
    let reply = on_a
        .next_matching(Duration::from_secs(5), |message| {
            message["type"] == "chat:stored" || message["type"] == "error"
        })
        .await
        .expect("a reply");
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["code"], "rate_limited", "{reply}");
}

/// Waits until `metric` on `app`'s `/metrics` is at least `at_least`.
async fn wait_metric(app: &TestApp, metric: &str, at_least: i64) {
    wait_metric_where(app, metric, |value| value >= at_least).await;
}

/// Waits until `wanted` holds for `metric` on `app`'s `/metrics`.
async fn wait_metric_where(app: &TestApp, metric: &str, wanted: impl Fn(i64) -> bool) {
    let deadline = std::time::Instant::now() + CLUSTER_WAIT;
    loop {
        let text = app
            .get(&client(), "/metrics")
            .await
            .text()
            .await
            .expect("metrics");
        let value = text
            .lines()
            .find_map(|line| line.strip_prefix(metric)?.trim().parse::<i64>().ok());
        if value.is_some_and(&wanted) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{metric} is {value:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn logging_out_through_one_instance_closes_the_sessions_sockets_on_the_other() {
    let cluster = two_instances().await;
    let (a, b) = (&cluster.a, &cluster.b);
    let (alice, _) = session(a, "alice").await;
    let (bob, bob_cookie) = session(a, "bob").await;
    a.start_live(&alice, "Log-out").await;
    let mut bob_on_a = Socket::joined(a, Some(&bob_cookie), "alice").await;
    let response = b.post(&bob, "/api/auth/logout", &json!({})).await;
    assert!(response.status().is_success(), "{}", response.status());
    assert!(
        bob_on_a.closed_within(CLUSTER_WAIT).await,
        "bob's socket on a stayed open after he logged out through b"
    );
}

#[tokio::test]
async fn a_whip_live_reported_to_one_instance_is_not_swept_by_the_other() {
    let cluster = two_instances_with(|settings| {
        settings.whip_unreported_live = Duration::from_secs(1);
    })
    .await;
    let (a, b) = (&cluster.a, &cluster.b);
    let alice = a.user("alice").await;
    let key: serde_json::Value = a
        .get(&alice, "/api/me/stream-key")
        .await
        .json()
        .await
        .expect("key");
    let authorized: serde_json::Value = internal(
        a,
        InternalCaller::Media,
        "/internal/v1/whip/authorize",
        json!({"stream_key": key["stream_key"]}),
    )
    .await
    .json()
    .await
    .expect("authorized");
    let user_id = authorized["user_id"].clone();
    let started: serde_json::Value = internal(
        a,
        InternalCaller::Media,
        "/internal/v1/whip/start",
        json!({"user_id": user_id, "key_generation": 1}),
    )
    .await
    .json()
    .await
    .expect("started");
    let live_id = started["live_id"].clone();
    // The media server reports to a only, twice a second, for four times the time a
    // live may go unreported: b must hear of the reports and leave the live alone.
    for _ in 0..8 {
        let sync = internal(
            a,
            InternalCaller::Media,
            "/internal/v1/whip/sync",
            json!({"sessions": [{"user_id": user_id, "live_id": live_id, "key_generation": 1}]}),
        )
        .await;
        assert_eq!(sync.status(), 200);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let live = b.get(&client(), "/api/lives/alice").await;
        assert_eq!(live.status(), 200, "b ended the WHIP live a reports");
    }
    // Reports stop: the live ends.
    let deadline = std::time::Instant::now() + CLUSTER_WAIT;
    while b.get(&client(), "/api/lives/alice").await.status() == 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "the unreported live stayed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
