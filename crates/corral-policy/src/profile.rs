//! Profiles: the TOML a person reviews, parsed into typed rules.
//!
//! A profile file is read in one go and every rule is checked before anything is returned, so
//! a profile is either wholly loaded or refused with the file and line of the first mistake.
//! `extends` starts from another profile (a built-in name or a file next to this one) and adds
//! this file's rules to it: lists are appended, and a value this file sets (a mode, a limit,
//! `home_writable`) replaces the inherited one.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::error::{PolicyError, line_of};
use crate::rules::{
    HostPattern, HostRule, HttpRule, PairPattern, PrivateGrant, PushRule, check_plain,
};
use crate::size::{format_size, parse_size};

/// The built-in profiles, in order of trust, with the TOML they are made of.
const BUILTIN: &[(&str, &str)] = &[
    ("full", include_str!("../../../profiles/full.toml")),
    ("moderate", include_str!("../../../profiles/moderate.toml")),
    (
        "restricted",
        include_str!("../../../profiles/restricted.toml"),
    ),
];

/// How deep `extends` may chain before corral assumes a cycle.
const MAX_EXTENDS_DEPTH: usize = 8;

/// Names of the built-in profiles.
pub fn builtin_names() -> impl Iterator<Item = &'static str> {
    BUILTIN.iter().map(|(name, _)| *name)
}

/// Whether a decision that denies is enforced or only recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A deny stops the action (the default).
    #[default]
    Enforce,
    /// A deny is recorded as a would-deny and the action goes ahead: for watching a new
    /// policy on real work before enforcing it.
    Audit,
}

/// A loaded, checked profile: what the sandbox builds from (filesystem, exec, resources) and
/// what the Cedar compiler turns into policies (everything).
#[derive(Debug, Clone, Serialize)]
pub struct Profile {
    /// The profile's name (`restricted`, or the file's `name`, or its file stem).
    pub name: String,
    /// One line saying who the profile is for.
    pub description: String,
    /// Mode for every section that does not set its own.
    pub mode: Mode,
    /// What the sandbox may read and write.
    pub filesystem: FilesystemRules,
    /// What the sandbox may execute.
    pub exec: ExecRules,
    /// Where the sandbox may connect.
    pub network: NetworkRules,
    /// Which HTTP requests intercepted hosts accept.
    pub http: HttpRules,
    /// Which branches may be pushed.
    pub git: GitRules,
    /// Which models may be called.
    pub inference: PairRules,
    /// Which MCP tools may be called.
    pub mcp: PairRules,
    /// Resource limits.
    pub resources: Resources,
    /// Raw Cedar files added to the compiled policies.
    #[serde(serialize_with = "serialize_cedar_files")]
    pub cedar: Vec<CedarFile>,
    /// Every file this profile was read from (itself, what it extends, its Cedar files), for
    /// hot reload. Built-in profiles have none.
    #[serde(skip)]
    pub sources: Vec<PathBuf>,
}

/// Filesystem rules. Paths are host paths (visible at the same place inside) or globs; `~/`
/// is the caller's home, except in `hidden`, where it means every home on the host.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FilesystemRules {
    /// Readable (and, with `exec`, executable) paths.
    pub read_only: Vec<String>,
    /// Writable paths besides the workspace and `/tmp`.
    pub read_write: Vec<String>,
    /// Paths that never exist inside, whatever else says.
    pub hidden: Vec<String>,
    /// Workspace-relative paths kept read-only (files that would run code on the host later).
    pub protected: Vec<String>,
    /// Whether the sandbox's home directory is writable.
    pub home_writable: bool,
    /// Mode of `read` and `write` decisions (`None`: the profile's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
}

/// Exec rules.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExecRules {
    /// Executable files or trees; `None` means anything readable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<String>>,
    /// Mode of `exec` decisions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
}

