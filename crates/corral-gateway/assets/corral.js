// corral.js: what every page of the gateway shares. Loaded as a file (the Content-Security-
// Policy forbids inline scripts): calls to the JSON API with the page's CSRF token, error
// messages from the API shown where people look, JSON forms, the session picker, and htmx
// list refreshes that keep keyboard focus.
'use strict';

(function () {
  const csrf = () => {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : '';
  };

  // Calls the API; resolves to {ok, status, body, message} and never throws.
  async function api(method, path, body) {
    const headers = { 'X-CSRF-Token': csrf() };
    const init = { method, headers, credentials: 'same-origin' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (e) {
      return { ok: false, status: 0, body: null,
        message: 'Cannot reach the gateway. Check your connection and try again.' };
    }
    const text = await response.text();
    let parsed = null;
    try { parsed = text ? JSON.parse(text) : null; } catch (e) { parsed = null; }
    let message = '';
    if (!response.ok) {
      message = parsed && parsed.error ? parsed.error.message
        : `The gateway answered ${response.status}; try again, or see its log.`;
    }
    return { ok: response.ok, status: response.status, body: parsed, message };
  }

  function flash(message) {
    const el = document.getElementById('flash');
    if (!el) return;
    el.textContent = message;
    el.hidden = !message;
  }

  const refresh = () => {
    if (window.htmx) window.htmx.trigger(document.body, 'corral:refresh');
  };

  window.corral = { api, flash, csrf, refresh };

  // htmx: API errors in the flash area; successful actions refresh the lists.
  document.addEventListener('htmx:responseError', (e) => {
    let message = `The gateway answered ${e.detail.xhr.status}.`;
    try { message = JSON.parse(e.detail.xhr.responseText).error.message; } catch (_) { /* not JSON */ }
    flash(message);
  });
  document.addEventListener('htmx:sendError', () => {
    flash('Cannot reach the gateway. Check your connection; the page retries by itself.');
  });
  document.addEventListener('htmx:afterRequest', (e) => {
    if (e.detail.successful && e.detail.elt.hasAttribute('data-refresh')) {
      flash('');
      refresh();
    }
  });
  // A refreshed list that did not change is not swapped, and one that did keeps the
  // keyboard focus on the same control.
  const last = new WeakMap();
  document.addEventListener('htmx:beforeSwap', (e) => {
    const target = e.detail.target;
    const text = e.detail.serverResponse;
    if (last.get(target) === text) {
      e.detail.shouldSwap = false;
      return;
    }
    last.set(target, text);
    const active = document.activeElement;
    target.dataset.focus = active && target.contains(active) && active.id ? active.id : '';
  });
  document.addEventListener('htmx:afterSwap', (e) => {
    const id = e.detail.target.dataset.focus;
    const el = id && document.getElementById(id);
    if (el) el.focus();
  });

  // Form fields as JSON: empty fields left out, text trimmed (passwords kept as typed).
  function fields(form) {
    const out = {};
    for (const el of form.elements) {
      if (!el.name || el.disabled) continue;
      if ((el.type === 'radio' || el.type === 'checkbox') && !el.checked) continue;
      const value = el.type === 'password' ? el.value : el.value.trim();
      if (value !== '') out[el.name] = value;
    }
    return out;
  }

  function showResult(box, message, isError, token) {
    box.replaceChildren();
    const p = document.createElement('p');
    p.className = isError ? 'error' : 'ok';
    p.setAttribute('role', isError ? 'alert' : 'status');
    p.textContent = message;
    box.append(p);
    if (token) {
      const code = document.createElement('code');
      code.className = 'token';
      code.textContent = token;
      const note = document.createElement('p');
      note.textContent = 'Copy it now: it is shown only this once.';
      box.append(code, note);
    }
  }

  async function submitJson(form) {
    const box = document.querySelector(form.dataset.result);
    const response = await api('POST', form.dataset.api, fields(form));
    if (!response.ok) {
      showResult(box, response.message, true);
      return;
    }
    const body = response.body || {};
    const token = body.token && (typeof body.token === 'string' ? body.token : body.token.token);
    const who = body.user ? `Added ${body.user.email}.` : 'Created.';
    showResult(box, who, false, token);
    form.reset();
    refresh();
  }

  // A custom command line and ports, as typed, made into the API's `command` and `ports` by
  // the gateway (shell word rules), or the message that says what to fix.
  async function customCommand(command, ports) {
    const parsed = await api('POST', '/new-session/command', { command: command || '', ports: ports || '' });
    if (!parsed.ok) {
      const code = parsed.body && parsed.body.error ? parsed.body.error.code : '';
      return { error: parsed.message, field: code === 'bad_ports' ? 'ports' : 'command' };
    }
    const out = { command: parsed.body.command };
    if (parsed.body.ports.length) out.ports = parsed.body.ports;
    return out;
  }

  async function createSession(form) {
    const error = document.getElementById('create-error');
    const button = form.querySelector('button[type="submit"]');
    const showError = (message, field) => {
      error.textContent = message;
      error.hidden = false;
      if (field) field.focus();
    };
    error.hidden = true;
    const { command, ports, ...body } = fields(form);
    if (body.branch && !body.repo) {
      showError('A branch needs a repository URL: fill in the URL, or clear the branch for a blank workspace.');
      return;
    }
    button.disabled = true;
    if (body.agent === 'custom') {
      const custom = await customCommand(command, ports);
      if (custom.error) {
        button.disabled = false;
        showError(custom.error, form.elements[custom.field]);
        return;
      }
      Object.assign(body, custom);
    }
    const response = await api('POST', '/api/v1/sandboxes', body);
    button.disabled = false;
    if (!response.ok) {
      // A taken or malformed name is fixed in its field.
      const aboutName = response.status === 409 || /sandbox name/.test(response.message);
      showError(response.message, aboutName ? form.elements.name : null);
      return;
    }
    window.location.assign(`/sessions/${encodeURIComponent(response.body.id)}/open`);
  }

  // The custom command's fields show only when that agent is picked.
  function showCustomFields() {
    const select = document.getElementById('agent');
    const custom = document.getElementById('custom-fields');
    if (select && custom) custom.hidden = select.value !== 'custom';
  }
  document.addEventListener('change', (e) => {
    if (e.target.id === 'agent') showCustomFields();
  });

  document.addEventListener('submit', (e) => {
    const form = e.target;
    if (form.matches('form[data-api]')) {
      e.preventDefault();
      submitJson(form);
    } else if (form.matches('form[data-create]')) {
      e.preventDefault();
      createSession(form);
    }
  });

  // The agents this gateway offers, when it lists them; else the built-in ones stay.
  async function loadAgents() {
    const select = document.getElementById('agent');
    if (!select) return;
    const response = await api('GET', '/api/v1/agents');
    if (!response.ok || !Array.isArray(response.body) || response.body.length === 0) return;
    const current = select.value;
    const custom = select.querySelector('option[value="custom"]');
    select.replaceChildren(...response.body.map((agent) => {
      const option = document.createElement('option');
      option.value = agent.name;
      option.textContent = agent.description ? `${agent.name} — ${agent.description}` : agent.name;
      option.selected = agent.name === current;
      return option;
    }));
    if (custom) {
      select.append(custom);
      custom.selected = current === 'custom';
    }
    showCustomFields();
  }

  const ready = () => {
    showCustomFields();
    loadAgents();
  };
  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', ready);
  } else {
    ready();
  }
})();
