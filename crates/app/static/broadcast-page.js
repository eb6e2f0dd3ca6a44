// The broadcaster page (`/{username}/start-live`): camera and microphone preview with
// device choice, Go live / End live, the live's chat and viewer count, connection state
// and outgoing bitrate while live.
//
// `#live-status[data-state]`: idle (preview only), connecting, live, reconnecting, ended.

import { AppSocket, mountChat, mountViewerCount } from './chat-client.js';
import { Backoff, MediaSession, fetchMediaToken } from './media-client.js';

const STATE_TEXT = {
  idle: 'Not live',
  connecting: 'Going live…',
  live: 'Live',
  reconnecting: 'Connection lost — reconnecting…',
  ended: 'Live ended',
};

const page = document.querySelector('#broadcast-page');
const channel = page.dataset.channel;
const preview = document.querySelector('#preview');
const cameraSelect = document.querySelector('#camera-select');
const micSelect = document.querySelector('#mic-select');
const titleInput = document.querySelector('#live-title');
const goLiveButton = document.querySelector('#go-live');
const endLiveButton = document.querySelector('#end-live');
const statusEl = document.querySelector('#live-status');
const statusText = statusEl.querySelector('.status-text') ?? statusEl;
const connectionEl = document.querySelector('#connection-state');
const bitrateEl = document.querySelector('#bitrate');
const layersEl = document.querySelector('#layers');
const noticeEl = document.querySelector('#broadcast-notice');
const deviceError = document.querySelector('#device-error');

const debugLog = [];
function log(text) {
  debugLog.push(`${new Date().toISOString().slice(11, 23)} ${text}`);
  if (debugLog.length > 100) debugLog.shift();
}

const broadcast = {
  /** Byte counters per outgoing video layer (for their bitrates). */
  layerBytes: new Map(),
  layers: [],
  state: null,
  stream: null,
  session: null,
  /** The user wants to be live (between Go live and End live). */
  wanted: false,
  backoff: new Backoff(500, 8000),
  retryTimer: null,
  gen: 0,
  lastBytes: 0,
  lastBytesAt: 0,
  /** The current publish attempt's answer arrived, and its peer connection got through. */
  attemptSignaled: false,
  attemptConnected: false,
};

const UNREACHABLE_NOTICE =
  'Cannot connect to the media server. Your network (a firewall, a VPN or a proxy) may be blocking it. Still trying…';

function setState(state) {
  if (broadcast.state === state) return;
  log(`state ${broadcast.state} -> ${state}`);
  broadcast.state = state;
  statusEl.dataset.state = state;
  page.dataset.state = state;
  statusText.textContent = STATE_TEXT[state];
  const live = state === 'connecting' || state === 'live' || state === 'reconnecting';
  goLiveButton.hidden = live;
  endLiveButton.hidden = !live;
  titleInput.disabled = live;
  if (!live) {
    connectionEl.textContent = '—';
    bitrateEl.textContent = '—';
  }
}

function notice(text, kind = 'info') {
  noticeEl.textContent = text;
  noticeEl.dataset.kind = kind;
  noticeEl.hidden = !text;
}

async function postJson(path, body) {
  const response = await fetch(path, {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'content-type': 'application/json', accept: 'application/json' },
    body: JSON.stringify(body ?? {}),
  });
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    throw new Error(data?.error?.message ?? `request failed (${response.status})`);
  }
  return data;
}

// ---- devices and preview -------------------------------------------------

function fillSelect(select, devices, currentId, label) {
  select.replaceChildren();
  devices.forEach((device, index) => {
    const option = document.createElement('option');
    option.value = device.deviceId;
    option.textContent = device.label || `${label} ${index + 1}`;
    option.selected = device.deviceId === currentId;
    select.append(option);
  });
  select.disabled = devices.length === 0;
}

async function refreshDevices() {
  const devices = await navigator.mediaDevices.enumerateDevices();
  const videoTrack = broadcast.stream?.getVideoTracks()[0];
  const audioTrack = broadcast.stream?.getAudioTracks()[0];
  fillSelect(
    cameraSelect,
    devices.filter((d) => d.kind === 'videoinput'),
    videoTrack?.getSettings().deviceId,
    'Camera',
  );
  fillSelect(
    micSelect,
    devices.filter((d) => d.kind === 'audioinput'),
    audioTrack?.getSettings().deviceId,
    'Microphone',
  );
}

