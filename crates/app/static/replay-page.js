// The replay page (`/{username}/videos/{id}`): plays a recording of a past live from
// the media server, with the live's chat beside it shown up to the video's current
// time. The video's URL carries an expiring token: it is fetched again from
// `/api/videos/{id}` before it expires and after a playback error, keeping the position
// and whether it was playing. Chat text is rendered with textContent, never as HTML.

const RENEW_BEFORE_MS = 5 * 60 * 1000;
const MIN_RENEW_DELAY_MS = 30 * 1000;
// Playback errors in a row (less than ERROR_WINDOW_MS apart) before giving up.
const MAX_RECOVERIES = 3;
const ERROR_WINDOW_MS = 60 * 1000;
const RECOVERY_DELAY_MS = 2000;

const page = document.getElementById('replay-page');
const video = document.getElementById('replay-video');
const chatList = document.getElementById('replay-chat');
const statusLine = document.getElementById('replay-status');
const deleteButton = document.getElementById('delete-video');
const channel = page.dataset.channel;
const apiPath = `/api/videos/${encodeURIComponent(page.dataset.videoId)}`;

const state = {
  startedAtMs: 0,
  // { sentAtMs, element }, oldest first; the first `shown` are visible.
  lines: [],
  shown: 0,
  renewTimer: null,
  // Where the video was and whether the viewer wants it playing, kept across a change
  // of URL (setting `src` resets both on the element).
  lastTime: 0,
  wantsPlay: false,
  switching: false,
  recoveries: 0,
  lastErrorAt: 0,
  recovering: false,
  gone: false,
};

function say(text, kind) {
  statusLine.textContent = text;
  statusLine.dataset.kind = kind || '';
  statusLine.hidden = !text;
}

