//! str0m client bots (full ICE, controlling) over real loopback UDP.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use privatehub_protocol::{MediaClientMessage, MediaServerMessage, SdpKind, SessionDescription};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, MediaTime, Mid};
use str0m::net::Receive;
use str0m::{Event, Input, Output, Rtc};

use crate::bot_socket::BotSocket;
pub use crate::bot_socket::BotTransport;
use crate::helpers::Ws;

/// Size of a publisher bot's delta frames (keyframes are 2.4x); the load test raises it.
pub static DELTA_FRAME_BYTES: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(2500);

/// What a bot observed.
#[derive(Debug, Default, Clone)]
pub struct BotStats {
    pub connected_at: Option<Instant>,
    pub audio_frames: u64,
    pub video_frames: u64,
    pub keyframes: u64,
    pub first_video_keyframe: Option<bool>,
    pub first_video_at: Option<Instant>,
    /// Publisher tag (second payload byte after the VP8 header) of the last video frame.
    pub last_video_tag: Option<u8>,
    /// Server UDP address the bot sends to.
    pub server_addr: Option<SocketAddr>,
    pub keyframe_requests: u64,
    pub closed: bool,
    pub error: Option<String>,
}

pub struct Bot {
    pub ws: Ws,
    pub stats: Arc<Mutex<BotStats>>,
    stop: Arc<AtomicBool>,
    close_dtls: Arc<AtomicBool>,
    pause: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub created: Instant,
}

/// Which side a bot plays, and for a publisher the tag written into its frames.
#[derive(Debug, Clone, Copy)]
pub enum BotRole {
    Publisher { tag: u8 },
    Viewer,
}

fn client_rtc() -> Rtc {
    Rtc::builder()
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .enable_h264(true)
        .build(Instant::now())
}

/// Builds an offer with one audio and one video m-line.
pub fn make_offer(
    role: BotRole,
    transport: BotTransport,
) -> (
    Rtc,
    BotSocket,
    SessionDescription,
    SdpPendingOffer,
    Mid,
    Mid,
) {
    let socket = BotSocket::open(transport);
    let mut rtc = client_rtc();
    rtc.add_local_candidate(socket.candidate());
    let dir = match role {
        BotRole::Publisher { .. } => Direction::SendOnly,
        BotRole::Viewer => Direction::RecvOnly,
    };
    let mut api = rtc.sdp_api();
    let audio = api.add_media(MediaKind::Audio, dir, None, None, None);
    let video = api.add_media(MediaKind::Video, dir, None, None, None);
    let (offer, pending) = api.apply().unwrap();
    let description = SessionDescription {
        kind: SdpKind::Offer,
        sdp: offer.to_sdp_string(),
    };
    (rtc, socket, description, pending, audio, video)
}

impl Bot {
    /// Connects signaling, publishes or watches with `token`, and starts the media thread.
    pub async fn start(http: SocketAddr, token: &str, role: BotRole) -> Bot {
        Self::start_on(Ws::connect(http, None).await, token, role).await
    }

    /// Like [`Bot::start`] on an already connected signaling socket.
    pub async fn start_on(ws: Ws, token: &str, role: BotRole) -> Bot {
        Self::start_over(ws, token, role, BotTransport::Udp).await
    }

