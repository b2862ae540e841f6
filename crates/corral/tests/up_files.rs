//! Copying files into and out of a gateway's sandboxes: `corral sandbox cp` both ways with a
//! directory tree (sandbox stopped and running), the files API's tar streams, other users
//! refused, and every way out of the workspace refused with nothing written outside.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use corral_testkit::Gateway;
use corral_testkit::fixture::Fixture;
use corral_testkit::gateway::{SandboxReaper, add_user, call, error_message, post};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_corral");

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

    fn act(&self, id: &str, action: &str) {
        let url = self.gw.api(&format!("/sandboxes/{id}/{action}"));
        let (status, body) = call("POST", &url, Some(&self.admin), &[], None);
        assert_eq!(status, 200, "{body}");
    }

    fn exec(&self, id: &str, script: &str) -> Value {
        let url = self.gw.api(&format!("/sandboxes/{id}/exec"));
        let (status, body) = post(&url, &self.admin, json!({ "argv": ["sh", "-c", script] }));
        assert_eq!(status, 200, "{body}");
        body
    }

    fn files_url(&self, id: &str, path: &str) -> String {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("path", path)
            .finish();
        self.gw.api(&format!("/sandboxes/{id}/files?{query}"))
    }

    /// `corral sandbox ARGS...` as the admin; its status and stderr.
    fn cli(&self, args: &[&str], cwd: &Path) -> (i32, String) {
        let out = Command::new(BIN)
            .arg("sandbox")
            .args(args)
            .current_dir(cwd)
            .env("CORRAL_URL", &self.gw.url)
            .env("CORRAL_TOKEN", &self.admin)
            .env("HOME", self.root.path())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// `GET url`; the status and the raw body.
fn get_bytes(url: &str, token: &str) -> (u16, Vec<u8>) {
    let response = match ureq::get(url)
        .set("Authorization", &format!("Bearer {token}"))
        .call()
    {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET {url}: {e}"),
    };
    let status = response.status();
    let mut body = Vec::new();
    response.into_reader().read_to_end(&mut body).unwrap();
    (status, body)
}

/// `PUT url` with a tar body; the status and the JSON answer.
fn put_tar(url: &str, token: &str, archive: &[u8]) -> (u16, Value) {
    let response = match ureq::put(url)
        .set("Authorization", &format!("Bearer {token}"))
        .set("Content-Type", "application/x-tar")
        .send_bytes(archive)
    {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("PUT {url}: {e}"),
    };
    let status = response.status();
    (
        status,
        serde_json::from_str(&response.into_string().unwrap()).unwrap(),
    )
}

/// `PUT url` the way careful clients send a large body (`Content-Length` and `Expect:
/// 100-continue`) over a raw connection, sending the body only if the server asks for it.
fn put_declared(url: &str, token: &str, body: &[u8]) -> (u16, Value) {
    use std::io::{BufRead, BufReader, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    write!(
        stream,
        "PUT {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/x-tar\r\nContent-Length: {}\r\n\
         Expect: 100-continue\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    if status_line.contains(" 100 ") {
        reader.read_line(&mut String::new()).unwrap();
        stream.write_all(body).unwrap();
        status_line.clear();
        reader.read_line(&mut status_line).unwrap();
    }
    let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
    }
    let mut text = vec![0; length];
    reader.read_exact(&mut text).unwrap();
    (status, serde_json::from_slice(&text).unwrap())
}

/// One raw tar entry, its name and link target written as given (the tar crate's safe
/// setters refuse `..` and absolute names, which is what these tests need to send).
struct Entry<'a> {
    name: &'a str,
    kind: tar::EntryType,
    link: &'a str,
    mode: u32,
    data: &'a [u8],
}

fn file<'a>(name: &'a str, data: &'a [u8]) -> Entry<'a> {
    Entry {
        name,
        kind: tar::EntryType::Regular,
        link: "",
        mode: 0o644,
        data,
    }
}

fn link<'a>(kind: tar::EntryType, name: &'a str, target: &'a str) -> Entry<'a> {
    Entry {
        name,
        kind,
        link: target,
        mode: 0o777,
        data: b"",
    }
}

