//! The main scenario: a broadcaster goes live, two viewers watch and chat, the
//! broadcaster reloads and goes live again, then ends the live.

use std::time::{Duration, Instant};

use privatehub_testkit::{StackOptions, start_stack};

use crate::harness::{Browser, BrowserOptions, ChromeDriver, artifact_path, workspace_root};
use crate::pages::{self, AUDIO_PACKETS, LIVE_STATUS, PLAYER_FRAMES};

/// A chat message that would run script if it were ever rendered as HTML.
const HOSTILE_MESSAGE: &str =
    "<img src=x onerror=\"window.__pwned=1\"><script>window.__pwned=2</script> <b>bold?</b>";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcaster_and_two_viewers_watch_chat_reload_and_end() {
    let _guard = crate::exclusive().await;
    let started = Instant::now();
    // The media server accepts exactly the app's origin, as in production.
    let stack = start_stack(StackOptions::default());
    let app = stack.app_url.clone();
    let driver = ChromeDriver::start().await;
    let options = BrowserOptions::default();

    // The broadcaster signs up and goes live; the viewers' browsers start meanwhile.
    let (alice, bob, carol) = tokio::join!(
        Browser::open(&driver, "alice (broadcaster)", &options),
        Browser::open(&driver, "bob (viewer)", &options),
        Browser::open(&driver, "carol (viewer)", &options),
    );
    pages::sign_up(&alice, &app, "alice").await;
    pages::go_live(&alice, &app, "alice", "Morning coffee stream").await;
    println!("[{:?}] alice is live", started.elapsed());

    // Two viewers (both signed in, so they can chat) open the live page and play it.
    tokio::join!(
        pages::sign_up(&bob, &app, "bob"),
        pages::sign_up(&carol, &app, "carol")
    );
    bob.goto(&format!("{app}/")).await;
    bob.screenshot(&[artifact_path("home.png")]).await;
    tokio::join!(
        pages::watch_from_home(&bob, &app, "alice"),
        pages::watch(&carol, &app, "alice")
    );
    println!(
        "[{:?}] both viewers play video and audio",
        started.elapsed()
    );
    for browser in [&alice, &bob, &carol] {
        pages::wait_viewers(browser, 2).await;
    }

    // Chat reaches everyone.
    pages::send_chat(&bob, "hello from bob").await;
    for browser in [&alice, &bob, &carol] {
        pages::wait_chat_line(browser, "hello from bob").await;
    }

    // HTML in a message is shown as text and runs nothing.
    pages::send_chat(&carol, HOSTILE_MESSAGE).await;
    for browser in [&alice, &bob, &carol] {
        pages::wait_chat_line(browser, HOSTILE_MESSAGE).await;
        let injected = browser
            .js(
                "return [window.__pwned === undefined, \
                 document.querySelector('#chat-log img, #chat-log script, #chat-log b') === null];",
                vec![],
            )
            .await;
        assert_eq!(
            injected,
            serde_json::json!([true, true]),
            "{}: chat HTML was interpreted",
            browser.name
        );
    }
    // Links become links (and only http/https ones).
    let with_link = "notes at https://example.com/notes?day=1. and javascript:alert(1)";
    pages::send_chat(&bob, with_link).await;
    pages::wait_chat_line(&carol, with_link).await;
    let links = carol
        .js(
            "return [...document.querySelectorAll('#chat-log a')].map(a => a.href);",
            vec![],
        )
        .await;
    assert_eq!(
        links,
        serde_json::json!(["https://example.com/notes?day=1"])
    );

    // The broadcaster deletes a message: it disappears for everyone.
    alice
        .js(
            "[...document.querySelectorAll('#chat-log .chat-line')] \
             .find(line => line.querySelector('.chat-text').textContent === 'hello from bob') \
             .querySelector('.chat-tool').click();",
            vec![],
        )
        .await;
    for browser in [&alice, &bob, &carol] {
        browser
            .wait_js(
                "deleted message gone",
                "![...document.querySelectorAll('#chat-log .chat-text')].some(e => e.textContent === 'hello from bob')",
                Duration::from_secs(5),
            )
            .await;
    }
    println!("[{:?}] chat checked", started.elapsed());

    // Network drops on a viewer: the media connection and the app socket come back
    // by themselves (a new token and watch; a rejoin with chat and count).
    let sessions = carol.number("window.privatehubDebug.sessions").await;
    carol
        .js("window.privatehubDebug.dropMedia();", vec![])
        .await;
    carol
        .wait_js(
            "a new media session",
            &format!("window.privatehubDebug.sessions > {sessions}"),
            Duration::from_secs(10),
        )
        .await;
    pages::wait_playing(&carol, Duration::from_secs(15)).await;
    carol
        .js("window.privatehubDebug.dropSocket();", vec![])
        .await;
    pages::wait_viewers(&alice, 2).await;
    pages::send_chat(&bob, "still there, carol?").await;
    pages::wait_chat_line(&carol, "still there, carol?").await;
    println!(
        "[{:?}] a viewer recovered from dropped connections",
        started.elapsed()
    );

    // Screenshots of both pages for the artifacts and the README (once carol's
    // reconnected socket counts again).
    pages::wait_viewers(&alice, 2).await;
    pages::wait_viewers(&bob, 2).await;
    // The README's copies in docs/screenshots are refreshed only when asked
    // (UPDATE_SCREENSHOTS=1), so a test run never dirties the work tree.
    let docs = workspace_root().join("docs").join("screenshots");
    let update_docs = std::env::var_os("UPDATE_SCREENSHOTS").is_some();
    let targets = |name: &str| {
        let mut paths = vec![artifact_path(name)];
        if update_docs {
            paths.push(docs.join(name));
        }
        paths
    };
    alice.screenshot(&targets("start-live.png")).await;
    bob.screenshot(&targets("live.png")).await;
    // The live page on a phone-sized window (the chat goes below the player).
    carol
        .client
        .set_window_size(390, 844)
        .await
        .expect("phone-sized window");
    carol
        .wait_js(
            "single-column layout",
            "document.querySelector('#chat').getBoundingClientRect().top > document.querySelector('#player').getBoundingClientRect().bottom",
            Duration::from_secs(5),
        )
        .await;
    carol.screenshot(&[artifact_path("live-phone.png")]).await;

    // The broadcaster switches microphone while live: the new track replaces the old
    // one on the same connection and viewers keep hearing it.
    let microphones = alice
        .js(
            "const select = document.querySelector('#mic-select'); \
             const other = [...select.options].find(o => !o.selected); \
             if (other) { select.value = other.value; select.dispatchEvent(new Event('change')); } \
             return select.options.length;",
            vec![],
        )
        .await;
    println!("alice has {microphones} microphones to choose from");
    bob.wait_rising(
        "audio packets after the switch",
        AUDIO_PACKETS,
        20.0,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        alice.js(&format!("return {LIVE_STATUS};"), vec![]).await,
        "live"
    );

    // The broadcaster reloads and goes live again; viewers recover on their own,
    // without reloading (the marker set now must survive).
    for viewer in [&bob, &carol] {
        viewer.js("window.__sameDocument = true;", vec![]).await;
    }
    alice.client.refresh().await.expect("reload start-live");
    pages::go_live(&alice, &app, "alice", "Morning coffee stream, take two").await;
    tokio::join!(
        pages::wait_playing(&bob, Duration::from_secs(20)),
        pages::wait_playing(&carol, Duration::from_secs(20))
    );
    for viewer in [&bob, &carol] {
        let kept = viewer
            .js("return window.__sameDocument === true;", vec![])
            .await;
        assert_eq!(kept, true, "{} reloaded the page", viewer.name);
    }
    let history = bob
        .js("return window.privatehubDebug.history.join(' > ');", vec![])
        .await;
    println!("bob's player went through: {history}");
    assert!(
        history.as_str().unwrap_or_default().contains("stalled"),
        "the player shows stalled while the broadcaster is away: {history}"
    );
    let frames_before = bob.number(PLAYER_FRAMES).await;
    bob.wait_rising(
        "frames after the reload",
        PLAYER_FRAMES,
        15.0,
        Duration::from_secs(10),
    )
    .await;
    println!(
        "[{:?}] viewers recovered after the broadcaster reloaded (bob's frames were {frames_before})",
        started.elapsed()
    );

    // The start-live page on a phone-sized window, while live.
    alice
        .client
        .set_window_size(390, 844)
        .await
        .expect("phone-sized window");
    alice
        .wait_js(
            "single-column layout",
            "document.querySelector('#chat').getBoundingClientRect().top > document.querySelector('#preview').getBoundingClientRect().bottom",
            Duration::from_secs(5),
        )
        .await;
    alice
        .screenshot(&[artifact_path("start-live-phone.png")])
        .await;

    // Ending the live shows the ended state to viewers within a few seconds.
    pages::end_live(&alice).await;
    let ended = Instant::now();
    let is_ended = format!("{LIVE_STATUS} === 'ended'");
    tokio::join!(
        bob.wait_js("ended state", &is_ended, Duration::from_secs(5)),
        carol.wait_js("ended state", &is_ended, Duration::from_secs(5))
    );
    println!(
        "[{:?}] viewers saw the end after {:?}",
        started.elapsed(),
        ended.elapsed()
    );
    bob.screenshot(&[artifact_path("live-ended.png")]).await;

    for browser in [alice, bob, carol] {
        browser.close().await;
    }
    // The services' logs, next to the screenshots, for whoever looks at a run.
    std::fs::write(artifact_path("live-flow-app.log"), stack.app.log()).ok();
    std::fs::write(artifact_path("live-flow-media.log"), stack.media.log()).ok();
    drop(stack);
}
