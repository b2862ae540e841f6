//! `corral sandbox connect NAME [-- CMD...]`: a real terminal in a running sandbox, over the
//! gateway's attach WebSocket. The local terminal is put in raw mode (restored on every way
//! out: the end, an error, a panic, SIGTERM or SIGHUP), a window-size change becomes a resize
//! frame, and corral exits with the remote command's status.

use std::io::{IsTerminal, Read, Write};
use std::os::fd::AsFd;
use std::process::ExitCode;

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use rustix::termios::{OptionalActions, Termios, tcgetattr, tcgetwinsize, tcsetattr};
use serde_json::{Value, json};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::client::Client;

/// Size used when stdin is not a terminal.
const DEFAULT_SIZE: (u16, u16) = (80, 24);

/// Connects to the sandbox `id`, running `command` (the login shell when empty).
pub fn connect(client: &Client, id: &str, command: &[String]) -> anyhow::Result<ExitCode> {
    let interactive = std::io::stdin().is_terminal();
    let (cols, rows) = terminal_size().unwrap_or(DEFAULT_SIZE);
    let mut query = form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("cols", &cols.to_string())
        .append_pair("rows", &rows.to_string());
    if !command.is_empty() {
        query.append_pair("command", &shell_line(command));
    }
    let path = format!("/api/v1/sandboxes/{id}/attach?{}", query.finish());
    let request = client.websocket_request(&path)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(session(request, client.base(), interactive));
    // The stdin reader may be blocked in read(2); it ends with the process.
    runtime.shutdown_background();
    result
}

async fn session(
    request: tokio_tungstenite::tungstenite::handshake::client::Request,
    base: &str,
    interactive: bool,
) -> anyhow::Result<ExitCode> {
    let socket = match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => socket,
        Err(WsError::Http(response)) => {
            let body = response
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            return Err(Client::refusal(response.status().as_u16(), &body));
        }
        Err(e) => bail!("cannot reach the gateway at {base}: {e} (is `corral up` running there?)"),
    };
    // Raw only once connected, so a refusal above prints on a normal terminal.
    let _raw = if interactive {
        Some(RawMode::enter().context("cannot put the terminal in raw mode")?)
    } else {
        None
    };
    let (mut sink, mut stream) = socket.split();
    let mut input = stdin_chunks();
    let mut input_open = true;
    let mut resized = signal(SignalKind::window_change())?;
    let mut terminated = signal(SignalKind::terminate())?;
    let mut hung_up = signal(SignalKind::hangup())?;
    let mut code = None;
    let mut stdout = std::io::stdout();
    loop {
        tokio::select! {
            message = stream.next() => match message {
                Some(Ok(Message::Binary(bytes))) => {
                    stdout.write_all(&bytes).and_then(|()| stdout.flush())?;
                }
                Some(Ok(Message::Text(text))) => {
                    if let Ok(value) = serde_json::from_str::<Value>(&text)
                        && value["type"] == "exit"
                    {
                        code = value["code"].as_i64();
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    if code.is_none() {
                        let reason = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                        bail!("the gateway closed the terminal: {reason}");
                    }
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => bail!("the connection to the gateway broke: {e}"),
                None => break,
            },
            chunk = input.recv(), if input_open => match chunk {
                Some(bytes) => sink.send(Message::Binary(bytes.into())).await?,
                None => {
                    input_open = false;
                    if !interactive {
                        // End of piped input: what Ctrl-D would type.
                        sink.send(Message::Binary(vec![4].into())).await?;
                    }
                }
            },
            _ = resized.recv() => {
                if let Some((cols, rows)) = terminal_size() {
                    let resize = json!({ "type": "resize", "cols": cols, "rows": rows });
                    sink.send(Message::Text(resize.to_string().into())).await?;
                }
            }
            _ = terminated.recv() => bail!("terminated (SIGTERM)"),
            _ = hung_up.recv() => bail!("hung up (SIGHUP)"),
        }
    }
    match code {
        Some(code) => Ok(ExitCode::from(u8::try_from(code).unwrap_or(255))),
        None => bail!("the connection ended before the command's exit status arrived"),
    }
}

/// The local terminal's size (stdin's, else stdout's), if either is a terminal.
fn terminal_size() -> Option<(u16, u16)> {
    let size = tcgetwinsize(std::io::stdin().as_fd())
        .or_else(|_| tcgetwinsize(std::io::stdout().as_fd()))
        .ok()?;
    (size.ws_col > 0 && size.ws_row > 0).then_some((size.ws_col, size.ws_row))
}

/// Stdin, read on a thread of its own (a blocking read cannot be cancelled), in chunks.
fn stdin_chunks() -> mpsc::Receiver<Vec<u8>> {
    let (sender, receiver) = mpsc::channel(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = vec![0u8; 8192];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sender.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    receiver
}

/// The local terminal in raw mode (keys go to the sandbox as typed, Ctrl-C included) until
/// dropped.
struct RawMode {
    original: Termios,
}

impl RawMode {
    fn enter() -> std::io::Result<Self> {
        let stdin = std::io::stdin();
        let original = tcgetattr(stdin.as_fd())?;
        let mut raw = original.clone();
        raw.make_raw();
        tcsetattr(stdin.as_fd(), OptionalActions::Now, &raw)?;
        Ok(Self { original })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = tcsetattr(
            std::io::stdin().as_fd(),
            OptionalActions::Now,
            &self.original,
        );
    }
}

/// `argv` as one `sh -c` command line that gives the same arguments back.
fn shell_line(argv: &[String]) -> String {
    let quote = |arg: &String| {
        let plain = !arg.is_empty()
            && arg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c));
        if plain {
            arg.clone()
        } else {
            format!("'{}'", arg.replace('\'', "'\\''"))
        }
    };
    argv.iter().map(quote).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_line_keeps_every_argument_as_it_was() {
        let argv: Vec<String> = ["sh", "-c", "echo 'a b'; exit 3", ""]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(shell_line(&argv), "sh -c 'echo '\\''a b'\\''; exit 3' ''");
    }
}