fn archive(entries: &[Entry]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_old();
        let old = header.as_old_mut();
        old.name[..entry.name.len()].copy_from_slice(entry.name.as_bytes());
        old.linkname[..entry.link.len()].copy_from_slice(entry.link.as_bytes());
        header.set_entry_type(entry.kind);
        header.set_mode(entry.mode);
        header.set_size(entry.data.len() as u64);
        header.set_cksum();
        builder.append(&header, entry.data).unwrap();
    }
    builder.into_inner().unwrap()
}

/// Every file under `dir` (relative path → contents; symlinks as "-> target").
fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(dir).unwrap().to_owned();
            if meta.is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                found.push((rel, format!("-> {}", target.display()).into_bytes()));
            } else if meta.is_dir() {
                found.push((rel, b"<dir>".to_vec()));
                stack.push(path);
            } else {
                found.push((rel, std::fs::read(&path).unwrap()));
            }
        }
    }
    found.sort();
    found
}

#[test]
fn cp_round_trips_a_directory_tree_whether_the_sandbox_runs_or_not() {
    let s = Setup::new();
    let id = s.create(&s.admin, "box");
    let local = tempfile::tempdir().unwrap();
    let project = local.path().join("project");
    std::fs::create_dir_all(project.join("src/deep/er")).unwrap();
    std::fs::write(project.join("README"), "hello\n").unwrap();
    let big: Vec<u8> = (0..700_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(project.join("src/data.bin"), &big).unwrap();
    std::fs::write(project.join("src/deep/er/main.rs"), "fn main() {}\n").unwrap();
    std::fs::set_permissions(
        project.join("src/deep/er/main.rs"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("../README", project.join("src/readme-link")).unwrap();

    // Stopped (never started): into a directory that does not exist yet.
    let (code, stderr) = s.cli(&["cp", "project", "box:incoming/today"], local.path());
    assert_eq!(code, 0, "{stderr}");
    let uploaded = s.workspace(&id).join("incoming/today/project");
    assert_eq!(tree(&uploaded), tree(&project));
    let mode = std::fs::metadata(uploaded.join("src/deep/er/main.rs"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);

    // Running: the sandbox sees the files, changes one, and the change comes back.
    s.act(&id, "start");
    let ran = s.exec(
        &id,
        "cd /workspace/incoming/today/project && cat src/readme-link && \
         echo changed >> README && wc -c < src/data.bin",
    );
    assert_eq!(ran["stdout"], "hello\n700000\n", "{ran}");
    let (code, stderr) = s.cli(&["cp", "box:incoming/today/project", "back"], local.path());
    assert_eq!(code, 0, "{stderr}");
    let back = local.path().join("back");
    std::fs::write(project.join("README"), "hello\nchanged\n").unwrap();
    assert_eq!(tree(&back), tree(&project));

    // Into an existing directory: DST/basename; a single file too.
    let (code, stderr) = s.cli(
        &["cp", "box:incoming/today/project/src/data.bin", "back"],
        local.path(),
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(std::fs::read(back.join("data.bin")).unwrap(), big);
    s.act(&id, "stop");

    // Clear errors.
    let (code, stderr) = s.cli(&["cp", "box:nope", "x"], local.path());
    assert_ne!(code, 0);
    assert!(stderr.contains("does not exist"), "{stderr}");
    let (code, stderr) = s.cli(&["cp", "project", "back"], local.path());
    assert_ne!(code, 0);
    assert!(stderr.contains("NAME:PATH"), "{stderr}");
    let (code, stderr) = s.cli(&["cp", "box:../x", "x"], local.path());
    assert_ne!(code, 0);
    assert!(
        stderr.contains("(400)") && stderr.contains(".."),
        "{stderr}"
    );
}

#[test]
fn other_users_cannot_copy_from_or_to_my_sandbox() {
    let s = Setup::new();
    let alice = add_user(&s.gw, &s.admin, "alice@example.com");
    let bob = add_user(&s.gw, &s.admin, "bob@example.com");
    let id = s.create(&alice, "mine");
    std::fs::create_dir_all(s.workspace(&id)).unwrap();
    std::fs::write(s.workspace(&id).join("secret"), "alice's").unwrap();

    let url = s.files_url(&id, "secret");
    let (status, body) = get_bytes(&url, &bob);
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
    let planted = archive(&[file("secret", b"bob's")]);
    error_message(put_tar(&s.files_url(&id, ""), &bob, &planted), 404);
    assert_eq!(
        std::fs::read_to_string(s.workspace(&id).join("secret")).unwrap(),
        "alice's"
    );
    // The owner may.
    assert_eq!(get_bytes(&url, &alice).0, 200);
    assert_eq!(put_tar(&s.files_url(&id, ""), &alice, &planted).0, 200);
}

#[test]
fn nothing_leaves_or_enters_the_workspace_but_through_it() {
    let s = Setup::new();
    let id = s.create(&s.admin, "box");
    let workspace = s.workspace(&id);
    std::fs::create_dir_all(&workspace).unwrap();
    let outside = s.root.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("host-file"), "host").unwrap();
    // What a sandbox could plant: links out of its workspace.
    std::os::unix::fs::symlink("/etc", workspace.join("etc-link")).unwrap();
    std::os::unix::fs::symlink(&outside, workspace.join("out-link")).unwrap();
    std::os::unix::fs::symlink("../../../outside", workspace.join("rel-link")).unwrap();
    std::fs::write(workspace.join("ok.txt"), "ok").unwrap();

    // Downloads.
    let too_long = "a/".repeat(3000);
    for path in [
        too_long.as_str(),
        "../x",
        "/etc",
        "/etc/passwd",
        "etc-link",
        "etc-link/passwd",
        "out-link/host-file",
        "rel-link",
    ] {
        let (status, body) = get_bytes(&s.files_url(&id, path), &s.admin);
        let text = String::from_utf8_lossy(&body);
        assert_eq!(status, 400, "GET {path}: {text}");
        assert!(text.contains("\"code\""), "{text}");
    }
    // The workspace itself: the planted links travel as links, never what they point to.
    let (status, body) = get_bytes(&s.files_url(&id, ""), &s.admin);
    assert_eq!(status, 200);
    let mut names = Vec::new();
    for entry in tar::Archive::new(&body[..]).entries().unwrap() {
        let entry = entry.unwrap();
        names.push(entry.path().unwrap().display().to_string());
        if entry.path().unwrap().ends_with("etc-link") {
            assert_eq!(entry.header().entry_type(), tar::EntryType::Symlink);
        }
    }
    names.sort();
    assert_eq!(
        names,
        [
            "workspace",
            "workspace/etc-link",
            "workspace/ok.txt",
            "workspace/out-link",
            "workspace/rel-link"
        ]
    );

    // Uploads: each is refused whole, naming what is wrong, and writes nothing anywhere.
    let unique = format!("corral-evil-{}", std::process::id());
    let abs = format!("/tmp/{unique}");
    let abs_out = outside.join("abs").display().to_string();
    let evil: Vec<(&str, Vec<u8>, &str)> = vec![
        ("../x", archive(&[file("a", b"x")]), ".."),
        ("/etc", archive(&[file(&unique, b"x")]), "absolute"),
        ("etc-link", archive(&[file(&unique, b"x")]), "leads out"),
        ("out-link", archive(&[file("new", b"x")]), "leads out"),
        (
            "",
            archive(&[file("good", b"x"), file("../evil", b"x")]),
            "../evil",
        ),
        ("", archive(&[file("good", b"x"), file(&abs, b"x")]), &abs),
        (
            "",
            archive(&[
                link(
                    tar::EntryType::Symlink,
                    "esc",
                    &outside.display().to_string(),
                ),
                file("esc/evil", b"x"),
            ]),
            "esc",
        ),
        (
            "",
            archive(&[
                link(tar::EntryType::Symlink, "esc", "../../outside"),
                file("esc/evil", b"x"),
            ]),
            "leads out",
        ),
        // Through a link the sandbox planted.
        ("", archive(&[file("out-link/evil", b"x")]), "out-link"),
        (
            "",
            archive(&[link(tar::EntryType::Link, "passwd", "/etc/passwd")]),
            "passwd",
        ),
        (
            "",
            archive(&[link(
                tar::EntryType::Link,
                "hl",
                "../../../outside/host-file",
            )]),
            "hl",
        ),
        (
            "",
            archive(&[Entry {
                name: "fifo",
                kind: tar::EntryType::Fifo,
                link: "",
                mode: 0o644,
                data: b"",
            }]),
            "fifo",
        ),
        ("", archive(&[file(&abs_out, b"x")]), "absolute"),
        (
            "",
            b"this is not a tar archive, just some text padded out".repeat(20),
            "tar",
        ),
    ];
    let before = tree(&workspace);
    for (path, body, named) in &evil {
        let message = error_message(put_tar(&s.files_url(&id, path), &s.admin, body), 400);
        assert!(
            message.contains(named),
            "PUT {path}: {message} does not name {named}"
        );
    }
    assert_eq!(tree(&workspace), before, "a refused upload left something");
    assert_eq!(
        tree(&outside),
        [(PathBuf::from("host-file"), b"host".to_vec())]
    );
    assert!(!Path::new(&abs).exists());
    assert!(!Path::new("/etc").join(&unique).exists());
    let sandbox_dir = workspace.parent().unwrap();
    let leftovers: Vec<String> = std::fs::read_dir(sandbox_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("upload-"))
        .collect();
    assert_eq!(leftovers, Vec::<String>::new(), "staging left behind");

    // What is inside stays inside: links within the workspace, hard links to earlier
    // entries; setuid bits are dropped.
    let fine = archive(&[
        Entry {
            mode: 0o4755,
            ..file("tool", b"#!/bin/sh\n")
        },
        link(tar::EntryType::Symlink, "here", "."),
        file("here/through", b"y"),
        link(tar::EntryType::Link, "tool-again", "tool"),
    ]);
    let (status, body) = put_tar(&s.files_url(&id, "sub"), &s.admin, &fine);
    assert_eq!((status, &body["entries"]), (200, &json!(4)), "{body}");
    let sub = workspace.join("sub");
    assert_eq!(std::fs::read(sub.join("through")).unwrap(), b"y");
    let mode = std::fs::metadata(sub.join("tool"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o755);
    assert_eq!(
        std::fs::read(sub.join("tool-again")).unwrap(),
        b"#!/bin/sh\n"
    );
}

#[test]
fn an_upload_over_max_upload_is_refused_whether_its_length_is_declared_or_not() {
    let root = tempfile::tempdir().unwrap();
    let _reaper = SandboxReaper(root.path().join("data"));
    let gw = Gateway::start(
        Path::new(BIN),
        &root.path().join("data"),
        &[],
        &[("CORRAL_MAX_UPLOAD", "64K")],
    );
    let admin = gw.printed_token.clone().unwrap();
    let (status, body) = post(&gw.api("/sandboxes"), &admin, json!({ "name": "box" }));
    assert_eq!(status, 201, "{body}");
    let url = gw.api(&format!(
        "/sandboxes/{}/files?path=",
        body["id"].as_str().unwrap()
    ));
    let big = archive(&[file("big", &[7u8; 100 * 1024])]);
    let message = error_message(put_declared(&url, &admin, &big), 413);
    assert!(message.contains("65536"), "{message}");
    // Chunked: no length to judge by, so it is counted as it arrives.
    let response = ureq::put(&url)
        .set("Authorization", &format!("Bearer {admin}"))
        .set("Content-Type", "application/x-tar")
        .send(&big[..]);
    let Err(ureq::Error::Status(413, _)) = response else {
        panic!("chunked oversized upload: {response:?}");
    };
    // A small one still goes through.
    let small = archive(&[file("small", b"fits")]);
    assert_eq!(put_tar(&url, &admin, &small).0, 200);
}
