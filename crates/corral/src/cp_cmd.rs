//! `corral sandbox cp SRC DST`: copies files between here and a sandbox's workspace, like
//! `kubectl cp`. Exactly one side is `NAME:PATH` (PATH relative to the workspace); directories
//! are copied whole. Transfers are tar streams (never held in memory); with a terminal on
//! stderr the bytes moved so far are shown there.
//!
//! - `cp NAME:PATH DST`: PATH becomes DST, or goes into DST (as DST/basename) when DST is an
//!   existing directory.
//! - `cp SRC NAME:DIR`: SRC goes into the workspace directory DIR (created if missing) as
//!   DIR/basename(SRC); `NAME:` is the workspace itself.

use std::io::{IsTerminal, Read};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, bail};

use crate::client::Client;
use crate::sandbox_cmd::{id_of, resolve};

/// Bytes between two progress updates.
const PROGRESS_STEP: u64 = 256 * 1024;

/// Runs `corral sandbox cp`.
pub fn cp(client: &Client, src: &str, dst: &str) -> anyhow::Result<()> {
    match (remote(src), remote(dst)) {
        (Some((name, path)), None) => {
            let id = id_of(&resolve(client, name)?)?;
            download(client, &id, path, Path::new(dst))
        }
        (None, Some((name, path))) => {
            let id = id_of(&resolve(client, name)?)?;
            upload(client, &id, Path::new(src), path)
        }
        (Some(_), Some(_)) => bail!(
            "both {src:?} and {dst:?} name a sandbox: one side must be a local path \
             (write a local path containing ':' as ./PATH)"
        ),
        (None, None) => bail!(
            "neither {src:?} nor {dst:?} names a sandbox: write the sandbox side as NAME:PATH \
             (e.g. mybox:src)"
        ),
    }
}

/// `NAME:PATH` split, if `spec` names a sandbox (a local path with a `/` before its first
/// `:` does not).
fn remote(spec: &str) -> Option<(&str, &str)> {
    let (name, path) = spec.split_once(':')?;
    (!name.is_empty() && !name.contains('/')).then_some((name, path))
}

fn files_path(id: &str, path: &str) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("path", path)
        .finish();
    format!("/api/v1/sandboxes/{id}/files?{query}")
}

/// The name the gateway gives a downloaded path's top-level entry.
fn top_name(path: &str) -> PathBuf {
    Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(PathBuf::from(name)),
            _ => None,
        })
        .next_back()
        .unwrap_or_else(|| PathBuf::from("workspace"))
}

fn download(client: &Client, id: &str, path: &str, dst: &Path) -> anyhow::Result<()> {
    let body = client.stream(&files_path(id, path))?;
    let mut archive = tar::Archive::new(Progress::new(body, "received"));
    // The gateway never sends setuid bits, owners or devices; unpack refuses paths that
    // would land outside its directory.
    archive.set_preserve_permissions(false);
    archive.set_unpack_xattrs(false);
    if dst.is_dir() {
        return archive
            .unpack(dst)
            .with_context(|| format!("cannot unpack into {}", dst.display()));
    }
    let parent = match dst.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        bail!("{} is not a directory", parent.display());
    }
    // Unpacked beside DST first, so DST appears whole or not at all.
    let staging = tempfile::Builder::new()
        .prefix(".corral-cp-")
        .tempdir_in(parent)
        .with_context(|| format!("cannot write in {}", parent.display()))?;
    archive
        .unpack(staging.path())
        .with_context(|| format!("cannot unpack into {}", parent.display()))?;
    std::fs::rename(staging.path().join(top_name(path)), dst)
        .with_context(|| format!("cannot create {}", dst.display()))
}

fn upload(client: &Client, id: &str, src: &Path, dir: &str) -> anyhow::Result<()> {
    let meta =
        std::fs::symlink_metadata(src).with_context(|| format!("cannot read {}", src.display()))?;
    let absolute = std::path::absolute(src)?;
    let name = match absolute.components().next_back() {
        Some(Component::Normal(name)) => PathBuf::from(name),
        // `.` or `/`: named after the directory it stands for.
        _ => src
            .canonicalize()?
            .file_name()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("root")),
    };
    let (reader, writer) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).context("cannot make a pipe")?;
    let (reader, writer) = (std::fs::File::from(reader), std::fs::File::from(writer));
    let source = src.to_owned();
    let builder = std::thread::spawn(move || -> std::io::Result<()> {
        let mut tar = tar::Builder::new(writer);
        // Symlinks travel as symlinks (the gateway refuses those that lead out).
        tar.follow_symlinks(false);
        if meta.is_dir() {
            tar.append_dir_all(&name, &source)?;
        } else {
            tar.append_path_with_name(&source, &name)?;
        }
        tar.finish()
    });
    let answer = client.put_stream(
        &files_path(id, dir),
        "application/x-tar",
        Progress::new(reader, "sent"),
    );
    let built = builder
        .join()
        .map_err(|_| anyhow::anyhow!("the archive builder panicked"))?;
    // The gateway's refusal explains more than the broken pipe it caused here.
    answer?;
    built.with_context(|| format!("cannot read {}", src.display()))
}

/// A reader that shows how many bytes went through it on stderr, when stderr is a terminal.
struct Progress<R> {
    inner: R,
    what: &'static str,
    bytes: u64,
    shown: u64,
    visible: bool,
}

impl<R> Progress<R> {
    fn new(inner: R, what: &'static str) -> Self {
        Self {
            inner,
            what,
            bytes: 0,
            shown: 0,
            visible: std::io::stderr().is_terminal(),
        }
    }
}

impl<R: Read> Read for Progress<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        if self.visible && self.bytes - self.shown >= PROGRESS_STEP {
            self.shown = self.bytes;
            eprint!("\r{} {} bytes", self.what, self.bytes);
        }
        Ok(n)
    }
}

impl<R> Drop for Progress<R> {
    fn drop(&mut self) {
        if self.visible {
            eprintln!("\r{} {} bytes", self.what, self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_the_sandbox_side_is_name_colon_path() {
        assert_eq!(remote("box:src/a"), Some(("box", "src/a")));
        assert_eq!(remote("box:"), Some(("box", "")));
        assert_eq!(remote("./a:b"), None);
        assert_eq!(remote("/tmp/x"), None);
        assert_eq!(remote(":x"), None);
        assert_eq!(top_name("src/lib/"), PathBuf::from("lib"));
        assert_eq!(top_name("."), PathBuf::from("workspace"));
    }
}
