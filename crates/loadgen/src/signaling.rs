//! Joining a server through its own signaling: PrivateHub's media WebSocket
//! (`privatehub_protocol::media_signaling`) or Janus's WebSocket API (VideoRoom plugin).
//!
//! Every call here is blocking with bounded socket timeouts; the sockets are kept open
//! afterwards by a [`KeptSocket`] so the server keeps the peer.

use crate::peer::SIMULCAST_LAYERS;
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use privatehub_protocol::{
    LiveId, MediaClientMessage, MediaRole, MediaServerMessage, MediaTokenClaims, SdpKind,
    SessionDescription, issue_media_token,
};
use serde_json::{Value, json};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::media::{Direction, MediaKind, Mid};
use str0m::{Candidate, Rtc};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::{Message, WebSocket};

use crate::LoadgenError;

/// How long one signaling read may block.
const READ_TIMEOUT: Duration = Duration::from_secs(15);
/// Most messages read while waiting for one reply (events for others, acks, trickle).
const MAX_MESSAGES_PER_REPLY: usize = 200;
/// VideoRoom plugin package name.
const VIDEOROOM: &str = "janus.plugin.videoroom";

/// Which server the bots talk to, and how.
#[derive(Debug, Clone)]
pub enum ServerTarget {
    /// PrivateHub's `privatehub-media`: `ws://host:port/ws`, tokens signed with the secret.
    PrivateHub {
        ws_url: String,
        origin: String,
        secret: String,
        live_id: i64,
    },
    /// Janus's WebSocket transport (`ws://host:8188/`), VideoRoom room `room`.
    Janus { ws_url: String, room: u64 },
}

impl ServerTarget {
    /// `privatehub` or `janus`, as written in reports.
    pub fn name(&self) -> &'static str {
        match self {
            ServerTarget::PrivateHub { .. } => "privatehub",
            ServerTarget::Janus { .. } => "janus",
        }
    }
}

/// A signaling socket kept open for the life of a bot.
pub struct KeptSocket {
    socket: WebSocket<TcpStream>,
    keepalive: Keepalive,
}

enum Keepalive {
    PrivateHub,
    Janus { session_id: u64 },
}

impl KeptSocket {
    /// Reads whatever the server sent without blocking and answers WebSocket pings.
    pub fn drain(&mut self) {
        if self.socket.get_ref().set_nonblocking(true).is_err() {
            return;
        }
        for _ in 0..MAX_MESSAGES_PER_REPLY {
            if self.socket.read().is_err() {
                break;
            }
        }
        let _ = self.socket.flush();
        let _ = self.socket.get_ref().set_nonblocking(false);
    }

    /// Sends the protocol's keep-alive message.
    pub fn keepalive(&mut self) {
        let message = match self.keepalive {
            Keepalive::PrivateHub => serde_json::to_string(&MediaClientMessage::Ping)
                .unwrap_or_else(|_| r#"{"type":"ping"}"#.to_owned()),
            Keepalive::Janus { session_id } => json!({
                "janus": "keepalive",
                "session_id": session_id,
                "transaction": next_transaction(),
            })
            .to_string(),
        };
        let _ = self.socket.send(Message::text(message));
    }

    /// Leaves politely (PrivateHub `leave`, Janus `destroy`) and closes the socket.
    pub fn close(mut self) {
        let message = match self.keepalive {
            Keepalive::PrivateHub => serde_json::to_string(&MediaClientMessage::Leave).ok(),
            Keepalive::Janus { session_id } => Some(
                json!({"janus": "destroy", "session_id": session_id, "transaction": next_transaction()})
                    .to_string(),
            ),
        };
        if let Some(message) = message {
            let _ = self.socket.send(Message::text(message));
        }
        let _ = self.socket.close(None);
        let _ = self.socket.flush();
    }
}

fn connect(
    url: &str,
    origin: Option<&str>,
    subprotocol: Option<&str>,
) -> Result<WebSocket<TcpStream>, LoadgenError> {
    let authority = url
        .split_once("://")
        .map(|(_, rest)| rest.split('/').next().unwrap_or(rest))
        .ok_or_else(|| LoadgenError::Signaling(format!("not a ws:// URL: {url}")))?;
    let stream = TcpStream::connect(authority)
        .map_err(|error| LoadgenError::Signaling(format!("connect {authority}: {error}")))?;
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(READ_TIMEOUT)))
        .and_then(|()| stream.set_nodelay(true))
        .map_err(|error| LoadgenError::Signaling(error.to_string()))?;
    let mut request = url
        .into_client_request()
        .map_err(|error| LoadgenError::Signaling(error.to_string()))?;
    let headers = request.headers_mut();
    if let Some(origin) = origin.and_then(|value| HeaderValue::from_str(value).ok()) {
        headers.insert("Origin", origin);
    }
    if let Some(protocol) = subprotocol.and_then(|value| HeaderValue::from_str(value).ok()) {
        headers.insert("Sec-WebSocket-Protocol", protocol);
    }
    let (socket, _response) = tungstenite::client::client(request, stream).map_err(|error| {
        LoadgenError::Signaling(format!("WebSocket handshake with {url}: {error}"))
    })?;
    Ok(socket)
}

