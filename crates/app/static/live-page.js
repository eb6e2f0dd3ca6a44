// The viewer page (`/{username}/live`): the player, its states, chat and viewer count.
//
// States shown in `#live-status[data-state]`:
// offline (no live now), connecting, live (frames arriving), stalled (the broadcaster's
// connection dropped or frames stopped), novideo (no frames but the broadcaster's sound
// goes on: an OBS scene without video), paused (the viewer's link is too slow for
// video), unreachable (no media connection could be made: a network that blocks it, or
// a TURN relay that refused us), ended (the broadcaster ended the live).
// The player reconnects by itself with backoff when the media connection or the app
// socket drops.

import { AppSocket, mountChat, mountViewerCount } from './chat-client.js';
import {
  Backoff,
  MediaSession,
  TokenError,
  connectionPath,
  fetchMediaToken,
  sumStats,
} from './media-client.js';

const STATE_TEXT = {
  offline: 'Offline',
  connecting: 'Connecting…',
  live: 'Live',
  stalled: 'Stalled',
  paused: 'Audio only',
  novideo: 'Audio only',
  unreachable: 'Cannot connect',
  ended: 'Ended',
};
const OVERLAY_TEXT = {
  offline: `${document.querySelector('#live-page').dataset.channel} is not live right now. This page starts playing when they go live.`,
  connecting: 'Connecting…',
  live: '',
  stalled: 'The stream stalled. Waiting for the broadcaster to come back…',
  paused: 'Your connection is too slow for video right now. Audio goes on, and the picture comes back by itself when the connection recovers.',
  novideo: 'The broadcaster is sending sound but no picture right now. The picture comes back by itself.',
  unreachable: 'Cannot connect to the video. Your network (a firewall, a VPN or a proxy) may be blocking it. Still trying…',
  ended: 'The live has ended. Thanks for watching!',
};
/** How often the stats overlay is refreshed while shown. */
const STATS_INTERVAL_MS = 1000;
const MONITOR_INTERVAL_MS = 1000;
/** No new frame for this long while connected means stalled. */
const STALL_AFTER_MS = 3000;
/** Stalled or connecting for this long while the live is on: start a fresh connection. */
const REWATCH_AFTER_MS = 8000;

const page = document.querySelector('#live-page');
const channel = page.dataset.channel;
const video = document.querySelector('#player');
const statusEl = document.querySelector('#live-status');
const statusText = statusEl.querySelector('.status-text') ?? statusEl;
const overlay = document.querySelector('#player-overlay');
const overlayText = document.querySelector('#player-overlay-text');
const unmute = document.querySelector('#unmute');
const titleEl = document.querySelector('#live-title');
const viewerCount = document.querySelector('#viewer-count');
const qualitySelect = document.querySelector('#quality-select');
const statsToggle = document.querySelector('#stats-toggle');
const statsOverlay = document.querySelector('#stats-overlay');

const debugLog = [];
let sessionCount = 0;
function log(text) {
  debugLog.push(`${new Date().toISOString().slice(11, 23)} ${text}`);
  if (debugLog.length > 100) debugLog.shift();
}

const player = {
  state: null,
  history: [],
  /** A watch is in progress, running, or scheduled; bumped `gen` cancels it. */
  active: false,
  gen: 0,
  liveOn: page.dataset.live === 'true',
  session: null,
  backoff: new Backoff(500, 10000),
  retryTimer: null,
  lastFrames: 0,
  /** The server's last `quality` message for this watch. */
  quality: null,
  /** The quality menu's choice, kept across reconnections. */
  choice: 'auto',
  /** Watched again once to get adaptive layers from a simulcast broadcaster. */
  rewatchedForSimulcast: false,
  lastFrameAt: 0,
  stateSince: performance.now(),
  /** The current watch: when it began and whether its peer connection got through. */
  attempt: null,
};

function setState(state) {
  if (player.state === state) return;
  log(`state ${player.state} -> ${state}`);
  player.state = state;
  player.stateSince = performance.now();
  player.history.push(state);
  statusEl.dataset.state = state;
  page.dataset.state = state;
  statusText.textContent = STATE_TEXT[state];
  document.title = `${state === 'live' ? '● ' : ''}${channel} · PrivateHub`;
  overlay.hidden = state === 'live';
  overlayText.textContent = OVERLAY_TEXT[state];
  viewerCount.hidden = state === 'offline' || state === 'ended';
  updateUnmute();
}

