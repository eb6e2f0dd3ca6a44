//! The JSON targets: media signaling messages, app socket messages and the app's JSON
//! request bodies, each followed by the checks the server applies to what parsed.

use privatehub_app::domain::{ChatText, LiveTitle, Password, Username};
use privatehub_app::routes::json::{CredentialsRequest, HistoryQuery, StartLiveRequest};
use privatehub_protocol::app_socket::{
    AppClientMessage, MAX_APP_SOCKET_MESSAGE_BYTES, MAX_CHAT_MESSAGE_CHARS,
};
use privatehub_protocol::{MAX_SIGNALING_MESSAGE_BYTES, MediaClientMessage, verify_media_token};

use crate::{FUZZ_TOKEN_SECRET, text};

use privatehub_app::error::MAX_BODY_BYTES;

/// `LiveTitle`'s documented limit (its constant is private to the app's domain module).
const MAX_LIVE_TITLE_CHARS: usize = 120;

/// Target 1: the text of a client message on the media `/ws`: `parse_message`, then what
/// the session does with it that needs no network: the candidate line through
/// `str0m::Candidate::from_sdp_string` (as `Signaling::on_message` trims it), the token
/// through `verify_media_token`. The offer's SDP is not parsed here: the session hands it
/// to `accept_offer`, which the `sdp_offer` target covers.
pub fn media_signaling(data: &[u8]) {
    if data.len() > MAX_SIGNALING_MESSAGE_BYTES {
        return;
    }
    let Ok(message) = privatehub_media::parse_message(&text(data)) else {
        return;
    };
    // What parsed serialises back to the same message.
    let again = serde_json::to_string(&message).expect("a parsed message serialises");
    let reparsed = privatehub_media::parse_message(&again)
        .unwrap_or_else(|_| panic!("re-serialised message does not parse: {again}"));
    assert_eq!(reparsed, message);
    match message {
        MediaClientMessage::Candidate { candidate } => {
            let line = candidate.trim();
            let line = line.strip_prefix("a=").unwrap_or(line);
            if let Ok(parsed) = str0m::Candidate::from_sdp_string(line) {
                let _ = parsed.to_sdp_string();
            }
        }
        MediaClientMessage::Publish { token, .. } | MediaClientMessage::Watch { token, .. } => {
            let _ = verify_media_token(&token, FUZZ_TOKEN_SECRET);
        }
        MediaClientMessage::Leave
        | MediaClientMessage::Ping
        | MediaClientMessage::Quality { .. } => {}
    }
}

/// Target 2: a client message on the app's chat socket (`chat/session.rs` parses it with
/// serde), then the domain parsing the chat server applies: `Username::parse` for
/// `live:join` and `chat:ban`, `ChatText::parse` for `chat:send`.
pub fn app_socket(data: &[u8]) {
    if data.len() > MAX_APP_SOCKET_MESSAGE_BYTES {
        return;
    }
    let Ok(message) = serde_json::from_str::<AppClientMessage>(&text(data)) else {
        return;
    };
    match message {
        AppClientMessage::LiveJoin { channel } => username(&channel),
        AppClientMessage::ChatBan { username: name } => username(&name),
        AppClientMessage::ChatSend { text } => {
            chat_text(&text);
            // Titles use the same cleaning with stricter rules: same input, more coverage.
            live_title(&text);
        }
        AppClientMessage::ChatDelete { .. }
        | AppClientMessage::UserOnline
        | AppClientMessage::LiveLeave
        | AppClientMessage::Ping => {}
    }
}

/// Target 7: the app's JSON request bodies through the path `error::JsonObject` takes (a
/// JSON object first, then `serde_json::from_value`), then the domain parsing the handler
/// applies. The first byte picks the request type.
pub fn json_body(data: &[u8]) {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    if body.len() > MAX_BODY_BYTES {
        return;
    }
    let Ok(object) = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(body)
    else {
        return;
    };
    let value = serde_json::Value::Object(object);
    match kind % 3 {
        0 => {
            let Ok(request) = serde_json::from_value::<CredentialsRequest>(value) else {
                return;
            };
            // Sign-up and log-in.
            username(&request.username);
            password(&request.password);
        }
        1 => {
            let Ok(request) = serde_json::from_value::<StartLiveRequest>(value) else {
                return;
            };
            // `lives::start`: blank titles get the default, others are parsed.
            if let Some(title) = request.title.filter(|t| !t.trim().is_empty()) {
                live_title(&title);
            }
        }
        _ => {
            let _ = serde_json::from_value::<HistoryQuery>(value);
        }
    }
}

fn username(raw: &str) {
    let Ok(name) = Username::parse(raw) else {
        return;
    };
    let s = name.as_str();
    assert!((3..=30).contains(&s.len()), "{s:?}");
    assert!(
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
        "{s:?}"
    );
    assert!(name.canonical().eq_ignore_ascii_case(s));
    assert_eq!(Username::parse(s).as_ref(), Ok(&name));
}

fn password(raw: &str) {
    if let Ok(parsed) = Password::parse(raw.to_owned()) {
        assert_eq!(parsed.expose(), raw);
        assert!(!raw.trim().is_empty());
    }
    if let Ok(parsed) = Password::for_login(raw.to_owned()) {
        assert_eq!(parsed.expose(), raw);
    }
}

/// Characters a cleaned display text never contains.
fn hidden_or_control(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200B}' | '\u{FEFF}')
        || matches!(c, '\u{2028}' | '\u{2029}')
}

fn chat_text(raw: &str) {
    let Ok(parsed) = ChatText::parse(raw) else {
        return;
    };
    let s = parsed.as_str();
    assert!(!s.is_empty());
    assert!(s.chars().count() <= MAX_CHAT_MESSAGE_CHARS);
    assert_eq!(s, s.trim());
    assert!(!s.chars().any(hidden_or_control), "{s:?}");
    assert_eq!(ChatText::parse(s).as_ref(), Ok(&parsed), "not idempotent");
}

fn live_title(raw: &str) {
    let Ok(parsed) = LiveTitle::parse(raw) else {
        return;
    };
    let s = parsed.as_str();
    assert!(!s.is_empty());
    assert!(s.chars().count() <= MAX_LIVE_TITLE_CHARS);
    assert_eq!(s, s.trim());
    assert!(!s.chars().any(hidden_or_control), "{s:?}");
    assert_eq!(LiveTitle::parse(s).as_ref(), Ok(&parsed), "not idempotent");
}
