//! `corral policy validate | show | check`, run as a person would, offline.

use corral_testkit::{Caller, Corral, OutputExt, TestDir};

fn corral() -> Corral {
    Corral::new(env!("CARGO_BIN_EXE_corral"), Caller::Unprivileged)
}

fn check(args: &[&str]) -> (i32, String, String) {
    let out = corral().args(["policy", "check"]).args(args).output();
    (out.code(), out.stdout_text(), out.stderr_text())
}

#[test]
fn check_answers_allow_or_deny_with_the_deciding_policy_and_exit_code() {
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &[
                "--profile",
                "restricted",
                "--action",
                "git_push",
                "--remote",
                "github.com",
                "--branch",
                "ai/x",
            ],
            0,
            "allow\n  restricted/git/push-allow:ai/*\n",
        ),
        (
            &[
                "--profile",
                "restricted",
                "--action",
                "git_push",
                "--remote",
                "github.com",
                "--branch",
                "main",
            ],
            1,
            "deny\n  restricted/git/push-deny:main\n",
        ),
        (
            &[
                "--profile",
                "moderate",
                "--action",
                "connect",
                "--host",
                "api.github.com",
                "--port",
                "443",
            ],
            0,
            "allow\n  moderate/network/allow:*.github.com:443\n",
        ),
        (
            &[
                "--profile",
                "restricted",
                "--action",
                "connect",
                "--host",
                "example.com",
            ],
            1,
            "deny\n  default-deny\n",
        ),
        (
            &[
                "--profile",
                "full",
                "--action",
                "connect",
                "--host",
                "169.254.169.254",
                "--port",
                "80",
            ],
            1,
            "deny\n  full/network/non-public-address\n",
        ),
        (
            &[
                "--profile",
                "restricted",
                "--action",
                "read",
                "--path",
                "/workspace/../etc/shadow",
            ],
            1,
            "deny\n  restricted/filesystem/hidden:/etc/shadow\n",
        ),
        (
            &[
                "--profile",
                "restricted",
                "--action",
                "exec",
                "--path",
                "/usr/bin/git",
            ],
            0,
            "allow\n  restricted/exec/allow:/usr/bin/git\n",
        ),
        (
            &[
                "--profile",
                "full",
                "--action",
                "inference",
                "--model",
                "local/qwen",
            ],
            0,
            "allow\n  full/inference/allow:*/*\n",
        ),
        (
            &[
                "--profile",
                "restricted",
                "--action",
                "mcp_tool_call",
                "--tool",
                "github/create_issue",
            ],
            1,
            "deny\n  default-deny\n",
        ),
    ];
    for (args, code, stdout) in cases {
        let (got_code, got_stdout, stderr) = check(args);
        assert_eq!(
            (got_code, got_stdout.as_str()),
            (*code, *stdout),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn check_reports_mistakes_with_exit_2() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--profile", "restricted", "--action", "fly"],
            "unknown action \"fly\": use one of connect",
        ),
        (
            &["--profile", "restricted", "--action", "connect"],
            "--action connect needs --host",
        ),
        (
            &[
                "--profile",
                "paranoid",
                "--action",
                "connect",
                "--host",
                "x",
            ],
            "unknown profile \"paranoid\"",
        ),
        (
            &[
                "--profile",
                "full",
                "--action",
                "read",
                "--path",
                "etc/passwd",
            ],
            "must be absolute",
        ),
        (
            &[
                "--profile",
                "full",
                "--action",
                "inference",
                "--model",
                "gpt-4o",
            ],
            "must look like left/right",
        ),
    ];
    for (args, message) in cases {
        let (code, stdout, stderr) = check(args);
        assert_eq!(code, 2, "{args:?}: {stdout}{stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}

#[test]
fn check_works_on_a_profile_file_with_http_rules() {
    let dir = TestDir::new(Caller::Unprivileged);
    let file = dir.write(
        Caller::Unprivileged,
        "team.toml",
        "extends = \"restricted\"\n[[http.allow]]\nhost = \"api.github.com\"\nmethods = [\"GET\"]\npaths = [\"/repos/*\"]\n",
    );
    let file = file.to_str().unwrap();
    let get = check(&[
        "--profile",
        file,
        "--action",
        "http_request",
        "--url",
        "https://api.github.com/repos/acme/app?x=1",
        "--method",
        "GET",
    ]);
    assert_eq!(
        (get.0, get.1.as_str()),
        (0, "allow\n  team/http/allow:api.github.com#1\n"),
        "{}",
        get.2
    );
    let delete = check(&[
        "--profile",
        file,
        "--action",
        "http_request",
        "--url",
        "https://api.github.com/repos/acme/app",
        "--method",
        "DELETE",
    ]);
    assert_eq!(
        (delete.0, delete.1.as_str()),
        (1, "deny\n  default-deny\n"),
        "{}",
        delete.2
    );
    let other = check(&[
        "--profile",
        file,
        "--action",
        "http_request",
        "--url",
        "http://example.com:8080/anything",
    ]);
    assert_eq!(
        (other.0, other.1.as_str()),
        (0, "allow\n  team/http/uninspected-hosts\n"),
        "{}",
        other.2
    );
}

#[test]
fn validate_accepts_good_files_and_names_the_line_of_a_bad_one() {
    let dir = TestDir::new(Caller::Unprivileged);
    let good = dir.write(
        Caller::Unprivileged,
        "good.toml",
        "extends = \"moderate\"\n[network]\nallow = [\"example.com:443\"]\n",
    );
    let out = corral().args(["policy", "validate"]).args([&good]).output();
    assert_eq!(out.code(), 0, "{}", out.stderr_text());
    assert!(
        out.stdout_text().starts_with("ok: "),
        "{}",
        out.stdout_text()
    );

    let bad = dir.write(
        Caller::Unprivileged,
        "bad.toml",
        "[network]\nallow = [\n  \"example.com:https\",\n]\n",
    );
    let out = corral().args(["policy", "validate"]).args([&bad]).output();
    assert_eq!(out.code(), 1);
    let expected = format!(
        "{}:3: network.allow: \"example.com:https\": \"https\" is not a port",
        bad.display()
    );
    assert!(
        out.stderr_text().contains(&expected),
        "{}",
        out.stderr_text()
    );

    let missing = corral()
        .args(["policy", "validate", "/nonexistent/p.toml"])
        .output();
    assert_eq!(missing.code(), 1);
    assert!(
        missing
            .stderr_text()
            .contains("cannot read /nonexistent/p.toml"),
        "{}",
        missing.stderr_text()
    );
}

#[test]
fn show_prints_a_profile_that_validates_and_the_cedar_it_compiles_to() {
    let dir = TestDir::new(Caller::Unprivileged);
    for name in ["full", "moderate", "restricted"] {
        let shown = corral().args(["policy", "show", name]).output();
        assert_eq!(shown.code(), 0, "{}", shown.stderr_text());
        let file = dir.write(
            Caller::Unprivileged,
            &format!("{name}-shown.toml"),
            &shown.stdout_text(),
        );
        let again = corral().args(["policy", "validate"]).args([&file]).output();
        assert_eq!(again.code(), 0, "{name}: {}", again.stderr_text());
        let reshown = corral().args(["policy", "show"]).args([&file]).output();
        assert!(
            reshown.stdout_text().contains("[resources]"),
            "{}",
            reshown.stdout_text()
        );
    }
    let cedar = corral()
        .args(["policy", "show", "restricted", "--cedar"])
        .output()
        .stdout_text();
    assert!(cedar.contains("@id(\"restricted/git/push-deny:main\")\nforbid (principal, action == Action::\"git_push\", resource)\nwhen { resource.branch == \"main\" };"), "{cedar}");
    assert!(
        cedar.contains("@id(\"restricted/network/non-public-address\")"),
        "{cedar}"
    );
}
