//! `corral run --ingress-socket`'s `PORT fd` line, as the gateway uses it: the supervisor
//! hands over the TCP socket it connected to the port on the sandbox's loopback, which then
//! reaches the server inside with no relay; a port nothing listens on gets a `refused:` line
//! and no descriptor.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use corral_splice::handoff;
use corral_testkit::{Caller, Corral, TestDir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const PORT: u16 = 8766;
const SILENT_PORT: u16 = 8799;

/// Sends `line` on a new connection to `socket` and returns what came back.
async fn ask(socket: &Path, line: &str) -> Option<handoff::Received> {
    let mut stream = UnixStream::connect(socket).await.ok()?;
    stream.write_all(line.as_bytes()).await.ok()?;
    handoff::receive(&stream, 256).await.ok()
}

/// Asks for `PORT fd` until the server inside listens (bounded): the handed socket.
async fn handed_socket(socket: &Path) -> tokio::net::TcpStream {
    for _ in 0..200 {
        if let Some(answer) = ask(socket, &format!("{PORT} fd\n")).await
            && let Ok([fd]) = <[_; 1]>::try_from(answer.fds)
        {
            assert_eq!(answer.data, [handoff::MARK]);
            return handoff::tcp_stream(fd).expect("a connected TCP socket");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the server in the sandbox never accepted on port {PORT}");
}

fn serve(caller: Caller, workspace: &Path, socket: &Path) -> Child {
    Corral::new(env!("CARGO_BIN_EXE_corral"), caller)
        .args(["run", "--ingress-socket"])
        .args([socket])
        .args(["--", "python3", "-m", "http.server", "--bind", "127.0.0.1"])
        .args([PORT.to_string()])
        .current_dir(workspace)
        .command()
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn the_ingress_socket_hands_over_the_servers_socket_or_says_refused() {
    for caller in Caller::all() {
        let ws = TestDir::new(caller);
        ws.write(caller, "index.html", "reached without a relay\n");
        let sockets = TestDir::new(caller);
        let socket = sockets.path().join("ingress.sock");
        let mut server = serve(caller, ws.path(), &socket);

        let mut tcp = handed_socket(&socket).await;
        tcp.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).await.unwrap();
        assert!(
            answer.starts_with("HTTP/1.0 200") && answer.contains("reached without a relay"),
            "{caller:?}: {answer}"
        );

        let refused = ask(&socket, &format!("{SILENT_PORT} fd\n"))
            .await
            .expect("an answer");
        assert!(refused.fds.is_empty(), "{caller:?}");
        let line = String::from_utf8_lossy(&refused.data);
        assert!(line.starts_with("refused: "), "{caller:?}: {line:?}");

        let _ = Command::new("kill")
            .args(["-TERM", &server.id().to_string()])
            .status();
        let _ = server.wait();
    }
}
