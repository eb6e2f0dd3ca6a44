//! Deterministic tests of [`WorkerCore`]: str0m client `Rtc`s as peers, packets moved in
//! memory, virtual time advanced by the harness. No sockets, no threads, no clock reads
//! apart from the single `Instant::now()` that anchors virtual time.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use privatehub_protocol::LiveId;
use str0m::format::Codec;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

use super::*;
use crate::metrics::Metrics;

mod simulcast;

const LIVE: LiveId = LiveId(1);
const STEP: Duration = Duration::from_millis(2);

/// A one-way path with deterministic loss, reordering and delay (applied once the
/// client is connected, so the handshake is not what gets tested).
#[derive(Default, Debug)]
struct Link {
    /// Drop every Nth datagram.
    drop_every: Option<u64>,
    /// Swap every Nth datagram with the one after it.
    swap_every: Option<u64>,
    /// Hold every datagram this long.
    delay: Duration,
    /// Carry at most this many bits per second, queueing up to `max_queue` (tail drop
    /// beyond), like a bottleneck router.
    rate_bps: Option<u64>,
    max_queue: Duration,
    busy_until: Option<Instant>,
    count: u64,
    held: Option<Vec<u8>>,
    queue: std::collections::VecDeque<(Instant, Vec<u8>)>,
    dropped: u64,
}

impl Link {
    fn is_clean(&self) -> bool {
        self.drop_every.is_none()
            && self.swap_every.is_none()
            && self.delay.is_zero()
            && self.rate_bps.is_none()
            && self.queue.is_empty()
    }

    /// When a datagram of `len` bytes entering at `now` leaves the bottleneck, or
    /// `None` if its queue is full.
    fn departure(&mut self, now: Instant, len: usize) -> Option<Instant> {
        let Some(rate) = self.rate_bps else {
            return Some(now + self.delay);
        };
        let start = self.busy_until.map_or(now, |busy| busy.max(now));
        if start.saturating_duration_since(now) > self.max_queue {
            return None;
        }
        let done = start + Duration::from_micros(len as u64 * 8 * 1_000_000 / rate);
        self.busy_until = Some(done);
        Some(done + self.delay)
    }

    /// Datagrams leaving the link at `now` after `datagram` entered it.
    fn pass(&mut self, now: Instant, datagram: Option<Vec<u8>>, out: &mut Vec<Vec<u8>>) {
        if let Some(datagram) = datagram {
            self.count += 1;
            if self
                .drop_every
                .is_some_and(|n| self.count.is_multiple_of(n))
            {
                self.dropped += 1;
            } else if self.rate_bps.is_some() {
                match self.departure(now, datagram.len()) {
                    Some(at) => self.queue.push_back((at, datagram)),
                    None => self.dropped += 1,
                }
            } else if let Some(held) = self.held.take() {
                self.queue.push_back((now + self.delay, datagram));
                self.queue.push_back((now + self.delay, held));
            } else if self
                .swap_every
                .is_some_and(|n| self.count.is_multiple_of(n))
            {
                self.held = Some(datagram);
            } else {
                self.queue.push_back((now + self.delay, datagram));
            }
        }
        while self.queue.front().is_some_and(|(due, _)| *due <= now) {
            out.push(self.queue.pop_front().unwrap().1);
        }
    }
}

/// One video frame a viewer received.
#[derive(Debug, Clone, Copy)]
struct Frame {
    /// Layer index the publisher wrote it on (0 lowest).
    layer: u8,
    keyframe: bool,
    /// No gap before it (str0m's `contiguous`).
    contiguous: bool,
    /// The publisher's frame number (simulcast publishers only).
    number: u32,
    at: Instant,
}

#[derive(Default, Debug)]
struct ClientStats {
    connected: bool,
    audio_frames: u64,
    /// (publisher tag, keyframe) of every video frame received.
    video: Vec<(u8, bool)>,
    /// Every video frame received, with its simulcast layer.
    frames: Vec<Frame>,
    keyframe_requests: u64,
}

