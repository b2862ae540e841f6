//! The gateway's web page in headless Chromium (Debian's `chromium` driven through
//! `chromedriver`, both installed by scripts/test): what a person does with a browser and
//! nothing else. Sign in, create a session on a repo from a local git server and see it come
//! up, see a denied connection in its activity, stop and delete it; another user never sees
//! it; the admin adds a user; CSRF and the Content-Security-Policy hold. A custom command
//! from the picker opens at its session host; the terminal copies, pastes and reconnects
//! after a network blip.
//!
//! With `CORRAL_WEB_SCREENSHOTS=DIR` the tests also save screenshots of the main screens
//! there (the README's come from `CORRAL_WEB_SCREENSHOTS=docs`).

use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use corral_testkit::gateway::{SandboxReaper, call, get, post};
use corral_testkit::{Gateway, GitServer};
use fantoccini::actions::{InputSource, MOUSE_BUTTON_LEFT, MouseActions, PointerAction};
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_corral");
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Hang guard for anything the page waits on (a clone, a stop, a stream).
const LIMIT: Duration = Duration::from_secs(90);
const PASSWORD: &str = "correct horse battery";

/// chromedriver on a free port, and a browser session with a fresh profile. [`Browser::close`]
/// ends the session; dropping it ends chromedriver and its browsers.
struct Browser {
    client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    /// Ends chromedriver and every browser process it started, even after a failed test.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.wait();
    }
}

