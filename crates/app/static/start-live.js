// Broadcaster page hook: Go live / End live through the JSON API. The camera,
// microphone and media connection arrive in the browser-experience issue; they can
// listen for the `privatehub:live-started` and `privatehub:live-ended` events on
// #broadcaster (detail: the live JSON).
(function () {
  'use strict';
  const stage = document.getElementById('broadcaster');
  const form = document.querySelector('[data-role=live-form]');
  if (!stage || !form) return;
  const status = stage.querySelector('[data-role=status]');
  const errorBox = form.querySelector('[data-role=error]');
  const goLive = form.querySelector('[data-action=go-live]');
  const endLive = form.querySelector('[data-action=end-live]');

  function show(live, isLive) {
    stage.dataset.state = isLive ? 'live' : 'offline';
    if (isLive) stage.dataset.liveId = String(live.id); else delete stage.dataset.liveId;
    status.textContent = isLive ? 'You are live: ' + live.title : 'You are offline.';
    goLive.disabled = isLive;
    endLive.disabled = !isLive;
    stage.dispatchEvent(new CustomEvent(isLive ? 'privatehub:live-started' : 'privatehub:live-ended', { detail: live }));
  }

  goLive.disabled = stage.dataset.state === 'live';
  endLive.disabled = stage.dataset.state !== 'live';

  form.addEventListener('submit', async function (event) {
    event.preventDefault();
    errorBox.textContent = '';
    goLive.disabled = true;
    try {
      const title = form.elements.title.value.trim();
      show(await window.PrivateHub.api('POST', '/api/lives/start', title ? { title: title } : {}), true);
    } catch (error) {
      errorBox.textContent = error.message;
      goLive.disabled = false;
    }
  });

  endLive.addEventListener('click', async function () {
    errorBox.textContent = '';
    endLive.disabled = true;
    try {
      show(await window.PrivateHub.api('POST', '/api/lives/stop'), false);
    } catch (error) {
      errorBox.textContent = error.message;
      endLive.disabled = false;
    }
  });
})();