struct Client {
    rtc: Rtc,
    addr: SocketAddr,
    peer: PeerId,
    audio: Mid,
    video: Mid,
    /// Publisher tag, or `None` for a viewer.
    tag: Option<u8>,
    want_keyframe: bool,
    /// Simulcast publisher: its rids, lowest first (empty: one encoding).
    layers: Vec<str0m::media::Rid>,
    /// Simulcast publisher: layers a keyframe was asked for.
    want_layer_keyframes: HashSet<str0m::media::Rid>,
    frame_no: u64,
    next_video: Instant,
    next_audio: Instant,
    next_timeout: Instant,
    /// Network cut: nothing to or from this client is delivered.
    silenced: bool,
    /// Publisher: the camera stopped (no media written), the connection stays up.
    media_paused: bool,
    /// Impairment of the datagrams from this client to the server.
    uplink: Link,
    /// Impairment of the datagrams from the server to this client.
    downlink: Link,
    stats: ClientStats,
}

struct Harness {
    start: Instant,
    now: Instant,
    server_addr: SocketAddr,
    core: WorkerCore,
    template: RtcTemplate,
    metrics: Arc<Metrics>,
    clients: Vec<Client>,
    next_peer: u64,
    next_generation: u64,
    removed: Vec<(PeerId, RemoveReason)>,
    /// Every `PublisherStall` report: (peer, stalled, when).
    stalls: Vec<(PeerId, bool, Instant)>,
    /// Datagrams the core sent to viewers.
    forwarded_to_viewers: u64,
    /// Every quality report for a viewer.
    qualities: Vec<(PeerId, QualityReport)>,
    /// Publishers added from now on are recorded.
    record_publishers: bool,
    /// Every packet handed to the recorder.
    recorded: Vec<Arc<Packet>>,
}

fn vp8_frame(keyframe: bool, tag: u8) -> Vec<u8> {
    vp8_layer_frame(keyframe, tag, 0, if keyframe { 3000 } else { 1200 })
}

/// A VP8 frame of `len` bytes whose byte 10 is the publisher's tag and 11 the layer.
fn vp8_layer_frame(keyframe: bool, tag: u8, layer: u8, len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    if keyframe {
        data[..10].copy_from_slice(&[0x50, 0x2d, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01]);
    } else {
        data[..3].copy_from_slice(&[0x51, 0x2d, 0x00]);
    }
    data[10] = tag;
    data[11] = layer;
    data
}

/// Frame number the harness writes at bytes 12..16 of simulcast frames.
fn frame_number(data: &[u8]) -> u32 {
    u32::from_be_bytes([data[12], data[13], data[14], data[15]])
}

/// Frame sizes of the harness's simulcast layers (bytes of a delta frame; keyframes
/// are three times larger): about 80, 250 and 750 kbit/s at 30 frames per second.
const LAYER_FRAME_BYTES: [usize; 3] = [330, 1000, 3000];

impl Harness {
    fn new() -> Self {
        let start = Instant::now();
        let metrics = Arc::new(Metrics::default());
        let server_addr: SocketAddr = "10.0.0.1:40000".parse().unwrap();
        Harness {
            start,
            now: start,
            server_addr,
            core: WorkerCore::new(server_addr, CoreConfig::default(), metrics.clone()),
            template: RtcTemplate::generate().unwrap(),
            metrics,
            clients: Vec::new(),
            next_peer: 1,
            next_generation: 1,
            removed: Vec::new(),
            stalls: Vec::new(),
            forwarded_to_viewers: 0,
            qualities: Vec::new(),
            record_publishers: false,
            recorded: Vec::new(),
        }
    }

    /// Adds a publisher (`tag` set) or viewer; returns its client index.
    fn add(&mut self, tag: Option<u8>) -> usize {
        self.add_client(tag, &[], false)
    }

