// terminal.js: xterm.js over the attach WebSocket (binary frames carry terminal bytes both
// ways; text frames carry resize requests and the exit status).
//
// Reconnecting: a socket that closes without an exit frame while the sandbox still runs was
// cut (a network blip, a proxy's timeout, the laptop's sleep). The page says so and opens a
// new one, with growing pauses and a bounded number of tries; the new connection runs a new
// shell (the gateway ends the old one when its socket goes), sized like the terminal. After an
// exit frame the shell ended on purpose: no reconnect, but a button for a new shell.
//
// Copy and paste: Ctrl+Shift+C (or the Copy button) puts the selection on the clipboard
// through the Clipboard API, or, where the browser offers none (a page over plain HTTP), the
// browser's own copy command, which xterm.js answers with the selection. Pasting is the
// browser's own (Ctrl+V, Ctrl+Shift+V, Shift+Insert, the context menu: a paste event that
// needs no permission); the Paste button reads the clipboard, which the browser may refuse.
'use strict';

(function () {
  const el = document.getElementById('terminal');
  if (!el) return;
  const { api } = window.corral;
  const id = encodeURIComponent(el.dataset.sandbox);
  const status = document.getElementById('terminal-status');
  const setStatus = (text) => { status.textContent = text; };
  const clipboardStatus = document.getElementById('clipboard-status');
  const tellClipboard = (text) => { clipboardStatus.textContent = text; };
  const reconnectButton = document.getElementById('terminal-reconnect');
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

  // Tries after a cut before asking the person; pauses of 1, 2, 4, 8, 10 and 10 s.
  const MAX_TRIES = 6;
  const FIRST_DELAY = 1000;
  const RECONNECTED = 'Reconnected. This is a new shell: the one before ended when the connection dropped.';
  const encoder = new TextEncoder();
  let socket = null;
  let delay = FIRST_DELAY;
  let tries = 0;
  // What the status line says once the next connection opens.
  let greeting = 'Connected.';

  const open = () => socket && socket.readyState === WebSocket.OPEN;
  const send = (bytes) => { if (open()) socket.send(bytes); };
  const sendSize = () => {
    if (open()) socket.send(JSON.stringify({ type: 'resize', cols: term.cols, rows: term.rows }));
  };
  term.onData((data) => send(encoder.encode(data)));
  term.onBinary((data) => send(Uint8Array.from(data, (c) => c.charCodeAt(0))));
  term.onResize(sendSize);
  new ResizeObserver(() => fit.fit()).observe(el);

  async function copySelection() {
    const text = term.getSelection();
    if (!text) {
      tellClipboard('Nothing is selected: select text in the terminal with the mouse first.');
      return;
    }
    try {
      await navigator.clipboard.writeText(text);
    } catch (_) {
      // No Clipboard API here, or it was refused: the browser's copy command fires a copy
      // event at the focused terminal, which puts the selection on the clipboard.
      term.focus();
      if (!document.execCommand('copy')) {
        tellClipboard('The browser did not let the page copy: use its Copy menu item instead.');
        return;
      }
    }
    tellClipboard('Copied.');
  }

  async function pasteClipboard() {
    let text = null;
    try {
      text = await navigator.clipboard.readText();
    } catch (_) {
      tellClipboard('The browser does not let the page read the clipboard (it asks only on https pages, '
        + 'and may have been refused): paste with Ctrl+V, Ctrl+Shift+V or the right-click menu.');
    }
    if (text) {
      term.paste(text);
      tellClipboard('');
    }
    term.focus();
  }

  // Ctrl+Shift+C copies the selection (Ctrl+C goes to the program, as in any terminal);
  // Ctrl+V and Ctrl+Shift+V are left to the browser, which pastes.
  term.attachCustomKeyEventHandler((ev) => {
    if (!ev.ctrlKey || ev.altKey || ev.metaKey) return true;
    if (ev.shiftKey && ev.code === 'KeyC') {
      // Also keeps the browser from opening its developer tools.
      ev.preventDefault();
      if (ev.type === 'keydown') copySelection();
      return false;
    }
    return ev.code !== 'KeyV';
  });
  document.getElementById('terminal-copy').addEventListener('click', copySelection);
  document.getElementById('terminal-paste').addEventListener('click', pasteClipboard);

  function offerReconnect(message, label, then) {
    setStatus(message);
    reconnectButton.textContent = label;
    reconnectButton.dataset.greeting = then;
    reconnectButton.hidden = false;
  }
  reconnectButton.addEventListener('click', () => {
    reconnectButton.hidden = true;
    tries = 0;
    delay = FIRST_DELAY;
    greeting = reconnectButton.dataset.greeting;
    connect();
  });

  // The socket closed without an exit frame: reconnect while the sandbox runs.
  async function cut() {
    const record = await api('GET', `/api/v1/sandboxes/${id}`);
    if (record.ok && record.body.state !== 'running') {
      setStatus(`This session is ${record.body.state}. Start it from Open, then reload this page.`);
      return;
    }
    if (!record.ok && record.status !== 0) {
      setStatus(record.message);
      return;
    }
    if (tries >= MAX_TRIES) {
      offerReconnect(`The connection dropped and ${MAX_TRIES} tries to reconnect failed. `
        + 'Check your network, then reconnect.', 'Reconnect', RECONNECTED);
      return;
    }
    tries += 1;
    greeting = RECONNECTED;
    setStatus(`The connection dropped; reconnecting in ${delay / 1000} s (try ${tries} of ${MAX_TRIES})…`);
    setTimeout(connect, delay);
    delay = Math.min(delay * 2, 10000);
  }

  function connect() {
    const scheme = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
    fit.fit();
    const url = `${scheme}//${window.location.host}/api/v1/sandboxes/${id}/attach?cols=${term.cols}&rows=${term.rows}`;
    let exited = false;
    const current = new WebSocket(url);
    socket = current;
    current.binaryType = 'arraybuffer';
    current.onopen = () => {
      tries = 0;
      delay = FIRST_DELAY;
      // The size in the URL was the terminal's when connecting; it may have changed since.
      sendSize();
      if (greeting !== 'Connected.') term.write('\r\n\x1b[2m[a new shell]\x1b[0m\r\n');
      setStatus(greeting);
      term.focus();
    };
    current.onmessage = (message) => {
      if (typeof message.data !== 'string') {
        term.write(new Uint8Array(message.data));
        return;
      }
      let frame = null;
      try { frame = JSON.parse(message.data); } catch (_) { return; }
      if (frame && frame.type === 'exit') {
        exited = true;
        offerReconnect(`The shell ended (exit code ${frame.code}).`, 'New shell', 'Connected to a new shell.');
      }
    };
    current.onclose = () => {
      if (!exited && socket === current) cut();
    };
  }

  connect();
})();