fn send_json(socket: &mut WebSocket<TcpStream>, value: &str) -> Result<(), LoadgenError> {
    socket
        .send(Message::text(value.to_owned()))
        .map_err(|error| LoadgenError::Signaling(format!("send: {error}")))
}

fn read_json(socket: &mut WebSocket<TcpStream>) -> Result<Value, LoadgenError> {
    for _ in 0..MAX_MESSAGES_PER_REPLY {
        let message = socket
            .read()
            .map_err(|error| LoadgenError::Signaling(format!("read: {error}")))?;
        match message {
            Message::Text(text) => {
                return serde_json::from_str(text.as_str())
                    .map_err(|error| LoadgenError::Signaling(format!("bad JSON: {error}")));
            }
            Message::Close(frame) => {
                return Err(LoadgenError::Signaling(format!("server closed: {frame:?}")));
            }
            _ => {}
        }
    }
    Err(LoadgenError::Signaling("no text message".into()))
}

/// An offer made by `rtc` (see [`make_offer`]), waiting for the server's answer.
pub struct LocalOffer {
    offer: SdpOffer,
    pending: SdpPendingOffer,
    pub audio_mid: Mid,
    pub video_mid: Mid,
}

/// Adds one audio and one video m-line in `direction` and creates the offer.
/// With `simulcast` (publish only), the video m-line sends [`SIMULCAST_LAYERS`].
pub fn make_offer(
    rtc: &mut Rtc,
    direction: Direction,
    simulcast: bool,
) -> Result<LocalOffer, LoadgenError> {
    let mut changes = rtc.sdp_api();
    let audio_mid = changes.add_media(MediaKind::Audio, direction, None, None, None);
    let layers = simulcast.then(|| {
        let mut layers = str0m::media::Simulcast::new();
        for (rid, _) in SIMULCAST_LAYERS {
            layers.add_send_layer(str0m::media::SimulcastLayer::new(rid));
        }
        layers
    });
    let video_mid = changes.add_media(MediaKind::Video, direction, None, None, layers);
    let (offer, pending) = changes
        .apply()
        .ok_or_else(|| LoadgenError::Signaling("no media to offer".into()))?;
    Ok(LocalOffer {
        offer,
        pending,
        audio_mid,
        video_mid,
    })
}

/// Joins PrivateHub as publisher or viewer with `offer` made by `rtc`, and accepts the
/// server's answer. The token is minted here with the target's secret.
pub fn privatehub_join(
    target: &ServerTarget,
    role: MediaRole,
    subject: &str,
    rtc: &mut Rtc,
    offer: LocalOffer,
) -> Result<KeptSocket, LoadgenError> {
    let ServerTarget::PrivateHub {
        ws_url,
        origin,
        secret,
        live_id,
    } = target
    else {
        return Err(LoadgenError::Signaling("not a PrivateHub target".into()));
    };
    let now_unix = crate::payload::epoch_micros() / 1_000_000;
    let claims = MediaTokenClaims::new(LiveId(*live_id), "bench", subject, role, now_unix, 3600);
    let token = issue_media_token(&claims, secret.as_bytes())
        .map_err(|error| LoadgenError::Signaling(error.to_string()))?;
    privatehub_join_with_token(ws_url, Some(origin), role, token, rtc, offer)
}

