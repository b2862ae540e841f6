//! Errors from loading, compiling and evaluating profiles.

use std::path::PathBuf;

/// Why a profile could not be loaded or compiled. Every variant names the file it came from
/// and, where there is one, the line, so a person can go straight to the mistake.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The profile file (or a Cedar file it names) could not be read.
    #[error("cannot read {}: {reason}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// What the operating system said.
        reason: String,
    },
    /// The TOML is malformed or has a field corral does not know.
    #[error("{}:{line}: {message}", file.display())]
    Toml {
        /// The file.
        file: PathBuf,
        /// 1-based line of the mistake.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A rule parsed as TOML but does not say something corral understands.
    #[error("{}:{line}: {field}: {message}", file.display())]
    Rule {
        /// The file.
        file: PathBuf,
        /// 1-based line of the rule.
        line: usize,
        /// The TOML field the rule is in, e.g. `network.allow`.
        field: String,
        /// What is wrong and what would be right.
        message: String,
    },
    /// A raw Cedar file does not parse, or does not validate against corral's schema.
    #[error("{}:{line}: {message}", file.display())]
    Cedar {
        /// The Cedar file (or the profile, for policies compiled from it).
        file: PathBuf,
        /// 1-based line of the mistake (1 when Cedar gives no position).
        line: usize,
        /// What Cedar said.
        message: String,
    },
    /// `extends` names a profile that does not exist or forms a cycle.
    #[error("{}: extends {target:?}: {message}", file.display())]
    Extends {
        /// The file with the `extends`.
        file: PathBuf,
        /// What it tried to extend.
        target: String,
        /// What is wrong.
        message: String,
    },
    /// No built-in profile has this name.
    #[error(
        "unknown profile {0:?}: the built-in profiles are full, moderate and restricted (or pass a profile file)"
    )]
    UnknownProfile(String),
    /// A size such as `2G` could not be read.
    #[error(
        "invalid size {0:?}: use a number with an optional K, M, G or T suffix, e.g. 512M or 2.5G"
    )]
    Size(String),
    /// A decision request is malformed (an empty host, a relative path…).
    #[error("invalid request: {0}")]
    Request(String),
}

/// 1-based line number of a byte offset in `text`.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}
