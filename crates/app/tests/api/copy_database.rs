//! `privatehub-app copy-database`: a SQLite file with rows in every table copied into
//! a fresh PostgreSQL database (ids kept, sequences moved past them), counted on both
//! sides; a rerun changes nothing. Uses the shared PostgreSQL server of this binary.

use std::process::Command;

use diesel::prelude::*;
use privatehub_app::db::{
    self, AnyConnection, DatabaseLocation, PoolOptions, chat, lives, recordings, schema, sessions,
    stream_keys, users,
};
use privatehub_app::domain::{LiveTitle, Username};
use privatehub_app::stream_keys::SealedKey;
use privatehub_protocol::recordings::{
    RecordingContainer, RecordingId, RecordingReport, RecordingState,
};
use secrecy::SecretString;

use crate::helpers::shared_postgres;

/// Rows in every table: two users, a session each, an ended and a current live, a
/// stream key, three chat messages (one deleted by a ban), a ban, a recording.
fn fill(connection: &mut AnyConnection) {
    let alice =
        users::create_user(connection, &Username::parse("Alice").unwrap(), "h1", 10).unwrap();
    let bob = users::create_user(connection, &Username::parse("bob").unwrap(), "h2", 11).unwrap();
    sessions::create_session(connection, alice.id, "token-a", 12, 10_000).unwrap();
    sessions::create_session(connection, bob.id, "token-b", 13, 10_000).unwrap();
    let title = LiveTitle::parse("First").unwrap();
    let (first, _) =
        lives::start_or_get_current(connection, alice.id, &title, lives::LiveSource::Browser, 20)
            .unwrap();
    lives::end_current(connection, alice.id, 7, 30).unwrap();
    let title = LiveTitle::parse("Second").unwrap();
    let (second, _) =
        lives::start_or_get_current(connection, alice.id, &title, lives::LiveSource::Whip, 40)
            .unwrap();
    let key = SealedKey {
        key_hash: "hash-of-alice".into(),
        key_sealed: "sealed-alice".into(),
    };
    stream_keys::insert_if_missing(connection, alice.id, &key, 41).unwrap();
    let messages: Vec<chat::NewMessage> = [(first.id, "hello"), (second.id, "again")]
        .into_iter()
        .enumerate()
        .map(|(n, (live, body))| chat::NewMessage {
            id: n as i64 + 1,
            live,
            author: bob.id,
            body: body.into(),
            sent_at_ms: 50_000 + n as i64,
        })
        .collect();
    chat::insert_messages(connection, &messages).unwrap();
    chat::insert_message(connection, second.id, alice.id, "owner's word", 50_100).unwrap();
    chat::ban_user(connection, alice.id, bob.id, Some(second.id), 60_000).unwrap();
    let report = RecordingReport {
        id: RecordingId::parse(&"c".repeat(32)).unwrap(),
        live_id: first.id,
        started_at_ms: 20_000,
        duration_ms: 10_000,
        bytes: 1234,
        container: RecordingContainer::Webm,
        state: RecordingState::Finished,
    };
    recordings::store_reports(connection, &[report], 70_000).unwrap();
}

fn copy_command(source: &std::path::Path, target: &str) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_privatehub-app"))
        .arg("copy-database")
        .arg("--from")
        .arg(format!("sqlite://{}", source.display()))
        .arg("--to")
        .arg(target)
        .env_remove("DATABASE_URL")
        .output()
        .expect("run privatehub-app copy-database");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn every_count_is(output: &str, expected: &[(&str, i64)]) {
    for (table, rows) in expected {
        let line = output
            .lines()
            .find(|line| line.split_whitespace().next() == Some(table))
            .unwrap_or_else(|| panic!("no line for {table} in:\n{output}"));
        let numbers: Vec<&str> = line
            .split_whitespace()
            .filter(|word| word.parse::<i64>().is_ok())
            .collect();
        assert_eq!(numbers, [rows.to_string(), rows.to_string()], "{line}");
    }
}