/// Network rules. Non-public addresses are refused after resolution unless `allow_private`
/// grants them or an `allow` rule names the address itself.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NetworkRules {
    /// `host[:ports]` rules that permit.
    #[serde(serialize_with = "serialize_all")]
    pub allow: Vec<HostRule>,
    /// `host[:ports]` rules that forbid (these win).
    #[serde(serialize_with = "serialize_all")]
    pub deny: Vec<HostRule>,
    /// Private, loopback or link-local addresses, networks or host names that may be reached.
    #[serde(serialize_with = "serialize_all")]
    pub allow_private: Vec<PrivateGrant>,
    /// Mode of `connect` decisions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
}

/// HTTP rules for hosts under TLS interception. A host with rules here is intercepted, and
/// only requests an `allow` rule matches get through; other hosts are not inspected.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HttpRules {
    /// Requests that are permitted.
    pub allow: Vec<HttpRule>,
    /// Requests that are forbidden (these win).
    pub deny: Vec<HttpRule>,
    /// Mode of `http_request` decisions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
}

impl HttpRules {
    /// Whether a host has HTTP rules (and so must be intercepted to apply them).
    pub fn has_rules_for(&self, host: &str) -> bool {
        self.allow
            .iter()
            .chain(&self.deny)
            .any(|r| r.host.matches(host))
    }
}

/// Git push rules.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GitRules {
    /// Git hosts whose HTTPS traffic the egress proxy intercepts, so that push rules apply to
    /// smart-HTTP pushes there (`github.com`, `*.example.com`). Pushes to other hosts over
    /// HTTPS pass through a tunnel the proxy cannot read.
    #[serde(serialize_with = "serialize_all")]
    pub intercept: Vec<HostPattern>,
    /// Push rules per remote host pattern.
    pub push: Vec<PushRule>,
    /// Mode of `git_push` decisions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
}

/// `left/right` allow and deny rules (inference: provider/model; MCP: server/tool).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PairRules {
    /// Patterns that permit.
    #[serde(serialize_with = "serialize_all")]
    pub allow: Vec<PairPattern>,
    /// Patterns that forbid (these win).
    #[serde(serialize_with = "serialize_all")]
    pub deny: Vec<PairPattern>,
    /// Mode of these decisions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
}

/// Resource limits; `None` leaves the host's default.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Resources {
    /// Hard memory limit in bytes.
    #[serde(serialize_with = "serialize_size")]
    pub memory_max: Option<u64>,
    /// Memory level above which the kernel reclaims hard, in bytes.
    #[serde(serialize_with = "serialize_size")]
    pub memory_high: Option<u64>,
    /// CPU limit in cores.
    pub cpus: Option<f64>,
    /// Maximum processes and threads.
    pub pids: Option<u64>,
}

/// A raw Cedar file named by a profile.
#[derive(Debug, Clone)]
pub struct CedarFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its text.
    pub text: String,
}

impl Profile {
    /// One of the built-in profiles: `full`, `moderate` or `restricted`.
    pub fn builtin(name: &str) -> Result<Self, PolicyError> {
        let text = builtin_text(name).ok_or_else(|| PolicyError::UnknownProfile(name.into()))?;
        let file = PathBuf::from(format!("profiles/{name}.toml"));
        Loader.load_text(&file, text, None, 0)
    }