    /// Like [`Bot::start_on`], with media over `transport`.
    pub async fn start_over(
        mut ws: Ws,
        token: &str,
        role: BotRole,
        transport: BotTransport,
    ) -> Bot {
        let (rtc, socket, offer, pending, audio, video) =
            crate::alloc::as_client(|| make_offer(role, transport));
        let message = match role {
            BotRole::Publisher { .. } => MediaClientMessage::Publish {
                token: token.into(),
                offer,
            },
            BotRole::Viewer => MediaClientMessage::Watch {
                token: token.into(),
                offer,
            },
        };
        ws.send(&message).await;
        let answer = loop {
            match ws.recv(Duration::from_secs(10)).await {
                Some(MediaServerMessage::Answer { answer, .. }) => break answer,
                Some(
                    MediaServerMessage::PublisherJoined { .. }
                    | MediaServerMessage::PublisherLeft { .. },
                ) => {}
                other => panic!("expected an answer, got {other:?}"),
            }
        };
        crate::alloc::as_client(|| {
            Self::with_answer(ws, rtc, socket, pending, answer, role, audio, video)
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn with_answer(
        ws: Ws,
        mut rtc: Rtc,
        socket: BotSocket,
        pending: SdpPendingOffer,
        answer: SessionDescription,
        role: BotRole,
        audio: Mid,
        video: Mid,
    ) -> Bot {
        assert_eq!(answer.kind, SdpKind::Answer);
        let answer = SdpAnswer::from_sdp_string(&answer.sdp).unwrap();
        rtc.sdp_api().accept_answer(pending, answer).unwrap();
        let stats = Arc::new(Mutex::new(BotStats::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let close_dtls = Arc::new(AtomicBool::new(false));
        let pause = Arc::new(AtomicBool::new(false));
        let thread = {
            let stats = stats.clone();
            let stop = stop.clone();
            let close_dtls = close_dtls.clone();
            let pause = pause.clone();
            std::thread::spawn(move || {
                crate::alloc::mark_client_thread();
                run(
                    rtc, socket, role, audio, video, stats, stop, close_dtls, pause,
                )
            })
        };
        Bot {
            ws,
            stats,
            stop,
            close_dtls,
            pause,
            thread: Some(thread),
            created: Instant::now(),
        }
    }

    pub fn stats(&self) -> BotStats {
        self.stats.lock().unwrap().clone()
    }

    /// Waits until `check` holds for the stats, or panics with `what` after `timeout`.
    pub async fn wait_for(&self, what: &str, timeout: Duration, check: impl Fn(&BotStats) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let stats = self.stats();
            if check(&stats) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {stats:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Closes DTLS gracefully (like `pc.close()`), keeping the WebSocket open.
    pub fn close_dtls(&self) {
        self.close_dtls.store(true, Ordering::SeqCst);
    }

    /// Publisher: stops (`true`) or restarts writing media, keeping ICE and DTLS up (a
    /// frozen camera).
    pub fn pause_media(&self, paused: bool) {
        self.pause.store(paused, Ordering::SeqCst);
    }

    /// Stops the media thread without telling anyone.
    pub fn stop_media(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Bot {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A synthetic VP8 frame: a keyframe starts with the key-frame bit clear and the start
/// code `9d 01 2a`; the byte after the 10-byte header is the publisher tag.
fn vp8_frame(keyframe: bool, tag: u8, size: usize) -> Vec<u8> {
    let mut data = vec![0u8; size];
    if keyframe {
        data[..10].copy_from_slice(&[0x50, 0x2d, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01]);
    } else {
        data[..3].copy_from_slice(&[0x51, 0x2d, 0x00]);
    }
    data[10] = tag;
    for (i, b) in data.iter_mut().enumerate().skip(11) {
        *b = i as u8;
    }
    data
}

#[allow(clippy::too_many_arguments)]
fn run(
    mut rtc: Rtc,
    mut socket: BotSocket,
    role: BotRole,
    audio: Mid,
    video: Mid,
    stats: Arc<Mutex<BotStats>>,
    stop: Arc<AtomicBool>,
    close_dtls: Arc<AtomicBool>,
    pause: Arc<AtomicBool>,
) {
    let local = socket.local_addr();
    let mut buf = vec![0u8; 2000];
    let start = Instant::now();
    let mut next_video = start;
    let mut next_audio = start;
    let mut frame_no: u64 = 0;
    let mut want_keyframe = true;
    let mut last_keyframe = start;
    let mut closing = false;
    while !stop.load(Ordering::Relaxed) {
        if close_dtls.load(Ordering::Relaxed) && !closing {
            closing = true;
            let _ = rtc.close();
        }
        let timeout = loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => break t,
                Ok(Output::Transmit(t)) => {
                    stats.lock().unwrap().server_addr = Some(t.destination);
                    socket.send(&t.contents, t.destination);
                }
                Ok(Output::Event(event)) => {
                    let mut s = stats.lock().unwrap();
                    match event {
                        Event::Connected => s.connected_at = Some(Instant::now()),
                        Event::Closed => s.closed = true,
                        Event::KeyframeRequest(_) => {
                            s.keyframe_requests += 1;
                            want_keyframe = true;
                        }
                        Event::MediaData(data) => {
                            if data.mid == video {
                                s.video_frames += 1;
                                let key = data.is_keyframe();
                                if key {
                                    s.keyframes += 1;
                                }
                                if s.first_video_keyframe.is_none() {
                                    s.first_video_keyframe = Some(key);
                                    s.first_video_at = Some(Instant::now());
                                }
                                s.last_video_tag = data.data.get(10).copied();
                            } else if data.mid == audio {
                                s.audio_frames += 1;
                            }
                        }
                        _ => {}
                    }
                }
                Err(e) => {
                    stats.lock().unwrap().error = Some(e.to_string());
                    return;
                }
            }
        };
        if !rtc.is_alive() {
            stats.lock().unwrap().closed = true;
            return;
        }
        let now = Instant::now();
        let paused = pause.load(Ordering::Relaxed);
        if paused {
            // No catching up on resume: the next frame is due when the pause ends.
            next_video = now + Duration::from_millis(20);
            next_audio = next_video;
        }
        if let BotRole::Publisher { tag } = role
            && rtc.is_connected()
            && !closing
            && !paused
        {
            if now >= next_video {
                let keyframe =
                    want_keyframe || now.duration_since(last_keyframe) > Duration::from_secs(3);
                if keyframe {
                    want_keyframe = false;
                    last_keyframe = now;
                }
                let delta = DELTA_FRAME_BYTES.load(Ordering::Relaxed);
                let size = if keyframe { delta * 12 / 5 } else { delta };
                let data = vp8_frame(keyframe, tag, size);
                if let Some(writer) = rtc.writer(video) {
                    let pt = writer
                        .payload_params()
                        .find(|p| p.spec().codec == Codec::Vp8)
                        .map(|p| p.pt());
                    if let Some(pt) = pt {
                        let time = MediaTime::from_90khz(frame_no * 3000);
                        let _ = writer.write(pt, now, time, data);
                    }
                }
                frame_no += 1;
                next_video += Duration::from_millis(33);
                continue;
            }
            if now >= next_audio {
                if let Some(writer) = rtc.writer(audio) {
                    let pt = writer
                        .payload_params()
                        .find(|p| p.spec().codec == Codec::Opus)
                        .map(|p| p.pt());
                    if let Some(pt) = pt {
                        let ms = now.duration_since(start).as_millis() as u64;
                        let time =
                            MediaTime::new(ms * 48, str0m::media::Frequency::FORTY_EIGHT_KHZ);
                        let _ = writer.write(pt, now, time, vec![0xfcu8; 80]);
                    }
                }
                next_audio += Duration::from_millis(20);
                continue;
            }
        }
        let mut wake = timeout;
        if matches!(role, BotRole::Publisher { .. }) && rtc.is_connected() {
            wake = wake.min(next_video).min(next_audio);
        }
        let wait = wake
            .saturating_duration_since(now)
            .clamp(Duration::from_millis(1), Duration::from_millis(20));
        let input_result = match socket.recv(&mut buf, wait) {
            Some((protocol, source, n)) => match Receive::new(protocol, source, local, &buf[..n]) {
                Ok(receive) => rtc.handle_input(Input::Receive(Instant::now(), receive)),
                Err(_) => Ok(()),
            },
            None => rtc.handle_input(Input::Timeout(Instant::now())),
        };
        if let Err(e) = input_result {
            stats.lock().unwrap().error = Some(e.to_string());
            return;
        }
    }
}