/** The unmute button shows while something plays muted. */
function updateUnmute() {
  unmute.hidden = !(video.muted && (player.state === 'live' || player.state === 'stalled'));
}

function stopMedia() {
  player.active = false;
  player.gen += 1;
  clearTimeout(player.retryTimer);
  player.retryTimer = null;
  if (player.session) {
    player.session.close();
    player.session = null;
  }
}

function scheduleWatch(reason, retryAfterMs) {
  // Signaling worked but the media never connected (ICE failed: UDP and TCP blocked, or
  // the relay refused us): the viewer is told at once rather than watching
  // "Connecting…" forever. A media server that is down or restarting is not this.
  const attempt = player.attempt;
  const unreachable = attempt !== null && attempt.signaled && !attempt.connected && retryAfterMs === undefined;
  player.attempt = null;
  stopMedia();
  if (!player.liveOn) return;
  const delay = retryAfterMs ?? player.backoff.next();
  player.active = true;
  log(`retry in ${Math.round(delay)} ms: ${reason}`);
  if (unreachable) setState('unreachable');
  else if (player.state !== 'stalled' && player.state !== 'unreachable') setState('connecting');
  player.retryTimer = setTimeout(watch, delay);
}

async function watch() {
  stopMedia();
  if (!player.liveOn) return;
  player.active = true;
  const gen = player.gen;
  if (player.state !== 'stalled' && player.state !== 'unreachable') setState('connecting');
  const attempt = { startedAt: performance.now(), signaled: false, connected: false };
  player.attempt = attempt;
  let session;
  try {
    const { token, url, iceServers } = await fetchMediaToken(channel);
    if (gen !== player.gen) return;
    session = new MediaSession({ kind: 'watch', token, url, iceServers });
    sessionCount += 1;
    player.session = session;
    player.audioPackets = 0;
    player.audioRising = false;
    session.addEventListener('track', () => {
      if (video.srcObject !== session.remoteStream) {
        video.srcObject = session.remoteStream;
        // A new source restarts the element's frame counter.
        player.lastFrames = 0;
      }
      video.play().catch(() => {});
    });
    session.addEventListener('publisher-left', () => {
      log('publisher left');
      player.audioRising = false;
      player.rewatchedForSimulcast = false;
      setState('stalled');
    });
    session.addEventListener('quality', (event) => onQuality(session, event.detail));
    // The broadcaster is still connected but its video stopped: say so at once rather
    // than waiting for the frame counter; frames arriving again switch back to live.
    session.addEventListener('publisher-stalled', () => {
      log('publisher stalled');
      if (player.state === 'live') setState('stalled');
    });
    session.addEventListener('publisher-resumed', () => log('publisher resumed'));
    session.addEventListener('publisher-joined', (event) => {
      log(`publisher joined${event.detail.simulcast ? ' (simulcast)' : ''}`);
      player.stateSince = performance.now();
      // This watch began before the broadcaster sent layers, so the server does not
      // estimate its bandwidth: watch again (once) to get layers fitted to the link.
      if (event.detail.simulcast && !session.adaptive && !player.rewatchedForSimulcast) {
        player.rewatchedForSimulcast = true;
        scheduleWatch('the broadcaster sends simulcast', 0);
      }
    });
    session.addEventListener('connectionstatechange', (event) => {
      log(`pc ${event.detail.state}`);
      if (event.detail.state === 'connected') {
        attempt.connected = true;
        if (player.state === 'unreachable') setState('connecting');
      }
    });
    session.addEventListener('closed', (event) => {
      if (player.session !== session) return;
      player.session = null;
      scheduleWatch(event.detail.reason, event.detail.retryAfterMs);
    });
    await session.start();
    attempt.signaled = true;
    log(`watching live ${session.liveId}${session.adaptive ? ' (adaptive)' : ''}`);
    if (player.choice !== 'auto') session.setQuality(player.choice);
  } catch (error) {
    if (gen !== player.gen) return;
    if (error instanceof TokenError && error.status === 404) {
      log('not live (token 404)');
      player.liveOn = false;
      stopMedia();
      setState(player.state === 'ended' ? 'ended' : 'offline');
      return;
    }
    scheduleWatch(error.message);
  }
}

