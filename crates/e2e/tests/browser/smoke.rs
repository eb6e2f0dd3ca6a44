//! The harness itself: chromedriver starts, Chromium opens with the fake camera and
//! microphone. A failure here points at the machine set-up, not at PrivateHub.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use crate::harness::{Browser, BrowserOptions, ChromeDriver};

/// Serves an empty page on loopback (a secure context, unlike `about:blank`).
fn serve_blank_page() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let url = format!("http://{}/", listener.local_addr().expect("local address"));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten().take(20) {
            let mut stream = stream;
            let mut request = [0u8; 2048];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n\r\n\
                  <!doctype html><title>blank</title>",
            );
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_has_a_fake_camera_and_microphone() {
    let _guard = crate::exclusive().await;
    let page = serve_blank_page();
    let driver = ChromeDriver::start().await;
    let browser = Browser::open(&driver, "smoke", &BrowserOptions::default()).await;
    browser.goto(&page).await;
    let probe = browser
        .js(
            "return navigator.mediaDevices.getUserMedia({video: true, audio: true}) \
             .then(s => s.getVideoTracks().length + ' video, ' + s.getAudioTracks().length + ' audio', \
                   e => 'error ' + e.name + ': ' + e.message);",
            vec![],
        )
        .await;
    assert_eq!(probe, "1 video, 1 audio", "getUserMedia with fake devices");
    browser
        .wait_js(
            "an RTCPeerConnection",
            "typeof RTCPeerConnection === 'function'",
            Duration::from_secs(5),
        )
        .await;
    browser.close().await;
}
