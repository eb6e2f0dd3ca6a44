// Shared browser helpers and the account forms. Loaded on every page.
// No inline scripts anywhere: the CSP is `script-src 'self'`.
(function () {
  'use strict';

  // Calls the JSON API with the session cookie. Resolves with the parsed body
  // (null for 204); rejects with an Error carrying .status and .code.
  async function api(method, path, body) {
    const options = { method: method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
    if (body !== undefined) {
      options.headers['Content-Type'] = 'application/json';
      options.body = JSON.stringify(body);
    }
    const response = await fetch(path, options);
    let data = null;
    if (response.status !== 204) {
      try { data = await response.json(); } catch (_) { data = null; }
    }
    if (!response.ok) {
      const detail = data && data.error ? data.error : { code: 'http_' + response.status, message: 'Request failed (' + response.status + ')' };
      const error = new Error(detail.message);
      error.status = response.status;
      error.code = detail.code;
      throw error;
    }
    return data;
  }

  // Only same-site paths are followed after logging in (no open redirect).
  // Where to go after signing in: only a path on this site. The URL parser decides, not
  // string checks: it drops tabs and newlines and reads backslashes as slashes, so
  // "/\t/evil.example" would otherwise leave the site.
  function safeNext(raw) {
    if (!raw) return null;
    let url;
    try {
      url = new URL(raw, window.location.origin);
    } catch (error) {
      return null;
    }
    if (url.origin !== window.location.origin) return null;
    return url.pathname + url.search + url.hash;
  }

  window.PrivateHub = { api: api };

  document.querySelectorAll('form[data-auth-form]').forEach(function (form) {
    form.addEventListener('submit', async function (event) {
      event.preventDefault();
      const errorBox = form.querySelector('[data-role=error]');
      const button = form.querySelector('button[type=submit]');
      errorBox.textContent = '';
      button.disabled = true;
      try {
        await api('POST', form.dataset.endpoint, {
          username: form.elements.username.value,
          password: form.elements.password.value
        });
        const next = safeNext(new URLSearchParams(window.location.search).get('next'));
        window.location.assign(next || '/');
      } catch (error) {
        errorBox.textContent = error.message;
        button.disabled = false;
      }
    });
  });

  // Times rendered as RFC 3339 by the server, shown in the visitor's own time zone.
  document.querySelectorAll('time[data-format=time]').forEach(function (element) {
    const date = new Date(element.getAttribute('datetime'));
    if (!Number.isNaN(date.getTime())) {
      element.textContent = date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
      element.title = date.toLocaleString();
    }
  });

  // Dates and times (a video's start), likewise.
  document.querySelectorAll('time[data-format=datetime]').forEach(function (element) {
    const date = new Date(element.getAttribute('datetime'));
    if (!Number.isNaN(date.getTime())) {
      element.textContent = date.toLocaleString([], { dateStyle: 'medium', timeStyle: 'short' });
    }
  });

  document.querySelectorAll('[data-action=logout]').forEach(function (button) {
    button.addEventListener('click', async function () {
      button.disabled = true;
      try { await api('POST', '/api/auth/logout'); } finally { window.location.assign('/'); }
    });
  });
})();
