//! The command's environment: built from scratch so nothing of the caller's environment leaks
//! into the sandbox except what the caller passes on purpose.

use std::path::PathBuf;

use crate::plan::Identity;

/// The `PATH` every sandbox starts with.
const BASE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Builds the command's environment: a fixed base (PATH, HOME, USER, LOGNAME, SHELL, LANG,
/// TMPDIR), extra `PATH` directories, then `extra` (which wins over the base).
pub fn clean_environment(
    identity: &Identity,
    path_prepend: &[PathBuf],
    extra: &[(String, String)],
) -> Vec<(String, String)> {
    let mut path: Vec<String> = path_prepend
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    path.push(BASE_PATH.to_string());
    let home = identity.home.to_string_lossy().into_owned();
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), path.join(":")),
        ("HOME".into(), home),
        ("USER".into(), identity.user_name.clone()),
        ("LOGNAME".into(), identity.user_name.clone()),
        ("SHELL".into(), "/bin/sh".into()),
        ("LANG".into(), "C.UTF-8".into()),
        ("TMPDIR".into(), "/tmp".into()),
        ("CORRAL_SANDBOX".into(), "1".into()),
    ];
    for (name, value) in extra {
        env.retain(|(n, _)| n != name);
        env.push((name.clone(), value.clone()));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_environment_is_fixed_and_extra_overrides_it() {
        let identity = Identity::unprivileged(4242, 4242);
        let env = clean_environment(
            &identity,
            &[PathBuf::from("/opt/tool/bin")],
            &[
                ("LANG".into(), "de_DE.UTF-8".into()),
                ("FOO".into(), "1".into()),
            ],
        );
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("HOME"), Some("/home/corral"));
        assert_eq!(get("LANG"), Some("de_DE.UTF-8"));
        assert_eq!(get("FOO"), Some("1"));
        assert!(get("PATH").unwrap().starts_with("/opt/tool/bin:"));
        assert_eq!(env.iter().filter(|(n, _)| n == "LANG").count(), 1);
    }
}
