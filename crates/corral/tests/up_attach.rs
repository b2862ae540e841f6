//! Terminals in a gateway's sandboxes: the attach WebSocket (output, typed input, resize seen
//! as SIGWINCH and by `stty size`, the exit code, SIGHUP when the client goes away, refusals
//! before the upgrade) and `corral sandbox connect` on a real pseudo-terminal from script(1).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use corral_testkit::fixture::Fixture;
use corral_testkit::gateway::{add_user, call};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

const BIN: &str = env!("CARGO_BIN_EXE_corral");
/// Hang guard for one read from the terminal (not a performance threshold).
const HANG_GUARD: Duration = Duration::from_secs(30);

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A first-time gateway (see [`Fixture`]) with this file's own helpers.
struct Setup(Fixture);

impl std::ops::Deref for Setup {
    type Target = Fixture;

    fn deref(&self) -> &Fixture {
        &self.0
    }
}

impl Setup {
    fn new() -> Self {
        Setup(Fixture::fresh(Path::new(BIN)))
    }

    fn create(&self, token: &str, name: &str) -> String {
        self.create_sandbox(token, json!({ "name": name }))
    }

    fn act(&self, token: &str, id: &str, action: &str) {
        let url = self.gw.api(&format!("/sandboxes/{id}/{action}"));
        let (status, body) = call("POST", &url, Some(token), &[], None);
        assert_eq!(status, 200, "{body}");
    }

    fn attach_url(&self, id: &str, query: &[(&str, &str)]) -> String {
        let mut encoded = form_urlencoded::Serializer::new(String::new());
        for (k, v) in query {
            encoded.append_pair(k, v);
        }
        let http = self
            .gw
            .api(&format!("/sandboxes/{id}/attach?{}", encoded.finish()));
        http.replacen("http://", "ws://", 1)
    }

    /// `corral ...` under script(1), so it has a pseudo-terminal; its status and output.
    fn under_script(&self, shell_line: &str, input: &[u8]) -> (i32, String) {
        let mut child = Command::new("script")
            .args(["-qefc", shell_line, "/dev/null"])
            .env("CORRAL_URL", &self.gw.url)
            .env("CORRAL_TOKEN", &self.admin)
            .env("HOME", self.root.path())
            .env("CORRAL", BIN)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("script(1) (util-linux) is needed");
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input).unwrap();
        // Kept open until the end: script(1) may end its session at EOF on its input.
        let out = child.wait_with_output().unwrap();
        drop(stdin);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }
}

/// Opens the attach WebSocket; the refusal's status and JSON body otherwise.
async fn open(url: &str, token: &str) -> Result<Socket, (u16, Value)> {
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Authorization", format!("Bearer {token}").parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(WsError::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            let value = serde_json::from_slice(&body)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&body)));
            Err((response.status().as_u16(), value))
        }
        Err(e) => panic!("connect {url}: {e}"),
    }
}

/// The terminal as the client sees it.
struct Terminal {
    socket: Socket,
    output: String,
    exit: Option<i64>,
    closed: bool,
}

impl Terminal {
    async fn open(url: &str, token: &str) -> Self {
        let socket = open(url, token).await.unwrap_or_else(|e| panic!("{e:?}"));
        Terminal {
            socket,
            output: String::new(),
            exit: None,
            closed: false,
        }
    }

