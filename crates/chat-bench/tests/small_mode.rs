//! The benchmark's small mode in the normal suite: a few hundred real sockets in two
//! lives on the real app, every message delivered to every socket of its room, and the
//! report's shape, with the database's write lock held mid-run (delivery goes on, the
//! acknowledgements wait) and a reconnect storm at the end (every socket back, with its
//! history). No speed is asserted (that is the benchmark's job).

use std::time::Duration;

use privatehub_chat_bench::load::{LoadOptions, run};
use privatehub_chat_bench::plan::prepare;
use privatehub_testkit::{StackOptions, start_stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_reaches_every_socket_of_its_room() {
    let stack = start_stack(StackOptions {
        app_env: vec![("APP_MAX_SOCKETS_PER_IP".into(), "1000".into())],
        ..StackOptions::default()
    });
    let plan = prepare(&stack.database_path, 2, 4).expect("bench accounts");
    let report = run(LoadOptions {
        app_url: stack.app_url.clone(),
        plan,
        sockets_per_live: 120,
        messages_per_second: 8.0,
        warmup: Duration::from_secs(1),
        duration: Duration::from_secs(3),
        app_pid: Some(stack.app.pid()),
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