    /// Adds a publisher sending simulcast layers `rids` (lowest first), or a viewer
    /// (`tag` `None`) whose server side estimates its bandwidth when `estimating`.
    fn add_client(&mut self, tag: Option<u8>, rids: &[&str], estimating: bool) -> usize {
        let n = self.clients.len();
        let addr: SocketAddr = format!("10.0.1.{}:5000", n + 1).parse().unwrap();
        let mut rtc = Rtc::builder()
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .build(self.now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        let dir = if tag.is_some() {
            Direction::SendOnly
        } else {
            Direction::RecvOnly
        };
        let mut api = rtc.sdp_api();
        let audio = api.add_media(MediaKind::Audio, dir, None, None, None);
        let simulcast = (!rids.is_empty()).then(|| {
            let mut simulcast = str0m::media::Simulcast::new();
            for rid in rids {
                simulcast.add_send_layer(str0m::media::SimulcastLayer::new(rid));
            }
            simulcast
        });
        let video = api.add_media(MediaKind::Video, dir, None, None, simulcast);
        let (offer, pending) = api.apply().unwrap();
        let (server_rtc, answer, local_ufrag) = self
            .template
            .accept_offer(
                if tag.is_some() {
                    Role::Publisher
                } else {
                    Role::Viewer
                },
                LocalCandidates {
                    worker: 0,
                    udp: self.server_addr,
                    tcp: None,
                },
                &offer.to_sdp_string(),
                self.now,
                estimating,
            )
            .unwrap();
        rtc.sdp_api().accept_answer(pending, answer).unwrap();
        let peer = PeerId(self.next_peer);
        self.next_peer += 1;
        let (role, generation) = match tag {
            Some(_) => {
                self.next_generation += 1;
                (Role::Publisher, self.next_generation)
            }
            None => (Role::Viewer, 0),
        };
        self.core.handle_command(
            self.now,
            Command::AddPeer(Box::new(NewPeer {
                id: peer,
                live: LIVE,
                role,
                generation,
                rtc: server_rtc,
                local_ufrag,
                offered_at: self.now,
                estimating,
                simulcast: !rids.is_empty(),
                relay_addrs: Vec::new(),
                record: self.record_publishers,
            })),
        );
        self.clients.push(Client {
            rtc,
            addr,
            peer,
            audio,
            video,
            tag,
            want_keyframe: false,
            layers: rids
                .iter()
                .map(|rid| str0m::media::Rid::from(*rid))
                .collect(),
            want_layer_keyframes: HashSet::new(),
            frame_no: 0,
            next_video: self.now,
            next_audio: self.now,
            next_timeout: self.now,
            silenced: false,
            media_paused: false,
            uplink: Link::default(),
            downlink: Link::default(),
            stats: ClientStats::default(),
        });
        n
    }

    /// Moves packets until quiet, then advances virtual time by one step.
    fn step(&mut self) {
        let now = self.now;
        // Publishers write media when due.
        for client in &mut self.clients {
            let Some(tag) = client.tag else { continue };
            if !client.rtc.is_connected() || client.media_paused {
                continue;
            }
            if now >= client.next_video && !client.layers.is_empty() {
                let all = std::mem::take(&mut client.want_keyframe);
                let time = MediaTime::from_90khz(
                    now.duration_since(self.start).as_micros() as u64 * 9 / 100,
                );
                for (index, rid) in client.layers.clone().into_iter().enumerate() {
                    let keyframe = client.want_layer_keyframes.remove(&rid) | all;
                    let Some(writer) = client.rtc.writer(client.video) else {
                        break;
                    };
                    let pt = writer
                        .payload_params()
                        .find(|p| p.spec().codec == Codec::Vp8)
                        .unwrap()
                        .pt();
                    let len = LAYER_FRAME_BYTES[index.min(2)] * if keyframe { 3 } else { 1 };
                    let mut frame = vp8_layer_frame(keyframe, tag, index as u8, len);
                    frame[12..16].copy_from_slice(&(client.frame_no as u32).to_be_bytes());
                    writer.rid(rid).write(pt, now, time, frame).unwrap();
                }
                client.frame_no += 1;
                client.next_video = now + Duration::from_millis(33);
            }
            if now >= client.next_video {
                let keyframe = std::mem::take(&mut client.want_keyframe);
                if let Some(writer) = client.rtc.writer(client.video) {
                    let pt = writer
                        .payload_params()
                        .find(|p| p.spec().codec == Codec::Vp8)
                        .unwrap()
                        .pt();
                    let time = MediaTime::from_90khz(
                        now.duration_since(self.start).as_micros() as u64 * 9 / 100,
                    );
                    writer
                        .write(pt, now, time, vp8_frame(keyframe, tag))
                        .unwrap();
                }
                client.frame_no += 1;
                client.next_video = now + Duration::from_millis(33);
            }
            if now >= client.next_audio {
                if let Some(writer) = client.rtc.writer(client.audio) {
                    let pt = writer
                        .payload_params()
                        .find(|p| p.spec().codec == Codec::Opus)
                        .unwrap()
                        .pt();
                    let ms = now.duration_since(self.start).as_millis() as u64;
                    let time = MediaTime::new(ms * 48, str0m::media::Frequency::FORTY_EIGHT_KHZ);
                    writer.write(pt, now, time, vec![1u8; 80]).unwrap();
                }
                client.next_audio = now + Duration::from_millis(20);
            }
        }
        for client in &mut self.clients {
            if now >= client.next_timeout {
                client.rtc.handle_input(Input::Timeout(now)).unwrap();
            }
        }
        if self.core.next_timeout().is_some_and(|t| t <= now) {
            self.core.handle_timeout(now);
        }
        // Shuttle packets until nobody has anything to send.
        loop {
            let mut to_server = Vec::new();
            for client in &mut self.clients {
                loop {
                    match client.rtc.poll_output().unwrap() {
                        Output::Timeout(t) => {
                            client.next_timeout = t;
                            break;
                        }
                        Output::Transmit(t) => {
                            if client.silenced {
                            } else if client.stats.connected && !client.uplink.is_clean() {
                                let mut passed = Vec::new();
                                client
                                    .uplink
                                    .pass(now, Some(t.contents.into()), &mut passed);
                                to_server.extend(passed.into_iter().map(|d| (client.addr, d)));
                            } else {
                                to_server.push((client.addr, Vec::from(t.contents)));
                            }
                        }
                        Output::Event(event) => match event {
                            Event::Connected => client.stats.connected = true,
                            Event::KeyframeRequest(request) => {
                                client.stats.keyframe_requests += 1;
                                match request.rid {
                                    Some(rid) if !client.layers.is_empty() => {
                                        client.want_layer_keyframes.insert(rid);
                                    }
                                    _ => client.want_keyframe = true,
                                }
                            }
                            Event::MediaData(d) if d.mid == client.video => {
                                client.stats.video.push((d.data[10], d.is_keyframe()));
                                client.stats.frames.push(Frame {
                                    layer: d.data[11],
                                    keyframe: d.is_keyframe(),
                                    contiguous: d.contiguous,
                                    number: frame_number(&d.data),
                                    at: now,
                                });
                            }
                            Event::MediaData(d) if d.mid == client.audio => {
                                client.stats.audio_frames += 1
                            }
                            _ => {}
                        },
                    }
                }
            }
            // Delayed datagrams whose time has come.
            for client in &mut self.clients {
                let mut passed = Vec::new();
                client.uplink.pass(now, None, &mut passed);
                to_server.extend(passed.into_iter().map(|d| (client.addr, d)));
            }
            for (source, contents) in &to_server {
                self.core.handle_datagram(now, *source, contents);
            }
            let mut delivered = 0;
            while let Some(output) = self.core.poll_output() {
                match output {
                    CoreOutput::Record(packet) => self.recorded.push(packet),
                    CoreOutput::Transmit {
                        destination,
                        contents,
                        ..
                    } => {
                        let Some(client) = self.clients.iter_mut().find(|c| c.addr == destination)
                        else {
                            continue;
                        };
                        if client.silenced {
                            continue;
                        }
                        let mut passed = Vec::new();
                        if client.stats.connected && !client.downlink.is_clean() {
                            client.downlink.pass(now, Some(contents), &mut passed);
                        } else {
                            passed.push(contents);
                        }
                        for contents in passed {
                            let receive = Receive::new(
                                Protocol::Udp,
                                self.server_addr,
                                client.addr,
                                &contents,
                            )
                            .unwrap();
                            client
                                .rtc
                                .handle_input(Input::Receive(now, receive))
                                .unwrap();
                        }
                        delivered += 1;
                        if client.tag.is_none() {
                            self.forwarded_to_viewers += 1;
                        }
                    }
                    CoreOutput::Removed { peer, reason, .. } => self.removed.push((peer, reason)),
                    CoreOutput::PublisherStall { peer, stalled, .. } => {
                        self.stalls.push((peer, stalled, now))
                    }
                    CoreOutput::ViewerQuality { peer, report } => {
                        self.qualities.push((peer, report))
                    }
                    CoreOutput::Connected { .. }
                    | CoreOutput::ToOtherWorkers(_)
                    | CoreOutput::ToWorker { .. }
                    | CoreOutput::TransmitTcp { .. } => {}
                }
            }
            if to_server.is_empty() && delivered == 0 {
                break;
            }
        }
        self.now += STEP;
    }

    fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        while self.now < end {
            self.step();
        }
    }

    fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Harness) -> bool) {
        let end = self.now + limit;
        while !done(self) {
            assert!(self.now < end, "condition not reached within {limit:?}");
            self.step();
        }
    }

    fn viewer_request_keyframe(&mut self, index: usize) {
        let client = &mut self.clients[index];
        let mut writer = client.rtc.writer(client.video).unwrap();
        let _ = writer.request_keyframe(None, KeyframeRequestKind::Pli);
    }
}

#[test]
fn viewers_receive_and_start_on_a_keyframe_with_coalesced_plis() {
    let mut h = Harness::new();
    let publisher = h.add(Some(1));
    let viewers: Vec<usize> = (0..4).map(|_| h.add(None)).collect();
    h.run_until(Duration::from_secs(3), |h| {
        viewers
            .iter()
            .all(|v| h.clients[*v].stats.video.len() >= 5 && h.clients[*v].stats.audio_frames >= 10)
    });
    for v in &viewers {
        let video = &h.clients[*v].stats.video;
        assert!(video[0].1, "first video frame is a keyframe: {video:?}");
        assert!(video.iter().all(|(tag, _)| *tag == 1));
    }
    // The publisher only sends keyframes on request, so viewers got video only because
    // the SFU asked; four viewers joining at once cost at most a couple of PLIs.
    let initial = h.clients[publisher].stats.keyframe_requests;
    assert!((1..=3).contains(&initial), "PLIs at join: {initial}");

    // A storm of viewer PLIs is coalesced, never forwarded one to one.
    for _ in 0..10 {
        for v in &viewers {
            h.viewer_request_keyframe(*v);
        }
        h.step();
    }
    h.run_for(Duration::from_millis(600));
    let storm = h.clients[publisher].stats.keyframe_requests - initial;
    assert!(
        (1..=2).contains(&storm),
        "40 viewer PLIs became {storm} upstream"
    );
    assert!(h.metrics.keyframe_requests_from_viewers.load(Relaxed) >= 4);
}