/** A layer's label in the menu: its height, else its name. */
function layerLabel(layer) {
  return layer.height ? `${layer.height}p` : layer.rid === 'single' ? 'Source' : layer.rid;
}

/** The server's `quality` message: menu, paused state, overlay. */
function onQuality(session, quality) {
  if (player.session !== session) return;
  player.quality = quality;
  const options = [['auto', 'Auto']];
  // Highest first, as video sites list them; one layer gives no choice.
  const layers = quality.layers.length > 1 ? [...quality.layers].reverse() : [];
  for (const layer of layers) options.push([layer.rid, layerLabel(layer)]);
  const wanted = options.map(([value, label]) => `${value}=${label}`).join('|');
  if (qualitySelect.dataset.options !== wanted) {
    qualitySelect.replaceChildren(
      ...options.map(([value, label]) => {
        const option = document.createElement('option');
        option.value = value;
        option.textContent = value === 'auto' && quality.current ? 'Auto' : label;
        return option;
      }),
    );
    qualitySelect.dataset.options = wanted;
  }
  qualitySelect.value = options.some(([value]) => value === quality.choice) ? quality.choice : 'auto';
  const current = quality.layers.find((layer) => layer.rid === quality.current);
  qualitySelect.options[0].textContent =
    quality.choice === 'auto' && current && layers.length ? `Auto (${layerLabel(current)})` : 'Auto';
  qualitySelect.disabled = layers.length === 0;
  page.dataset.videoPaused = String(quality.paused);
  if (quality.paused && ['live', 'stalled', 'connecting', 'unreachable'].includes(player.state)) setState('paused');
  if (!quality.paused && player.state === 'paused') setState('connecting');
}

qualitySelect.addEventListener('change', () => {
  player.choice = qualitySelect.value;
  log(`quality ${player.choice}`);
  player.session?.setQuality(player.choice);
});

/** Inbound video stats for the overlay and tests. */
async function videoStats() {
  const pc = player.session?.pc;
  const result = { frameWidth: 0, frameHeight: 0, framesDecoded: 0, freezeCount: 0, framesPerSecond: 0 };
  if (!pc) return result;
  const report = await pc.getStats();
  report.forEach((stat) => {
    if (stat.type === 'inbound-rtp' && (stat.kind ?? stat.mediaType) === 'video') {
      result.frameWidth = stat.frameWidth ?? 0;
      result.frameHeight = stat.frameHeight ?? 0;
      result.framesDecoded = stat.framesDecoded ?? 0;
      result.freezeCount = stat.freezeCount ?? 0;
      result.framesPerSecond = stat.framesPerSecond ?? 0;
    }
  });
  return result;
}

async function refreshStatsOverlay() {
  if (statsOverlay.hidden) return;
  const stats = await videoStats();
  const path = await connectionPath(player.session?.pc).catch(() => null);
  const quality = player.quality;
  const lines = [
    `video     ${stats.frameWidth}x${stats.frameHeight} @ ${Math.round(stats.framesPerSecond)} fps`,
    `decoded   ${stats.framesDecoded} frames, ${stats.freezeCount} freezes`,
    `path      ${path ?? '—'}`,
  ];
  if (quality) {
    lines.push(
      `layer     ${quality.current ?? '—'}${quality.target && quality.target !== quality.current ? ` → ${quality.target}` : ''}${quality.paused ? ' (paused)' : ''}`,
      `choice    ${quality.choice}${quality.adaptive ? '' : ' (no estimate)'}`,
      `estimate  ${quality.estimate_kbps != null ? `${quality.estimate_kbps} kbit/s` : '—'}`,
      `layers    ${quality.layers.map((l) => `${l.rid} ${layerLabel(l)} ${l.kbps} kbit/s`).join(', ') || '—'}`,
    );
  }
  statsOverlay.textContent = lines.join('\n');
}

statsToggle.addEventListener('click', () => {
  statsOverlay.hidden = !statsOverlay.hidden;
  statsToggle.setAttribute('aria-pressed', String(!statsOverlay.hidden));
  refreshStatsOverlay().catch(() => {});
});
setInterval(() => refreshStatsOverlay().catch(() => {}), STATS_INTERVAL_MS);

