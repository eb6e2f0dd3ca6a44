//! Faults while a live is on: each service stopped with SIGTERM, killed with SIGKILL and
//! started again. The pages recover by themselves (no reload), chat history stays
//! intact and is shown once, the viewer count comes back. The bounds are generous (30 s);
//! the measured times are printed for docs/reliability.md.

use std::time::{Duration, Instant};

use privatehub_testkit::{StackOptions, start_stack};

use crate::harness::{Browser, BrowserOptions, ChromeDriver};
use crate::pages::{self, LIVE_STATUS, PLAYER_FRAMES};

const RECOVERY: Duration = Duration::from_secs(30);

/// How many chat lines of the page show exactly `text`.
async fn chat_lines_with(browser: &Browser, text: &str) -> u64 {
    let count = browser
        .js(
            "return [...document.querySelectorAll('#chat-log .chat-text')]\
             .filter(e => e.textContent === arguments[0]).length;",
            vec![serde_json::json!(text)],
        )
        .await;
    count.as_u64().unwrap_or(0)
}

async fn chat_usable(browser: &Browser) {
    browser
        .wait_js(
            "chat reconnected",
            "document.querySelector('#chat-status').hidden && !document.querySelector('#chat-input').disabled",
            RECOVERY,
        )
        .await;
}

async fn mark_document(browsers: &[&Browser]) {
    for browser in browsers {
        browser.js("window.__sameDocument = true;", vec![]).await;
    }
}

async fn assert_not_reloaded(browsers: &[&Browser]) {
    for browser in browsers {
        let kept = browser
            .js("return window.__sameDocument === true;", vec![])
            .await;
        assert_eq!(kept, true, "{} reloaded the page", browser.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_stopped_or_killed_mid_live_recover_without_a_reload() {
    let _guard = crate::exclusive().await;
    let mut stack = start_stack(StackOptions::default());
    let app = stack.app_url.clone();
    let driver = ChromeDriver::start().await;
    let options = BrowserOptions::default();
    let (alice, bob) = tokio::join!(
        Browser::open(&driver, "alice (broadcaster)", &options),
        Browser::open(&driver, "bob (viewer)", &options),
    );
    pages::sign_up(&alice, &app, "alice").await;
    pages::go_live(&alice, &app, "alice", "Fault drill").await;
    pages::sign_up(&bob, &app, "bob").await;
    pages::watch(&bob, &app, "alice").await;
    pages::wait_viewers(&alice, 1).await;
    // Bob's line came back to him, so it is stored: it must survive every crash below.
    pages::send_chat(&bob, "before the drill").await;
    pages::wait_chat_line(&alice, "before the drill").await;
    pages::wait_chat_line(&bob, "before the drill").await;
    mark_document(&[&alice, &bob]).await;

    // 1. SIGTERM of the app: sockets are told, the process exits within a few seconds.
    let stopping = Instant::now();
    stack.app.terminate();
    let status = stack.app.wait_exit(Duration::from_secs(10));
    let exited_after = stopping.elapsed();
    assert!(
        status.is_some_and(|status| status.success()),
        "the app did not exit cleanly within 10 s of SIGTERM: {status:?}"
    );
    for browser in [&alice, &bob] {
        browser
            .wait_js(
                "the restarting notice",
                "document.querySelector('#chat-status').textContent.includes('restarting')",
                Duration::from_secs(5),
            )
            .await;
    }
    stack.restart_app();
    tokio::join!(chat_usable(&alice), chat_usable(&bob));
    pages::wait_viewers(&alice, 1).await;
    println!(
        "SIGTERM app: exited after {exited_after:?}, chat back {:?} after the signal",
        stopping.elapsed()
    );

    // 2. SIGKILL of the app: no notice, the pages reconnect with their backoff; the
    //    history is intact and shown once.
    let killed = Instant::now();
    stack.app.kill();
    stack.restart_app();
    tokio::join!(chat_usable(&alice), chat_usable(&bob));
    pages::wait_viewers(&alice, 1).await;
    println!(
        "SIGKILL app: chat and count back after {:?}",
        killed.elapsed()
    );
    for browser in [&alice, &bob] {
        assert_eq!(
            chat_lines_with(browser, "before the drill").await,
            1,
            "{}: the stored line is missing or shown twice",
            browser.name
        );
    }
    pages::send_chat(&bob, "after the app crash").await;
    pages::wait_chat_line(&alice, "after the app crash").await;

    // 3. SIGKILL of the media server: the broadcaster's page publishes again and the
    //    viewer decodes again.
    let frames_before = bob.number(PLAYER_FRAMES).await;
    let killed = Instant::now();
    stack.media.kill();
    stack.restart_media();
    alice
        .wait_js(
            "broadcast live again",
            &format!("{LIVE_STATUS} === 'live'"),
            RECOVERY,
        )
        .await;
    pages::wait_playing(&bob, RECOVERY).await;
    bob.wait_rising(
        "frames after the media restart",
        PLAYER_FRAMES,
        15.0,
        RECOVERY,
    )
    .await;
    println!(
        "SIGKILL media: viewer decoding again after {:?} (frames were {frames_before})",
        killed.elapsed()
    );

    // 4. SIGTERM of the media server: it exits within a few seconds, and the pages
    //    come back once it is started again.
    let stopping = Instant::now();
    stack.media.terminate();
    let status = stack.media.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some(),
        "the media server still runs 10 s after SIGTERM"
    );
    let exited_after = stopping.elapsed();
    for browser in [&alice, &bob] {
        browser
            .wait_js(
                "the media restart notice in the page's log",
                "(window.privatehubDebug?.log ?? []).some(line => line.includes('media server is restarting'))",
                Duration::from_secs(5),
            )
            .await;
    }
    stack.restart_media();
    pages::wait_playing(&bob, RECOVERY).await;
    println!(
        "SIGTERM media: exited after {exited_after:?}, viewer decoding again after {:?}",
        stopping.elapsed()
    );

    assert_not_reloaded(&[&alice, &bob]).await;
    for browser in [alice, bob] {
        browser.close().await;
    }
}
