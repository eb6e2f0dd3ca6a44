//! The database locked by another process, or its disk full: the chat keeps being
//! delivered, senders are told `chat:stored` only once their message is saved, a
//! message that cannot be saved in time is withdrawn with a clear error, and the chat
//! recovers by itself when the database does.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection, SqliteConnection};
use privatehub_app::db::DatabaseLocation;
use secrecy::ExposeSecret;
use serde_json::json;

use crate::helpers::{TestApp, spawn_app_with};
use crate::socket_client::{Socket, session};

/// Another process's write lock on the database, held until dropped: SQLite's
/// `BEGIN EXCLUSIVE` (readers go on in WAL mode), or on PostgreSQL every table locked
/// `IN EXCLUSIVE MODE` (plain reads go on, writes wait) in an open transaction.
enum WriteLock {
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
}

impl WriteLock {
    fn take(app: &TestApp) -> WriteLock {
        match &app.database {
            DatabaseLocation::Sqlite(path) => {
                let mut connection =
                    SqliteConnection::establish(path.to_str().unwrap()).expect("open db");
                connection.batch_execute("BEGIN EXCLUSIVE").expect("lock");
                WriteLock::Sqlite(connection)
            }
            DatabaseLocation::Postgres(url) => {
                let mut connection = PgConnection::establish(url.expose_secret()).expect("open db");
                connection
                    .batch_execute(
                        "BEGIN; LOCK TABLE users, sessions, lives, stream_keys, chat_messages, \
                         chat_bans, recordings IN EXCLUSIVE MODE",
                    )
                    .expect("lock");
                WriteLock::Postgres(connection)
            }
        }
    }
}

impl Drop for WriteLock {
    fn drop(&mut self) {
        let _ = match self {
            WriteLock::Sqlite(connection) => connection.batch_execute("COMMIT"),
            WriteLock::Postgres(connection) => connection.batch_execute("COMMIT"),
        };
    }
}

/// A live with its owner's and a viewer's sockets joined.
async fn live_with_chat(app: &TestApp) -> (Socket, Socket) {
    let (alice, alice_cookie) = session(app, "alice").await;
    let (_, bob_cookie) = session(app, "bob").await;
    app.start_live(&alice, "Storage drill").await;
    let owner = Socket::joined(app, Some(&alice_cookie), "alice").await;
    let bob = Socket::joined(app, Some(&bob_cookie), "alice").await;
    (owner, bob)
}

async fn no_message_of(socket: &mut Socket, kind: &str, within: Duration) -> bool {
    tokio::time::timeout(within, socket.expect(kind))
        .await
        .is_err()
}

#[tokio::test]
async fn a_locked_database_delays_the_stored_ack_not_the_chat() {
    let app = spawn_app_with(|_| {}).await;
    let (mut owner, mut bob) = live_with_chat(&app).await;

    let lock = WriteLock::take(&app);
    let sent = Instant::now();
    bob.send(json!({"type": "chat:send", "text": "during the lock"}))
        .await;
    for socket in [&mut owner, &mut bob] {
        assert_eq!(
            socket.expect("chat:message").await["message"]["text"],
            "during the lock"
        );
    }
    println!("delivered during the lock after {:?}", sent.elapsed());
    assert!(
        no_message_of(&mut bob, "chat:stored", Duration::from_secs(1)).await,
        "told stored while the database is locked"
    );
    // A newcomer's history has it, although it is not saved yet.
    let mut late = Socket::open(&app, None).await;
    late.send(json!({"type": "live:join", "channel": "alice"}))
        .await;
    let history = late.expect("chat:history").await;
    assert_eq!(
        history["messages"][0]["text"], "during the lock",
        "{history}"
    );

    drop(lock);
    let stored = bob.expect("chat:stored").await;
    println!("stored {:?} after the send", sent.elapsed());
    assert!(stored["message_id"].is_i64());
    assert_eq!(app.count("chat_messages"), 1);
}

/// A moderation write stuck behind the lock waits in its own task: the chat of every
/// room, and joins, go on meanwhile (the chat task used to await such writes).
#[tokio::test]
async fn a_write_stuck_behind_the_lock_delays_no_room() {
    let app = spawn_app_with(|_| {}).await;
    let (mut alice, mut bob) = live_with_chat(&app).await;
    let (carol, carol_cookie) = session(&app, "carol").await;
    let (_, dave_cookie) = session(&app, "dave").await;
    app.start_live(&carol, "Second room").await;
    let mut carol_socket = Socket::joined(&app, Some(&carol_cookie), "carol").await;
    let mut dave = Socket::joined(&app, Some(&dave_cookie), "carol").await;
    bob.send(json!({"type": "chat:send", "text": "to be deleted"}))
        .await;
    let id = bob.expect("chat:stored").await["message_id"].clone();
    alice.expect("chat:message").await;

    let lock = WriteLock::take(&app);
    alice
        .send(json!({"type": "chat:delete", "message_id": id}))
        .await;
    dave.send(json!({"type": "chat:send", "text": "while a delete waits"}))
        .await;
    // Delivered while the delete still waits for the lock: its outcome (an error once
    // SQLite's busy timeout runs out) comes after.
    assert_eq!(
        carol_socket.expect("chat:message").await["message"]["text"],
        "while a delete waits"
    );
    let mut newcomer = Socket::open(&app, None).await;
    newcomer
        .send(json!({"type": "live:join", "channel": "carol"}))
        .await;
    let history = newcomer.expect("chat:history").await;
    assert_eq!(history["messages"][0]["text"], "while a delete waits");
    // The delete's outcome has not come yet (the old chat task answered it first, after
    // the busy timeout, and only then delivered the chat).
    assert!(
        no_message_of(&mut alice, "error", Duration::from_millis(300)).await,
        "the delete was answered before the other room's chat was delivered"
    );
    let outcome = alice.expect_within("error", Duration::from_secs(20)).await;
    assert_eq!(outcome["code"], "internal", "{outcome}");
    drop(lock);

    // Once the database is back, the delete works and the history follows it.
    alice
        .send(json!({"type": "chat:delete", "message_id": id}))
        .await;
    assert_eq!(bob.expect("chat:deleted").await["message_ids"], json!([id]));
}

