//! Chat churn on the app's `/ws`: signed-in users who join the live's room, post within
//! the chat rate limit and check that each message comes back to them, and anonymous
//! sockets that only watch the room; all of them leave and come back all the time.
//! Sockets come from several 127.0.0.x source addresses, as different households would.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use privatehub_protocol::app_socket::AppClientMessage;
use serde_json::Value;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::app_api::AppClient;
use crate::options::SecondsRange;
use crate::tally::Tally;

/// A reply the protocol promises (join replies, echo) must come within this.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// JSON `ping` period, as the browser client's (any frame keeps the socket alive).
const PING_EVERY: Duration = Duration::from_secs(15);
/// Pause before a chat slot opens its next socket.
const RECONNECT_GAP: SecondsRange = SecondsRange { min: 0.5, max: 3.0 };
/// Source addresses 127.0.0.FIRST.. are used round-robin.
const FIRST_SOURCE_OCTET: u8 = 10;
const SOURCE_ADDRESSES: u8 = 16;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What one chat slot does.
#[derive(Clone)]
pub struct ChatSlot {
    pub index: usize,
    pub app_url: String,
    pub channel: String,
    /// Signed in (posts messages) or anonymous (`None`).
    pub user: Option<AppClient>,
    pub stay: SecondsRange,
    pub interval: SecondsRange,
}

/// The loopback address chat slot `index` connects from (its socket and its HTTP).
pub fn source_address(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(
        127,
        0,
        0,
        FIRST_SOURCE_OCTET + (index % usize::from(SOURCE_ADDRESSES)) as u8,
    )
}