/** Keeps `player.audioRising`: audio packets arrived since the last look. */
function watchAudio() {
  const session = player.session;
  sumStats(session?.pc, 'inbound-rtp', 'audio', 'packetsReceived').then((packets) => {
    if (player.session !== session) return;
    player.audioRising = packets > (player.audioPackets ?? 0);
    player.audioPackets = packets;
  }, () => {});
}

/** Once a second: decide live/stalled from the decoded frame counter. */
function monitor() {
  const frames = video.getVideoPlaybackQuality?.().totalVideoFrames ?? 0;
  const now = performance.now();
  if (frames < player.lastFrames) player.lastFrames = 0;
  if (frames > player.lastFrames) {
    player.lastFrames = frames;
    player.lastFrameAt = now;
    const current = player.session && video.srcObject === player.session.remoteStream;
    if (current && ['connecting', 'stalled', 'paused', 'novideo', 'unreachable'].includes(player.state) && !player.quality?.paused) {
      player.backoff.reset();
      setState('live');
    }
  } else if (player.state === 'live' && now - player.lastFrameAt > STALL_AFTER_MS) {
    setState('stalled');
  } else if (player.state === 'stalled' && player.audioRising) {
    // No picture, but the sound goes on: not a stall, and no reason to reconnect.
    setState('novideo');
  } else if (player.state === 'novideo' && !player.audioRising) {
    setState('stalled');
  }
  watchAudio();
  if (
    player.liveOn &&
    ['stalled', 'connecting', 'unreachable'].includes(player.state) &&
    player.session &&
    now - Math.max(player.stateSince, player.lastFrameAt, player.attempt?.startedAt ?? 0) > REWATCH_AFTER_MS
  ) {
    scheduleWatch('no frames for a while');
  }
}

// Autoplay rules: start muted, offer an obvious unmute.
video.muted = true;
unmute.addEventListener('click', () => {
  video.muted = false;
  video.play().catch(() => {});
  updateUnmute();
});
video.addEventListener('volumechange', updateUnmute);

const socket = new AppSocket(channel);
mountViewerCount(viewerCount, socket);
mountChat(document.querySelector('#chat'), socket);
socket.addEventListener('live:state', (event) => {
  const live = event.detail.live;
  if (live) {
    titleEl.textContent = live.title;
    player.liveOn = true;
    if (!player.active) watch();
  } else {
    // No live now. If we were watching one, it ended while the socket was down.
    const wasWatching = ['connecting', 'live', 'stalled'].includes(player.state) && player.liveOn;
    player.liveOn = false;
    stopMedia();
    if (wasWatching) {
      video.srcObject = null;
      setState('ended');
    } else if (player.state !== 'ended') {
      setState('offline');
    }
  }
});
socket.addEventListener('live:started', (event) => {
  titleEl.textContent = event.detail.live.title;
  player.liveOn = true;
  player.backoff.reset();
  if (!player.active) watch();
});
socket.addEventListener('live:ended', () => {
  player.liveOn = false;
  stopMedia();
  video.srcObject = null;
  setState('ended');
});
socket.connect();

window.privatehubDebug = {
  log: debugLog,
  history: player.history,
  get state() {
    return player.state;
  },
  inboundAudioPackets: () => sumStats(player.session?.pc, 'inbound-rtp', 'audio', 'packetsReceived'),
  inboundVideoFrames: () => sumStats(player.session?.pc, 'inbound-rtp', 'video', 'framesDecoded'),
  peerConnection: () => player.session?.pc ?? null,
  /** The server's last `quality` message. */
  get quality() {
    return player.quality;
  },
  get adaptive() {
    return player.session?.adaptive ?? false;
  },
  videoStats,
  /** Simulates a network drop of the media signaling socket (tests). */
  dropMedia: () => player.session?.ws?.close(),
  /** Simulates a network drop of the app socket (tests). */
  dropSocket: () => socket.ws?.close(),
  get sessions() {
    return sessionCount;
  },
};

setState(player.liveOn ? 'connecting' : 'offline');
if (player.liveOn) watch();
setInterval(monitor, MONITOR_INTERVAL_MS);
