//! Media churn with loadgen's str0m bots: one publisher that reconnects now and then,
//! and viewer slots that each join (watch token from the app), check that a keyframe
//! arrives, stay a random while, leave, and join again. Each bot runs on its own thread
//! (loadgen's `SoloBot`); the app's API is called through the runtime's handle.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use privatehub_loadgen::StreamSpec;
use privatehub_loadgen::bot::{MediaJoin, SoloBot, SoloBots};

use crate::app_api::AppClient;
use crate::options::SecondsRange;
use crate::tally::Tally;

/// A viewer with no keyframe this long after joining has failed.
pub const KEYFRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// A publisher not connected (ICE + DTLS) this long after its answer has failed.
const PUBLISHER_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a bot's signaling socket is read (and kept alive).
const SERVICE_EVERY: Duration = Duration::from_millis(500);
/// Wait after a failed join before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// What the media bots need to know.
#[derive(Clone)]
pub struct MediaTarget {
    pub ws_url: String,
    pub origin: String,
    pub channel: String,
    pub runtime: tokio::runtime::Handle,
    pub bots: Arc<SoloBots>,
}

impl MediaTarget {
    fn join(&self, client: &AppClient, role: &str) -> anyhow::Result<MediaJoin> {
        let token = self.runtime.block_on(client.media_token(&self.channel))?;
        if token.role != role {
            anyhow::bail!("the app handed out a {} token, not {role}", token.role);
        }
        Ok(MediaJoin {
            ws_url: self.ws_url.clone(),
            origin: Some(self.origin.clone()),
            token: token.token,
        })
    }
}

/// Sleeps up to `duration` while servicing `bot`'s signaling; false if the run stopped.
fn stay(bot: &mut SoloBot, duration: Duration, tally: &Tally) -> bool {
    let until = Instant::now() + duration;
    while Instant::now() < until {
        if tally.stopped() {
            return false;
        }
        bot.service_signaling();
        std::thread::sleep(SERVICE_EVERY.min(until.saturating_duration_since(Instant::now())));
    }
    true
}

/// Waits until `ready(bot)` or `limit`, servicing signaling; how long it took.
fn wait_for(bot: &mut SoloBot, limit: Duration, ready: fn(&SoloBot) -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if ready(bot) {
            return Some(started.elapsed());
        }
        bot.service_signaling();
        std::thread::sleep(Duration::from_millis(20));
    }
    ready(bot).then(|| started.elapsed())
}

/// The publisher: publishes, reconnects every `reconnect_every` (alternately leaving
/// first, and publishing anew first so the server replaces the old one), until stop.
pub fn run_publisher(
    target: MediaTarget,
    owner: AppClient,
    stream: StreamSpec,
    reconnect_every: Duration,
    tally: Arc<Tally>,
) {
    let mut current: Option<SoloBot> = None;
    let mut reconnects = 0u64;
    while !tally.stopped() {
        let replace_first = reconnects % 2 == 1;
        if !replace_first && let Some(old) = current.take() {
            old.stop();
        }
        let bot = target
            .join(&owner, "publish")
            .and_then(|join| Ok(target.bots.publish(&join, stream)?));
        let mut bot = match bot {
            Ok(bot) => bot,
            Err(error) => {
                tally.failure("publisher_join", format!("{error:#}"));
                std::thread::sleep(RETRY_AFTER);
                continue;
            }
        };
        if let Some(old) = current.take() {
            old.stop();
        }
        match wait_for(
            &mut bot,
            PUBLISHER_CONNECT_TIMEOUT,
            SoloBot::publisher_connected,
        ) {
            Some(time) => {
                tally.event("publisher_connected");
                tally.latency("publisher_connect", time);
            }
            None => tally.failure(
                "publisher_no_connect",
                format!("not connected within {PUBLISHER_CONNECT_TIMEOUT:?}"),
            ),
        }
        let keep_going = stay(&mut bot, reconnect_every, &tally);
        current = Some(bot);
        if !keep_going {
            break;
        }
        reconnects += 1;
        tally.event(if replace_first {
            "publisher_reconnect_replacing"
        } else {
            "publisher_reconnect_leaving"
        });
    }
    if let Some(bot) = current {
        bot.stop();
    }
}

/// One viewer slot: watch, stay, leave, again, until stop.
pub fn run_viewer_slot(
    index: usize,
    target: MediaTarget,
    stay_for: SecondsRange,
    gap: SecondsRange,
    tally: Arc<Tally>,
) {
    // Spread the first joins over a few seconds.
    std::thread::sleep(Duration::from_millis(250 * index as u64));
    let anonymous = match AppClient::anonymous(&target.origin, None) {
        Ok(client) => client,
        Err(error) => {
            tally.failure("viewer_setup", format!("{error:#}"));
            return;
        }
    };
    while !tally.stopped() {
        let joined = target
            .join(&anonymous, "watch")
            .and_then(|join| Ok(target.bots.watch(&join)?));
        let mut bot = match joined {
            Ok(bot) => bot,
            Err(error) => {
                tally.failure("viewer_join", format!("{error:#}"));
                std::thread::sleep(RETRY_AFTER);
                continue;
            }
        };
        tally.viewers_active.fetch_add(1, Ordering::Relaxed);
        tally.event("viewer_joined");
        match wait_for(&mut bot, KEYFRAME_TIMEOUT, SoloBot::received_keyframe) {
            Some(_) => tally.event("viewer_got_keyframe"),
            None => tally.failure(
                "viewer_no_keyframe",
                format!("no keyframe within {KEYFRAME_TIMEOUT:?} of the answer"),
            ),
        }
        stay(&mut bot, stay_for.pick(), &tally);
        let outcome = bot.stop();
        tally.viewers_active.fetch_sub(1, Ordering::Relaxed);
        if let Some(time) = outcome.first_keyframe_after {
            tally.latency("viewer_first_keyframe", time);
        }
        let pause = Instant::now() + gap.pick();
        while !tally.stopped() && Instant::now() < pause {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
