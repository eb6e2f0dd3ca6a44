// The stream settings page: reveal, copy and rotate the WHIP stream key, and turn the
// recording of lives on or off.
// The key is only fetched when the owner asks to see or copy it.

const keyInput = document.getElementById('stream-key');
const revealButton = document.getElementById('reveal-key');
const rotateButton = document.getElementById('rotate-key');
const status = document.getElementById('stream-key-status');

function say(text, kind) {
  status.textContent = text;
  status.dataset.kind = kind || '';
  status.hidden = !text;
}

async function loadKey(method, path) {
  const body = await window.PrivateHub.api(method, path);
  keyInput.value = body.stream_key;
  document.getElementById('whip-url').value = body.whip_url;
  return body;
}

async function ensureKey() {
  if (!keyInput.value) await loadKey('GET', '/api/me/stream-key');
}

revealButton.addEventListener('click', async function () {
  try {
    await ensureKey();
    const show = keyInput.type === 'password';
    keyInput.type = show ? 'text' : 'password';
    revealButton.textContent = show ? 'Hide' : 'Show';
    revealButton.setAttribute('aria-pressed', String(show));
  } catch (error) {
    say('Could not load your stream key: ' + error.message, 'error');
  }
});

document.querySelectorAll('[data-copy]').forEach(function (button) {
  button.addEventListener('click', async function () {
    const target = document.getElementById(button.dataset.copy);
    try {
      if (target === keyInput) await ensureKey();
      await navigator.clipboard.writeText(target.value);
      say('Copied.', '');
    } catch (error) {
      // Clipboard access can be refused (insecure origin, permissions): select instead.
      target.type = 'text';
      target.select();
      say('Press Ctrl+C to copy.', 'warn');
    }
  });
});

rotateButton.addEventListener('click', async function () {
  if (!window.confirm('Rotate your stream key? The old key stops working at once and a stream running with it ends. You will need to paste the new key into OBS.')) {
    return;
  }
  rotateButton.disabled = true;
  try {
    await loadKey('POST', '/api/me/stream-key/rotate');
    say('New key created. Paste it into OBS (Settings → Stream → Bearer Token).', 'warn');
  } catch (error) {
    say('Could not rotate the key: ' + error.message, 'error');
  } finally {
    rotateButton.disabled = false;
  }
});

// Recording of lives (replays): saved as soon as it is ticked or unticked.
const recordLives = document.getElementById('record-lives');
const recordStatus = document.getElementById('record-lives-status');

recordLives.addEventListener('change', async function () {
  const wanted = recordLives.checked;
  recordLives.disabled = true;
  try {
    const body = await window.PrivateHub.api('PUT', '/api/account/recording', { enabled: wanted });
    recordLives.checked = body.enabled;
    recordStatus.textContent = body.enabled
      ? 'Your next lives will be recorded.'
      : 'Your next lives will not be recorded.';
    recordStatus.dataset.kind = '';
  } catch (error) {
    recordLives.checked = !wanted;
    recordStatus.textContent = 'Could not save the setting: ' + error.message;
    recordStatus.dataset.kind = 'error';
  } finally {
    recordStatus.hidden = false;
    recordLives.disabled = false;
  }
});