function setPageState(value) {
  page.dataset.state = value;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** A position in the video as `m:ss` or `h:mm:ss`. */
function offsetLabel(ms) {
  const total = Math.max(0, Math.floor(ms / 1000));
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor(total / 60) % 60;
  const seconds = String(total % 60).padStart(2, '0');
  return hours > 0 ? `${hours}:${String(minutes).padStart(2, '0')}:${seconds}` : `${minutes}:${seconds}`;
}

/** The video's position in seconds (the kept one while a new URL loads). */
function position() {
  return state.switching ? state.lastTime : video.currentTime;
}

function buildChat(messages) {
  const sorted = [...messages].sort((a, b) => a.sent_at_ms - b.sent_at_ms || a.id - b.id);
  const fragment = document.createDocumentFragment();
  state.lines = sorted.map((message) => {
    const item = el('li', 'chat-line');
    item.dataset.id = String(message.id);
    item.dataset.sentAtMs = String(message.sent_at_ms);
    item.hidden = true;
    const offsetMs = message.sent_at_ms - state.startedAtMs;
    const at = el('button', 'chat-time', offsetLabel(offsetMs));
    at.type = 'button';
    at.title = `${new Date(message.sent_at_ms).toLocaleString()}: play from here`;
    at.addEventListener('click', () => {
      video.currentTime = Math.max(0, offsetMs / 1000);
    });
    const who = el('strong', 'chat-user', message.username);
    if (message.username === channel) who.classList.add('is-broadcaster');
    item.append(at, who, el('span', 'chat-text', message.body));
    fragment.append(item);
    return { sentAtMs: message.sent_at_ms, element: item };
  });
  chatList.replaceChildren(fragment);
  state.shown = 0;
  followPlayback(true);
}

/** How many lines were sent at or before `cutoffMs`. */
function countUpTo(cutoffMs) {
  let low = 0;
  let high = state.lines.length;
  while (low < high) {
    const middle = (low + high) >> 1;
    if (state.lines[middle].sentAtMs <= cutoffMs) low = middle + 1;
    else high = middle;
  }
  return low;
}

/** Shows the lines sent up to the video's position (forwards or backwards), newest in view. */
function followPlayback(force) {
  const target = countUpTo(state.startedAtMs + position() * 1000);
  if (target === state.shown && !force) return;
  for (let i = state.shown; i < target; i += 1) state.lines[i].element.hidden = false;
  for (let i = target; i < state.shown; i += 1) state.lines[i].element.hidden = true;
  state.shown = target;
  chatList.dataset.shown = String(target);
  chatList.scrollTop = chatList.scrollHeight;
}

function scheduleRenewal(expiresAtSeconds) {
  clearTimeout(state.renewTimer);
  const delay = Math.max(MIN_RENEW_DELAY_MS, expiresAtSeconds * 1000 - Date.now() - RENEW_BEFORE_MS);
  state.renewTimer = setTimeout(renew, delay);
}

/** Points the video at `url`; with `keep`, at the same position and play state. */
function setSource(url, keep) {
  if (!keep) {
    video.src = url;
    return;
  }
  const time = state.lastTime;
  const resume = state.wantsPlay;
  state.switching = true;
  video.addEventListener(
    'loadedmetadata',
    () => {
      if (time > 0) video.currentTime = time;
      state.switching = false;
      if (resume) video.play().catch(() => {});
    },
    { once: true },
  );
  video.src = url;
}

function apply(data, keep) {
  state.startedAtMs = data.started_at_ms;
  page.dataset.urlExpiresAt = String(data.url_expires_at);
  buildChat(data.chat);
  scheduleRenewal(data.url_expires_at);
  setSource(data.url, keep);
  setPageState('ready');
}

function gone() {
  state.gone = true;
  clearTimeout(state.renewTimer);
  video.removeAttribute('src');
  video.load();
  setPageState('deleted');
  say('This video was deleted.', 'error');
}

async function fetchVideo() {
  return window.PrivateHub.api('GET', apiPath);
}

async function renew() {
  try {
    apply(await fetchVideo(), true);
  } catch (error) {
    if (error.status === 404) gone();
    else state.renewTimer = setTimeout(renew, MIN_RENEW_DELAY_MS);
  }
}

/** After a playback error (most likely an expired URL): a fresh URL, same position. */
async function recover() {
  if (state.recovering || state.gone) return;
  const now = Date.now();
  if (now - state.lastErrorAt > ERROR_WINDOW_MS) state.recoveries = 0;
  state.lastErrorAt = now;
  if (state.recoveries >= MAX_RECOVERIES) {
    setPageState('error');
    say('This video cannot be played right now. Reload the page to try again.', 'error');
    return;
  }
  state.recovering = true;
  if (state.recoveries > 0) {
    await new Promise((resolve) => setTimeout(resolve, RECOVERY_DELAY_MS * state.recoveries));
  }
  state.recoveries += 1;
  say('Reconnecting to the video…', 'warn');
  try {
    apply(await fetchVideo(), true);
  } catch (error) {
    if (error.status === 404) {
      gone();
    } else {
      setPageState('error');
      say(`Could not reload the video: ${error.message}`, 'error');
    }
  } finally {
    state.recovering = false;
  }
}

video.addEventListener('timeupdate', () => {
  if (state.switching) return;
  state.lastTime = video.currentTime;
  followPlayback(false);
});
for (const name of ['seeking', 'seeked']) {
  video.addEventListener(name, () => {
    if (state.switching) return;
    state.lastTime = video.currentTime;
    followPlayback(false);
  });
}
video.addEventListener('play', () => {
  state.wantsPlay = true;
});
video.addEventListener('pause', () => {
  if (!state.switching) state.wantsPlay = false;
});
video.addEventListener('ended', () => {
  state.wantsPlay = false;
});
video.addEventListener('playing', () => {
  if (!state.gone) say('');
});
video.addEventListener('error', () => {
  if (video.error) recover();
});

deleteButton?.addEventListener('click', async () => {
  if (!window.confirm('Delete this video? Its recording is removed for good.')) return;
  deleteButton.disabled = true;
  try {
    await window.PrivateHub.api('DELETE', apiPath);
    gone();
    window.location.assign(`/${encodeURIComponent(channel)}/videos`);
  } catch (error) {
    say(`Could not delete the video: ${error.message}`, 'error');
    deleteButton.disabled = false;
  }
});

async function start() {
  setPageState('loading');
  try {
    apply(await fetchVideo(), false);
  } catch (error) {
    if (error.status === 404) {
      gone();
    } else {
      setPageState('error');
      say(`Could not load the video: ${error.message}`, 'error');
    }
  }
}

start();
