// WebRTC with the PrivateHub media server: fetch a media token from the app, then
// publish or watch over the media server's signaling WebSocket (`<media url>/ws`).
// Messages are defined in crates/protocol/src/media_signaling.rs.

const ICE_GATHERING_TIMEOUT_MS = 1500;
const SIGNALING_TIMEOUT_MS = 10000;
const PING_INTERVAL_MS = 15000;

/**
 * Simulcast encodings for a camera track of `height` pixels: three layers (quarter,
 * half and full resolution) from 360p up, two from 240p, none below (one encoding).
 * Bitrate caps scale with the full layer's pixels (1.5 Mbit/s at 720p).
 */
export function simulcastEncodings(width, height) {
  if (!height || height < 240) return null;
  const pixels = (width || (height * 16) / 9) * height;
  const full = Math.round(Math.min(2_500_000, Math.max(600_000, (pixels / (1280 * 720)) * 1_500_000)));
  const layers = [
    { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: Math.round(full / 10) },
    { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: Math.round(full / 3) },
    { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: full },
  ];
  return height >= 360 ? layers : layers.slice(1);
}

/** An error from the app's token endpoint; `status` is the HTTP status. */
export class TokenError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/**
 * Asks the app for a media token for `channel`'s live: publish for its owner, watch for
 * everyone else. Resolves to `{token, url, liveId, role, iceServers}` (`iceServers`: the
 * site's TURN relay with a fresh credential, for networks that block direct media).
 */
export async function fetchMediaToken(channel) {
  const response = await fetch(`/api/lives/${encodeURIComponent(channel)}/token`, {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'content-type': 'application/json', accept: 'application/json' },
    body: '{}',
  });
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const message = body?.error?.message ?? `token request failed (${response.status})`;
    throw new TokenError(response.status, message);
  }
  const data = body?.data ?? body ?? {};
  const token = data.token ?? data.media_token;
  const url = data.media_url ?? data.media_server_url ?? data.media_public_url ?? data.url;
  if (typeof token !== 'string' || typeof url !== 'string') {
    throw new TokenError(500, 'the app sent an unexpected token response');
  }
  const iceServers = Array.isArray(data.ice_servers) ? data.ice_servers : [];
  return { token, url, liveId: data.live_id ?? null, role: data.role ?? null, iceServers };
}

/**
 * How a peer connection's media flows, from its selected candidate pair: `direct UDP`,
 * `direct TCP` (ICE-TCP) or `relay (TURN over UDP|TCP|TLS)`; null before it connects.
 */
export async function connectionPath(pc) {
  if (!pc) return null;
  const stats = await pc.getStats();
  let pair = null;
  stats.forEach((report) => {
    if (report.type === 'transport' && report.selectedCandidatePairId) {
      pair = stats.get(report.selectedCandidatePairId);
    }
  });
  const local = pair ? stats.get(pair.localCandidateId) : null;
  if (!local) return null;
  if (local.candidateType === 'relay') {
    return `relay (TURN over ${String(local.relayProtocol ?? '?').toUpperCase()})`;
  }
  return `direct ${String(local.protocol ?? '?').toUpperCase()}`;
}

/** `https://sfu.example/` → `wss://sfu.example/ws`. */
export function signalingUrl(mediaUrl) {
  const url = new URL(mediaUrl, window.location.href);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  url.pathname = `${url.pathname.replace(/\/+$/, '')}/ws`;
  url.search = '';
  url.hash = '';
  return url.toString();
}

function waitForIceGathering(pc, timeoutMs) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', check);
      resolve();
    };
    const check = () => {
      if (pc.iceGatheringState === 'complete') done();
    };
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener('icegatheringstatechange', check);
  });
}

/**
 * One publish or watch: an RTCPeerConnection plus its signaling socket.
 *
 * Events (all `CustomEvent`s, details in `event.detail`):
 * - `connectionstatechange` {state}: the peer connection's state;
 * - `track` {track, stream}: a remote track arrived (watch);
 * - `publisher-joined` {simulcast}, `publisher-left`: the broadcaster came or went (watch);
 * - `quality` {layers, current, target, choice, estimate_kbps, paused, adaptive}: what
 *   the server forwards to this viewer (watch; on changes and every couple of seconds);
 * - `replaced`: a newer publish of the same live took over (publish);
 * - `signaling-error` {code, message, close};
 * - `closed` {reason, retryAfterMs?}: the session is over (socket closed, peer
 *   connection failed, or the server is restarting: then `retryAfterMs` says when to
 *   try again); it will not recover by itself and should be replaced by a new one.
 */
export class MediaSession extends EventTarget {
  /**
   * @param {{kind: 'publish'|'watch', token: string, url: string, stream?: MediaStream,
   *   simulcast?: boolean, iceServers?: RTCIceServer[]}} options `simulcast`: publish
   *   layers when the camera allows; `iceServers`: from `fetchMediaToken`.
   */
  constructor({ kind, token, url, stream, simulcast = false, iceServers = [] }) {
    super();
    this.iceServers = iceServers;
    this.kind = kind;
    this.token = token;
    this.url = url;
    this.localStream = stream ?? null;
    this.remoteStream = new MediaStream();
    this.pc = null;
    this.ws = null;
    this.liveId = null;
    this.closed = false;
    this.pingTimer = null;
    this.retryAfterMs = undefined;
    this.simulcast = simulcast;
    /** Watch: the server picks this viewer's layer from its bandwidth. */
    this.adaptive = false;
    /** Publish: the encodings sent (null: one). */
    this.encodings = null;
  }