#[test]
fn new_publisher_regates_viewers_until_its_keyframe() {
    let mut h = Harness::new();
    let first = h.add(Some(1));
    let viewer = h.add(None);
    h.run_until(Duration::from_secs(3), |h| {
        h.clients[viewer].stats.video.len() >= 10
    });
    let second = h.add(Some(2));
    h.core.handle_command(
        h.now,
        Command::RemovePeer {
            peer: h.clients[first].peer,
            reason: RemoveReason::Replaced,
        },
    );
    h.clients[first].silenced = true;
    h.run_until(Duration::from_secs(3), |h| {
        h.clients[viewer]
            .stats
            .video
            .iter()
            .filter(|(tag, _)| *tag == 2)
            .count()
            >= 10
    });
    let video = &h.clients[viewer].stats.video;
    let first_new = video.iter().position(|(tag, _)| *tag == 2).unwrap();
    assert!(
        video[first_new].1,
        "first frame of the new publisher is a keyframe"
    );
    assert!(
        video[first_new..].iter().all(|(tag, _)| *tag == 2),
        "no stale frames after the switch"
    );
    assert!(h.clients[second].stats.keyframe_requests >= 1);
    assert!(
        h.removed
            .contains(&(h.clients[first].peer, RemoveReason::Replaced))
    );
}