async function openDevices() {
  const cameraId = cameraSelect.value;
  const micId = micSelect.value;
  const constraints = {
    video: {
      ...(cameraId ? { deviceId: { exact: cameraId } } : {}),
      width: { ideal: 1280 },
      height: { ideal: 720 },
      frameRate: { ideal: 30 },
    },
    audio: micId ? { deviceId: { exact: micId } } : true,
  };
  try {
    const stream = await navigator.mediaDevices.getUserMedia(constraints);
    const old = broadcast.stream;
    broadcast.stream = stream;
    preview.srcObject = stream;
    preview.play().catch(() => {});
    deviceError.hidden = true;
    if (broadcast.session) {
      await broadcast.session.sender('video')?.replaceTrack(stream.getVideoTracks()[0] ?? null);
      await broadcast.session.sender('audio')?.replaceTrack(stream.getAudioTracks()[0] ?? null);
    }
    old?.getTracks().forEach((track) => track.stop());
    await refreshDevices();
    goLiveButton.disabled = false;
  } catch (error) {
    log(`getUserMedia: ${error.name} ${error.message}`);
    deviceError.textContent =
      error.name === 'NotAllowedError'
        ? 'Camera and microphone access was refused. Allow it in the browser to go live.'
        : `Could not open the camera or microphone: ${error.message}`;
    deviceError.hidden = false;
    goLiveButton.disabled = !broadcast.stream;
  }
}

// ---- publishing ---------------------------------------------------------

function stopSession() {
  broadcast.gen += 1;
  clearTimeout(broadcast.retryTimer);
  broadcast.retryTimer = null;
  broadcast.session?.close();
  broadcast.session = null;
}

function scheduleRepublish(reason, retryAfterMs) {
  // Signaling worked but the media never connected: say so rather than "reconnecting"
  // forever (a media server that is down or restarting is not this).
  const unreachable =
    broadcast.attemptSignaled && !broadcast.attemptConnected && retryAfterMs === undefined;
  stopSession();
  if (!broadcast.wanted) return;
  const delay = retryAfterMs ?? broadcast.backoff.next();
  log(`republish in ${Math.round(delay)} ms: ${reason}`);
  setState('reconnecting');
  if (unreachable) notice(UNREACHABLE_NOTICE, 'error');
  broadcast.retryTimer = setTimeout(publish, delay);
}

async function publish() {
  stopSession();
  const gen = broadcast.gen;
  broadcast.attemptSignaled = false;
  broadcast.attemptConnected = false;
  let session;
  try {
    const { token, url, iceServers } = await fetchMediaToken(channel);
    if (gen !== broadcast.gen) return;
    session = new MediaSession({
      kind: 'publish',
      token,
      url,
      iceServers,
      stream: broadcast.stream,
      simulcast: true,
    });
    broadcast.session = session;
    session.addEventListener('connectionstatechange', (event) => {
      const state = event.detail.state;
      connectionEl.textContent = state;
      log(`pc ${state}`);
      if (state === 'connected' && broadcast.session === session) {
        broadcast.attemptConnected = true;
        broadcast.backoff.reset();
        setState('live');
        notice('');
      }
    });
    session.addEventListener('replaced', () => {
      if (broadcast.session !== session) return;
      broadcast.session = null;
      broadcast.wanted = false;
      setState('idle');
      notice('This live is now being broadcast from another tab or device.', 'warn');
    });
    session.addEventListener('closed', (event) => {
      if (broadcast.session !== session) return;
      broadcast.session = null;
      scheduleRepublish(event.detail.reason, event.detail.retryAfterMs);
    });
    await session.start();
    if (broadcast.session === session) broadcast.attemptSignaled = true;
    log(`publishing into live ${session.liveId}`);
  } catch (error) {
    if (gen !== broadcast.gen) return;
    log(`publish failed: ${error.message}`);
    scheduleRepublish(error.message);
  }
}

async function goLive() {
  if (!broadcast.stream) return;
  goLiveButton.disabled = true;
  notice('');
  try {
    const title = titleInput.value.trim();
    await postJson('/api/lives/start', { title });
    broadcast.wanted = true;
    broadcast.backoff.reset();
    setState('connecting');
    await publish();
  } catch (error) {
    notice(error.message, 'error');
    setState('idle');
  } finally {
    goLiveButton.disabled = false;
  }
}

async function endLive() {
  endLiveButton.disabled = true;
  broadcast.wanted = false;
  stopSession();
  try {
    await postJson('/api/lives/stop', {});
    setState('ended');
    notice('Your live has ended. You can go live again whenever you like.');
  } catch (error) {
    notice(error.message, 'error');
    setState('ended');
  } finally {
    endLiveButton.disabled = false;
  }
}

