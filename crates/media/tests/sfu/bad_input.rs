//! Every kind of bad signaling input gets the right error code, and a viewer watching
//! the same server keeps receiving throughout.

use std::time::Duration;

use privatehub_protocol::{
    MAX_SIGNALING_MESSAGE_BYTES, MediaClientMessage, MediaErrorCode, MediaRole, MediaServerMessage,
    SdpKind, SessionDescription,
};
use tokio_tungstenite::tungstenite::Message;

use crate::bot::{Bot, BotRole, make_offer};
use crate::helpers::{SECRET, Ws, spawn_server, token, token_with, wait_for_empty};

const LIVE: i64 = 21;
const T: Duration = Duration::from_secs(5);

/// Asserts the next message is an error with `code` and `close`, and if `close`, that
/// the socket is then closed. Returns the error's message.
async fn expect_error(ws: &mut Ws, code: MediaErrorCode, close: bool) -> String {
    let message = match ws.recv(T).await {
        Some(MediaServerMessage::Error {
            code: got,
            close: got_close,
            message,
        }) => {
            assert_eq!(got, code, "{message}");
            assert_eq!(got_close, close, "close flag for {code:?}");
            message
        }
        other => panic!("expected error {code:?}, got {other:?}"),
    };
    if close {
        assert!(
            ws.closed_within(T).await,
            "socket should close after {code:?}"
        );
    }
    message
}