#[tokio::test]
async fn a_sqlite_database_is_copied_into_postgres_with_its_ids_and_a_rerun_changes_nothing() {
    tokio::task::spawn_blocking(|| {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("privatehub.sqlite");
        let sqlite = db::build_sqlite_pool(&source).unwrap();
        db::run_migrations(&sqlite).unwrap();
        fill(&mut sqlite.get().unwrap());
        let target = shared_postgres().create_database("copy_target");

        let expected = [
            ("users", 2),
            ("sessions", 2),
            ("lives", 2),
            ("stream_keys", 1),
            ("chat_messages", 3),
            ("chat_bans", 1),
            ("recordings", 1),
        ];
        let (ok, output) = copy_command(&source, &target);
        assert!(ok, "copy failed:\n{output}");
        every_count_is(&output, &expected);
        assert!(!output.contains("password"), "{output}");

        let postgres = db::build_pool(
            &DatabaseLocation::Postgres(SecretString::from(target.clone())),
            PoolOptions::default(),
        )
        .unwrap();
        let mut from = sqlite.get().unwrap();
        let mut to = postgres.get().unwrap();
        // The same rows, with the same ids, read through the app's own queries.
        let name = Username::parse("alice").unwrap();
        let (a, b) = (
            users::find_by_username(&mut from, &name).unwrap().unwrap(),
            users::find_by_username(&mut to, &name).unwrap().unwrap(),
        );
        assert_eq!(
            (
                a.id,
                a.username.as_str(),
                a.password_hash.as_str(),
                a.record_lives
            ),
            (
                b.id,
                b.username.as_str(),
                b.password_hash.as_str(),
                b.record_lives
            )
        );
        let live_from = lives::find_current_by_user(&mut from, a.id)
            .unwrap()
            .unwrap();
        let live_to = lives::find_current_by_user(&mut to, a.id).unwrap().unwrap();
        assert_eq!(
            (live_from.id, live_from.title, live_from.source),
            (live_to.id, live_to.title, live_to.source)
        );
        assert_eq!(
            chat::recent_messages(&mut from, live_from.id, 10).unwrap(),
            chat::recent_messages(&mut to, live_to.id, 10).unwrap()
        );
        assert_eq!(
            chat::banned_users(&mut to, a.id).unwrap(),
            chat::banned_users(&mut from, a.id).unwrap()
        );
        assert_eq!(
            stream_keys::find_by_user(&mut to, a.id)
                .unwrap()
                .map(|key| key.key_sealed),
            Some("sealed-alice".to_owned())
        );
        assert_eq!(
            recordings::list_visible_by_user(&mut to, a.id, 10).unwrap(),
            recordings::list_visible_by_user(&mut from, a.id, 10).unwrap()
        );
        // New rows get ids past the copied ones.
        let carol =
            users::create_user(&mut to, &Username::parse("carol").unwrap(), "h3", 99).unwrap();
        assert!(carol.id.0 > a.id.0.max(b.id.0), "{:?}", carol.id);
        // Gone again, or the rerun's counts would differ (2 users in the source, 3 here).
        diesel::delete(schema::users::table.filter(schema::users::id.eq(carol.id.0)))
            .execute(&mut to)
            .unwrap();

        let (ok, again) = copy_command(&source, &target);
        assert!(ok, "rerun failed:\n{again}");
        every_count_is(&again, &expected);
        let b_again = users::find_by_username(&mut to, &name).unwrap().unwrap();
        assert_eq!(b_again.id, b.id);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn the_copy_refuses_a_missing_source_and_a_non_postgres_target() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing.sqlite");
    let (ok, output) = copy_command(&missing, "postgres://ph@127.0.0.1:1/none");
    assert!(!ok && output.contains("does not exist"), "{output}");
    let (ok, output) = copy_command(&missing, "sqlite://other.sqlite");
    assert!(!ok && output.contains("PostgreSQL"), "{output}");
    assert!(!missing.exists());
}
