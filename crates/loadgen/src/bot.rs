//! One bot at a time: a publisher or a viewer on its own driver thread, joined with a
//! media token the caller got elsewhere (the app's API), kept until the caller stops it.
//! For churn tests (`crates/soak`), where bots come and go all the time; a load run
//! ([`crate::run`]) starts all its bots in one burst instead.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use privatehub_protocol::MediaRole;
use str0m::media::Direction;

use crate::LoadgenError;
use crate::driver::DriverHandle;
use crate::peer::{Peer, PeerOutcome, PublisherState, Role, StreamSpec, ViewerState};
use crate::run::{Crypto, Shared, new_bot};
use crate::sampled::VerifyMode;
use crate::signaling::{KeptSocket, make_offer, privatehub_join_with_token};

/// How often [`SoloBot::service_signaling`] sends the protocol's keep-alive.
const KEEPALIVE_EVERY: Duration = Duration::from_secs(10);
/// A solo bot's driver runs until stopped; this only bounds a forgotten one.
const SOLO_BOT_HARD_LIMIT: Duration = Duration::from_secs(7 * 24 * 3600);

/// Makes solo bots; holds the DTLS certificate they share.
pub struct SoloBots {
    crypto: Crypto,
    bind_ip: IpAddr,
}

/// Where and how a solo bot joins PrivateHub's media server.
#[derive(Debug, Clone)]
pub struct MediaJoin {
    /// `ws://host:port/ws`.
    pub ws_url: String,
    /// `Origin` header of the signaling socket.
    pub origin: Option<String>,
    /// A media token from the app (`publish` for a publisher, any for a viewer).
    pub token: String,
}

/// What a stopped solo bot did.
#[derive(Debug, Clone, Default)]
pub struct SoloOutcome {
    /// ICE + DTLS connected.
    pub connected: bool,
    /// Viewer: signaling connect to its first keyframe packet.
    pub first_keyframe_after: Option<Duration>,
    /// Publisher: video frames sent.
    pub frames_sent: u64,
}

/// A bot running on its own thread until [`SoloBot::stop`] (or drop).
pub struct SoloBot {
    shared: Arc<Shared>,
    driver: Option<DriverHandle>,
    signaling: Option<KeptSocket>,
    last_keepalive: Instant,
}

impl SoloBots {
    /// Bots bind and announce `bind_ip` (127.0.0.1 on one host).
    pub fn new(bind_ip: IpAddr) -> Result<Self, LoadgenError> {
        Ok(SoloBots {
            crypto: Crypto::new()?,
            bind_ip,
        })
    }

    /// Publishes `stream` (sendonly VP8 + Opus) with a `publish` token.
    pub fn publish(&self, join: &MediaJoin, stream: StreamSpec) -> Result<SoloBot, LoadgenError> {
        let (mut rtc, socket, local) = new_bot(&self.crypto, self.bind_ip, false)?;
        let offer = make_offer(&mut rtc, Direction::SendOnly, stream.simulcast)?;
        let (audio_mid, video_mid) = (offer.audio_mid, offer.video_mid);
        let kept = privatehub_join_with_token(
            &join.ws_url,
            join.origin.as_deref(),
            MediaRole::Publish,
            join.token.clone(),
            &mut rtc,
            offer,
        )?;
        let shared = Arc::new(Shared::new());
        let role = Role::Publisher(Box::new(PublisherState::new(video_mid, audio_mid, stream)));
        let peer = Peer::new(
            rtc,
            mio::net::UdpSocket::from_std(socket),
            local,
            role,
            shared.clone(),
        );
        SoloBot::start("soak-publisher", shared, peer, kept)
    }

    /// Watches (recvonly) with a token for the live.
    pub fn watch(&self, join: &MediaJoin) -> Result<SoloBot, LoadgenError> {
        let join_started = Instant::now();
        let (mut rtc, socket, local) = new_bot(&self.crypto, self.bind_ip, true)?;
        let offer = make_offer(&mut rtc, Direction::RecvOnly, false)?;
        let kept = privatehub_join_with_token(
            &join.ws_url,
            join.origin.as_deref(),
            MediaRole::Watch,
            join.token.clone(),
            &mut rtc,
            offer,
        )?;
        let shared = Arc::new(Shared::new());
        // Solo bots (churn tests) keep full verification: they are few and long-lived.
        let role = Role::Viewer(Box::new(ViewerState::new(
            0,
            join_started,
            shared.clone(),
            VerifyMode::Full,
        )));
        let peer = Peer::new(
            rtc,
            mio::net::UdpSocket::from_std(socket),
            local,
            role,
            shared.clone(),
        );
        SoloBot::start("soak-viewer", shared, peer, kept)
    }
}

impl SoloBot {
    fn start(
        name: &str,
        shared: Arc<Shared>,
        peer: Peer,
        kept: KeptSocket,
    ) -> Result<SoloBot, LoadgenError> {
        let driver = DriverHandle::spawn(
            name.to_owned(),
            shared.clone(),
            Instant::now() + SOLO_BOT_HARD_LIMIT,
        )?;
        driver.add(peer);
        Ok(SoloBot {
            shared,
            driver: Some(driver),
            signaling: Some(kept),
            last_keepalive: Instant::now(),
        })
    }

    /// Publisher: ICE + DTLS connected.
    pub fn publisher_connected(&self) -> bool {
        self.shared.publisher_connected.load(Ordering::Relaxed)
    }

    /// Viewer: a keyframe arrived.
    pub fn received_keyframe(&self) -> bool {
        self.shared.viewers_with_keyframe.load(Ordering::Relaxed) > 0
    }

    /// Reads what the server sent on the signaling socket (notices, pongs) and sends the
    /// keep-alive when due. Call every second or so.
    pub fn service_signaling(&mut self) {
        if let Some(socket) = &mut self.signaling {
            socket.drain();
            if self.last_keepalive.elapsed() >= KEEPALIVE_EVERY {
                self.last_keepalive = Instant::now();
                socket.keepalive();
            }
        }
    }

    /// Leaves (signaling `leave` and close), stops the bot's thread and returns what it did.
    pub fn stop(mut self) -> SoloOutcome {
        if let Some(socket) = self.signaling.take() {
            socket.close();
        }
        self.shared.stop.store(true, Ordering::Relaxed);
        let outcomes = self
            .driver
            .take()
            .map(DriverHandle::join)
            .unwrap_or_default();
        let mut result = SoloOutcome::default();
        for outcome in outcomes {
            match outcome {
                PeerOutcome::Publisher(publisher) => {
                    result.connected = publisher.connected;
                    result.frames_sent = publisher.frames_sent;
                }
                PeerOutcome::Viewer(viewer) => {
                    result.connected = viewer.connected;
                    result.first_keyframe_after = viewer.join_time;
                }
            }
        }
        result
    }
}

impl Drop for SoloBot {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}