#[test]
fn panic_in_one_peer_removes_only_that_peer() {
    let mut h = Harness::new();
    h.add(Some(1));
    let doomed = h.add(None);
    let survivor = h.add(None);
    h.run_until(Duration::from_secs(3), |h| {
        h.clients[survivor].stats.video.len() >= 5
    });
    let doomed_peer = h.clients[doomed].peer;
    let now = h.now;
    h.core
        .with_rtc(now, doomed_peer, |_| panic!("injected failure"));
    h.core.run_actions(now);
    let before = h.clients[survivor].stats.video.len();
    h.run_for(Duration::from_millis(500));
    assert!(h.removed.contains(&(doomed_peer, RemoveReason::RtcPanic)));
    assert_eq!(h.metrics.rtc_panics.load(Relaxed), 1);
    assert_eq!(h.core.stats().peers, 2);
    assert!(
        h.clients[survivor].stats.video.len() >= before + 10,
        "survivor keeps receiving"
    );
}

#[test]
fn silent_and_never_connecting_peers_are_freed() {
    let mut h = Harness::new();
    let publisher = h.add(Some(1));
    let viewer = h.add(None);
    h.run_until(Duration::from_secs(3), |h| {
        h.clients[viewer].stats.video.len() >= 3
    });
    // A viewer whose network never works: connect timeout.
    let ghost = h.add(None);
    h.clients[ghost].silenced = true;
    // The connected viewer goes silent: ICE reports it disconnected.
    h.clients[viewer].silenced = true;
    h.run_for(Duration::from_secs(21));
    assert!(
        h.removed
            .contains(&(h.clients[ghost].peer, RemoveReason::ConnectTimeout)),
        "{:?}",
        h.removed
    );
    assert!(
        h.removed
            .contains(&(h.clients[viewer].peer, RemoveReason::IceDisconnected)),
        "{:?}",
        h.removed
    );
    // Finally the publisher leaves: the worker is back to its initial state.
    let now = h.now;
    h.core.handle_command(
        now,
        Command::RemovePeer {
            peer: h.clients[publisher].peer,
            reason: RemoveReason::Left,
        },
    );
    h.step();
    assert_eq!(h.core.stats(), CoreStats::default());
    let peers: HashSet<PeerId> = h.removed.iter().map(|(p, _)| *p).collect();
    assert_eq!(peers.len(), 3);
}

#[test]
fn publisher_stall_and_resume_are_reported_once_each() {
    let mut h = Harness::new();
    let publisher = h.add(Some(1));
    let viewer = h.add(None);
    h.run_until(Duration::from_secs(3), |h| {
        h.clients[viewer].stats.video.len() >= 10
    });
    // Streaming normally for a while: no stall report.
    h.run_for(Duration::from_secs(3));
    assert!(h.stalls.is_empty(), "{:?}", h.stalls);
    // The camera stops; ICE and DTLS stay up.
    h.clients[publisher].media_paused = true;
    let stopped_at = h.now;
    h.run_until(Duration::from_secs(4), |h| !h.stalls.is_empty());
    let peer = h.clients[publisher].peer;
    let (who, stalled, at) = h.stalls[0];
    assert_eq!((who, stalled), (peer, true));
    let took = at.duration_since(stopped_at);
    eprintln!("stall reported {took:?} after the camera stopped");
    assert!(
        took >= Duration::from_millis(1400) && took <= STALL_AFTER + Duration::from_millis(100),
        "stall reported after {took:?}"
    );
    // Still stalled much later: reported once, the peer is not removed.
    h.run_for(Duration::from_secs(5));
    assert_eq!(h.stalls.len(), 1, "{:?}", h.stalls);
    assert!(h.removed.is_empty(), "{:?}", h.removed);
    // The camera comes back: resumed once, and the viewer receives again.
    h.clients[publisher].media_paused = false;
    let before = h.clients[viewer].stats.video.len();
    h.run_until(Duration::from_secs(2), |h| {
        h.clients[viewer].stats.video.len() >= before + 10
    });
    assert_eq!(h.stalls.len(), 2, "{:?}", h.stalls);
    assert_eq!((h.stalls[1].0, h.stalls[1].1), (peer, false));
    // A second stall is detected again.
    h.clients[publisher].media_paused = true;
    h.run_until(Duration::from_secs(4), |h| h.stalls.len() == 3);
    assert_eq!((h.stalls[2].0, h.stalls[2].1), (peer, true));
}