/// Runs the slot until the tally's stop flag: socket after socket. A signed-in slot
/// logs out and in again between sockets (a new session each time).
pub async fn run_slot(slot: ChatSlot, tally: Arc<Tally>) {
    // Spread the first connections out.
    tokio::time::sleep(Duration::from_millis(150 * slot.index as u64)).await;
    let mut sequence = 0u64;
    while !tally.stopped() {
        tally
            .chat_sockets_active
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let outcome = one_socket(&slot, &tally, &mut sequence).await;
        tally
            .chat_sockets_active
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        if let Err(error) = outcome {
            tally.failure(failure_kind(&error), format!("{error:#}"));
        }
        if let Some(user) = &slot.user
            && !tally.stopped()
        {
            let started = Instant::now();
            match user.sign_in_again().await {
                Ok(()) => {
                    tally.event("chat_user_signed_in_again");
                    tally.latency("log_out_and_in", started.elapsed());
                }
                Err(error) => tally.failure("chat_log_in", format!("{error:#}")),
            }
        }
        let gap = Instant::now() + RECONNECT_GAP.pick();
        while !tally.stopped() && Instant::now() < gap {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Failure kinds are the first word of the error chain's outermost context.
fn failure_kind(error: &anyhow::Error) -> &'static str {
    let text = error.to_string();
    [
        "chat_connect",
        "chat_join",
        "chat_echo_timeout",
        "chat_error_reply",
        "chat_closed_by_server",
    ]
    .into_iter()
    .find(|kind| text.starts_with(kind))
    .unwrap_or("chat_other")
}

async fn one_socket(slot: &ChatSlot, tally: &Tally, sequence: &mut u64) -> anyhow::Result<()> {
    let cookie = slot.user.as_ref().and_then(AppClient::cookie_header);
    let source = source_address(slot.index);
    let mut socket = timeout(
        REPLY_TIMEOUT,
        open(&slot.app_url, cookie.as_deref(), source),
    )
    .await
    .map_err(|_| anyhow::anyhow!("timed out"))
    .and_then(|result| result)
    .context("chat_connect: opening /ws")?;
    tally.event("chat_socket_opened");
    let username = slot.user.as_ref().and_then(|user| user.username.clone());
    send(&mut socket, &AppClientMessage::UserOnline).await?;
    let online = expect(&mut socket, "user:online")
        .await
        .context("chat_join: user:online")?;
    if online["username"].as_str() != username.as_deref() {
        anyhow::bail!("chat_join: user:online says {online} for {username:?}");
    }
    send(
        &mut socket,
        &AppClientMessage::LiveJoin {
            channel: slot.channel.clone(),
        },
    )
    .await?;
    let state = expect(&mut socket, "live:state")
        .await
        .context("chat_join: live:state")?;
    if state["live"].is_null() {
        anyhow::bail!("chat_join: the channel is not live: {state}");
    }
    expect(&mut socket, "chat:history")
        .await
        .context("chat_join: chat:history")?;
    tally.event("chat_room_joined");

    let leave_at = Instant::now() + slot.stay.pick();
    let mut next_ping = Instant::now() + PING_EVERY;
    let mut next_send = Instant::now() + slot.interval.pick();
    // The text waiting for its echo, and since when.
    let mut pending: Option<(String, Instant)> = None;
    loop {
        if tally.stopped() || Instant::now() >= leave_at {
            break;
        }
        let wake = [
            Some(leave_at),
            Some(next_ping),
            Some(Instant::now() + Duration::from_millis(500)),
            pending.as_ref().map(|(_, sent)| *sent + REPLY_TIMEOUT),
            (pending.is_none() && username.is_some()).then_some(next_send),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(leave_at);
        tokio::select! {
            frame = socket.next() => {
                let text = match frame {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(frame))) => {
                        anyhow::bail!("chat_closed_by_server: close frame {frame:?}")
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(error)) => anyhow::bail!("chat_closed_by_server: {error}"),
                    None => anyhow::bail!("chat_closed_by_server: stream ended"),
                };
                let message: Value = serde_json::from_str(text.as_str()).unwrap_or_default();
                match message["type"].as_str() {
                    Some("chat:message") => {
                        let mine = message["message"]["username"].as_str() == username.as_deref();
                        if let Some((expected, sent)) = &pending
                            && mine
                            && message["message"]["text"].as_str() == Some(expected)
                        {
                            tally.event("chat_message_echoed");
                            tally.latency("chat_echo", sent.elapsed());
                            pending = None;
                            next_send = Instant::now() + slot.interval.pick();
                        }
                    }
                    Some("error") => {
                        anyhow::bail!("chat_error_reply: {message}");
                    }
                    _ => {}
                }
            }
            _ = sleep_until(wake) => {
                let now = Instant::now();
                if let Some((text, sent)) = &pending
                    && now >= *sent + REPLY_TIMEOUT
                {
                    anyhow::bail!("chat_echo_timeout: {text:?} not echoed within {REPLY_TIMEOUT:?}");
                }
                if pending.is_none()
                    && username.is_some()
                    && now >= next_send
                    && now + REPLY_TIMEOUT < leave_at
                {
                    *sequence += 1;
                    let text = format!(
                        "soak {} #{sequence}",
                        username.as_deref().unwrap_or_default()
                    );
                    send(&mut socket, &AppClientMessage::ChatSend { text: text.clone() }).await?;
                    tally.event("chat_message_sent");
                    pending = Some((text, now));
                }
                if now >= next_ping {
                    send(&mut socket, &AppClientMessage::Ping).await?;
                    next_ping = now + PING_EVERY;
                }
            }
        }
    }
    // No message is sent within REPLY_TIMEOUT of leaving, so none is left unchecked
    // (except when the run stops).
    let _ = timeout(Duration::from_secs(2), socket.close(None)).await;
    let _ = timeout(Duration::from_secs(2), async {
        while let Some(Ok(_)) = socket.next().await {}
    })
    .await;
    tally.event("chat_socket_closed");
    Ok(())
}

async fn open(app_url: &str, cookie: Option<&str>, source: Ipv4Addr) -> anyhow::Result<Socket> {
    let url = format!("{}/ws", app_url.replace("http://", "ws://"));
    let mut request = url.as_str().into_client_request()?;
    request.headers_mut().insert("Origin", app_url.parse()?);
    if let Some(cookie) = cookie {
        request.headers_mut().insert("Cookie", cookie.parse()?);
    }
    let port: u16 = app_url
        .rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .context("app port")?;
    let tcp = TcpSocket::new_v4()?;
    tcp.bind(SocketAddr::from((source, 0)))?;
    let stream = tcp
        .connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .await?;
    let (socket, _) =
        tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream)).await?;
    Ok(socket)
}

async fn send(socket: &mut Socket, message: &AppClientMessage) -> anyhow::Result<()> {
    let text = serde_json::to_string(message)?;
    socket
        .send(Message::text(text))
        .await
        .context("chat_closed_by_server: send")
}

/// The next message of type `kind` within [`REPLY_TIMEOUT`], skipping others; an
/// `error` reply fails.
async fn expect(socket: &mut Socket, kind: &str) -> anyhow::Result<Value> {
    timeout(REPLY_TIMEOUT, async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Text(text))) => {
                    let message: Value = serde_json::from_str(text.as_str())?;
                    if message["type"] == kind {
                        return Ok(message);
                    }
                    if message["type"] == "error" {
                        anyhow::bail!("error reply {message}");
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => anyhow::bail!("socket error {error}"),
                None => anyhow::bail!("socket closed"),
            }
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("no {kind} within {REPLY_TIMEOUT:?}"))?
}