#[tokio::test]
async fn a_message_that_cannot_be_saved_in_time_is_withdrawn_and_the_chat_recovers() {
    let app = spawn_app_with(|settings| settings.chat_write_give_up = Duration::from_secs(2)).await;
    let (mut owner, mut bob) = live_with_chat(&app).await;

    let lock = WriteLock::take(&app);
    bob.send(json!({"type": "chat:send", "text": "lost to the lock"}))
        .await;
    let shown = owner.expect("chat:message").await["message"]["id"].clone();
    // Each attempt waits out SQLite's busy timeout (5 s) before it counts as failed.
    let error = bob.expect_within("error", Duration::from_secs(20)).await;
    assert_eq!(error["code"], "not_stored", "{error}");
    assert_eq!(error["message_id"], shown);
    let deleted = owner.expect("chat:deleted").await;
    assert_eq!(deleted["message_ids"], json!([shown]));
    drop(lock);

    bob.send(json!({"type": "chat:send", "text": "after the lock"}))
        .await;
    bob.expect("chat:stored").await;
    assert_eq!(app.count("chat_messages"), 1);
    let metrics = app.state.metrics.render();
    assert!(
        metrics.contains("app_chat_writes_failed_total 1"),
        "{metrics}"
    );
}

/// Mounts a tmpfs of `bytes` at `dir` (the test runs as root, as CI does).
struct SmallFilesystem {
    dir: std::path::PathBuf,
}

impl SmallFilesystem {
    fn mount(dir: &Path, bytes: usize) -> SmallFilesystem {
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a tmpfs at {} failed: this test needs root (as scripts/test runs in CI)",
            dir.display()
        );
        SmallFilesystem {
            dir: dir.to_owned(),
        }
    }

    /// Fills the filesystem with a file until it is full; returns the file's path.
    fn fill(&self) -> std::path::PathBuf {
        let path = self.dir.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 64 * 1024];
        while file.write_all(&block).is_ok() {}
        let small = vec![0u8; 512];
        while file.write_all(&small).is_ok() {}
        let _ = file.sync_all();
        path
    }
}

impl Drop for SmallFilesystem {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

#[tokio::test]
async fn a_full_disk_delays_the_stored_ack_and_clears_by_itself() {
    if crate::helpers::testing_postgres() {
        println!(
            "skipped on PostgreSQL: this test fills the filesystem under the SQLite file; \
             a PostgreSQL server's disk is the server's"
        );
        return;
    }
    let outer = tempfile::tempdir().unwrap();
    let disk = SmallFilesystem::mount(&outer.path().join("disk"), 8 * 1024 * 1024);
    let db_path = disk.dir.join("chat.sqlite");
    let app =
        spawn_app_with(|settings| settings.database = DatabaseLocation::Sqlite(db_path.clone()))
            .await;
    let (mut owner, mut bob) = live_with_chat(&app).await;

    let filler = disk.fill();
    let sent = Instant::now();
    for n in 0..3 {
        bob.send(json!({"type": "chat:send", "text": format!("on a full disk {n}")}))
            .await;
        assert_eq!(
            owner.expect("chat:message").await["message"]["text"],
            format!("on a full disk {n}")
        );
    }
    assert!(
        no_message_of(&mut bob, "chat:stored", Duration::from_secs(2)).await,
        "told stored while the disk is full"
    );
    std::fs::remove_file(filler).unwrap();
    for _ in 0..3 {
        bob.expect("chat:stored").await;
    }
    println!(
        "3 messages stored {:?} after the first send",
        sent.elapsed()
    );
    let mut connection = SqliteConnection::establish(db_path.to_str().unwrap()).unwrap();
    let rows: i64 = diesel::RunQueryDsl::get_result(
        diesel::dsl::sql::<diesel::sql_types::BigInt>("SELECT COUNT(*) FROM chat_messages"),
        &mut connection,
    )
    .unwrap();
    assert_eq!(rows, 3);
}
