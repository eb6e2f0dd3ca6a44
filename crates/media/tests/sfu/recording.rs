//! Recording: a bot's live is written to a WebM file that an independent tool (ffprobe)
//! reads with the expected codecs and duration; the file is served only with a valid
//! replay token (ranges for seeking); a file cut short mid-recording is repaired by the
//! next start-up.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use privatehub_media::MediaSettings;
use privatehub_media::config::RecordingSettings;
use privatehub_protocol::MediaRole;
use privatehub_protocol::recordings::{
    RecordingId, RecordingReport, RecordingState, issue_replay_token,
};

use crate::bot::{Bot, BotRole};
use crate::helpers::{SECRET, get_text, metric, spawn_server_with, token};

const LIVE: i64 = 71;

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn reports(dir: &Path) -> Vec<RecordingReport> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            found.push(serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap());
        }
    }
    found
}

async fn wait_for_report(
    dir: &Path,
    what: &str,
    check: impl Fn(&RecordingReport) -> bool,
) -> RecordingReport {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(report) = reports(dir).into_iter().find(|r| check(r)) {
            return report;
        }
        assert!(
            Instant::now() < deadline,
            "no recording {what} in {}",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// ffprobe's view of a file: (codec names, sorted; duration in seconds).
fn probe(path: &Path) -> (Vec<String>, f64) {
    let read = privatehub_testkit::ffprobe::ffprobe(path);
    let mut codecs: Vec<String> = [read.video_codec, read.audio_codec]
        .into_iter()
        .flatten()
        .collect();
    codecs.sort();
    (codecs, read.duration)
}

fn settings(dir: PathBuf, rtc_min_port: u16) -> MediaSettings {
    MediaSettings {
        recordings: RecordingSettings::for_tests(dir),
        ..MediaSettings::for_tests(SECRET, rtc_min_port, 2)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_is_recorded_served_and_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn_server_with(settings(dir.path().to_owned(), 42140)).await;
    let http = server.http_addr;

    let publisher = Bot::start(
        http,
        &token(LIVE, MediaRole::Publish),
        BotRole::Publisher { tag: 7 },
    )
    .await;
    let began = Instant::now();
    let recording = wait_for_report(dir.path(), "begun", |r| {
        r.state == RecordingState::Recording
    })
    .await;
    let media = dir.path().join(format!("{}.webm", recording.id));
    // Mid-recording, the file as a kill -9 would leave it: copied while being written.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cut = tempfile::tempdir().unwrap();
    let cut_media = cut.path().join(format!("{}.webm", recording.id));
    std::fs::copy(&media, &cut_media).unwrap();
    std::fs::write(
        cut.path().join(format!("{}.json", recording.id)),
        serde_json::to_vec(&recording).unwrap(),
    )
    .unwrap();
    let cut_at = began.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let published_for = began.elapsed().as_secs_f64();
    drop(publisher);

    let finished = wait_for_report(dir.path(), "finished", |r| {
        r.state == RecordingState::Finished
    })
    .await;
    assert_eq!(finished.id, recording.id);
    let (codecs, duration) = probe(&media);
    assert_eq!(codecs, vec!["opus", "vp8"]);
    assert!(
        (duration - published_for).abs() < 1.0,
        "ffprobe says {duration:.2} s for a live of {published_for:.2} s"
    );
    assert!((finished.duration_ms as f64 / 1000.0 - duration).abs() < 0.2);
    // Seek points all through: the publisher is asked for a keyframe every 5 s.
    let keyframes = privatehub_testkit::ffprobe::video_keyframes(&media);
    assert!(keyframes.len() >= 2, "keyframes at {keyframes:?}");
    for pair in keyframes.windows(2) {
        assert!(pair[1] - pair[0] < 6.5, "keyframes at {keyframes:?}");
    }
    let text = get_text(http, "/metrics").await;
    assert_eq!(metric(&text, "media_recordings_started_total"), 1.0);
    assert_eq!(metric(&text, "media_recordings_in_progress"), 0.0);
    assert!(metric(&text, "media_recording_bytes_written_total") >= finished.bytes as f64);

    // Serving: only with a token for this recording, ranges for seeking.
    let client = reqwest::Client::new();
    let url =
        |id: &RecordingId, token: &str| format!("http://{http}/recordings/{id}.webm?token={token}");
    let good = issue_replay_token(&finished.id, SECRET.as_bytes(), now_unix(), 600).unwrap();
    let whole = client.get(url(&finished.id, &good)).send().await.unwrap();
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.headers()["content-type"], "video/webm");
    assert_eq!(whole.bytes().await.unwrap(), std::fs::read(&media).unwrap());
    let range = client
        .get(url(&finished.id, &good))
        .header("range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(range.status(), 206);
    assert_eq!(range.bytes().await.unwrap().len(), 100);
    let no_token = client
        .get(format!("http://{http}/recordings/{}.webm", finished.id))
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), 401);
    let expired =
        issue_replay_token(&finished.id, SECRET.as_bytes(), now_unix() - 700, 600).unwrap();
    assert_eq!(
        client
            .get(url(&finished.id, &expired))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    let other = RecordingId::from_random([9; 16]);
    let for_other = issue_replay_token(&other, SECRET.as_bytes(), now_unix(), 600).unwrap();
    assert_eq!(
        client
            .get(url(&finished.id, &for_other))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    let forged = issue_replay_token(
        &finished.id,
        b"another-secret-entirely-0000000000",
        now_unix(),
        600,
    )
    .unwrap();
    assert_eq!(
        client
            .get(url(&finished.id, &forged))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    for trick in [
        "..%2F..%2Fetc%2Fpasswd",
        "%2E%2E",
        "x.webm",
        "../../etc/passwd",
    ] {
        let status = client
            .get(format!("http://{http}/recordings/{trick}?token={good}"))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 404, "{trick}");
    }
    server.stop().await;

    // The cut copy, opened by a fresh server: closed at start-up, playable to the cut.
    let repaired_server = spawn_server_with(settings(cut.path().to_owned(), 42150)).await;
    let repaired = wait_for_report(cut.path(), "repaired", |r| {
        r.state == RecordingState::Finished
    })
    .await;
    let (codecs, duration) = probe(&cut_media);
    assert_eq!(codecs, vec!["opus", "vp8"]);
    assert!(
        (duration - cut_at).abs() < 2.0,
        "repaired: ffprobe says {duration:.2} s, the copy was taken at {cut_at:.2} s"
    );
    assert!((repaired.duration_ms as f64 / 1000.0 - duration).abs() < 0.2);
    let text = get_text(repaired_server.http_addr, "/metrics").await;
    assert_eq!(metric(&text, "media_recordings_repaired_total"), 1.0);
    repaired_server.stop().await;
}

/// Publishes on `live` for `seconds` and waits until its recording is closed.
async fn record_for(
    http: std::net::SocketAddr,
    dir: &Path,
    live: i64,
    seconds: u64,
) -> RecordingReport {
    let publisher = Bot::start(
        http,
        &token(live, MediaRole::Publish),
        BotRole::Publisher { tag: 3 },
    )
    .await;
    let id = wait_for_report(dir, "begun", |r| r.live_id.0 == live)
        .await
        .id;
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    drop(publisher);
    wait_for_report(dir, "closed", |r| {
        r.id == id && r.state != RecordingState::Recording
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_the_oldest_recording_over_the_size_limit() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn_server_with(settings(dir.path().to_owned(), 42160)).await;
    let first = record_for(server.http_addr, dir.path(), 81, 2).await;
    server.stop().await;
    assert_eq!(first.state, RecordingState::Finished);

    // Room for one and a half of them: the second one closing takes the total over.
    let limited = MediaSettings {
        recordings: RecordingSettings {
            max_total_bytes: Some(first.bytes * 3 / 2),
            ..RecordingSettings::for_tests(dir.path().to_owned())
        },
        ..MediaSettings::for_tests(SECRET, 42170, 2)
    };
    let server = spawn_server_with(limited).await;
    let second = record_for(server.http_addr, dir.path(), 82, 2).await;
    let gone = wait_for_report(dir.path(), "deleted by retention", |r| {
        r.id == first.id && r.state == RecordingState::Deleted
    })
    .await;
    assert_eq!(gone.bytes, 0);
    assert!(!dir.path().join(format!("{}.webm", first.id)).exists());
    assert!(
        dir.path().join(format!("{}.webm", second.id)).exists(),
        "the newest is kept"
    );
    let text = get_text(server.http_addr, "/metrics").await;
    assert_eq!(
        metric(&text, "media_recording_retention_deletions_total"),
        1.0
    );
    server.stop().await;
}

/// A tmpfs of `bytes` mounted on a fresh directory, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(bytes: u64) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "this test mounts a small tmpfs to fill a disk: run the suite as root (scripts/test does on CI)"
        );
        SmallDisk { dir }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_the_recording_and_the_live_goes_on() {
    let disk = SmallDisk::mount(160 * 1024);
    let server = spawn_server_with(settings(disk.dir.path().to_owned(), 42180)).await;
    let http = server.http_addr;
    let publisher = Bot::start(
        http,
        &token(91, MediaRole::Publish),
        BotRole::Publisher { tag: 5 },
    )
    .await;
    let viewer = Bot::start(http, &token(91, MediaRole::Watch), BotRole::Viewer).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = get_text(http, "/metrics").await;
        if metric(&text, "media_recording_write_errors_total") >= 1.0 {
            assert_eq!(metric(&text, "media_recordings_in_progress"), 0.0);
            break;
        }
        assert!(Instant::now() < deadline, "the small disk never filled");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The live goes on for its viewer.
    let before = viewer.stats().video_frames;
    viewer
        .wait_for(
            "video after the disk filled",
            Duration::from_secs(10),
            |s| s.video_frames >= before + 30,
        )
        .await;
    // What was written plays.
    let media = std::fs::read_dir(disk.dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "webm"))
        .expect("the recording's file");
    let (codecs, duration) = probe(&media);
    assert_eq!(codecs, vec!["opus", "vp8"]);
    assert!(duration > 0.5, "{duration}");
    drop(publisher);
    drop(viewer);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_server_closes_the_recordings_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn_server_with(settings(dir.path().to_owned(), 42190)).await;
    let publisher = Bot::start(
        server.http_addr,
        &token(95, MediaRole::Publish),
        BotRole::Publisher { tag: 4 },
    )
    .await;
    let began = Instant::now();
    let recording = wait_for_report(dir.path(), "begun", |r| r.live_id.0 == 95).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stopped_at = began.elapsed().as_secs_f64();
    server.stop().await;
    drop(publisher);
    let report = reports(dir.path())
        .into_iter()
        .find(|r| r.id == recording.id)
        .unwrap();
    assert_eq!(
        report.state,
        RecordingState::Finished,
        "closed by the stop, not left for repair"
    );
    let (codecs, duration) = probe(&dir.path().join(format!("{}.webm", recording.id)));
    assert_eq!(codecs, vec!["opus", "vp8"]);
    assert!(
        (duration - stopped_at).abs() < 1.0,
        "{duration:.2} s of {stopped_at:.2} s"
    );
}