function formatRate(kbps) {
  return kbps >= 1000 ? `${(kbps / 1000).toFixed(1)} Mbit/s` : `${Math.round(kbps)} kbit/s`;
}

/**
 * The video layers going out, from getStats: one entry per encoding that sends, with its
 * size and bitrate since the last sample (`broadcast.layerBytes` keeps the byte counts).
 */
function sampleLayers(report, now) {
  const layers = [];
  report.forEach((stat) => {
    if (stat.type !== 'outbound-rtp' || (stat.kind ?? stat.mediaType) !== 'video') return;
    const key = stat.rid ?? 'single';
    const last = broadcast.layerBytes.get(key);
    const kbps = last && stat.bytesSent >= last.bytes ? ((stat.bytesSent - last.bytes) * 8) / (now - last.at) : 0;
    broadcast.layerBytes.set(key, { bytes: stat.bytesSent ?? 0, at: now });
    layers.push({
      rid: stat.rid ?? null,
      width: stat.frameWidth ?? null,
      height: stat.frameHeight ?? null,
      kbps: Math.round(kbps),
      active: (stat.framesPerSecond ?? 0) > 0 || kbps > 0,
    });
  });
  layers.sort((a, b) => (b.height ?? 0) - (a.height ?? 0));
  return layers;
}

function showLayers(layers) {
  broadcast.layers = layers;
  const sending = layers.filter((l) => l.active);
  layersEl.textContent = sending.length
    ? sending.map((l) => `${l.height ? `${l.height}p` : l.rid ?? 'video'} ${formatRate(l.kbps)}`).join(' · ')
    : '—';
  layersEl.dataset.count = String(sending.length);
}

/** Once a second while publishing: outgoing bitrate and the layers from getStats. */
async function sampleStats() {
  const pc = broadcast.session?.pc;
  if (!pc || broadcast.state !== 'live') return;
  const report = await pc.getStats();
  let bytes = 0;
  report.forEach((stat) => {
    if (stat.type === 'outbound-rtp') bytes += stat.bytesSent ?? 0;
  });
  const now = performance.now();
  showLayers(sampleLayers(report, now));
  if (broadcast.lastBytesAt && bytes >= broadcast.lastBytes) {
    const kbps = ((bytes - broadcast.lastBytes) * 8) / (now - broadcast.lastBytesAt);
    bitrateEl.textContent = formatRate(kbps);
  }
  broadcast.lastBytes = bytes;
  broadcast.lastBytesAt = now;
}

// ---- wiring -------------------------------------------------------------

goLiveButton.addEventListener('click', goLive);
endLiveButton.addEventListener('click', endLive);
cameraSelect.addEventListener('change', openDevices);
micSelect.addEventListener('change', openDevices);
navigator.mediaDevices?.addEventListener?.('devicechange', () => refreshDevices().catch(() => {}));
titleInput.addEventListener('keydown', (event) => {
  if (event.key === 'Enter') {
    event.preventDefault();
    goLive();
  }
});

const socket = new AppSocket(channel);
mountViewerCount(document.querySelector('#viewer-count'), socket);
mountChat(document.querySelector('#chat'), socket);
socket.addEventListener('live:state', (event) => {
  const live = event.detail.live;
  if (live && !broadcast.wanted) {
    if (!titleInput.value) titleInput.value = live.title;
    notice('Your live is still on. Press “Go live” to resume broadcasting.', 'warn');
  }
});
socket.addEventListener('live:ended', () => {
  // Ended elsewhere (another tab, or the API): stop sending.
  if (!broadcast.wanted) return;
  broadcast.wanted = false;
  stopSession();
  setState('ended');
  notice('Your live was ended.');
});
socket.connect();

window.privatehubDebug = {
  log: debugLog,
  get state() {
    return broadcast.state;
  },
  peerConnection: () => broadcast.session?.pc ?? null,
  /** The video layers going out (last sample): [{rid, width, height, kbps, active}]. */
  get layers() {
    return broadcast.layers;
  },
};

setState('idle');
goLiveButton.disabled = true;
if (!navigator.mediaDevices?.getUserMedia) {
  deviceError.textContent = 'This browser cannot capture a camera here (a secure https:// page is needed).';
  deviceError.hidden = false;
} else {
  openDevices();
}
setInterval(() => sampleStats().catch(() => {}), 1000);
window.addEventListener('pagehide', () => broadcast.session?.close());