    /// A profile file.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        Loader.load_file(path, 0)
    }

    /// A profile from TOML text that did not come from a file of its own (a database row, a
    /// test); `label` names it in errors. It may extend a built-in profile but name no files.
    pub fn from_toml(label: &str, text: &str) -> Result<Self, PolicyError> {
        Loader.load_text(Path::new(label), text, None, 0)
    }

    /// A built-in name or a path to a profile file (anything with a `/` or ending `.toml`).
    pub fn resolve(name_or_path: &str) -> Result<Self, PolicyError> {
        if name_or_path.contains('/') || name_or_path.ends_with(".toml") {
            Self::load(Path::new(name_or_path))
        } else {
            Self::builtin(name_or_path)
        }
    }

    /// The mode a section's decisions run in.
    pub fn section_mode(&self, section: Option<Mode>) -> Mode {
        section.unwrap_or(self.mode)
    }

    fn empty(name: String) -> Self {
        Self {
            name,
            description: String::new(),
            mode: Mode::Enforce,
            filesystem: FilesystemRules::default(),
            exec: ExecRules::default(),
            network: NetworkRules::default(),
            http: HttpRules::default(),
            git: GitRules::default(),
            inference: PairRules::default(),
            mcp: PairRules::default(),
            resources: Resources::default(),
            cedar: Vec::new(),
            sources: Vec::new(),
        }
    }

    /// Whether the egress proxy must intercept TLS to `host` to enforce this profile: the
    /// host has HTTP rules, or is a git host whose pushes are guarded.
    pub fn intercepts(&self, host: &str) -> bool {
        self.http.has_rules_for(host) || self.git.intercept.iter().any(|p| p.matches(host))
    }

    /// Whether any host's TLS must be intercepted to enforce this profile.
    pub fn intercepts_any(&self) -> bool {
        !self.http.allow.is_empty() || !self.http.deny.is_empty() || !self.git.intercept.is_empty()
    }

    /// The effective profile as TOML, the way `corral policy show` prints it.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot show profile: {e}\n"))
    }
}

fn builtin_text(name: &str) -> Option<&'static str> {
    BUILTIN.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// Reads a profile and what it extends.
struct Loader;

impl Loader {
    fn load_file(&self, path: &Path, depth: usize) -> Result<Profile, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError::Read {
            file: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut profile = self.load_text(path, &text, Some(&dir), depth)?;
        profile.sources.push(path.to_path_buf());
        Ok(profile)
    }

    /// Loads `text` (from `file`); `dir` is where relative paths in it resolve (`None` for
    /// built-in profiles, which cannot name files).
    fn load_text(
        &self,
        file: &Path,
        text: &str,
        dir: Option<&Path>,
        depth: usize,
    ) -> Result<Profile, PolicyError> {
        let raw: ProfileFile = toml::from_str(text).map_err(|e| PolicyError::Toml {
            file: file.to_path_buf(),
            line: e.span().map_or(1, |s| line_of(text, s.start)),
            message: e.message().to_string(),
        })?;
        let source = Source { file, text };
        let default_name = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "profile".into());
        let mut profile = match &raw.extends {
            Some(target) => self.load_parent(&source, target, dir, depth)?,
            None => Profile::empty(default_name.clone()),
        };
        profile.name = raw.name.clone().unwrap_or(default_name);
        raw.apply(&mut profile, &source, dir)?;
        Ok(profile)
    }

    fn load_parent(
        &self,
        source: &Source<'_>,
        target: &Spanned<String>,
        dir: Option<&Path>,
        depth: usize,
    ) -> Result<Profile, PolicyError> {
        let name = target.get_ref();
        let refuse = |message: String| PolicyError::Extends {
            file: source.file.to_path_buf(),
            target: name.clone(),
            message,
        };
        if depth >= MAX_EXTENDS_DEPTH {
            return Err(refuse(format!(
                "profiles extend each other more than {MAX_EXTENDS_DEPTH} deep (is there a cycle?)"
            )));
        }
        if let Some(text) = builtin_text(name) {
            let file = PathBuf::from(format!("profiles/{name}.toml"));
            return self.load_text(&file, text, None, depth + 1);
        }
        let Some(dir) = dir else {
            return Err(refuse(
                "no built-in profile has that name (full, moderate, restricted), and this profile has no directory to find a file in".into(),
            ));
        };
        let path = dir.join(name);
        if !path.is_file() {
            return Err(refuse(format!(
                "no built-in profile has that name (full, moderate, restricted) and {} is not a file",
                path.display()
            )));
        }
        self.load_file(&path, depth + 1)
    }
}

