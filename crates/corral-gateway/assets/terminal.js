// terminal.js: xterm.js over the attach WebSocket (binary frames carry terminal bytes both
// ways; text frames carry resize requests and the exit status). Reconnects by itself after
// a network blip while the sandbox runs.
'use strict';

(function () {
  const el = document.getElementById('terminal');
  if (!el) return;
  const { api } = window.corral;
  const id = encodeURIComponent(el.dataset.sandbox);
  const status = document.getElementById('terminal-status');
  const setStatus = (text) => { status.textContent = text; };
  const dark = window.matchMedia('(prefers-color-scheme: dark)').matches;
  const term = new window.Terminal({
    cursorBlink: true,
    // Also renders the screen as text for screen readers.
    screenReaderMode: true,
    fontFamily: 'ui-monospace, "DejaVu Sans Mono", monospace',
    fontSize: 14,
    theme: dark ? { background: '#111418', foreground: '#e6e6e6' }
      : { background: '#ffffff', foreground: '#1b1f24', cursor: '#1b1f24', selectionBackground: '#b3d4fc' },
  });
  const fit = new window.FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(el);
  // The canvas renderer needs no <style> elements, which the CSP would refuse.
  term.loadAddon(new window.CanvasAddon.CanvasAddon());
  fit.fit();

  const encoder = new TextEncoder();
  let socket = null;
  let delay = 1000;
  let exited = false;

  const send = (bytes) => {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(bytes);
  };
  term.onData((data) => send(encoder.encode(data)));
  term.onBinary((data) => send(Uint8Array.from(data, (c) => c.charCodeAt(0))));
  term.onResize(({ cols, rows }) => {
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify({ type: 'resize', cols, rows }));
    }
  });
  new ResizeObserver(() => fit.fit()).observe(el);
  // Ctrl+Shift+C copies the selection (Ctrl+C goes to the program, as in any terminal);
  // pasting is the browser's own (Ctrl+Shift+V, or Ctrl+V, or the context menu).
  term.attachCustomKeyEventHandler((ev) => {
    if (ev.type === 'keydown' && ev.ctrlKey && ev.shiftKey && ev.code === 'KeyC') {
      const selection = term.getSelection();
      if (selection && navigator.clipboard) navigator.clipboard.writeText(selection);
      return false;
    }
    return true;
  });

  async function closed() {
    if (exited) return;
    const record = await api('GET', `/api/v1/sandboxes/${id}`);
    if (record.ok && record.body.state !== 'running') {
      setStatus(`This session is ${record.body.state}. Start it from Open, then reload this page.`);
      return;
    }
    if (!record.ok && record.status !== 0) {
      setStatus(record.message);
      return;
    }
    setStatus(`Disconnected; reconnecting in ${delay / 1000} s…`);
    setTimeout(connect, delay);
    delay = Math.min(delay * 2, 10000);
  }

  function connect() {
    const scheme = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
    const url = `${scheme}//${window.location.host}/api/v1/sandboxes/${id}/attach?cols=${term.cols}&rows=${term.rows}`;
    socket = new WebSocket(url);
    socket.binaryType = 'arraybuffer';
    socket.onopen = () => {
      delay = 1000;
      setStatus('Connected.');
      term.focus();
    };
    socket.onmessage = (message) => {
      if (typeof message.data !== 'string') {
        term.write(new Uint8Array(message.data));
        return;
      }
      let frame = null;
      try { frame = JSON.parse(message.data); } catch (_) { return; }
      if (frame && frame.type === 'exit') {
        exited = true;
        setStatus(`The shell ended (exit code ${frame.code}). Reload the page for a new one.`);
      }
    };
    socket.onclose = closed;
  }

  connect();
})();
