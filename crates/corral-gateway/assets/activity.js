// activity.js: the live stream of a sandbox's policy decisions, read from the audit
// endpoint (NDJSON, newest last) and shown newest first; denials stand out with the
// policy that decided. Filters hide rows; nothing is fetched again for them.
'use strict';

(function () {
  const table = document.getElementById('events');
  if (!table) return;
  const { api } = window.corral;
  const id = encodeURIComponent(table.dataset.sandbox);
  const tbody = table.tBodies[0];
  const status = document.getElementById('activity-status');
  const empty = document.getElementById('events-empty');
  const decisionFilter = document.getElementById('decision-filter');
  const textFilter = document.getElementById('text-filter');
  const LABELS = { allow: 'allowed', deny: 'denied', 'audit-deny': 'would deny' };
  // Lines already shown: a reconnect reads the file from its start again.
  let seen = 0;

  const matches = (tr) => {
    const wanted = decisionFilter.value;
    const decision = tr.dataset.decision === 'audit-deny' ? 'deny' : tr.dataset.decision;
    const text = textFilter.value.trim().toLowerCase();
    return (wanted === 'all' || decision === wanted)
      && (!text || tr.textContent.toLowerCase().includes(text));
  };
  const applyFilters = () => {
    for (const tr of tbody.rows) tr.hidden = !matches(tr);
    empty.hidden = tbody.rows.length > 0;
  };
  decisionFilter.addEventListener('change', applyFilters);
  textFilter.addEventListener('input', applyFilters);

  function add(event) {
    const tr = document.createElement('tr');
    tr.dataset.decision = event.decision;
    tr.className = `decision-${event.decision}`;
    const policies = (event.policies || []).join(', ') + ((event.errors || []).length ? ` (${event.errors.join('; ')})` : '');
    const cells = [
      // The time of day; the full timestamp is the cell's tooltip.
      (event.time || '').replace(/^.*T/, '').replace('Z', ''),
      LABELS[event.decision] || event.decision,
      event.action,
      event.resource,
      policies || '—',
    ];
    for (const text of cells) {
      const td = document.createElement('td');
      td.textContent = text;
      tr.append(td);
    }
    tr.cells[0].title = event.time || '';
    tr.hidden = !matches(tr);
    tbody.prepend(tr);
  }

  async function read(response) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    let line = 0;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let end = buffer.indexOf('\n');
      while (end >= 0) {
        const text = buffer.slice(0, end);
        buffer = buffer.slice(end + 1);
        end = buffer.indexOf('\n');
        if (!text.trim()) continue;
        line += 1;
        if (line <= seen) continue;
        seen = line;
        try { add(JSON.parse(text)); } catch (_) { /* a line being written */ }
      }
      applyFilters();
    }
  }

  async function follow() {
    try {
      const response = await fetch(`/api/v1/sandboxes/${id}/audit?follow=true`, { credentials: 'same-origin' });
      if (!response.ok) {
        const failed = await api('GET', `/api/v1/sandboxes/${id}/audit`);
        status.textContent = failed.message || `The gateway answered ${response.status}.`;
        return;
      }
      status.textContent = 'Following live decisions.';
      await read(response);
    } catch (_) {
      // A network blip: the state check below decides what next.
    }
    applyFilters();
    // The stream ended: the sandbox stopped, or the network blipped. Follow again as soon
    // as it runs (the file is read again from its start; lines already shown are skipped).
    for (;;) {
      const record = await api('GET', `/api/v1/sandboxes/${id}`);
      if (record.ok && record.body.state === 'running') {
        status.textContent = 'Reconnecting…';
        setTimeout(follow, 1000);
        return;
      }
      const state = record.ok ? record.body.state : 'unreachable';
      status.textContent = `The session is ${state}: these are its recorded decisions. New ones appear here once it runs again.`;
      await new Promise((resolve) => { setTimeout(resolve, 5000); });
    }
  }

  follow();
})();
