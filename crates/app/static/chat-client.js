// The app's real-time socket (`/ws` on the app) and the chat panel built on it.
// Messages are defined in crates/protocol/src/app_socket.rs. Chat text is always
// rendered with textContent, never as HTML.

import { Backoff } from './media-client.js';

const PING_INTERVAL_MS = 20000;
const PONG_TIMEOUT_MS = 10000;
const MAX_CHAT_CHARS = 500;
const MAX_RENDERED_MESSAGES = 200;

/**
 * A self-reconnecting socket joined to one channel's room. Every server message is
 * dispatched as a `CustomEvent` named after its `type` (`chat:message`, `live:viewers`,
 * ...) with the message as `detail`. Also emits `open` and `down` (socket lost, a
 * reconnect is scheduled; `detail.restarting` after a `server:restarting` notice).
 */
export class AppSocket extends EventTarget {
  constructor(channel) {
    super();
    this.channel = channel;
    this.ws = null;
    this.backoff = new Backoff(500, 10000);
    this.pingTimer = null;
    this.pongTimer = null;
    this.stopped = false;
    this.restartDelayMs = undefined;
    this.serverRestarting = false;
  }

  connect() {
    if (this.stopped) return;
    const url = new URL('/ws', window.location.href);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.addEventListener('open', () => {
      this.backoff.reset();
      this.serverRestarting = false;
      this.send({ type: 'user:online' });
      this.send({ type: 'live:join', channel: this.channel });
      this.pingTimer = setInterval(() => this.#ping(), PING_INTERVAL_MS);
      this.#emit('open', {});
    });
    ws.addEventListener('message', (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message.type === 'pong') {
        clearTimeout(this.pongTimer);
        return;
      }
      if (message.type === 'server:restarting') {
        // The close follows; come back after a random spread so a whole audience does
        // not reconnect in the same instant.
        this.restartDelayMs = (message.retry_after_ms || 1000) * (1 + 2 * Math.random());
        this.serverRestarting = true;
      }
      if (typeof message.type === 'string') this.#emit(message.type, message);
    });
    ws.addEventListener('close', () => {
      clearInterval(this.pingTimer);
      clearTimeout(this.pongTimer);
      if (this.ws !== ws || this.stopped) return;
      this.ws = null;
      const delay = this.restartDelayMs ?? this.backoff.next();
      this.restartDelayMs = undefined;
      this.#emit('down', { retryInMs: delay, restarting: this.serverRestarting });
      setTimeout(() => this.connect(), delay);
    });
    ws.addEventListener('error', () => {});
  }

  send(message) {
    if (this.ws?.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(message));
    return true;
  }

  close() {
    this.stopped = true;
    this.ws?.close();
  }

  #ping() {
    if (!this.send({ type: 'ping' })) return;
    clearTimeout(this.pongTimer);
    this.pongTimer = setTimeout(() => this.ws?.close(), PONG_TIMEOUT_MS);
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

/** Shows the room's viewer count in `element` (`data-count` holds the number). */
export function mountViewerCount(element, socket) {
  if (!element) return;
  const show = (count) => {
    element.dataset.count = String(count);
    element.textContent = `${count} ${count === 1 ? 'viewer' : 'viewers'}`;
  };
  socket.addEventListener('live:viewers', (event) => show(event.detail.count));
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

const LINK_PATTERN = /\bhttps?:\/\/[^\s<>"'`]+/g;

/**
 * Appends `text` to `node` as text nodes, turning http(s) URLs into links. Built with
 * DOM calls only: nothing in `text` is ever parsed as HTML.
 */
function appendTextWithLinks(node, text) {
  let last = 0;
  for (const match of text.matchAll(LINK_PATTERN)) {
    const raw = match[0].replace(/[.,:;!?)\]}]+$/, '');
    const start = match.index;
    if (start > last) node.append(text.slice(last, start));
    let url = null;
    try {
      url = new URL(raw);
    } catch {
      url = null;
    }
    if (url && (url.protocol === 'http:' || url.protocol === 'https:')) {
      const link = document.createElement('a');
      link.href = url.href;
      link.textContent = raw;
      link.rel = 'noopener noreferrer nofollow ugc';
      link.target = '_blank';
      node.append(link);
    } else {
      node.append(raw);
    }
    last = start + raw.length;
  }
  if (last < text.length) node.append(text.slice(last));
}