fn offer() -> SessionDescription {
    make_offer(BotRole::Viewer, crate::bot::BotTransport::Udp).2
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_get_error_codes_while_others_keep_streaming() {
    let _heap = crate::alloc::shared().await;
    let server = spawn_server(42030, 2).await;
    let http = server.http_addr;
    let mut publisher = Bot::start(
        http,
        &token(LIVE, MediaRole::Publish),
        BotRole::Publisher { tag: 1 },
    )
    .await;
    let mut viewer = Bot::start(http, &token(LIVE, MediaRole::Watch), BotRole::Viewer).await;
    viewer
        .wait_for("video", Duration::from_secs(10), |s| s.video_frames >= 5)
        .await;
    let mut progress = viewer.stats().video_frames;

    // Malformed JSON, unknown type, wrong shape: error, socket stays open.
    let mut ws = Ws::connect(http, None).await;
    ws.send_text("{not json".into()).await;
    expect_error(&mut ws, MediaErrorCode::MalformedMessage, false).await;
    ws.send_text(r#"{"type":"dance"}"#.into()).await;
    expect_error(&mut ws, MediaErrorCode::UnknownMessageType, false).await;
    ws.send_text(r#"{"type":"watch","token":5}"#.into()).await;
    expect_error(&mut ws, MediaErrorCode::MalformedMessage, false).await;
    // Wrong state: a candidate before any offer.
    ws.send(&MediaClientMessage::Candidate {
        candidate: "candidate:1 1 udp 2113937151 127.0.0.1 5000 typ host".into(),
    })
    .await;
    expect_error(&mut ws, MediaErrorCode::WrongState, false).await;
    // A quality choice before watching, or naming no layer a publisher could send.
    ws.send(&MediaClientMessage::Quality {
        layer: "auto".into(),
    })
    .await;
    expect_error(&mut ws, MediaErrorCode::WrongState, false).await;
    // Garbage SDP with a valid token: a fixed message, nothing of str0m's parse error
    // (which prints positions as heap addresses).
    ws.send(&MediaClientMessage::Watch {
        token: token(LIVE, MediaRole::Watch),
        offer: SessionDescription {
            kind: SdpKind::Offer,
            sdp: "v=0\r\nthis is not sdp\r\n".into(),
        },
    })
    .await;
    let message = expect_error(&mut ws, MediaErrorCode::InvalidSdp, false).await;
    assert!(
        !message.contains("0x") && !message.contains("PointerOffset"),
        "{message}"
    );
    assert_eq!(message, "the SDP offer could not be parsed");
    ws.send(&MediaClientMessage::Ping).await;
    assert_eq!(ws.recv(T).await, Some(MediaServerMessage::Pong));
    // After a valid watch, a second offer is in the wrong state.
    ws.send(&MediaClientMessage::Watch {
        token: token(LIVE, MediaRole::Watch),
        offer: offer(),
    })
    .await;
    let answer = ws
        .expect("answer", T, |m| {
            matches!(m, MediaServerMessage::Answer { .. })
        })
        .await;
    assert!(matches!(answer, MediaServerMessage::Answer { .. }));
    ws.send(&MediaClientMessage::Watch {
        token: token(LIVE, MediaRole::Watch),
        offer: offer(),
    })
    .await;
    let mut got = None;
    while let Some(m) = ws.recv(T).await {
        if let MediaServerMessage::Error { code, .. } = m {
            got = Some(code);
            break;
        }
    }
    assert_eq!(got, Some(MediaErrorCode::WrongState));
    // While watching: a malformed layer name is refused, the socket stays; a rid works.
    for layer in ["", "<script>", "much-too-long-rid"] {
        ws.send(&MediaClientMessage::Quality {
            layer: layer.into(),
        })
        .await;
        let mut got = None;
        while let Some(m) = ws.recv(T).await {
            if let MediaServerMessage::Error { code, close, .. } = m {
                got = Some((code, close));
                break;
            }
        }
        assert_eq!(
            got,
            Some((MediaErrorCode::MalformedMessage, false)),
            "{layer:?}"
        );
    }
    ws.send(&MediaClientMessage::Quality { layer: "h".into() })
        .await;
    ws.send(&MediaClientMessage::Ping).await;
    loop {
        match ws.recv(T).await {
            Some(MediaServerMessage::Pong) => break,
            Some(MediaServerMessage::Error { code, message, .. }) => {
                panic!("a valid quality choice was refused: {code:?} {message}")
            }
            Some(_) => {}
            None => panic!("no pong after a valid quality choice"),
        }
    }
    ws.close().await;

    // Tokens: forged, expired, valid for a century, wrong role, garbage.
    let cases = [
        (
            token_with(LIVE, MediaRole::Watch, "not-the-secret", 0, 300),
            MediaErrorCode::InvalidToken,
            false,
        ),
        (
            token_with(LIVE, MediaRole::Watch, SECRET, 3600, 60),
            MediaErrorCode::TokenExpired,
            false,
        ),
        (
            token_with(LIVE, MediaRole::Watch, SECRET, 0, 100 * 365 * 86_400),
            MediaErrorCode::InvalidToken,
            false,
        ),
        (
            token(LIVE, MediaRole::Watch),
            MediaErrorCode::Forbidden,
            true,
        ),
        ("garbage".to_owned(), MediaErrorCode::InvalidToken, false),
    ];
    for (token, code, publish) in cases {
        let mut ws = Ws::connect(http, None).await;
        let message = if publish {
            MediaClientMessage::Publish {
                token,
                offer: offer(),
            }
        } else {
            MediaClientMessage::Watch {
                token,
                offer: offer(),
            }
        };
        ws.send(&message).await;
        expect_error(&mut ws, code, true).await;
    }

    // Oversized frame.
    let mut ws = Ws::connect(http, None).await;
    let big = format!(
        r#"{{"type":"ping","pad":"{}"}}"#,
        "x".repeat(MAX_SIGNALING_MESSAGE_BYTES + 10)
    );
    ws.send_text(big).await;
    expect_error(&mut ws, MediaErrorCode::MessageTooLarge, true).await;

    // Binary frame.
    let mut ws = Ws::connect(http, None).await;
    ws.send_raw(Message::binary(vec![1u8, 2, 3])).await;
    expect_error(&mut ws, MediaErrorCode::MessageTooLarge, true).await;

    // Flood.
    let mut ws = Ws::connect(http, None).await;
    for _ in 0..200 {
        ws.send(&MediaClientMessage::Ping).await;
    }
    let mut limited = false;
    while let Some(m) = ws.recv(T).await {
        match m {
            MediaServerMessage::Pong => continue,
            MediaServerMessage::Error { code, close, .. } => {
                assert_eq!(code, MediaErrorCode::RateLimited);
                assert!(close);
                limited = true;
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(limited, "a flood must be rate limited");

    // Wrong Origin.
    let mut ws = Ws::connect(http, Some("https://evil.example")).await;
    expect_error(&mut ws, MediaErrorCode::Forbidden, true).await;
    // An allowed Origin works.
    let mut ws = Ws::connect(http, Some("http://localhost:3000")).await;
    ws.send(&MediaClientMessage::Ping).await;
    assert_eq!(ws.recv(T).await, Some(MediaServerMessage::Pong));
    ws.close().await;

    // The viewer kept receiving all along, and the publisher was never disturbed.
    viewer
        .wait_for("more video", Duration::from_secs(5), |s| {
            s.video_frames >= progress + 10
        })
        .await;
    progress = viewer.stats().video_frames;
    assert!(progress > 0);
    assert!(publisher.stats().error.is_none());

    viewer.stop_media();
    viewer.ws.close().await;
    publisher.stop_media();
    publisher.ws.close().await;
    wait_for_empty(&server, Duration::from_secs(5)).await;
    server.stop().await;
}
