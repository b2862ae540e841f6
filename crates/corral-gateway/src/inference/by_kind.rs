//! Providers named by their kind. A router path `/inference/@anthropic/...` or
//! `/inference/@openai/...` is served by the provider a sandbox's `ANTHROPIC_BASE_URL` or
//! `OPENAI_BASE_URL` points at: the egress proxy sends requests for the real provider hosts
//! (api.anthropic.com, api.openai.com) this way, so a tool that ignores the base-URL settings
//! is routed exactly like one that follows them. `@` cannot start a provider name, so the two
//! forms never meet.

use crate::store::{Provider, ProviderKind, Store, StoreError};

/// What starts a kind in a router path's provider segment.
const MARKER: char = '@';

/// A kind a router path may name: what it matches, and how an admin adds a provider of it.
struct Kind {
    name: &'static str,
    matches: fn(ProviderKind) -> bool,
    host: &'static str,
    key_env: &'static str,
}

/// The kinds the provider hosts stand for. `openai` takes an OpenAI-compatible provider when
/// there is no OpenAI one, as `OPENAI_BASE_URL` does.
const KINDS: &[Kind] = &[
    Kind {
        name: "anthropic",
        matches: |k| k == ProviderKind::Anthropic,
        host: "api.anthropic.com",
        key_env: "ANTHROPIC_API_KEY",
    },
    Kind {
        name: "openai",
        matches: ProviderKind::is_openai,
        host: "api.openai.com",
        key_env: "OPENAI_API_KEY",
    },
];

/// The provider a sandbox's settings for `kind` (`anthropic`, `openai`) use: the one named
/// like the kind, else the first of that kind by name.
pub(super) fn pick<'a>(providers: &'a [Provider], kind: &str) -> Option<&'a Provider> {
    let kind = KINDS.iter().find(|k| k.name == kind)?;
    providers
        .iter()
        .find(|p| p.name == kind.name && (kind.matches)(p.kind))
        .or_else(|| providers.iter().find(|p| (kind.matches)(p.kind)))
}

/// The provider a router path's provider segment names: `@KIND`, or a provider's name.
pub(super) fn find(store: &Store, segment: &str) -> Result<Option<Provider>, StoreError> {
    match segment.strip_prefix(MARKER) {
        Some(kind) => Ok(pick(&store.providers()?, kind).cloned()),
        None => store.provider(segment),
    }
}

/// What the agent is told when `segment` names no provider: which one to add, and how.
pub(super) fn missing(segment: &str) -> String {
    let Some(kind) = segment.strip_prefix(MARKER) else {
        return format!(
            "no provider named {segment:?} (an admin adds one with `corral provider add`; \
             `corral provider list` shows them)"
        );
    };
    match KINDS.iter().find(|k| k.name == kind) {
        Some(k) => format!(
            "requests to {host} go to the gateway's {kind} provider, and it has none: an admin \
             adds one with `corral provider add {kind} --kind {kind} --base-url https://{host} \
             --key-env {env}`",
            host = k.host,
            kind = k.name,
            env = k.key_env,
        ),
        None => format!("no provider kind {kind:?}: use @anthropic or @openai"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::tests::provider;

    #[test]
    fn a_kind_picks_the_provider_named_like_it_else_the_first_of_it() {
        let providers = [
            provider("a-local", ProviderKind::OpenAiCompatible),
            provider("claude", ProviderKind::Anthropic),
            provider("openai", ProviderKind::OpenAi),
        ];
        let name = |kind| pick(&providers, kind).map(|p| p.name.as_str());
        assert_eq!(name("anthropic"), Some("claude"));
        assert_eq!(name("openai"), Some("openai"));
        assert_eq!(name("a-local"), None);
        assert_eq!(pick(&providers[..2], "openai").unwrap().name, "a-local");
        assert_eq!(pick(&providers[2..], "anthropic"), None);
    }

    #[test]
    fn a_missing_kind_says_which_provider_to_add() {
        let message = missing("@anthropic");
        assert!(
            message.contains("corral provider add anthropic --kind anthropic")
                && message.contains("https://api.anthropic.com"),
            "{message}"
        );
        assert!(missing("@openai").contains("--kind openai"));
        assert!(missing("nope").contains("no provider named \"nope\""));
    }
}
