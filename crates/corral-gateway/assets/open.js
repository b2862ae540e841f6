// open.js: the "Opening" page. Starts the sandbox through the API, shows each step as the
// sandbox's recorded state moves (starting, then cloning for a repo session's first start,
// then ready), and opens the agent: the terminal for a shell, else the agent's session host
// through a one-time ticket.
'use strict';

(function () {
  const root = document.getElementById('progress');
  if (!root) return;
  const { api } = window.corral;
  const id = encodeURIComponent(root.dataset.sandbox);
  const agent = root.dataset.agent;
  const hasRepo = root.dataset.repo !== undefined;
  const progress = document.getElementById('open-progress');
  const shared = root.dataset.shared !== undefined;
  const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });
  const step = (name, status) => {
    const el = document.getElementById(`step-${name}`);
    if (el) el.dataset.status = status;
  };

  async function fail(message, hint) {
    for (const el of root.querySelectorAll('[data-status="active"]')) el.dataset.status = 'failed';
    const error = document.getElementById('open-error');
    error.textContent = message;
    error.hidden = false;
    if (hint) {
      const p = document.getElementById('open-hint');
      p.textContent = hint;
      p.hidden = false;
    }
    const log = await fetch(`/api/v1/sandboxes/${id}/logs`, { credentials: 'same-origin' })
      .then((r) => (r.ok ? r.text() : ''))
      .catch(() => '');
    if (log.trim()) {
      const pre = document.getElementById('open-log');
      pre.textContent = log.trimEnd().split('\n').slice(-20).join('\n');
      pre.hidden = false;
    }
  }

  async function watchStart(done) {
    while (!done.value) {
      const r = await api('GET', `/api/v1/sandboxes/${id}`);
      if (r.ok && r.body.state === 'running' && !done.value) {
        step('start', 'done');
        step('clone', 'active');
      }
      // What the start is doing right now (git's clone progress, for a repo session).
      if (r.ok && !done.value) progress.textContent = r.body.progress || '';
      await sleep(500);
    }
  }

  // A session shared with the viewer is not theirs to start: its session host wakes it.
  async function openShared() {
    for (const name of ['start', 'clone', 'ready']) step(name, 'done');
    const record = await api('GET', `/api/v1/sandboxes/${id}`);
    if (!record.ok) {
      await fail(record.message, 'Ask its owner to share it with you again.');
      return;
    }
    await openAgent(record.body);
  }

  async function run() {
    if (shared) {
      await openShared();
      return;
    }
    step('start', 'active');
    const done = { value: false };
    watchStart(done);
    const started = await api('POST', `/api/v1/sandboxes/${id}/start`);
    done.value = true;
    progress.textContent = '';
    if (!started.ok) {
      const cloneFailed = started.body && started.body.error && started.body.error.code === 'clone_failed';
      if (cloneFailed) {
        // The sandbox did start: it was the clone inside it that failed.
        step('start', 'done');
        step('clone', 'active');
      }
      await fail(started.message, cloneFailed
        ? 'Check the repository URL and branch, and that the profile allows its host (see Activity for a denial).'
        : '');
      return;
    }
    if (started.body.state !== 'running') {
      const code = started.body.exit_code === null ? '' : ` with exit code ${started.body.exit_code}`;
      await fail(`The sandbox ended at once${code}. Its log is below.`);
      return;
    }
    step('start', 'done');
    step('clone', 'done');
    step('ready', 'done');
    await openAgent(started.body);
  }

  // Opens the agent of the sandbox `record` describes: its session host through a one-time
  // ticket, or the terminal for an agent with no page.
  async function openAgent(record) {
    step('open', 'active');
    // An agent with no port (a shell) has no page of its own: its sandbox's `url` is null
    // (a gateway without session hosts has no `url` at all; then only the shell has none).
    const noPage = 'url' in record ? record.url === null : agent === 'shell';
    if (noPage && shared) {
      await fail(`This session's agent (${agent}) has no page to open, and its terminal is its owner's alone.`);
      return;
    }
    if (noPage) {
      window.location.assign(`/sessions/${id}/terminal`);
      return;
    }
    const ticket = await api('POST', `/api/v1/sandboxes/${id}/ticket`);
    if (ticket.ok && ticket.body && ticket.body.url) {
      step('open', 'done');
      window.location.assign(ticket.body.url);
    } else if (ticket.status === 404 && ticket.message === 'no such endpoint') {
      await fail(`This gateway cannot show ${agent} in the browser (it serves no session hosts).`,
        'Use the Terminal tab to work in the sandbox.');
    } else {
      await fail(ticket.message || `${agent} has no page to open.`, 'Use the Terminal tab instead.');
    }
  }

  run();
})();
