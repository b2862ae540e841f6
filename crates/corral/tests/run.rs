//! `corral run` as a user relies on it: exit statuses, signals, stdin, terminals, the
//! environment, workspace ownership, errors. Every test runs the real binary, as root and as an
//! unprivileged user when the tests run as root.

use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};

use corral_testkit::{Caller, Corral, OutputExt, TestDir, is_root};

fn corral(caller: Caller) -> Corral {
    Corral::new(env!("CARGO_BIN_EXE_corral"), caller)
}

/// `corral run --profile restricted -- sh -c SCRIPT` in a fresh workspace.
fn run_sh(caller: Caller, workspace: &TestDir, script: &str) -> std::process::Output {
    corral(caller)
        .args(["run", "--", "sh", "-c", script])
        .current_dir(workspace.path())
        .output()
}

#[test]
fn exit_status_is_the_commands() {
    for caller in Caller::all() {
        let ws = TestDir::new(caller);
        let out = run_sh(caller, &ws, "exit 7");
        assert_eq!(out.code(), 7, "{caller:?}: {}", out.stderr_text());
        let out = run_sh(caller, &ws, "true");
        assert_eq!(out.code(), 0, "{caller:?}: {}", out.stderr_text());
    }
}

#[test]
fn death_by_signal_is_128_plus_the_signal() {
    for caller in Caller::all() {
        let ws = TestDir::new(caller);
        let out = run_sh(caller, &ws, "kill -9 $$");
        assert_eq!(out.code(), 128 + 9, "{caller:?}: {}", out.stderr_text());
    }
}

#[test]
fn stdin_and_stdout_pass_through() {
    for caller in Caller::all() {
        let ws = TestDir::new(caller);
        let out = corral(caller)
            .args(["run", "--", "tr", "a-z", "A-Z"])
            .current_dir(ws.path())
            .stdin("hello sandbox\n")
            .output();
        assert_eq!(
            out.stdout_text(),
            "HELLO SANDBOX\n",
            "{caller:?}: {}",
            out.stderr_text()
        );
    }
}

#[test]
fn the_command_runs_as_uid_1000_in_its_own_namespaces() {
    for caller in Caller::all() {
        let ws = TestDir::new(caller);
        let out = run_sh(caller, &ws, "id -u; id -g; hostname; echo $$; pwd");
        assert_eq!(
            out.stdout_text(),
            "1000\n1000\ncorral\n2\n/workspace\n",
            "{caller:?}: {}",
            out.stderr_text()
        );
    }
}

#[test]
fn sigterm_to_corral_reaches_the_command() {
    for caller in Caller::all() {
        let ws = TestDir::new(caller);
        let mut command = corral(caller)
            .args([
                "run",
                "--",
                "sh",
                "-c",
                "trap 'echo got-term; exit 42' TERM; echo ready; while :; do sleep 0.05; done",
            ])
            .current_dir(ws.path())
            .command();
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
        assert_eq!(line, "ready\n", "{caller:?}");
        // Under setpriv, the corral process is setpriv's exec'd image: same pid.
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let status = child.wait().unwrap();
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
        assert_eq!(rest, "got-term\n", "{caller:?}");
        assert_eq!(status.code(), Some(42), "{caller:?}");
    }
}

#[test]
fn a_terminal_outside_gives_a_terminal_inside() {
    for caller in Caller::all() {
        let ws = TestDir::new(caller);
        let inner = format!(
            "{} run -- sh -c 'test -t 0 && test -t 1 && echo tty-ok; tty; stty size'",
            env!("CARGO_BIN_EXE_corral")
        );
        // `script` runs the command on a fresh pseudo-terminal, as an interactive shell would.
        let mut script = if caller == Caller::Unprivileged && is_root() {
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid",
                "4242",
                "--regid",
                "4242",
                "--clear-groups",
                "--",
                "script",
            ]);
            c
        } else {
            Command::new("script")
        };
        let output = script
            .args([
                "-qec",
                &format!("stty rows 33 cols 101; {inner}"),
                "/dev/null",
            ])
            .current_dir(ws.path())
            .env("HOME", "/nonexistent")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains("tty-ok"), "{caller:?}: {text}");
        assert!(text.contains("/dev/pts/0"), "{caller:?}: {text}");
        assert!(
            text.contains("33 101"),
            "window size carried over: {caller:?}: {text}"
        );
    }
}