#[test]
fn loss_and_reordering_on_both_legs_are_repaired_by_nack() {
    let mut h = Harness::new();
    let publisher = h.add(Some(1));
    let viewer = h.add(None);
    h.run_until(Duration::from_secs(3), |h| {
        h.clients[viewer].stats.video.len() >= 5
    });
    // 1 datagram in 23 lost and 1 in 7 swapped with the next, towards the SFU and
    // towards the viewer.
    for (index, link) in [(publisher, true), (viewer, false)] {
        let link = if link {
            &mut h.clients[index].uplink
        } else {
            &mut h.clients[index].downlink
        };
        link.drop_every = Some(23);
        link.swap_every = Some(7);
    }
    let before = h.clients[viewer].stats.video.len();
    let written_before = h.clients[publisher].frame_no;
    h.run_for(Duration::from_secs(4));
    // Stop impairing, let the last repairs land.
    for index in [publisher, viewer] {
        h.clients[index].uplink = Link::default();
        h.clients[index].downlink = Link::default();
    }
    h.run_for(Duration::from_millis(500));
    let written = h.clients[publisher].frame_no - written_before;
    let got = (h.clients[viewer].stats.video.len() - before) as u64;
    let lost_up = h.clients[publisher].uplink.dropped;
    eprintln!("written {written}, viewer decoded {got}, lost up {lost_up}");
    assert!(h.metrics.packets_forwarded.load(Relaxed) > 0);
    // Every frame written while impaired reached the viewer whole (frames still in
    // flight at the end may be missing), and no keyframe was needed to recover.
    assert!(got + 3 >= written, "written {written}, viewer got {got}");
    assert!(
        h.clients[viewer].stats.video[before..]
            .iter()
            .all(|(tag, _)| *tag == 1)
    );
}

#[test]
fn media_queued_too_long_is_shed_and_video_resumes_on_a_fresh_keyframe() {
    let mut h = Harness::new();
    let publisher = h.add(Some(1));
    let viewer = h.add(None);
    h.run_until(Duration::from_secs(3), |h| {
        h.clients[viewer].stats.video.len() >= 10
    });
    h.run_for(Duration::from_secs(1));
    assert_eq!(
        h.metrics.packets_shed.load(Relaxed),
        0,
        "nothing shed when on time"
    );
    // The path to the SFU starts queueing: half a second behind, then more.
    h.clients[publisher].uplink.delay = Duration::from_millis(600);
    h.run_for(Duration::from_secs(2));
    let shed = h.metrics.packets_shed.load(Relaxed);
    assert!(shed > 50, "shed {shed}");
    let during = h.clients[viewer].stats.video.len();
    h.run_for(Duration::from_millis(500));
    assert_eq!(
        h.clients[viewer].stats.video.len(),
        during,
        "nothing stale is delivered"
    );
    // The queue drains: video comes back, starting with a keyframe.
    h.clients[publisher].uplink.delay = Duration::ZERO;
    let requests = h.clients[publisher].stats.keyframe_requests;
    h.run_until(Duration::from_secs(3), |h| {
        h.clients[viewer].stats.video.len() >= during + 10
    });
    assert!(h.clients[publisher].stats.keyframe_requests > requests || requests > 0);
    assert!(
        h.clients[viewer].stats.video[during].1,
        "resumes on a keyframe"
    );
}

