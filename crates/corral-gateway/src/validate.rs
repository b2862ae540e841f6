//! Checks on names that come from callers: emails, sandbox names, repos and branches. Each
//! returns `Err` with a sentence the API can hand back as a 400.

/// Longest repo URL or path accepted.
const MAX_REPO_LEN: usize = 2048;
/// Longest branch name accepted.
const MAX_BRANCH_LEN: usize = 255;

/// Whether `text` looks like an email address: one `@` with something printable on each side.
pub fn is_email(text: &str) -> bool {
    match text.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && text.len() <= 254
                && text.chars().all(|c| c.is_ascii_graphic())
        }
        None => false,
    }
}

/// A sandbox name must be a DNS label, since it becomes the sandbox's id and the first label
/// of its session host. It must not end in `-<digits>` either: `<id>-<port>` is how a session
/// host names another port of a sandbox, so `web-3000` would read as port 3000 of `web`.
pub fn sandbox_name(name: &str) -> Result<(), String> {
    let label = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !label {
        return Err(format!(
            "invalid sandbox name {name:?}: use 1 to 63 lowercase letters, digits and '-', \
             not starting or ending with '-'"
        ));
    }
    match name.rsplit_once('-') {
        Some((sandbox, port)) if port.bytes().all(|b| b.is_ascii_digit()) => Err(format!(
            "invalid sandbox name {name:?}: a name ending in '-{port}' would read as port \
             {port} of sandbox {sandbox:?} in a session host; end it with a letter (e.g. \
             {sandbox}-v{port})"
        )),
        _ => Ok(()),
    }
}

/// A repo is a URL or path handed to git later: printable, no spaces, not an option.
pub fn repo(repo: &str) -> Result<(), String> {
    if repo.is_empty() || repo.len() > MAX_REPO_LEN {
        return Err(format!(
            "invalid repo: must be 1 to {MAX_REPO_LEN} characters"
        ));
    }
    if repo.starts_with('-') || !repo.chars().all(|c| c.is_ascii_graphic()) {
        return Err(
            "invalid repo: must not start with '-' or contain spaces or control characters".into(),
        );
    }
    Ok(())
}

/// A branch must be a name git accepts (the rules of `git check-ref-format --branch`).
pub fn branch(branch: &str) -> Result<(), String> {
    let bad = branch.is_empty()
        || branch.len() > MAX_BRANCH_LEN
        || branch.starts_with('-')
        || branch.starts_with('/')
        || branch.ends_with('/')
        || branch.ends_with('.')
        || branch.ends_with(".lock")
        || branch.contains("..")
        || branch.contains("//")
        || branch.contains("@{")
        || branch == "@"
        || branch.split('/').any(|part| part.starts_with('.'))
        || branch
            .chars()
            .any(|c| c.is_ascii_control() || " ~^:?*[\\".contains(c) || c == '\u{7f}');
    if bad {
        Err(format!("invalid branch {branch:?}: not a name git accepts"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in [
            "a",
            "dev",
            "my-box-v2",
            "2048",
            "web-3000x",
            &"x".repeat(63),
        ] {
            assert!(sandbox_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "a-", "Dev", "a_b", "a.b", &"x".repeat(64), "ü"] {
            assert!(sandbox_name(bad).is_err(), "{bad}");
        }
        // `<id>-<port>` names another port of sandbox `<id>` in a session host.
        let port_like = sandbox_name("web-3000").unwrap_err();
        assert!(
            port_like.contains("port 3000 of sandbox \"web\""),
            "{port_like}"
        );
    }

    #[test]
    fn branches() {
        for good in ["main", "ai/fix-tests", "release/1.2", "feature/x_y"] {
            assert!(branch(good).is_ok(), "{good}");
        }
        for bad in [
            "", "-x", "a..b", "a b", "a/", "/a", "a.lock", "a~1", "a^", "a:b", ".hidden", "a/.b",
            "a@{1}", "@", "a\n",
        ] {
            assert!(branch(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn repos_and_emails() {
        assert!(repo("https://github.com/acme/app.git").is_ok());
        assert!(repo("--upload-pack=evil").is_err());
        assert!(repo("a b").is_err());
        assert!(is_email("a@b") && is_email("admin@localhost"));
        assert!(!is_email("ab") && !is_email("@b") && !is_email("a@") && !is_email("a b@c"));
    }
}