#[test]
fn nothing_of_the_callers_environment_leaks_in() {
    for caller in Caller::all() {
        let ws = TestDir::new(caller);
        let out = corral(caller)
            .args([
                "run",
                "--env",
                "PASSED=yes",
                "--env",
                "FROM_CALLER",
                "--",
                "env",
            ])
            .env("SECRET_TOKEN", "hunter2")
            .env("FROM_CALLER", "inherited")
            .current_dir(ws.path())
            .output();
        let env = out.stdout_text();
        assert!(!env.contains("hunter2"), "{caller:?}: {env}");
        assert!(env.contains("PASSED=yes\n"), "{caller:?}: {env}");
        assert!(env.contains("FROM_CALLER=inherited\n"), "{caller:?}: {env}");
        assert!(env.contains("HOME=/home/corral\n"), "{caller:?}: {env}");
        assert!(env.contains("USER=corral\n"), "{caller:?}: {env}");
    }
}

#[test]
fn workspace_writes_belong_to_the_workspace_owner_on_the_host() {
    for caller in Caller::all() {
        let ws = TestDir::new(caller);
        let out = run_sh(
            caller,
            &ws,
            "echo data > made-inside && mkdir dir-inside && ls -ln made-inside",
        );
        assert_eq!(out.code(), 0, "{caller:?}: {}", out.stderr_text());
        assert!(
            out.stdout_text().contains(" 1000 1000 "),
            "owned by the sandbox user inside: {}",
            out.stdout_text()
        );
        for name in ["made-inside", "dir-inside"] {
            let meta = std::fs::metadata(ws.path().join(name)).unwrap();
            assert_eq!(
                (meta.uid(), meta.gid()),
                (caller.uid(), caller.uid()),
                "{caller:?} {name}"
            );
        }
    }
}

#[test]
fn as_root_a_workspace_owned_by_someone_else_stays_theirs() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let ws = TestDir::new(Caller::Unprivileged);
    let out = run_sh(Caller::Root, &ws, "touch by-sandbox");
    assert_eq!(out.code(), 0, "{}", out.stderr_text());
    let meta = std::fs::metadata(ws.path().join("by-sandbox")).unwrap();
    assert_eq!(meta.uid(), corral_testkit::TEST_UID);
}

#[test]
fn as_root_sandbox_processes_never_run_as_host_root() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let ws = TestDir::new(Caller::Root);
    let marker = "7.12345";
    let mut child = corral(Caller::Root)
        .args(["run", "--", "sleep", marker])
        .current_dir(ws.path())
        .command()
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut uids = Vec::new();
    for _ in 0..200 {
        uids = host_uids_of(&format!("sleep\0{marker}"));
        if !uids.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(!uids.is_empty(), "the sandboxed sleep was never seen");
    assert!(uids.iter().all(|u| *u == 65534), "host uids: {uids:?}");
}

/// Host uids of processes whose command line starts with `needle` (so corral's own command
/// line, which contains it later, does not count).
fn host_uids_of(needle: &str) -> Vec<u32> {
    let mut uids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if !String::from_utf8_lossy(&cmdline).starts_with(needle) {
            continue;
        }
        if let Ok(meta) = std::fs::metadata(entry.path()) {
            uids.push(meta.uid());
        }
    }
    uids
}

#[test]
fn a_missing_command_is_reported_with_exit_125() {
    for caller in Caller::all() {
        let ws = TestDir::new(caller);
        let out = corral(caller)
            .args(["run", "--", "no-such-tool"])
            .current_dir(ws.path())
            .output();
        assert_eq!(out.code(), 125, "{caller:?}");
        let err = out.stderr_text();
        assert!(
            err.contains("command not found inside the sandbox: no-such-tool"),
            "{err}"
        );
        let out = corral(caller).args(["run"]).current_dir(ws.path()).output();
        assert_eq!(out.code(), 125);
        assert!(
            out.stderr_text().contains("no command given"),
            "{}",
            out.stderr_text()
        );
    }
}