impl Browser {
    async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// A browser with extra Chromium flags.
    async fn start_with(extra: &[&str]) -> Self {
        for tool in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is missing: install Debian's chromium and chromium-driver (scripts/test does)"
            );
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            // Its own process group, with the browsers it starts: killed together on drop.
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let profile = tempfile::tempdir().unwrap();
        let deadline = Instant::now() + LIMIT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile_dir = format!("--user-data-dir={}", profile.path().display());
        let mut args = vec![
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1100,800",
            &profile_dir,
        ];
        args.extend_from_slice(extra);
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": CHROMIUM, "args": args }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a chromium session through chromedriver");
        Browser {
            client,
            driver,
            _profile: profile,
        }
    }

    async fn close(self) {
        let _ = self.client.clone().close().await;
    }

    async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// The first element matching `css`, waiting for it to appear.
    async fn wait_for(&self, css: &str) -> fantoccini::elements::Element {
        match self
            .client
            .wait()
            .at_most(LIMIT)
            .for_element(Locator::Css(css))
            .await
        {
            Ok(element) => element,
            Err(e) => {
                let url = self.client.current_url().await.map(|u| u.to_string());
                let page = self.client.source().await.unwrap_or_default();
                panic!("no {css} within {LIMIT:?} ({e}) on {url:?}:\n{page}")
            }
        }
    }

    /// Clicks the element matching `css`, finding it again if the page replaced it in
    /// between (the sessions list refreshes itself).
    async fn click(&self, css: &str) {
        let deadline = Instant::now() + LIMIT;
        loop {
            match self.wait_for(css).await.click().await {
                Ok(()) => return,
                Err(e) => assert!(Instant::now() < deadline, "cannot click {css}: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn has(&self, css: &str) -> bool {
        self.client.find(Locator::Css(css)).await.is_ok()
    }

    async fn text(&self, css: &str) -> String {
        self.wait_for(css).await.text().await.unwrap()
    }

    async fn path(&self) -> String {
        self.client.current_url().await.unwrap().path().to_owned()
    }

    /// Runs `script` in the page (an async function body: it may `await` and `return`).
    async fn run(&self, script: &str) -> Value {
        let wrapped = format!(
            "const done = arguments[arguments.length - 1]; (async () => {{ {script} }})().then(done, e => done(String(e)));"
        );
        self.client.execute_async(&wrapped, vec![]).await.unwrap()
    }

    async fn sign_in(&self, gw: &Gateway, email: &str) {
        self.sign_in_at(&gw.url, email).await;
    }

    /// Signs in through the page at `base` (the gateway, or a [`Network`] in front of it).
    async fn sign_in_at(&self, base: &str, email: &str) {
        self.goto(&format!("{base}/login")).await;
        self.wait_for("#email")
            .await
            .send_keys(email)
            .await
            .unwrap();
        self.wait_for("#password")
            .await
            .send_keys(PASSWORD)
            .await
            .unwrap();
        self.wait_for("button[type=submit]")
            .await
            .click()
            .await
            .unwrap();
        self.wait_for("#new-session").await;
    }

    async fn sign_out(&self) {
        self.wait_for("form.signout button")
            .await
            .click()
            .await
            .unwrap();
        self.wait_for("#email").await;
    }

    /// Sets browser permission `name` (`clipboard-read`…) to `state` for the open page.
    async fn set_permission(&self, name: &'static str, state: &'static str) {
        self.client
            .issue_cmd(SetPermission(name, state))
            .await
            .unwrap_or_else(|e| panic!("set {name} to {state}: {e}"));
    }

    /// Types `keys` into the terminal (the textarea xterm.js reads keys from).
    async fn type_in_terminal(&self, keys: &str) {
        self.wait_for(".xterm-helper-textarea")
            .await
            .send_keys(keys)
            .await
            .unwrap();
    }

    /// Waits until the terminal's screen (as xterm.js renders it for screen readers)
    /// contains `text`; returns the screen.
    async fn until_screen_shows(&self, text: &str) -> String {
        let deadline = Instant::now() + LIMIT;
        loop {
            let screen = self.text(".xterm-accessibility-tree").await;
            if screen.contains(text) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "no {text:?} on the terminal's screen within {LIMIT:?}:\n{screen}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Saves a screenshot as `DIR/name.png` when `CORRAL_WEB_SCREENSHOTS=DIR` is set.
    async fn screenshot(&self, name: &str) {
        if let Some(dir) = std::env::var_os("CORRAL_WEB_SCREENSHOTS") {
            let png = self.client.screenshot().await.unwrap();
            let dir = PathBuf::from(dir);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
        }
    }
}

/// Waits until `check` holds, polling; panics with `what` after [`LIMIT`].
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + LIMIT;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} within {LIMIT:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A gateway whose config adds profile `local`: restricted, plus the git server's port on
/// localhost and curl; users alice and bob (password sign-in) and admin2 (an admin with a
/// password). Returns the gateway, the first admin's token and the sandbox reaper.
fn gateway(root: &Path, server: &GitServer) -> (Gateway, String, SandboxReaper) {
    let profile = root.join("local.toml");
    std::fs::write(
        &profile,
        format!(
            "extends = \"restricted\"\ndescription = \"restricted, plus the local git server\"\n\
             [network]\nallow = [\"localhost:{}\"]\nallow_private = [\"localhost\"]\n\
             [exec]\nallow = [\"/usr/bin/curl\"]\n",
            server.address().port()
        ),
    )
    .unwrap();
    let config = root.join("gateway.toml");
    std::fs::write(
        &config,
        format!("[profiles]\nlocal = \"{}\"\n", profile.display()),
    )
    .unwrap();
    let data = root.join("data");
    let gw = Gateway::start(
        Path::new(BIN),
        &data,
        &["--config", config.to_str().unwrap()],
        &[],
    );
    let admin = gw.printed_token.clone().unwrap();
    for (email, role) in [
        ("alice@example.com", "user"),
        ("bob@example.com", "user"),
        ("admin2@example.com", "admin"),
    ] {
        let (status, body) = post(
            &gw.api("/users"),
            &admin,
            json!({ "email": email, "password": PASSWORD, "role": role }),
        );
        assert_eq!(status, 201, "{body}");
    }
    (gw, admin, SandboxReaper(data))
}

fn sandbox(gw: &Gateway, token: &str, id: &str) -> (u16, Value) {
    get(&gw.api(&format!("/sandboxes/{id}")), token)
}

#[tokio::test(flavor = "current_thread")]
async fn a_person_runs_a_session_from_the_browser() {
    let server = GitServer::start();
    server.create_repo("acme/app.git");
    let root = tempfile::tempdir().unwrap();
    let (gw, admin, _reaper) = gateway(root.path(), &server);
    let repo = format!("http://localhost:{}/acme/app.git", server.address().port());
    let b = Browser::start().await;

    // Unsigned, the page sends people to sign in; a wrong password says what to do.
    b.goto(&gw.url).await;
    b.wait_for("#email").await;
    assert_eq!(b.path().await, "/login");
    b.screenshot("web-sign-in").await;
    b.wait_for("#email")
        .await
        .send_keys("alice@example.com")
        .await
        .unwrap();
    b.wait_for("#password")
        .await
        .send_keys("wrong")
        .await
        .unwrap();
    b.wait_for("button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    assert!(
        b.text("p.error").await.contains("Wrong email or password"),
        "a wrong password is refused with a reason"
    );

    // Sign in; the picker offers the profiles with their one-line explanations.
    b.sign_in(&gw, "alice@example.com").await;
    assert!(b.text("#main").await.contains("No sessions yet"));
    let profiles = b.text("fieldset.profiles").await;
    for line in [
        "full — Whole host read-only",
        "moderate — System + toolchains read-only",
        "restricted — System dirs + workspace only",
        "local — restricted, plus the local git server",
    ] {
        assert!(profiles.contains(line), "{line:?} in {profiles}");
    }

    // Create a repo session: the page shows its progress and opens the shell's terminal.
    b.wait_for("input[name=repo]")
        .await
        .send_keys(&repo)
        .await
        .unwrap();
    b.wait_for("input[name=branch]")
        .await
        .send_keys("ai/web")
        .await
        .unwrap();
    b.wait_for("input[name=profile][value=local]")
        .await
        .click()
        .await
        .unwrap();
    b.wait_for("#agent")
        .await
        .select_by_value("shell")
        .await
        .unwrap();
    b.wait_for("#new-session button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    // The progress page (/sessions/ID/open) moves on to /sessions/ID/terminal once ready.
    until(
        "the page opens the terminal once the session is ready",
        || async { b.path().await.ends_with("/terminal") },
    )
    .await;
    let path = b.path().await;
    let id = path
        .strip_prefix("/sessions/")
        .and_then(|p| p.strip_suffix("/terminal"))
        .expect("/sessions/ID/terminal")
        .to_owned();
    // xterm.js and its canvas renderer load under the page's CSP.
    b.wait_for("#terminal .xterm-helper-textarea").await;
    b.wait_for("#terminal canvas").await;
    until("the terminal script reports its connection", || async {
        let status = b.text("#terminal-status").await;
        status.contains("Connected") || status.contains("reconnecting")
    })
    .await;
    let (_, record) = sandbox(&gw, &admin, &id);
    assert_eq!(record["state"], "running", "{record}");
    assert_eq!(record["owner"], "alice@example.com", "{record}");
    assert_eq!(record["profile"], "local", "{record}");
    // It is the repo, cloned on the branch the form asked for.
    let (status, out) = post(
        &gw.api(&format!("/sandboxes/{id}/exec")),
        &admin,
        json!({ "argv": ["sh", "-c", "git branch --show-current"] }),
    );
    assert_eq!(
        (status, out["stdout"].as_str()),
        (200, Some("ai/web\n")),
        "{out}"
    );

    // The list shows it running, with its profile.
    b.goto(&gw.url).await;
    let row = format!("li.session[data-sandbox=\"{id}\"][data-state=running]");
    let text = b.text(&row).await;
    assert!(
        text.contains("profile local") && text.contains(&repo),
        "{text}"
    );
    b.screenshot("web-sessions").await;
    b.client.set_window_size(390, 844).await.unwrap();
    b.screenshot("web-sessions-phone").await;
    b.client.set_window_size(1100, 800).await.unwrap();

    // A connection the profile denies appears live in the open activity view, with the
    // policy that decided.
    b.goto(&format!("{}/sessions/{id}/activity", gw.url)).await;
    until("the activity view follows the sandbox", || async {
        b.text("#activity-status").await.contains("Following live")
    })
    .await;
    assert!(!b.has("#events tr.decision-deny").await, "no denial yet");
    let (status, out) = post(
        &gw.api(&format!("/sandboxes/{id}/exec")),
        &admin,
        json!({ "argv": ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "20", "http://denied.example.com/"] }),
    );
    assert_eq!(
        (status, out["stdout"].as_str()),
        (200, Some("403")),
        "{out}"
    );
    let denied = b.text("#events tr.decision-deny").await;
    assert!(
        denied.contains("denied")
            && denied.contains("denied.example.com")
            && denied.contains("default-deny"),
        "the denial names the host and the deciding policy: {denied}"
    );
    assert!(
        b.text("pre.profile").await.contains("localhost"),
        "the effective profile is shown"
    );
    // Filtering to allowed decisions hides the denial.
    b.wait_for("#decision-filter")
        .await
        .select_by_value("allow")
        .await
        .unwrap();
    let hidden = b
        .run("return document.querySelector('#events tr.decision-deny').hidden;")
        .await;
    assert_eq!(hidden, json!(true));
    b.wait_for("#decision-filter")
        .await
        .select_by_value("all")
        .await
        .unwrap();
    b.screenshot("web-activity").await;

    // CSRF: a form posted without the session's token is refused, and so is an API call
    // with the cookie but without X-CSRF-Token; with the token the same call works.
    b.goto(&gw.url).await;
    b.wait_for("#new-session").await;
    let statuses = b
        .run(
            "const body = JSON.stringify({name: 'csrf-probe'});
             const plain = await fetch('/api/v1/sandboxes', {method: 'POST', headers: {'content-type': 'application/json'}, body});
             const token = document.querySelector('meta[name=csrf-token]').content;
             const withToken = await fetch(`/api/v1/sandboxes/${encodeURIComponent('nope')}/stop`, {method: 'POST', headers: {'X-CSRF-Token': token}});
             return [plain.status, (await plain.json()).error.message, withToken.status];",
        )
        .await;
    assert_eq!(statuses[0], json!(403), "{statuses}");
    assert!(
        statuses[1].as_str().unwrap().contains("X-CSRF-Token"),
        "{statuses}"
    );
    assert_eq!(
        statuses[2],
        json!(404),
        "with the token, the call goes through: {statuses}"
    );
    b.run(
        "const form = document.createElement('form');
         form.method = 'post'; form.action = '/logout';
         document.body.append(form); form.submit(); return true;",
    )
    .await;
    assert!(b.text("p.error").await.contains("CSRF token"));
    b.goto(&gw.url).await;
    b.wait_for("#new-session").await;
    assert_eq!(
        b.path().await,
        "/",
        "still signed in after the refused sign-out"
    );

    // Another user never sees alice's session, not even by its URL.
    b.sign_out().await;
    b.sign_in(&gw, "bob@example.com").await;
    assert!(b.text("#sessions").await.contains("No sessions yet"));
    assert!(!b.has(&format!("[data-sandbox=\"{id}\"]")).await);
    b.goto(&format!("{}/sessions/{id}/activity", gw.url)).await;
    assert!(b.text("p.error").await.contains("no session"));
    let status = b
        .run(&format!(
            "return (await fetch('/api/v1/sandboxes/{id}/audit')).status;"
        ))
        .await;
    assert_eq!(status, json!(404));
    b.goto(&format!("{}/admin", gw.url)).await;
    assert!(b.text("p.error").await.contains("Only an admin"));

    // A repo on a host the profile denies cannot be cloned: the progress page says why and
    // what to check.
    b.goto(&gw.url).await;
    b.wait_for("input[name=repo]")
        .await
        .send_keys("http://denied.example.com/acme/app.git")
        .await
        .unwrap();
    b.wait_for("input[name=profile][value=local]")
        .await
        .click()
        .await
        .unwrap();
    b.wait_for("#new-session button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    let error = b.text("#open-error:not([hidden])").await;
    assert!(
        error.contains("cannot clone") && error.contains("403"),
        "{error}"
    );
    assert!(
        b.text("#open-hint")
            .await
            .contains("Check the repository URL")
    );
    assert!(b.has("#step-clone[data-status=failed]").await);
    b.screenshot("web-open-failed").await;
    b.goto(&gw.url).await;
    b.sign_out().await;

    // An admin sees everyone's sessions and adds a user, whose first token is shown once.
    b.sign_in(&gw, "admin2@example.com").await;
    b.goto(&format!("{}/admin", gw.url)).await;
    assert!(
        b.text("#sessions")
            .await
            .contains("owner alice@example.com")
    );
    b.wait_for("#add-user input[name=email]")
        .await
        .send_keys("carol@example.com")
        .await
        .unwrap();
    b.wait_for("#add-user button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    assert!(
        b.text("#add-user-result code.token")
            .await
            .starts_with("corral_")
    );
    until("the users table lists the new user", || async {
        b.text("#users").await.contains("carol@example.com")
    })
    .await;
    b.screenshot("web-admin").await;
    b.sign_out().await;

    // Alice stops, starts and deletes her session from the list.
    b.sign_in(&gw, "alice@example.com").await;
    b.click(&format!("#stop-{id}")).await;
    b.wait_for(&format!(
        "li.session[data-sandbox=\"{id}\"][data-state=stopped]"
    ))
    .await;
    assert_eq!(sandbox(&gw, &admin, &id).1["state"], "stopped");
    b.click(&format!("#start-{id}")).await;
    b.wait_for(&format!(
        "li.session[data-sandbox=\"{id}\"][data-state=running]"
    ))
    .await;
    b.click(&format!("#delete-{id}")).await;
    b.client.accept_alert().await.unwrap();
    until("the list is empty again", || async {
        b.text("#sessions").await.contains("No sessions yet")
    })
    .await;
    assert_eq!(sandbox(&gw, &admin, &id).0, 404);
    b.close().await;
}

#[tokio::test(flavor = "current_thread")]
async fn pages_carry_a_strict_content_security_policy() {
    let root = tempfile::tempdir().unwrap();
    let gw = Gateway::fresh(Path::new(BIN), root.path());
    let response = ureq::get(&format!("{}/login", gw.url)).call().unwrap();
    let csp = response
        .header("content-security-policy")
        .expect("a CSP header")
        .to_owned();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} in {csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    let page = response.into_string().unwrap();
    assert!(
        !page.contains("<script>") && !page.contains("style="),
        "no inline script or style"
    );
    // Assets are served from hashed URLs, cacheable for a year.
    let css = page
        .split('"')
        .find(|s| s.starts_with("/assets/corral.") && s.ends_with(".css"))
        .expect("a hashed stylesheet URL");
    let asset = ureq::get(&format!("{}{css}", gw.url)).call().unwrap();
    assert_eq!(
        asset.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    // The API keeps its JSON errors for a caller without credentials.
    let (status, body) = call("GET", &gw.api("/profiles"), None, &[], None);
    assert_eq!(status, 401, "{body}");
}

#[tokio::test(flavor = "current_thread")]
async fn the_page_follows_the_system_light_or_dark_theme() {
    let root = tempfile::tempdir().unwrap();
    let gw = Gateway::fresh(Path::new(BIN), root.path());
    let background = "return getComputedStyle(document.body).backgroundColor;";
    for (flags, expected, screenshot) in [
        (&[][..], "rgb(246, 247, 249)", None),
        (
            &["--force-dark-mode"][..],
            "rgb(13, 16, 20)",
            Some("web-sign-in-dark"),
        ),
    ] {
        let b = Browser::start_with(flags).await;
        b.goto(&format!("{}/login", gw.url)).await;
        b.wait_for("#email").await;
        assert_eq!(b.run(background).await, json!(expected), "{flags:?}");
        if let Some(name) = screenshot {
            b.screenshot(name).await;
        }
        b.close().await;
    }
}

/// Needs the attach WebSocket (`GET /api/v1/sandboxes/{id}/attach`, branch `attach`).
#[tokio::test(flavor = "current_thread")]
async fn the_terminal_runs_a_command_and_shows_its_output() {
    let server = GitServer::start();
    let root = tempfile::tempdir().unwrap();
    let (gw, admin, _reaper) = gateway(root.path(), &server);
    let (status, alice) = post(
        &gw.api("/tokens"),
        &admin,
        json!({ "name": "t", "user": "alice@example.com" }),
    );
    assert_eq!(status, 201, "{alice}");
    let alice = alice["token"].as_str().unwrap().to_owned();
    let (status, created) = post(&gw.api("/sandboxes"), &alice, json!({ "name": "term" }));
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let (status, started) = call(
        "POST",
        &gw.api(&format!("/sandboxes/{id}/start")),
        Some(&alice),
        &[],
        None,
    );
    assert_eq!(
        (status, started["state"].as_str()),
        (200, Some("running")),
        "{started}"
    );

    let b = Browser::start().await;
    b.sign_in(&gw, "alice@example.com").await;
    b.goto(&format!("{}/sessions/{id}/terminal", gw.url)).await;
    until("the terminal connects", || async {
        b.text("#terminal-status").await.contains("Connected")
    })
    .await;
    b.wait_for(".xterm-helper-textarea")
        .await
        .send_keys(&format!(
            "echo web-$((6*7)) in $PWD{}",
            char::from(Key::Enter)
        ))
        .await
        .unwrap();
    until("the command's output is on the screen", || async {
        b.text(".xterm-accessibility-tree")
            .await
            .contains("web-42 in /workspace")
    })
    .await;
    b.screenshot("web-terminal").await;

    // Copy and paste as a person does: select a line with the mouse (a triple click),
    // Ctrl+Shift+C, then Ctrl+Shift+V at the prompt and Enter: the pasted command runs. The
    // line is output, not something typed, so only a working copy puts it on the clipboard.
    b.type_in_terminal(&format!(
        "printf '\\033[H\\033[2J'; echo \"echo pasted-\\$((3*5))\"{}",
        char::from(Key::Enter)
    ))
    .await;
    let first_row = "return document.querySelector('.xterm-accessibility-tree').children[0].textContent.trim();";
    until(
        "the screen is cleared and shows the line to copy",
        || async { b.run(first_row).await == json!("echo pasted-$((3*5))") },
    )
    .await;
    select_first_row(&b).await;
    let ctrl_shift = |key: char| {
        format!(
            "{}{}{key}{}",
            char::from(Key::Control),
            char::from(Key::Shift),
            char::from(Key::Null)
        )
    };
    b.type_in_terminal(&ctrl_shift('c')).await;
    until("the page says the selection was copied", || async {
        b.text("#clipboard-status").await == "Copied."
    })
    .await;
    b.type_in_terminal(&ctrl_shift('v')).await;
    b.type_in_terminal(&char::from(Key::Enter).to_string())
        .await;
    b.until_screen_shows("pasted-15").await;

    // The Paste button reads the clipboard, which the browser may refuse: then it says how to
    // paste from the keyboard; allowed, it pastes. The Copy button copies.
    let clear_and_show = |line: &str| {
        format!(
            "printf '\\033[H\\033[2J'; echo \"{line}\"{}",
            char::from(Key::Enter)
        )
    };
    b.set_permission("clipboard-read", "denied").await;
    b.click("#terminal-paste").await;
    until("the page says how to paste instead", || async {
        b.text("#clipboard-status")
            .await
            .contains("paste with Ctrl+V")
    })
    .await;
    b.type_in_terminal(&clear_and_show("echo second-\\$((4*4))"))
        .await;
    until("the line to copy", || async {
        b.run(first_row).await == json!("echo second-$((4*4))")
    })
    .await;
    select_first_row(&b).await;
    b.click("#terminal-copy").await;
    until("copied", || async {
        b.text("#clipboard-status").await == "Copied."
    })
    .await;
    b.set_permission("clipboard-read", "granted").await;
    b.click("#terminal-paste").await;
    b.type_in_terminal(&char::from(Key::Enter).to_string())
        .await;
    b.until_screen_shows("second-16").await;

    // A page the browser gives no Clipboard API (one served over plain HTTP from another
    // host) still copies, through the browser's copy command; Ctrl+V pastes.
    b.run("Object.defineProperty(navigator, 'clipboard', { value: undefined }); return true;")
        .await;
    b.type_in_terminal(&clear_and_show("echo third-\\$((5*5))"))
        .await;
    until("the line to copy", || async {
        b.run(first_row).await == json!("echo third-$((5*5))")
    })
    .await;
    select_first_row(&b).await;
    b.type_in_terminal(&ctrl_shift('c')).await;
    until("copied without the Clipboard API", || async {
        b.text("#clipboard-status").await == "Copied."
    })
    .await;
    b.type_in_terminal(&format!(
        "{}v{}{}",
        char::from(Key::Control),
        char::from(Key::Null),
        char::from(Key::Enter)
    ))
    .await;
    b.until_screen_shows("third-25").await;
    b.close().await;
}

/// chromedriver's Set Permission (W3C Permissions): `name` is `state` for the page's origin.
#[derive(Debug)]
struct SetPermission(&'static str, &'static str);

impl fantoccini::wd::WebDriverCompatibleCommand for SetPermission {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!(
            "session/{}/permissions",
            session.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        let body = json!({ "descriptor": { "name": self.0 }, "state": self.1 });
        (http::Method::POST, Some(body.to_string()))
    }
}

/// Triple-clicks the terminal's first row, which selects that line (xterm.js).
async fn select_first_row(b: &Browser) {
    let at = b
        .run(
            "const screen = document.querySelector('#terminal .xterm-screen').getBoundingClientRect();
             const rows = document.querySelector('.xterm-accessibility-tree').children.length;
             return [Math.round(screen.left + 4), Math.round(screen.top + screen.height / rows / 2)];",
        )
        .await;
    let (x, y) = (at[0].as_i64().unwrap(), at[1].as_i64().unwrap());
    let mut mouse = MouseActions::new("mouse".into()).then(PointerAction::MoveTo {
        duration: None,
        x,
        y,
    });
    for _ in 0..3 {
        mouse = mouse
            .then(PointerAction::Down {
                button: MOUSE_BUTTON_LEFT,
            })
            .then(PointerAction::Up {
                button: MOUSE_BUTTON_LEFT,
            });
    }
    b.client.perform_actions(mouse).await.unwrap();
}

/// The page's HTML `<meta name="csrf-token">` value.
fn csrf_of(page: &str) -> String {
    let start = page
        .find("name=\"csrf-token\" content=\"")
        .expect("a CSRF meta tag")
        + 27;
    page[start..start + 64].to_owned()
}

#[test]
fn behind_a_trusted_auth_proxy_arriving_is_signing_in() {
    let root = tempfile::tempdir().unwrap();
    let gw = Gateway::start(
        Path::new(BIN),
        &root.path().join("data"),
        &["--trusted-proxy", "127.0.0.1"],
        &[],
    );
    let page = ureq::get(&gw.url)
        .set("X-Forwarded-Email", "dora@example.com")
        .call()
        .unwrap();
    let cookie = page
        .header("set-cookie")
        .expect("a session cookie")
        .to_owned();
    assert!(
        cookie.starts_with("corral_session=")
            && cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let html = page.into_string().unwrap();
    assert!(
        html.contains("dora@example.com"),
        "signed in as the proxy's user"
    );
    let csrf = csrf_of(&html);
    let session = cookie.split(';').next().unwrap();

    // The cookie alone is API auth for the page: reads work, unsafe calls need the token.
    let (status, me) = call("GET", &gw.api("/me"), None, &[("Cookie", session)], None);
    assert_eq!(
        (status, me["email"].as_str()),
        (200, Some("dora@example.com")),
        "{me}"
    );
    let create =
        |headers: &[(&str, &str)]| call("POST", &gw.api("/sandboxes"), None, headers, Some("{}"));
    let (status, refused) = create(&[("Cookie", session)]);
    assert_eq!(status, 403, "{refused}");
    let (status, refused) = create(&[("Cookie", session), ("X-CSRF-Token", &"0".repeat(64))]);
    assert_eq!(status, 403, "a wrong token: {refused}");
    let (status, created) = create(&[("Cookie", session), ("X-CSRF-Token", &csrf)]);
    assert_eq!(status, 201, "{created}");
    // A WebSocket upgrade with the cookie must come from the page's own origin.
    let host = gw.url.strip_prefix("http://").unwrap();
    let upgrade = |origin: &str| {
        call(
            "GET",
            &gw.api("/me"),
            None,
            &[
                ("Cookie", session),
                ("Upgrade", "websocket"),
                ("Origin", origin),
            ],
            None,
        )
    };
    let (status, refused) = upgrade("http://evil.example");
    assert_eq!(status, 403, "another site's WebSocket: {refused}");
    let (status, me) = upgrade(&format!("http://{host}"));
    assert_eq!(status, 200, "the page's own WebSocket: {me}");

    // Signing out (with the form's token) ends the cookie's session.
    let form = format!("csrf={csrf}");
    let form_type = ("Content-Type", "application/x-www-form-urlencoded");
    let signed_out = ureq::post(&format!("{}/logout", gw.url))
        .set("Cookie", session)
        .set(form_type.0, form_type.1)
        .send_string(&form)
        .unwrap();
    assert_eq!(signed_out.get_url(), format!("{}/login", gw.url));
    let (status, body) = call("GET", &gw.api("/me"), None, &[("Cookie", session)], None);
    assert_eq!(status, 401, "{body}");
}

/// A person picks "custom command", types a command line and its port, and lands on what
/// that command serves at the session's own host; mistakes in the form are refused with what
/// to fix, on the field to fix; the list then shows the command. Shared with another user, it
/// shows in their list as shared and opens for them too.
#[tokio::test(flavor = "current_thread")]
async fn a_custom_command_session_opens_at_its_session_host() {
    let server = GitServer::start();
    let root = tempfile::tempdir().unwrap();
    let (gw, admin, _reaper) = gateway(root.path(), &server);
    let b = Browser::start().await;
    b.sign_in(&gw, "alice@example.com").await;
    assert!(
        !b.wait_for("#custom-fields")
            .await
            .is_displayed()
            .await
            .unwrap(),
        "the command's fields show only for a custom command"
    );
    b.wait_for("#agent")
        .await
        .select_by_value("custom")
        .await
        .unwrap();
    until("the command's fields show", || async {
        b.wait_for("#command").await.is_displayed().await.unwrap()
    })
    .await;
    // python must run: the full profile.
    b.click("input[name=profile][value=full]").await;
    let focused = "return document.activeElement.id;";
    for (command, ports, says, field) in [
        ("", "", "Type the command to run", "command"),
        ("python3 -m http.server 'x", "", "not closed", "command"),
        (
            "python3 -m http.server 8000 && echo",
            "",
            "sh -c",
            "command",
        ),
        (
            "python3 -m http.server 8000",
            "8000, web",
            "\"web\" is not a port",
            "ports",
        ),
    ] {
        for (field, text) in [("#command", command), ("#ports", ports)] {
            let input = b.wait_for(field).await;
            input.clear().await.unwrap();
            input.send_keys(text).await.unwrap();
        }
        b.click("#new-session button[type=submit]").await;
        let error = b.text("#create-error:not([hidden])").await;
        assert!(error.contains(says), "{command:?} {ports:?}: {error}");
        assert_eq!(b.run(focused).await, json!(field), "{error}");
    }
    // Fixed, and named: the session starts and its page opens at the session host, whose
    // label is the name. A name another session has is refused on the name's field.
    let ports = b.wait_for("#ports").await;
    ports.clear().await.unwrap();
    ports.send_keys("8000").await.unwrap();
    let (status, taken) = post(&gw.api("/sandboxes"), &admin, json!({ "name": "taken" }));
    assert_eq!(status, 201, "{taken}");
    b.wait_for("#name").await.send_keys("taken").await.unwrap();
    b.click("#new-session button[type=submit]").await;
    let error = b.text("#create-error:not([hidden])").await;
    assert!(error.contains("choose another name"), "{error}");
    assert_eq!(b.run(focused).await, json!("name"), "{error}");
    let name = b.wait_for("#name").await;
    name.clear().await.unwrap();
    name.send_keys("site").await.unwrap();
    b.wait_for("#ports").await.click().await.unwrap();
    b.screenshot("web-new-custom").await;
    b.click("#new-session button[type=submit]").await;
    let host = || async {
        let url = b.client.current_url().await.unwrap();
        url.host_str().unwrap_or_default().to_owned()
    };
    until("the browser reaches the session host", || async {
        host().await.ends_with(".localhost")
    })
    .await;
    let id = host().await.strip_suffix(".localhost").unwrap().to_owned();
    assert_eq!(id, "site");
    // The browser can arrive before python listens: the session host holds the request
    // until it does (no reload needed).
    until("python's listing shows at the session host", || async {
        b.text("body").await.contains("Directory listing for /")
    })
    .await;
    let (status, record) = sandbox(&gw, &admin, &id);
    assert_eq!(status, 200, "{record}");
    assert_eq!(
        (&record["agent"], &record["command"], &record["ports"]),
        (
            &json!("custom"),
            &json!(["python3", "-m", "http.server", "8000"]),
            &json!([8000])
        ),
        "{record}"
    );
    // The list shows the command.
    b.goto(&gw.url).await;
    let row = b.text(&format!("li.session[data-sandbox=\"{id}\"]")).await;
    assert!(row.contains("command python3 -m http.server 8000"), "{row}");

    // Alice shares it with bob on its Sharing page (an unknown email is refused there): his
    // list shows it as shared, with Open as its only action, and Open takes him to what it
    // serves at its session host.
    b.goto(&format!("{}/sessions/{id}/sharing", gw.url)).await;
    assert!(b.text("#shares-empty").await.contains("Not shared"));
    let share_with = |email: &'static str| {
        let b = &b;
        async move {
            let field = b.wait_for("#share-email").await;
            field.clear().await.unwrap();
            field.send_keys(email).await.unwrap();
            b.click("#share-form button[type=submit]").await;
        }
    };
    share_with("nobody@example.com").await;
    let refused = b.text("#share-error:not([hidden])").await;
    assert!(refused.contains("no user with email"), "{refused}");
    share_with("bob@example.com").await;
    until("the page lists bob", || async {
        b.has("#shares li").await && b.text("#shares").await.contains("bob@example.com")
    })
    .await;
    b.screenshot("web-sharing").await;
    b.sign_out().await;
    b.sign_in(&gw, "bob@example.com").await;
    let row_css = format!("li.session.shared[data-sandbox=\"{id}\"]");
    let row = b.text(&row_css).await;
    assert!(row.contains("shared by alice@example.com"), "{row}");
    assert!(!b.has(&format!("#delete-{id}")).await && !b.has(&format!("#stop-{id}")).await);
    b.click(&format!("#open-{id}")).await;
    until("bob reaches the session host", || async {
        host().await == format!("{id}.localhost")
    })
    .await;
    until("python's listing shows for bob", || async {
        b.text("body").await.contains("Directory listing for /")
    })
    .await;

    // Alice stops sharing it: it leaves bob's list.
    b.goto(&gw.url).await;
    b.sign_out().await;
    b.sign_in(&gw, "alice@example.com").await;
    b.goto(&format!("{}/sessions/{id}/sharing", gw.url)).await;
    b.click("#shares button[data-unshare=\"bob@example.com\"]")
        .await;
    b.wait_for("#shares-empty").await;
    let (_, record) = sandbox(&gw, &admin, &id);
    assert_eq!(record["shared_with"], json!([]), "{record}");
    b.close().await;
}

/// The network between a browser and the gateway, which a test can make drop: a TCP relay
/// on a loopback port of its own. [`Network::blip`] cuts every connection open at that
/// moment and lets new ones through.
///
/// Why this is the blip to test: what breaks a terminal in real life is the connection, not
/// the shell — Wi-Fi dropping, a NAT or proxy timing an idle connection out, a laptop waking
/// up — and neither end gets a WebSocket close frame, let alone an exit frame: the TCP
/// connection just ends, the browser reports an abnormal close and the gateway's read fails.
/// Killing the shell in the sandbox instead would make the gateway send an exit frame (the
/// command ended), which must not reconnect; closing the socket from page script would test
/// a hook no user has. So the test cuts the connection between them.
struct Network {
    url: String,
    cut: tokio::sync::broadcast::Sender<()>,
    /// While set, new connections are closed at once, as by a network that is down.
    down: Arc<AtomicBool>,
}

impl Network {
    /// Starts relaying to `gw`.
    async fn start(gw: &Gateway) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let upstream = gw.url.trim_start_matches("http://").to_owned();
        let (cut, _) = tokio::sync::broadcast::channel(1);
        let cuts = cut.clone();
        let down = Arc::new(AtomicBool::new(false));
        let is_down = down.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if is_down.load(Ordering::SeqCst) {
                    continue;
                }
                let mut cut = cuts.subscribe();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    // Returning drops both sockets: each end sees its connection closed.
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.recv() => {}
                    }
                });
            }
        });
        Network { url, cut, down }
    }

    /// Cuts every open connection.
    fn blip(&self) {
        self.cut.send(()).unwrap();
    }

    /// Takes the network down (`true`: open connections are cut, new ones closed at once)
    /// or back up.
    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
        if down {
            self.blip();
        }
    }
}