/// Joins PrivateHub's media server at `ws_url` as publisher or viewer with a media
/// `token` obtained elsewhere (e.g. from the app's `POST /api/lives/{username}/token`),
/// sends `offer` made by `rtc` and accepts the server's answer.
pub fn privatehub_join_with_token(
    ws_url: &str,
    origin: Option<&str>,
    role: MediaRole,
    token: String,
    rtc: &mut Rtc,
    offer: LocalOffer,
) -> Result<KeptSocket, LoadgenError> {
    let mut socket = connect(ws_url, origin, None)?;
    let LocalOffer { offer, pending, .. } = offer;
    let offer = SessionDescription {
        kind: SdpKind::Offer,
        sdp: offer.to_sdp_string(),
    };
    let message = match role {
        MediaRole::Publish => MediaClientMessage::Publish { token, offer },
        MediaRole::Watch => MediaClientMessage::Watch { token, offer },
    };
    let text = serde_json::to_string(&message)
        .map_err(|error| LoadgenError::Signaling(error.to_string()))?;
    send_json(&mut socket, &text)?;
    for _ in 0..MAX_MESSAGES_PER_REPLY {
        let value = read_json(&mut socket)?;
        let Ok(message) = serde_json::from_value::<MediaServerMessage>(value.clone()) else {
            continue;
        };
        match message {
            MediaServerMessage::Answer { answer, .. } => {
                let answer = SdpAnswer::from_sdp_string(&answer.sdp)
                    .map_err(|error| LoadgenError::Signaling(format!("answer SDP: {error}")))?;
                rtc.sdp_api()
                    .accept_answer(pending, answer)
                    .map_err(|error| LoadgenError::Signaling(format!("accept answer: {error}")))?;
                return Ok(KeptSocket {
                    socket,
                    keepalive: Keepalive::PrivateHub,
                });
            }
            MediaServerMessage::Error { code, message, .. } => {
                return Err(LoadgenError::Signaling(format!(
                    "server refused: {code:?}: {message}"
                )));
            }
            _ => {}
        }
    }
    Err(LoadgenError::Signaling("no answer".into()))
}

