// Viewer page hook. The real player (media connection, chat, viewer count) replaces
// this in the browser-experience issue; it mounts into #player, whose data-* holds
// the channel, the live id (when live) and the media server URL.
(function () {
  'use strict';
  const stage = document.getElementById('player');
  if (!stage) return;
  const status = stage.querySelector('[data-role=status]');

  // Until the real-time socket exists, poll the live's state.
  async function refresh() {
    try {
      const live = await window.PrivateHub.api('GET', '/api/lives/' + encodeURIComponent(stage.dataset.username));
      stage.dataset.state = 'live';
      stage.dataset.liveId = String(live.id);
      status.textContent = 'Live · ' + live.viewers + ' watching';
    } catch (error) {
      if (error.status === 404) {
        stage.dataset.state = 'offline';
        delete stage.dataset.liveId;
        status.textContent = stage.dataset.username + ' is offline.';
      }
    }
  }
  window.setInterval(refresh, 10000);
})();