    /// Reads one frame; false once the socket closed.
    async fn read(&mut self) -> bool {
        let frame = tokio::time::timeout(HANG_GUARD, self.socket.next())
            .await
            .unwrap_or_else(|_| panic!("nothing from the terminal; so far: {:?}", self.output));
        match frame {
            Some(Ok(Message::Binary(bytes))) => {
                assert!(self.exit.is_none(), "output after the exit frame");
                self.output.push_str(&String::from_utf8_lossy(&bytes));
            }
            Some(Ok(Message::Text(text))) => {
                let value: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(value["type"], "exit", "{value}");
                self.exit = value["code"].as_i64();
            }
            Some(Ok(Message::Close(_))) | None => {
                self.closed = true;
                return false;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("socket error: {e}; so far: {:?}", self.output),
        }
        true
    }

    /// Reads until the output contains `needle`.
    async fn until(&mut self, needle: &str) {
        while !self.output.contains(needle) {
            assert!(
                self.read().await,
                "closed before {needle:?}; output: {:?}",
                self.output
            );
        }
    }

    async fn type_in(&mut self, text: &str) {
        let bytes = text.as_bytes().to_vec();
        self.socket
            .send(Message::Binary(bytes.into()))
            .await
            .unwrap();
    }

    async fn resize(&mut self, cols: u16, rows: u16) {
        let message = json!({ "type": "resize", "cols": cols, "rows": rows }).to_string();
        self.socket
            .send(Message::Text(message.into()))
            .await
            .unwrap();
    }

    /// Reads to the normal close; the exit code it reported.
    async fn exit_code(mut self) -> i64 {
        while self.read().await {}
        assert!(self.closed);
        self.exit
            .unwrap_or_else(|| panic!("closed without an exit frame; output: {:?}", self.output))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_runs_a_command_takes_input_follows_resizes_and_reports_its_exit() {
    let s = Setup::new();
    let id = s.create(&s.admin, "box");
    s.act(&s.admin, &id, "start");

    let script = "stty size; read line; echo got:$line; \
                  trap 'echo winched; stty size; exit 7' WINCH; \
                  echo waiting; while :; do sleep 0.1; done";
    let url = s.attach_url(&id, &[("cols", "100"), ("rows", "30"), ("command", script)]);
    let mut terminal = Terminal::open(&url, &s.admin).await;
    terminal.until("30 100").await;
    terminal.type_in("hello\r").await;
    terminal.until("got:hello").await;
    terminal.until("waiting").await;
    terminal.resize(132, 50).await;
    terminal.until("winched").await;
    terminal.until("50 132").await;
    assert_eq!(terminal.exit_code().await, 7);

    // No command: the login shell, in the workspace.
    let mut shell = Terminal::open(&s.attach_url(&id, &[]), &s.admin).await;
    shell
        .type_in("echo in=$(pwd) size=$(stty size); exit 4\r")
        .await;
    shell.until("in=/workspace size=24 80").await;
    assert_eq!(shell.exit_code().await, 4);

    // A command that cannot start still ends with a status and a reason.
    let url = s.attach_url(&id, &[("command", "exec /nonexistent/tool")]);
    let failed = Terminal::open(&url, &s.admin).await;
    assert_eq!(failed.exit_code().await, 127);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_hangs_the_command_up() {
    let s = Setup::new();
    let id = s.create(&s.admin, "box");
    s.act(&s.admin, &id, "start");
    let script = "trap 'echo hup > /workspace/hup; exit 0' HUP; echo ready; \
                  while :; do sleep 0.1; done";
    let mut terminal = Terminal::open(&s.attach_url(&id, &[("command", script)]), &s.admin).await;
    terminal.until("ready").await;
    drop(terminal);
    let hup = s.workspace(&id).join("hup");
    for _ in 0..1500 {
        if hup.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the command never got SIGHUP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_is_refused_before_the_upgrade() {
    let s = Setup::new();
    let alice = add_user(&s.gw, &s.admin, "alice@example.com");
    let bob = add_user(&s.gw, &s.admin, "bob@example.com");
    let id = s.create(&alice, "mine");
    let url = s.attach_url(&id, &[]);

    let refusal = |result: Result<Socket, (u16, Value)>| match result {
        Ok(_) => panic!("upgraded"),
        Err((status, body)) => {
            assert!(body["error"]["message"].is_string(), "{body}");
            status
        }
    };
    assert_eq!(refusal(open(&url, &alice).await), 409, "not running");
    s.act(&alice, &id, "start");
    assert_eq!(refusal(open(&url, &bob).await), 404, "someone else's");
    let nobody = s.attach_url("0123456789ab", &[]);
    assert_eq!(refusal(open(&nobody, &alice).await), 404);
    let zero = s.attach_url(&id, &[("cols", "0")]);
    assert_eq!(refusal(open(&zero, &alice).await), 400);
    // A plain HTTP request is told to use a WebSocket.
    let http = url.replacen("ws://", "http://", 1);
    let (status, body) = call("GET", &http, Some(&alice), &[], None);
    assert_eq!(status, 400, "{body}");
    // The owner gets a terminal.
    let mut terminal =
        Terminal::open(&s.attach_url(&id, &[("command", "echo mine")]), &alice).await;
    terminal.until("mine").await;
    assert_eq!(terminal.exit_code().await, 0);
}

#[test]
fn corral_sandbox_connect_is_a_real_terminal() {
    let s = Setup::new();
    let id = s.create(&s.admin, "box");
    s.act(&s.admin, &id, "start");

    // The local size goes along; the remote status comes back; the terminal is restored.
    let line = "stty cols 90 rows 33; \
                \"$CORRAL\" sandbox connect box -- sh -c 'stty size; exit 3'; \
                echo status=$?; stty -a";
    let (code, out) = s.under_script(line, b"");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("33 90"), "{out}");
    assert!(out.contains("status=3"), "{out}");
    assert!(out.contains(" icanon") && !out.contains("-icanon"), "{out}");

    // What is typed reaches the login shell.
    let line = "\"$CORRAL\" sandbox connect box";
    let (code, out) = s.under_script(line, b"echo typed-$((6*7))\rexit 5\r");
    assert!(out.contains("typed-42"), "{out}");
    assert_eq!(code, 5, "{out}");

    // A window-size change while connected reaches the command as SIGWINCH. (In the
    // background so the change can be made meanwhile; a background job's stdin is
    // /dev/null unless redirected.)
    let line = "\"$CORRAL\" sandbox connect box -- sh -c \
                'trap \"stty size; exit 6\" WINCH; echo ready; while :; do sleep 0.1; done' \
                < /dev/tty > out & pid=$!; \
                until grep -q ready out; do sleep 0.05; done; stty cols 100 rows 40; \
                wait $pid; echo status=$?; cat out";
    let work = tempfile::tempdir().unwrap();
    let line = format!("cd {}; {line}", work.path().display());
    let (code, out) = s.under_script(&line, b"");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("40 100") && out.contains("status=6"), "{out}");

    // Someone else's sandbox, or a stopped one: said so, in plain words.
    s.act(&s.admin, &id, "stop");
    let (code, out) = s.under_script("\"$CORRAL\" sandbox connect box -- true", b"");
    assert_eq!(code, 125, "{out}");
    assert!(out.contains("409") && out.contains("not running"), "{out}");
}