fn next_transaction() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("t{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// One Janus session with one VideoRoom handle on its own WebSocket.
struct JanusSession {
    socket: WebSocket<TcpStream>,
    session_id: u64,
    handle_id: u64,
    /// Candidates Janus trickled while we waited for replies.
    trickled: Vec<String>,
}

impl JanusSession {
    fn open(ws_url: &str) -> Result<JanusSession, LoadgenError> {
        let mut socket = connect(ws_url, None, Some("janus-protocol"))?;
        let created = janus_request(&mut socket, json!({"janus": "create"}), &mut Vec::new())?;
        let session_id = created["data"]["id"]
            .as_u64()
            .ok_or_else(|| LoadgenError::Signaling(format!("janus create: {created}")))?;
        let attached = janus_request(
            &mut socket,
            json!({"janus": "attach", "session_id": session_id, "plugin": VIDEOROOM}),
            &mut Vec::new(),
        )?;
        let handle_id = attached["data"]["id"]
            .as_u64()
            .ok_or_else(|| LoadgenError::Signaling(format!("janus attach: {attached}")))?;
        Ok(JanusSession {
            socket,
            session_id,
            handle_id,
            trickled: Vec::new(),
        })
    }

    /// Sends a plugin message and returns the plugin's reply (sync `success` or async
    /// `event`), skipping `ack`s.
    fn message(&mut self, body: Value, jsep: Option<Value>) -> Result<Value, LoadgenError> {
        let mut request = json!({
            "janus": "message",
            "session_id": self.session_id,
            "handle_id": self.handle_id,
            "body": body,
        });
        if let Some(jsep) = jsep {
            request["jsep"] = jsep;
        }
        let reply = janus_request(&mut self.socket, request, &mut self.trickled)?;
        let data = &reply["plugindata"]["data"];
        if let Some(code) = data.get("error_code") {
            return Err(LoadgenError::Signaling(format!(
                "janus error {code}: {}",
                data["error"]
            )));
        }
        Ok(reply)
    }

    fn kept(self) -> KeptSocket {
        KeptSocket {
            socket: self.socket,
            keepalive: Keepalive::Janus {
                session_id: self.session_id,
            },
        }
    }
}

/// Sends `request` with a fresh transaction and waits for its final reply.
fn janus_request(
    socket: &mut WebSocket<TcpStream>,
    mut request: Value,
    trickled: &mut Vec<String>,
) -> Result<Value, LoadgenError> {
    let transaction = next_transaction();
    request["transaction"] = json!(transaction);
    send_json(socket, &request.to_string())?;
    for _ in 0..MAX_MESSAGES_PER_REPLY {
        let value = read_json(socket)?;
        let kind = value["janus"].as_str().unwrap_or_default();
        if kind == "trickle" {
            if let Some(candidate) = value["candidate"]["candidate"].as_str() {
                trickled.push(candidate.to_owned());
            }
            continue;
        }
        if value["transaction"].as_str() != Some(transaction.as_str()) || kind == "ack" {
            continue;
        }
        if kind == "error" {
            return Err(LoadgenError::Signaling(format!(
                "janus: {}",
                value["error"]
            )));
        }
        return Ok(value);
    }
    Err(LoadgenError::Signaling("janus: no reply".into()))
}

/// Creates VideoRoom `room` for one VP8 + Opus publisher with a bitrate cap well above
/// the test stream. An existing room of that number is fine.
pub fn janus_create_room(ws_url: &str, room: u64, bitrate_bps: u64) -> Result<(), LoadgenError> {
    let mut session = JanusSession::open(ws_url)?;
    let reply = session.message(
        json!({
            "request": "create",
            "room": room,
            "description": "privatehub-loadgen",
            "publishers": 1,
            "bitrate": bitrate_bps,
            "fir_freq": 0,
            "audiocodec": "opus",
            "videocodec": "vp8",
            "notify_joining": false,
        }),
        None,
    );
    let outcome = match reply {
        Ok(_) => Ok(()),
        Err(LoadgenError::Signaling(message)) if message.contains("427") => Ok(()),
        Err(error) => Err(error),
    };
    session.kept().close();
    outcome
}

/// Publishes `offer` (sendonly, made by `rtc`) into Janus room `room`; returns the
/// publisher's feed id for the viewers.
pub fn janus_publish(
    ws_url: &str,
    room: u64,
    rtc: &mut Rtc,
    offer: LocalOffer,
) -> Result<(KeptSocket, u64), LoadgenError> {
    let mut session = JanusSession::open(ws_url)?;
    let joined = session.message(
        json!({"request": "join", "ptype": "publisher", "room": room, "display": "loadgen"}),
        None,
    )?;
    let feed = joined["plugindata"]["data"]["id"]
        .as_u64()
        .ok_or_else(|| LoadgenError::Signaling(format!("janus join: {joined}")))?;
    let LocalOffer { offer, pending, .. } = offer;
    let reply = session.message(
        json!({"request": "publish", "audio": true, "video": true}),
        Some(json!({"type": "offer", "sdp": offer.to_sdp_string(), "trickle": false})),
    )?;
    let sdp = reply["jsep"]["sdp"]
        .as_str()
        .ok_or_else(|| LoadgenError::Signaling(format!("janus publish: no answer: {reply}")))?;
    let answer = SdpAnswer::from_sdp_string(sdp)
        .map_err(|error| LoadgenError::Signaling(format!("answer SDP: {error}")))?;
    rtc.sdp_api()
        .accept_answer(pending, answer)
        .map_err(|error| LoadgenError::Signaling(format!("accept answer: {error}")))?;
    add_trickled(rtc, &mut session.trickled);
    Ok((session.kept(), feed))
}

/// Subscribes to `feed` in Janus room `room`: Janus offers, `rtc` answers.
pub fn janus_watch(
    ws_url: &str,
    room: u64,
    feed: u64,
    rtc: &mut Rtc,
) -> Result<KeptSocket, LoadgenError> {
    let mut session = JanusSession::open(ws_url)?;
    let attached = session.message(
        json!({"request": "join", "ptype": "subscriber", "room": room, "streams": [{"feed": feed}]}),
        None,
    )?;
    let sdp = attached["jsep"]["sdp"]
        .as_str()
        .ok_or_else(|| LoadgenError::Signaling(format!("janus subscribe: no offer: {attached}")))?;
    let offer = SdpOffer::from_sdp_string(sdp)
        .map_err(|error| LoadgenError::Signaling(format!("offer SDP: {error}")))?;
    let answer = rtc
        .sdp_api()
        .accept_offer(offer)
        .map_err(|error| LoadgenError::Signaling(format!("accept offer: {error}")))?;
    session.message(
        json!({"request": "start", "room": room}),
        Some(json!({"type": "answer", "sdp": answer.to_sdp_string(), "trickle": false})),
    )?;
    add_trickled(rtc, &mut session.trickled);
    Ok(session.kept())
}

fn add_trickled(rtc: &mut Rtc, trickled: &mut Vec<String>) {
    for line in trickled.drain(..) {
        if let Ok(candidate) = Candidate::from_sdp_string(&line) {
            rtc.add_remote_candidate(candidate);
        }
    }
}