/// Where the text being loaded came from, for error positions.
struct Source<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    fn rule_error<T>(&self, spanned: &Spanned<T>, field: &str, message: String) -> PolicyError {
        PolicyError::Rule {
            file: self.file.to_path_buf(),
            line: line_of(self.text, spanned.span().start),
            field: field.into(),
            message,
        }
    }

    /// Parses each entry of a list with `parse`, reporting the entry's line on failure.
    fn each<T>(
        &self,
        entries: &[Spanned<String>],
        field: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Vec<T>, PolicyError> {
        entries
            .iter()
            .map(|e| parse(e.get_ref()).map_err(|m| self.rule_error(e, field, m)))
            .collect()
    }
}

/// A profile file as written. Unknown fields are refused so a typo is never silently ignored.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    name: Option<String>,
    description: Option<String>,
    extends: Option<Spanned<String>>,
    mode: Option<Mode>,
    #[serde(default)]
    filesystem: FilesystemFile,
    #[serde(default)]
    exec: ExecFile,
    #[serde(default)]
    network: NetworkFile,
    #[serde(default)]
    http: HttpFile,
    #[serde(default)]
    git: GitFile,
    #[serde(default)]
    inference: PairFile,
    #[serde(default)]
    mcp: PairFile,
    #[serde(default)]
    resources: ResourcesFile,
    #[serde(default)]
    cedar: Vec<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FilesystemFile {
    #[serde(default)]
    read_only: Vec<Spanned<String>>,
    #[serde(default)]
    read_write: Vec<Spanned<String>>,
    #[serde(default)]
    hidden: Vec<Spanned<String>>,
    #[serde(default)]
    protected: Vec<Spanned<String>>,
    home_writable: Option<bool>,
    mode: Option<Mode>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ExecFile {
    allow: Option<Vec<Spanned<String>>>,
    mode: Option<Mode>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NetworkFile {
    #[serde(default)]
    allow: Vec<Spanned<String>>,
    #[serde(default)]
    deny: Vec<Spanned<String>>,
    #[serde(default)]
    allow_private: Vec<Spanned<String>>,
    mode: Option<Mode>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    #[serde(default)]
    allow: Vec<Spanned<HttpRuleFile>>,
    #[serde(default)]
    deny: Vec<Spanned<HttpRuleFile>>,
    mode: Option<Mode>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpRuleFile {
    host: String,
    #[serde(default)]
    methods: Vec<String>,
    #[serde(default)]
    paths: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct GitFile {
    #[serde(default)]
    intercept: Vec<Spanned<String>>,
    #[serde(default)]
    push: Vec<Spanned<PushRuleFile>>,
    mode: Option<Mode>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PushRuleFile {
    #[serde(default = "any_remote")]
    remote: String,
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
}

fn any_remote() -> String {
    "*".into()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PairFile {
    #[serde(default)]
    allow: Vec<Spanned<String>>,
    #[serde(default)]
    deny: Vec<Spanned<String>>,
    mode: Option<Mode>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ResourcesFile {
    memory_max: Option<Spanned<String>>,
    memory_high: Option<Spanned<String>>,
    cpus: Option<Spanned<f64>>,
    pids: Option<Spanned<u64>>,
}

impl ProfileFile {
    /// Adds this file's rules to `profile`, checking every one.
    fn apply(
        self,
        profile: &mut Profile,
        source: &Source<'_>,
        dir: Option<&Path>,
    ) -> Result<(), PolicyError> {
        if let Some(description) = self.description {
            profile.description = description;
        }
        if let Some(mode) = self.mode {
            profile.mode = mode;
        }
        self.filesystem.apply(&mut profile.filesystem, source)?;
        self.exec.apply(&mut profile.exec, source)?;
        self.network.apply(&mut profile.network, source)?;
        self.http.apply(&mut profile.http, source)?;
        self.git.apply(&mut profile.git, source)?;
        self.inference.apply(
            &mut profile.inference,
            source,
            "inference",
            "provider/model, e.g. anthropic/claude-*",
        )?;
        self.mcp.apply(
            &mut profile.mcp,
            source,
            "mcp",
            "server/tool, e.g. github/*",
        )?;
        self.resources.apply(&mut profile.resources, source)?;
        for entry in &self.cedar {
            let Some(dir) = dir else {
                return Err(source.rule_error(
                    entry,
                    "cedar",
                    "only a profile file can name Cedar files (they are found next to it)".into(),
                ));
            };
            let path = dir.join(entry.get_ref());
            let text = std::fs::read_to_string(&path).map_err(|e| {
                source.rule_error(
                    entry,
                    "cedar",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            profile.sources.push(path.clone());
            profile.cedar.push(CedarFile { path, text });
        }
        Ok(())
    }
}

impl FilesystemFile {
    fn apply(self, rules: &mut FilesystemRules, source: &Source<'_>) -> Result<(), PolicyError> {
        let field = |name: &str| format!("filesystem.{name}");
        rules
            .read_only
            .extend(source.each(&self.read_only, &field("read_only"), host_path)?);
        rules
            .read_write
            .extend(source.each(&self.read_write, &field("read_write"), host_path)?);
        for hidden in source.each(&self.hidden, &field("hidden"), host_path)? {
            rules.hidden.extend(every_home(&hidden));
        }
        rules.protected.extend(source.each(
            &self.protected,
            &field("protected"),
            workspace_path,
        )?);
        if let Some(writable) = self.home_writable {
            rules.home_writable = writable;
        }
        rules.mode = self.mode.or(rules.mode);
        Ok(())
    }
}

impl ExecFile {
    fn apply(self, rules: &mut ExecRules, source: &Source<'_>) -> Result<(), PolicyError> {
        if let Some(allow) = &self.allow {
            let parsed = source.each(allow, "exec.allow", host_path)?;
            rules.allow.get_or_insert_with(Vec::new).extend(parsed);
        }
        rules.mode = self.mode.or(rules.mode);
        Ok(())
    }
}

impl NetworkFile {
    fn apply(self, rules: &mut NetworkRules, source: &Source<'_>) -> Result<(), PolicyError> {
        let host_rule = |t: &str| t.parse::<HostRule>();
        rules
            .allow
            .extend(source.each(&self.allow, "network.allow", host_rule)?);
        rules
            .deny
            .extend(source.each(&self.deny, "network.deny", host_rule)?);
        rules.allow_private.extend(source.each(
            &self.allow_private,
            "network.allow_private",
            |t| t.parse::<PrivateGrant>(),
        )?);
        rules.mode = self.mode.or(rules.mode);
        Ok(())
    }
}

impl HttpFile {
    fn apply(self, rules: &mut HttpRules, source: &Source<'_>) -> Result<(), PolicyError> {
        for (list, entries, field) in [
            (&mut rules.allow, &self.allow, "http.allow"),
            (&mut rules.deny, &self.deny, "http.deny"),
        ] {
            for entry in entries {
                let raw = entry.get_ref();
                let rule = HttpRule {
                    host: raw
                        .host
                        .parse::<HostPattern>()
                        .map_err(|m| source.rule_error(entry, field, m))?,
                    methods: raw.methods.clone(),
                    paths: raw.paths.clone(),
                };
                rule.validate()
                    .and_then(|()| raw.paths.iter().try_for_each(|p| check_plain(p)))
                    .map_err(|m| source.rule_error(entry, field, m))?;
                list.push(rule);
            }
        }
        rules.mode = self.mode.or(rules.mode);
        Ok(())
    }
}

impl GitFile {
    fn apply(self, rules: &mut GitRules, source: &Source<'_>) -> Result<(), PolicyError> {
        rules
            .intercept
            .extend(source.each(&self.intercept, "git.intercept", |t| {
                t.parse::<HostPattern>()
            })?);
        for entry in &self.push {
            let raw = entry.get_ref();
            let checked = || -> Result<PushRule, String> {
                let remote = raw.remote.parse::<HostPattern>()?;
                for glob in raw.allow.iter().chain(&raw.deny) {
                    check_plain(glob)?;
                }
                if raw.allow.is_empty() && raw.deny.is_empty() {
                    return Err("a push rule needs `allow` or `deny` branch globs".into());
                }
                Ok(PushRule {
                    remote,
                    allow: raw.allow.clone(),
                    deny: raw.deny.clone(),
                })
            };
            let rule = checked().map_err(|m| source.rule_error(entry, "git.push", m))?;
            rules.push.push(rule);
        }
        rules.mode = self.mode.or(rules.mode);
        Ok(())
    }
}

impl PairFile {
    fn apply(
        self,
        rules: &mut PairRules,
        source: &Source<'_>,
        section: &str,
        shape: &str,
    ) -> Result<(), PolicyError> {
        let parse = |t: &str| PairPattern::parse(t, shape);
        rules
            .allow
            .extend(source.each(&self.allow, &format!("{section}.allow"), parse)?);
        rules
            .deny
            .extend(source.each(&self.deny, &format!("{section}.deny"), parse)?);
        rules.mode = self.mode.or(rules.mode);
        Ok(())
    }
}

impl ResourcesFile {
    fn apply(self, resources: &mut Resources, source: &Source<'_>) -> Result<(), PolicyError> {
        let size = |entry: &Spanned<String>, field: &str| {
            parse_size(entry.get_ref()).map_err(|e| source.rule_error(entry, field, e.to_string()))
        };
        if let Some(entry) = &self.memory_max {
            resources.memory_max = Some(size(entry, "resources.memory_max")?);
        }
        if let Some(entry) = &self.memory_high {
            resources.memory_high = Some(size(entry, "resources.memory_high")?);
        }
        if let Some(entry) = &self.cpus {
            let cpus = *entry.get_ref();
            if !(cpus.is_finite() && cpus > 0.0) {
                return Err(source.rule_error(
                    entry,
                    "resources.cpus",
                    format!("{cpus} must be a positive number of cores, e.g. 1.5"),
                ));
            }
            resources.cpus = Some(cpus);
        }
        if let Some(entry) = &self.pids {
            if *entry.get_ref() == 0 {
                return Err(source.rule_error(
                    entry,
                    "resources.pids",
                    "0 processes could not even start the command".into(),
                ));
            }
            resources.pids = Some(*entry.get_ref());
        }
        Ok(())
    }
}

/// A host path or glob: absolute, or under `~/`.
fn host_path(text: &str) -> Result<String, String> {
    check_plain(text)?;
    if !(text.starts_with('/') || text.starts_with("~/")) {
        return Err(format!(
            "{text:?} must be an absolute path or start with ~/"
        ));
    }
    if text.split('/').any(|part| part == "..") {
        return Err(format!("{text:?} must not contain '..'"));
    }
    if text.contains(['?', '[', ']']) {
        return Err(format!("{text:?}: the only wildcard in paths is '*'"));
    }
    Ok(text.trim_end_matches('/').to_string()).map(|p| if p.is_empty() { "/".into() } else { p })
}

/// A path relative to the workspace, without `..`.
fn workspace_path(text: &str) -> Result<String, String> {
    check_plain(text)?;
    if text.starts_with('/') || text.split('/').any(|part| part == "..") {
        return Err(format!(
            "{text:?} must be relative to the workspace (like .git/hooks), without '..'"
        ));
    }
    Ok(text.trim_end_matches('/').to_string())
}

/// In `hidden`, `~/x` means x in every home: the caller's, root's and each under /home.
fn every_home(path: &str) -> Vec<String> {
    match path.strip_prefix("~/") {
        Some(rest) => vec![
            path.to_string(),
            format!("/root/{rest}"),
            format!("/home/*/{rest}"),
        ],
        None => vec![path.to_string()],
    }
}

fn serialize_all<T: std::fmt::Display, S: serde::Serializer>(
    values: &[T],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(values.iter().map(|v| v.to_string()))
}

fn serialize_size<S: serde::Serializer>(
    value: &Option<u64>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(bytes) => serializer.serialize_str(&format_size(*bytes)),
        None => serializer.serialize_none(),
    }
}

fn serialize_cedar_files<S: serde::Serializer>(
    files: &[CedarFile],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(files.iter().map(|f| f.path.display().to_string()))
}