#[test]
fn a_missing_workspace_is_reported_with_exit_125() {
    for caller in Caller::all() {
        let ws = TestDir::new(caller);
        let missing = ws.path().join("not-here");
        let out = corral(caller)
            .args(["run", "--workspace"])
            .args([&missing])
            .args(["--", "true"])
            .current_dir(ws.path())
            .output();
        assert_eq!(out.code(), 125);
        let err = out.stderr_text();
        assert!(
            err.contains(&missing.display().to_string()) && err.contains("does not exist"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
}

#[test]
fn without_user_namespaces_corral_says_how_to_enable_them() {
    // A user namespace whose limit for nested user namespaces is zero stands in for a kernel
    // with user namespaces disabled.
    let ws = TestDir::new(Caller::Unprivileged);
    let script = format!(
        "echo 0 > /proc/sys/user/max_user_namespaces && exec {} run -- true",
        env!("CARGO_BIN_EXE_corral")
    );
    let out = Command::new("unshare")
        .args(["--user", "--map-root-user", "sh", "-c", &script])
        .current_dir(ws.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("Permission denied") && err.contains("max_user_namespaces") {
        eprintln!("skipped: this kernel does not let a namespace lower its own limit");
        return;
    }
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(
        err.contains("user namespaces") && err.contains("sysctl"),
        "{err}"
    );
}

#[test]
fn dry_run_prints_the_plan_without_running() {
    let ws = TestDir::new(Caller::Unprivileged);
    let out = corral(Caller::Unprivileged)
        .args(["run", "--dry-run", "--", "touch", "should-not-exist"])
        .current_dir(ws.path())
        .output();
    assert_eq!(out.code(), 0, "{}", out.stderr_text());
    let plan = out.stdout_text();
    assert!(
        plan.contains("\"landlock\"") && plan.contains("\"/usr\""),
        "{plan}"
    );
    assert!(!ws.path().join("should-not-exist").exists());
}

#[test]
fn doctor_reports_the_kernel_features() {
    let out = corral(Caller::Unprivileged).args(["doctor"]).output();
    let text = out.stdout_text();
    for feature in [
        "user namespaces",
        "Landlock",
        "seccomp",
        "cgroup memory",
        "cgroup pids",
    ] {
        assert!(text.contains(feature), "{text}");
    }
    assert_eq!(
        out.code(),
        0,
        "this host has everything corral requires: {text}"
    );
}

#[test]
fn the_proxy_port_inside_reaches_the_egress_socket_and_nothing_else() {
    for caller in Caller::all() {
        let ws = TestDir::new(caller);
        let socket_dir = TestDir::new(caller);
        let socket = socket_dir.path().join("egress.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        std::fs::set_permissions(&socket, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0u8; 4];
            std::io::Read::read_exact(&mut stream, &mut request).unwrap();
            std::io::Write::write_all(&mut stream, b"hello-from-proxy\n").unwrap();
            request
        });
        let script = "import socket,os\n\
            s=socket.create_connection(('127.0.0.1',3128)); s.sendall(b'ping'); print(s.recv(100).decode(), end='')\n\
            print(os.environ['HTTPS_PROXY'], os.environ['no_proxy'])\n\
            try:\n  socket.create_connection(('127.0.0.1',3129), timeout=2); print('other port reachable')\n\
            except OSError as e: print('other port refused')\n";
        let out = corral(caller)
            .args(["run", "--egress-socket"])
            .args([&socket])
            .args(["--", "python3", "-c", script])
            .current_dir(ws.path())
            .output();
        assert_eq!(
            out.stdout_text(),
            "hello-from-proxy\nhttp://127.0.0.1:3128 localhost,127.0.0.1\nother port refused\n",
            "{caller:?}: {}",
            out.stderr_text()
        );
        assert_eq!(&server.join().unwrap(), b"ping");
    }
}

#[test]
fn killing_corral_kills_everything_in_the_sandbox() {
    for caller in Caller::all() {
        let ws = TestDir::new(caller);
        let marker = format!("9.{}{}", std::process::id(), caller.uid());
        // One child, and one orphan re-parented to the supervisor by a double fork.
        let script = format!("sleep {marker} & (sleep {marker} &); echo started; wait");
        let mut child = corral(caller)
            .args(["run", "--", "sh", "-c", &script])
            .current_dir(ws.path())
            .command()
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line, "started\n");
        assert!(
            !host_uids_of(&format!("sleep\0{marker}")).is_empty(),
            "the sleeps run"
        );
        Command::new("kill")
            .args(["-KILL", &child.id().to_string()])
            .status()
            .unwrap();
        child.wait().unwrap();
        let mut survivors = host_uids_of(&format!("sleep\0{marker}"));
        for _ in 0..400 {
            if survivors.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
            survivors = host_uids_of(&format!("sleep\0{marker}"));
        }
        assert!(
            survivors.is_empty(),
            "{caller:?}: processes outlived corral"
        );
    }
}

#[test]
fn a_persistent_home_keeps_agent_settings_between_runs_and_belongs_to_its_owner() {
    for caller in Caller::all() {
        let ws = TestDir::new(caller);
        let home = ws.path().join("home");
        std::fs::create_dir(&home).unwrap();
        ws.chown_to(caller);
        let write = corral(caller)
            .args(["run", "--home"])
            .args([&home])
            .args([
                "--",
                "sh",
                "-c",
                "mkdir -p ~/.config/agent && echo remembered > ~/.config/agent/history && echo $HOME",
            ])
            .current_dir(ws.path())
            .output();
        assert_eq!(write.code(), 0, "{caller:?}: {}", write.stderr_text());
        assert_eq!(write.stdout_text().trim(), "/home/corral");
        let read = corral(caller)
            .args(["run", "--home"])
            .args([&home])
            .args(["--", "cat", "/home/corral/.config/agent/history"])
            .current_dir(ws.path())
            .output();
        assert_eq!(read.code(), 0, "{caller:?}: {}", read.stderr_text());
        assert_eq!(read.stdout_text(), "remembered\n");
        let meta = std::fs::metadata(home.join(".config/agent/history")).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (caller.uid(), caller.uid()),
            "{caller:?}"
        );
        // Without --home, the home is fresh every time.
        let fresh = corral(caller)
            .args(["run", "--", "sh", "-c", "ls -A ~ | wc -l"])
            .current_dir(ws.path())
            .output();
        assert_eq!(
            fresh.stdout_text().trim(),
            "0",
            "{caller:?}: {}",
            fresh.stderr_text()
        );
    }
}

#[test]
fn the_ingress_socket_reaches_a_server_inside_and_nothing_listens_on_the_host() {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    for caller in Caller::all() {
        let ws = TestDir::new(caller);
        ws.write(caller, "index.html", "served from inside the sandbox\n");
        // A socket inside the workspace would be within the sandbox's reach: refused.
        let inside = corral(caller)
            .args(["run", "--ingress-socket", "ingress.sock", "--", "true"])
            .current_dir(ws.path())
            .output();
        assert_eq!(inside.code(), 125, "{caller:?}");
        assert!(
            inside.stderr_text().contains("inside the workspace"),
            "{}",
            inside.stderr_text()
        );
        let sockets = TestDir::new(caller);
        let socket = sockets.path().join("ingress.sock");
        let mut server = corral(caller)
            .args(["run", "--ingress-socket"])
            .args([&socket])
            .args([
                "--",
                "python3",
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                "8765",
            ])
            .current_dir(ws.path())
            .command()
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Poll until the server inside answers (it takes a moment to start); bounded.
        let mut answer = String::new();
        for _ in 0..200 {
            answer.clear();
            if let Ok(mut stream) = UnixStream::connect(&socket) {
                let _ = stream.write_all(b"8765\nGET /index.html HTTP/1.0\r\n\r\n");
                let _ = stream.read_to_string(&mut answer);
                if answer.starts_with("HTTP/1.0 200") {
                    break;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(
            answer.contains("served from inside the sandbox"),
            "{caller:?}: {answer}"
        );
        // The port is the sandbox's own: nothing answers on the host's loopback.
        assert!(std::net::TcpStream::connect("127.0.0.1:8765").is_err());
        // A line that is not a port gets the connection closed, nothing else.
        let mut bad = UnixStream::connect(&socket).unwrap();
        bad.write_all(b"http\nGET / HTTP/1.0\r\n\r\n").unwrap();
        let mut nothing = String::new();
        let _ = bad.read_to_string(&mut nothing);
        assert_eq!(nothing, "", "{caller:?}");
        let _ = Command::new("kill")
            .args(["-TERM", &server.id().to_string()])
            .status();
        let _ = server.wait();
        assert!(
            !socket.exists(),
            "{caller:?}: the socket is removed when the sandbox ends"
        );
    }
}

#[test]
fn exec_through_the_control_socket_runs_inside_the_running_sandbox_with_its_restrictions() {
    use corral_sandbox::control::{ExecRequest, exec};
    use std::os::fd::AsFd;

    for caller in Caller::all() {
        let ws = TestDir::new(caller);
        let sockets = TestDir::new(caller);
        let socket = sockets.path().join("control.sock");
        // The sandbox's own command leaves a mark in its private /tmp, then waits.
        let mut sandbox = corral(caller)
            .args(["run", "--control-socket"])
            .args([&socket])
            .args(["--", "sh", "-c", "echo inside > /tmp/mark; sleep 60"])
            .current_dir(ws.path())
            .command()
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let outputs = tempfile::tempdir().unwrap();
        let run = |script: &str, env: Vec<(String, String)>| {
            let stdout_path = outputs.path().join("out");
            let stdout = std::fs::File::create(&stdout_path).unwrap();
            let stderr = std::fs::File::create(outputs.path().join("err")).unwrap();
            let stdin = std::fs::File::open("/dev/null").unwrap();
            let request = ExecRequest {
                argv: vec!["sh".into(), "-c".into(), script.into()],
                env,
                cwd: None,
                tty: false,
            };
            let mut result = exec(
                &socket,
                &request,
                &[stdin.as_fd(), stdout.as_fd(), stderr.as_fd()],
            );
            // The socket appears once the sandbox is up; retry until it answers (bounded).
            for _ in 0..200 {
                if result.is_ok() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
                result = exec(
                    &socket,
                    &request,
                    &[stdin.as_fd(), stdout.as_fd(), stderr.as_fd()],
                );
            }
            (result, std::fs::read_to_string(&stdout_path).unwrap())
        };
        let (code, stdout) = run(
            "while [ ! -s /tmp/mark ]; do sleep 0.05; done; cat /tmp/mark; id -u; echo $GREETING; \
             cat /etc/shadow 2>/dev/null || echo no-shadow; \
             touch /usr/bin/planted 2>/dev/null || echo read-only-system; exit 7",
            vec![("GREETING".into(), "hello".into())],
        );
        assert_eq!(code.unwrap(), 7, "{caller:?}: {stdout}");
        assert_eq!(
            stdout, "inside\n1000\nhello\nno-shadow\nread-only-system\n",
            "{caller:?}"
        );
        // A command the profile's exec allowlist refuses is refused here too, with the reason.
        let (refused, _) = run("exec /usr/bin/perl -e 1", Vec::new());
        assert_eq!(refused.unwrap(), 126, "{caller:?}");
        let _ = Command::new("kill")
            .args(["-TERM", &sandbox.id().to_string()])
            .status();
        let _ = sandbox.wait();
        assert!(!socket.exists(), "{caller:?}");
        // With the sandbox gone, exec says so instead of hanging.
        let stdin = std::fs::File::open("/dev/null").unwrap();
        let request = ExecRequest {
            argv: vec!["true".into()],
            ..ExecRequest::default()
        };
        assert!(
            exec(
                &socket,
                &request,
                &[stdin.as_fd(), stdin.as_fd(), stdin.as_fd()]
            )
            .is_err()
        );
    }
}