function timeLabel(ms) {
  return new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

/**
 * The chat panel inside `root`: `.chat-log` list, `form.chat-form` with `.chat-input`
 * and `.chat-send`, and `.chat-status` for notices. The channel owner gets delete and
 * ban buttons on other people's messages.
 */
export function mountChat(root, socket) {
  const log = root.querySelector('#chat-log');
  const form = root.querySelector('#chat-form');
  const input = root.querySelector('#chat-input');
  const sendButton = root.querySelector('#chat-send');
  const status = root.querySelector('#chat-status');
  const state = { me: null, isOwner: false, live: false, statusTimer: null, historyLoading: false };

  const setStatus = (text, kind = 'info', ttlMs = 0) => {
    clearTimeout(state.statusTimer);
    status.textContent = text;
    status.dataset.kind = kind;
    status.hidden = !text;
    if (ttlMs > 0) state.statusTimer = setTimeout(() => setStatus(''), ttlMs);
  };

  const updateForm = () => {
    const canChat = Boolean(state.me) && state.live;
    input.disabled = !canChat;
    sendButton.disabled = !canChat;
    if (!state.me) input.placeholder = 'Sign in to chat';
    else if (!state.live) input.placeholder = 'Chat is closed while offline';
    else input.placeholder = 'Say something…';
  };

  const atBottom = () => log.scrollHeight - log.scrollTop - log.clientHeight < 40;

  const render = (message) => {
    if (log.querySelector(`[data-id="${Number(message.id)}"]`)) return;
    const item = el('li', 'chat-line');
    item.dataset.id = String(message.id);
    item.dataset.user = message.username;
    // Our own line stays marked until the server says it is saved (`chat:stored`).
    if (message.username === state.me && !state.historyLoading) {
      item.classList.add('is-pending');
      item.title = 'Sending…';
    }
    const meta = el('span', 'chat-meta');
    meta.append(el('time', 'chat-time', timeLabel(message.sent_at_ms)));
    const who = el('strong', 'chat-user', message.username);
    if (message.username === socket.channel) who.classList.add('is-broadcaster');
    meta.append(who);
    const body = el('span', 'chat-text');
    appendTextWithLinks(body, message.text);
    item.append(meta, body);
    if (state.isOwner && message.username !== state.me) {
      const tools = el('span', 'chat-tools');
      const del = el('button', 'chat-tool', 'Delete');
      del.type = 'button';
      del.title = 'Delete this message';
      del.addEventListener('click', () => socket.send({ type: 'chat:delete', message_id: message.id }));
      const ban = el('button', 'chat-tool danger', 'Ban');
      ban.type = 'button';
      ban.title = `Ban ${message.username} from this chat`;
      ban.addEventListener('click', () => {
        if (window.confirm(`Ban ${message.username}? Their messages will be removed.`)) {
          socket.send({ type: 'chat:ban', username: message.username });
        }
      });
      tools.append(del, ban);
      item.append(tools);
    }
    const stick = atBottom();
    log.append(item);
    while (log.children.length > MAX_RENDERED_MESSAGES) log.firstElementChild.remove();
    if (stick) log.scrollTop = log.scrollHeight;
  };

  socket.addEventListener('user:online', (event) => {
    state.me = event.detail.username;
    updateForm();
  });
  socket.addEventListener('live:state', (event) => {
    state.isOwner = event.detail.is_owner;
    state.live = Boolean(event.detail.live);
    updateForm();
  });
  socket.addEventListener('live:started', () => {
    state.live = true;
    updateForm();
  });
  socket.addEventListener('live:ended', () => {
    state.live = false;
    updateForm();
    setStatus('The live has ended.');
  });
  socket.addEventListener('chat:history', (event) => {
    log.replaceChildren();
    state.historyLoading = true;
    for (const message of event.detail.messages) render(message);
    state.historyLoading = false;
    log.scrollTop = log.scrollHeight;
  });
  socket.addEventListener('chat:message', (event) => render(event.detail.message));
  socket.addEventListener('chat:stored', (event) => {
    const line = log.querySelector(`[data-id="${Number(event.detail.message_id)}"]`);
    if (line) {
      line.classList.remove('is-pending');
      line.removeAttribute('title');
    }
  });
  socket.addEventListener('chat:deleted', (event) => {
    for (const id of event.detail.message_ids) {
      log.querySelector(`[data-id="${Number(id)}"]`)?.remove();
    }
  });
  socket.addEventListener('chat:banned', (event) => {
    if (event.detail.username === state.me) {
      setStatus('You were banned from this chat.', 'error');
    } else if (state.isOwner) {
      setStatus(`${event.detail.username} was banned.`, 'info', 4000);
    }
  });
  socket.addEventListener('error', (event) => {
    const { code, message, retry_after_ms: retryMs } = event.detail;
    if (code === 'rate_limited' && retryMs) {
      setStatus(`${message} Try again in ${Math.ceil(retryMs / 1000)} s.`, 'warn', retryMs);
    } else {
      setStatus(message, code === 'banned' ? 'error' : 'warn', 6000);
    }
  });
  socket.addEventListener('down', (event) => {
    const text = event.detail.restarting
      ? 'The server is restarting, reconnecting…'
      : 'Chat connection lost, reconnecting…';
    setStatus(text, 'warn');
    input.disabled = true;
    sendButton.disabled = true;
  });
  socket.addEventListener('open', () => setStatus(''));

  input.maxLength = MAX_CHAT_CHARS;
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    if (socket.send({ type: 'chat:send', text })) {
      input.value = '';
    } else {
      setStatus('Not connected, try again in a moment.', 'warn', 3000);
    }
    input.focus();
  });
  updateForm();
}