#[test]
fn plain_stun_binding_is_answered_and_unknown_traffic_ignored() {
    let mut h = Harness::new();
    let source: SocketAddr = "192.0.2.7:9999".parse().unwrap();
    let mut request = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
    request.extend_from_slice(&[9u8; 12]);
    h.core.handle_datagram(h.now, source, &request);
    match h.core.poll_output() {
        Some(CoreOutput::Transmit {
            destination,
            contents,
            ..
        }) => {
            assert_eq!(destination, source);
            assert_eq!(&contents[8..20], &[9u8; 12]);
        }
        other => panic!("expected a binding response, got {other:?}"),
    }
    // RTP-looking garbage from an unknown address is dropped silently.
    h.core
        .handle_datagram(h.now, source, &[0x80, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]);
    assert!(h.core.poll_output().is_none());
}

/// A fixed forwarding scenario for `scripts/bench --callgrind`: one publisher and 20
/// viewers, then `PRIVATEHUB_SCENARIO_SECONDS` (default 2) of steady media. The script
/// runs it under callgrind twice with different lengths and divides the difference in
/// instructions spent inside `WorkerCore` by the difference in packets forwarded, so
/// set-up and the clients' own work cancel out.
#[test]
#[ignore = "a measurement scenario: scripts/bench --callgrind runs it"]
fn callgrind_forwarding_scenario() {
    let seconds = std::env::var("PRIVATEHUB_SCENARIO_SECONDS")
        .ok()
        .and_then(|raw| raw.parse().ok())
        .unwrap_or(2);
    let mut h = Harness::new();
    h.add(Some(1));
    let viewers: Vec<usize> = (0..20).map(|_| h.add(None)).collect();
    h.run_until(Duration::from_secs(5), |h| {
        viewers.iter().all(|v| h.clients[*v].stats.video.len() >= 3)
    });
    h.run_for(Duration::from_secs(seconds));
    println!(
        "scenario: {} packets forwarded to viewers",
        h.forwarded_to_viewers
    );
}

#[test]
fn a_recorded_publishers_packets_reach_the_recorder_once_each() {
    let mut h = Harness::new();
    h.add(Some(1));
    let viewer = h.add(None);
    h.run_until(Duration::from_secs(3), |h| {
        h.clients[viewer].stats.video.len() >= 5
    });
    assert!(
        h.recorded.is_empty(),
        "a publish without `record` is not recorded"
    );

    h.record_publishers = true;
    let recorded = h.add(Some(2));
    h.run_until(Duration::from_secs(3), |h| {
        h.clients[viewer]
            .stats
            .video
            .iter()
            .filter(|(tag, _)| *tag == 2)
            .count()
            >= 5
    });
    let packets = &h.recorded;
    assert!(packets.iter().any(|p| p.kind == MediaKind::Audio));
    assert!(
        packets
            .iter()
            .any(|p| p.kind == MediaKind::Video && p.keyframe)
    );
    let mut seen = std::collections::HashSet::new();
    for packet in packets {
        assert_eq!(packet.live, LIVE);
        assert!(
            seen.insert((packet.kind == MediaKind::Audio, packet.seq)),
            "handed over twice"
        );
    }

    // The recorder's keyframe request reaches the publisher as a PLI, throttled.
    let before = h.clients[recorded].stats.keyframe_requests;
    for _ in 0..5 {
        h.core.handle_command(
            h.now,
            Command::WantKeyframe {
                live: LIVE,
                layer: None,
            },
        );
        h.step();
    }
    h.run_for(Duration::from_millis(300));
    let asked = h.clients[recorded].stats.keyframe_requests - before;
    assert!(
        (1..=2).contains(&asked),
        "5 recorder requests became {asked} PLIs"
    );
}
