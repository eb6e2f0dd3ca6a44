//! The benchmark's small mode in the normal suite: a few hundred real sockets in two
//! lives on the real app, every message delivered to every socket of its room, and the
//! report's shape, with the database's write lock held mid-run (delivery goes on, the
//! acknowledgements wait) and a reconnect storm at the end (every socket back, with its
//! history). No speed is asserted (that is the benchmark's job).

use std::time::Duration;

use privatehub_chat_bench::load::{LoadOptions, run};
use privatehub_chat_bench::plan::prepare;
use privatehub_testkit::postgres::PostgresServer;
use privatehub_testkit::redis::RedisServer;
use privatehub_testkit::{
    ServiceProcess, StackOptions, free_tcp_port, start_stack, wait_for_http_ok,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_reaches_every_socket_of_its_room() {
    let stack = start_stack(StackOptions {
        app_env: vec![("APP_MAX_SOCKETS_PER_IP".into(), "1000".into())],
        ..StackOptions::default()
    });
    let plan = prepare(stack.database_path.to_str().expect("path"), 2, 4).expect("bench accounts");
    let report = run(LoadOptions {
        app_urls: vec![stack.app_url.clone()],
        plan,
        sockets_per_live: 120,
        messages_per_second: 8.0,
        warmup: Duration::from_secs(1),
        duration: Duration::from_secs(3),
        app_pids: vec![stack.app.pid()],
        source_addresses: 4,
        settle: Duration::from_millis(200),
        stall_database: Some((stack.database_path.clone(), Duration::from_millis(1500))),
        reconnect_storm: Some(Duration::from_secs(2)),
    })
    .await
    .expect("load run");
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    assert_eq!(report.sockets, 240);
    assert_eq!(report.failed_sockets, 0, "{report:?}");
    assert!(report.messages >= 16, "{report:?}");
    assert_eq!(report.deliveries_expected, report.messages * 120);
    assert_eq!(report.lost, 0, "{report:?}");
    assert_eq!(report.deliveries, report.deliveries_expected, "{report:?}");
    assert!(report.delay_p99_ms > 0.0 && report.delay_max_ms >= report.delay_p99_ms);
    assert!(
        report
            .app_cpu_us_per_delivery
            .is_some_and(|cost| cost > 0.0),
        "{report:?}"
    );
    assert!(report.app_rss_kb_per_socket.is_some(), "{report:?}");
    assert_eq!(
        report.viewer_counts, report.viewer_counts_expected,
        "the count of each room, by docs/protocol.md's definition: {report:?}"
    );
    assert_eq!(report.server_errors, 0, "{report:?}");
    // Every counted message was acknowledged as stored, some only after the lock.
    assert!(report.stored_acks as u64 >= report.messages, "{report:?}");
    assert!(
        report.stored_ack_max_ms >= 500.0,
        "no acknowledgement waited for the lock: the stall did not happen? {report:?}"
    );
    // The app's own delivery histogram was read over the window.
    assert!(
        report.app_delivered_within_100ms_pct.is_some()
            && report.app_delivery_p99_at_most_ms.is_some(),
        "{report:?}"
    );
    let storm = report.storm.as_ref().expect("storm figures");
    assert_eq!(
        (storm.sockets, storm.rejoined, storm.lost),
        (240, 240, 0),
        "{storm:?}"
    );
    assert!(storm.health_probes > 0, "{storm:?}");
    assert!(
        storm.health_max_ms < 10_000.0,
        "a /healthz probe failed: {storm:?}"
    );
}

/// The bench's several-instance mode: two app processes on one PostgreSQL and one
/// Redis, every room's sockets spread over both; every message reaches every socket,
/// and the deliveries that crossed instances are reported apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_deliver_every_message_to_every_socket() {
    let (postgres, redis, database_url) = tokio::task::spawn_blocking(|| {
        let postgres = PostgresServer::start();
        let url = postgres.create_database("bench");
        (postgres, RedisServer::start(), url)
    })
    .await
    .expect("servers");
    let plan = prepare(&database_url, 1, 6).expect("bench accounts");
    let dir = tempfile::tempdir().expect("app directory");
    let ports = [free_tcp_port(), free_tcp_port()];
    let urls: Vec<String> = ports
        .iter()
        .map(|port| format!("http://127.0.0.1:{port}"))
        .collect();
    let apps: Vec<ServiceProcess> = ports
        .iter()
        .map(|port| {
            let env: Vec<(String, String)> = [
                ("APP_BIND", "127.0.0.1".to_owned()),
                ("APP_PORT", port.to_string()),
                ("DATABASE_URL", database_url.clone()),
                ("REDIS_URL", redis.url()),
                ("APP_PUBLIC_URL", urls[0].clone()),
                (
                    "MEDIA_TOKEN_SECRET",
                    "bench-chat-secret-0123456789abcdef0123".to_owned(),
                ),
                (
                    "STREAM_KEY_SECRET",
                    "bench-chat-stream-key-secret-0123456789".to_owned(),
                ),
                ("APP_MAX_SOCKETS_PER_IP", "1000".to_owned()),
            ]
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect();
            let directory = dir.path().join(port.to_string());
            std::fs::create_dir_all(&directory).expect("directory");
            ServiceProcess::spawn("privatehub-app", &directory, &env)
        })
        .collect();
    for (url, app) in urls.iter().zip(&apps) {
        wait_for_http_ok(&format!("{url}/healthz"), Duration::from_secs(30))
            .unwrap_or_else(|error| panic!("{error}\n{}", app.log_tail(30)));
    }
    let report = run(LoadOptions {
        app_urls: urls.clone(),
        plan,
        sockets_per_live: 60,
        messages_per_second: 6.0,
        warmup: Duration::from_secs(1),
        duration: Duration::from_secs(3),
        app_pids: apps.iter().map(ServiceProcess::pid).collect(),
        source_addresses: 4,
        settle: Duration::from_millis(200),
        stall_database: None,
        reconnect_storm: None,
    })
    .await
    .expect("load run");
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    assert_eq!(report.instances, 2);
    assert_eq!(report.failed_sockets, 0, "{report:?}");
    assert!(report.messages >= 12, "{report:?}");
    assert_eq!(report.lost, 0, "{report:?}");
    assert_eq!(report.deliveries, report.messages * 60, "{report:?}");
    // Half of every message's sockets are on the other instance.
    assert_eq!(
        report.cross_instance_deliveries as u64,
        report.messages * 30,
        "{report:?}"
    );
    assert!(
        report
            .cross_instance_delay_p99_ms
            .is_some_and(|p99| p99 > 0.0)
    );
    assert_eq!(
        report.viewer_counts, report.viewer_counts_expected,
        "the count over both instances: {report:?}"
    );
    assert_eq!(report.server_errors, 0, "{report:?}");
    drop(apps);
    drop((postgres, redis));
}