  /** Negotiates; resolves once the answer is applied (media may still be connecting). */
  async start() {
    const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle', iceServers: this.iceServers });
    this.pc = pc;
    pc.addEventListener('connectionstatechange', () => {
      this.#emit('connectionstatechange', { state: pc.connectionState });
      if (pc.connectionState === 'failed') this.#finish('peer connection failed');
    });
    if (this.kind === 'publish') {
      const audio = this.localStream?.getAudioTracks()[0];
      const video = this.localStream?.getVideoTracks()[0];
      const streams = this.localStream ? [this.localStream] : [];
      this.audioTransceiver = pc.addTransceiver(audio ?? 'audio', { direction: 'sendonly', streams });
      const settings = video?.getSettings?.() ?? {};
      this.encodings = this.simulcast ? simulcastEncodings(settings.width, settings.height) : null;
      const init = { direction: 'sendonly', streams };
      if (this.encodings) init.sendEncodings = this.encodings;
      this.videoTransceiver = pc.addTransceiver(video ?? 'video', init);
    } else {
      pc.addTransceiver('audio', { direction: 'recvonly' });
      pc.addTransceiver('video', { direction: 'recvonly' });
      pc.addEventListener('track', (event) => {
        this.remoteStream.addTrack(event.track);
        this.#emit('track', { track: event.track, stream: this.remoteStream });
      });
    }
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    await waitForIceGathering(pc, ICE_GATHERING_TIMEOUT_MS);
    if (this.closed) throw new Error('closed while negotiating');

    const ws = new WebSocket(signalingUrl(this.url));
    this.ws = ws;
    const answer = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the media server did not answer')), SIGNALING_TIMEOUT_MS);
      ws.addEventListener('open', () => {
        ws.send(JSON.stringify({
          type: this.kind,
          token: this.token,
          offer: { type: 'offer', sdp: pc.localDescription.sdp },
        }));
      });
      ws.addEventListener('message', (event) => {
        let message;
        try {
          message = JSON.parse(event.data);
        } catch {
          return;
        }
        if (message.type === 'answer') {
          clearTimeout(timer);
          this.liveId = message.live_id;
          this.adaptive = Boolean(message.adaptive);
          resolve(message.answer);
        } else if (message.type === 'error' && this.liveId === null) {
          clearTimeout(timer);
          const error = new Error(message.message);
          error.code = message.code;
          reject(error);
        } else {
          this.#onMessage(message);
        }
      });
      ws.addEventListener('close', () => {
        clearTimeout(timer);
        reject(new Error('the media server closed the connection'));
        this.#finish('signaling closed');
      });
      ws.addEventListener('error', () => {});
    });
    await pc.setRemoteDescription(answer);
    this.pingTimer = setInterval(() => this.#send({ type: 'ping' }), PING_INTERVAL_MS);
  }

  /** Sender of `kind` ('audio'|'video') while publishing, for `replaceTrack`. */
  sender(kind) {
    const transceiver = kind === 'audio' ? this.audioTransceiver : this.videoTransceiver;
    return transceiver?.sender ?? null;
  }

  /** Watch: the quality menu's choice, 'auto' or a layer's rid. */
  setQuality(layer) {
    this.#send({ type: 'quality', layer });
  }

  /** Leaves cleanly and frees everything. */
  close() {
    if (this.closed) return;
    this.#send({ type: 'leave' });
    this.#finish('closed by the page', false);
  }

  #onMessage(message) {
    switch (message.type) {
      case 'publisher_joined':
        this.#emit('publisher-joined', message);
        break;
      case 'publisher_left':
        this.#emit('publisher-left', message);
        break;
      case 'quality':
        this.#emit('quality', message);
        break;
      case 'publisher_stalled':
        this.#emit('publisher-stalled', message);
        break;
      case 'publisher_resumed':
        this.#emit('publisher-resumed', message);
        break;
      case 'replaced':
        this.#emit('replaced', message);
        this.#finish('replaced by a newer publish');
        break;
      case 'server_restarting':
        // Come back after a random spread so a whole audience does not reconnect at once.
        this.retryAfterMs = (message.retry_after_ms || 1000) * (1 + 2 * Math.random());
        this.#finish('the media server is restarting');
        break;
      case 'error':
        this.#emit('signaling-error', message);
        if (message.close) this.#finish(`media server error: ${message.message}`);
        break;
      default:
        break;
    }
  }

  #send(message) {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  }

  #finish(reason, notify = true) {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.pingTimer);
    try {
      this.ws?.close();
    } catch {
      // already closed
    }
    try {
      this.pc?.close();
    } catch {
      // already closed
    }
    if (notify) this.#emit('closed', { reason, retryAfterMs: this.retryAfterMs });
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

/** Exponential backoff with jitter: 0.5 s, 1 s, 2 s ... capped at `maxMs`. */
export class Backoff {
  constructor(baseMs = 500, maxMs = 10000) {
    this.baseMs = baseMs;
    this.maxMs = maxMs;
    this.attempt = 0;
  }

  next() {
    const delay = Math.min(this.maxMs, this.baseMs * 2 ** this.attempt);
    this.attempt += 1;
    return delay / 2 + Math.random() * (delay / 2);
  }

  reset() {
    this.attempt = 0;
  }
}

/** Sums a stat field over the peer connection's reports of `type` and `kind`. */
export async function sumStats(pc, type, kind, field) {
  if (!pc) return 0;
  const report = await pc.getStats();
  let total = 0;
  report.forEach((stat) => {
    if (stat.type === type && (stat.kind ?? stat.mediaType) === kind) total += stat[field] ?? 0;
  });
  return total;
}