/// Has the shell print `marker` (`$((…))`, so the typed line does not show it) and the
/// terminal's size; returns the size as the shell sees it, `rows cols`.
async fn shell_size(b: &Browser, marker: &str, shown: &str) -> String {
    b.type_in_terminal(&format!(
        "echo {marker} $(stty size){}",
        char::from(Key::Enter)
    ))
    .await;
    let deadline = Instant::now() + LIMIT;
    loop {
        let screen = b.until_screen_shows(shown).await;
        let after = &screen[screen.rfind(shown).unwrap() + shown.len()..];
        let size: Vec<&str> = after.split_whitespace().take(2).collect();
        if size.len() == 2 && size.iter().all(|n| n.parse::<u16>().is_ok()) {
            return size.join(" ");
        }
        assert!(Instant::now() < deadline, "no size after {shown}: {screen}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// After the connection drops, the terminal says so, reconnects by itself to a new shell of
/// the same size, and works; after the shell exits it does not reconnect but offers a new
/// shell; a network that stays down ends its tries with a Reconnect button.
#[tokio::test(flavor = "current_thread")]
async fn the_terminal_reconnects_after_a_network_blip() {
    let server = GitServer::start();
    let root = tempfile::tempdir().unwrap();
    let (gw, admin, _reaper) = gateway(root.path(), &server);
    let (status, created) = post(&gw.api("/sandboxes"), &admin, json!({ "profile": "full" }));
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let (status, started) = call(
        "POST",
        &gw.api(&format!("/sandboxes/{id}/start")),
        Some(&admin),
        &[],
        None,
    );
    assert_eq!(status, 200, "{started}");
    let net = Network::start(&gw).await;
    let enter = char::from(Key::Enter);

    let b = Browser::start().await;
    b.sign_in_at(&net.url, "admin2@example.com").await;
    b.goto(&format!("{}/sessions/{id}/terminal", net.url)).await;
    until("the terminal connects", || async {
        b.text("#terminal-status").await == "Connected."
    })
    .await;
    let before = shell_size(&b, "before-$((0+1))", "before-1").await;
    let rows = b
        .run("return document.querySelector('.xterm-accessibility-tree').children.length;")
        .await;
    assert!(
        before.starts_with(&format!("{rows} ")),
        "the shell has the terminal's {rows} rows: {before}"
    );

    net.blip();
    until(
        "the page reconnects by itself and says it is a new shell",
        || async {
            b.text("#terminal-status")
                .await
                .contains("Reconnected. This is a new shell")
        },
    )
    .await;
    assert_eq!(
        shell_size(&b, "after-$((6*7))", "after-42").await,
        before,
        "the new shell has the terminal's size"
    );
    b.screenshot("web-terminal-reconnected").await;

    // An exit is not a blip: the page says the shell ended and offers a new one.
    b.type_in_terminal(&format!("exit 3{enter}")).await;
    until("the page says the shell ended", || async {
        b.text("#terminal-status").await == "The shell ended (exit code 3)."
    })
    .await;
    b.click("#terminal-reconnect").await;
    until("a new shell", || async {
        b.text("#terminal-status").await == "Connected to a new shell."
    })
    .await;
    b.type_in_terminal(&format!("echo again-$((5*5)){enter}"))
        .await;
    b.until_screen_shows("again-25").await;

    // A network that stays down: the page stops after its last try (about 35 s of pauses)
    // and offers to reconnect, which works once the network is back.
    net.set_down(true);
    until("the page gives up and says what to do", || async {
        b.text("#terminal-status")
            .await
            .contains("6 tries to reconnect failed. Check your network")
    })
    .await;
    net.set_down(false);
    b.click("#terminal-reconnect").await;
    until("reconnected", || async {
        b.text("#terminal-status").await.starts_with("Reconnected.")
    })
    .await;
    b.type_in_terminal(&format!("echo back-$((9*9)){enter}"))
        .await;
    b.until_screen_shows("back-81").await;
    b.close().await;
}
