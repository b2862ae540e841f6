//! Copying files into and out of a sandbox's workspace as tar streams, whether the sandbox
//! runs or not. The gateway does this on the host, on the workspace directory itself.
//!
//! Threat model: the workspace is written by the sandbox, which may plant symlinks (to
//! `/etc`, say) and swap directories while a copy runs; an uploaded archive is written by the
//! caller, who may name `../x`, `/etc/passwd`, a symlink followed by a file "through" it, a
//! hard link to a host file, device nodes or setuid files. Neither may make the gateway read
//! or write anything outside the workspace. So:
//! - every caller-given path is resolved with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`
//!   relative to a descriptor of the workspace: the kernel refuses `..`, absolute paths and
//!   symlinks that lead out (`EXDEV`), whatever the sandbox does meanwhile;
//! - a download walks the tree one name at a time from directory descriptors, never following
//!   a symlink (a symlink is archived as a symlink);
//! - an upload is first extracted into a staging directory beside the workspace (outside the
//!   sandbox's reach), with the same `RESOLVE_BENEATH` resolution relative to it; entries that
//!   are absolute, contain `..`, link (hard or soft) out of the workspace, or are devices or
//!   fifos are refused, and setuid/setgid/sticky bits are dropped. Only a fully accepted
//!   archive is moved into the workspace (`renameat`, one name at a time from descriptors); a
//!   refused one is removed, so nothing of it is left anywhere.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{
    AtFlags, CWD, FileType, Mode, OFlags, ResolveFlags, Stat, fstat, openat, openat2, statat,
};
use rustix::io::Errno;

use super::Runtime;
use super::extract;

/// Why a copy was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// The path is not a plain relative path inside the workspace.
    #[error("path {path:?} {reason}")]
    BadPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Nothing at this path in the workspace.
    #[error("{path:?} does not exist in the workspace")]
    NotFound {
        /// The path as given.
        path: String,
    },
    /// The path resolves outside the workspace (through a symlink).
    #[error("{path:?} leads out of the workspace (through a symlink): refused")]
    OutOfWorkspace {
        /// The path as given.
        path: String,
    },
    /// The path is neither a regular file nor a directory (download), or not a directory
    /// (upload).
    #[error("{path:?} {reason}")]
    WrongType {
        /// The path as given.
        path: String,
        /// What it is instead.
        reason: &'static str,
    },
    /// An entry of the uploaded archive was refused; nothing was extracted.
    #[error("archive entry {entry:?} refused: {reason}; nothing was extracted")]
    BadEntry {
        /// The entry's name as in the archive.
        entry: String,
        /// Why.
        reason: String,
    },
    /// The uploaded body is not a readable tar archive (or was cut short).
    #[error("the body is not a valid tar archive ({0}); nothing was extracted")]
    BadArchive(String),
    /// A file system step failed on the host.
    #[error("cannot {step} {}: {source}", path.display())]
    Io {
        /// What was being done.
        step: &'static str,
        /// The path (relative to the sandbox's directory).
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
}

impl FilesError {
    /// Whether the caller is at fault (a 4xx), as opposed to the host (a 5xx).
    pub fn is_callers(&self) -> bool {
        !matches!(self, FilesError::Io { .. })
    }
}

pub(super) fn io_error(step: &'static str, path: &Path) -> impl FnOnce(Errno) -> FilesError {
    let path = path.to_owned();
    move |e| FilesError::Io {
        step,
        path,
        source: e.into(),
    }
}

/// The flags every caller-influenced resolution uses: stay beneath the starting directory,
/// never through `/proc`-style magic links.
pub(super) fn beneath() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS
}

/// A sandbox's workspace, opened for copying.
pub struct SandboxFiles {
    /// `DATA_DIR/sandboxes/ID`, owned by the gateway, never visible in the sandbox.
    pub(super) dir: OwnedFd,
    /// Its `workspace` directory.
    pub(super) workspace: OwnedFd,
}

impl Runtime {
    /// Opens the sandbox's workspace for copying (creating its directories, 0700, if it was
    /// never started).
    pub fn sandbox_files(&self, id: &str) -> Result<SandboxFiles, FilesError> {
        let paths = self.paths(id);
        let workspace = paths.workspace();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&workspace)
            .map_err(|source| FilesError::Io {
                step: "create",
                path: workspace.clone(),
                source,
            })?;
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let dir = openat(CWD, &paths.dir, flags | OFlags::NOFOLLOW, Mode::empty())
            .map_err(io_error("open", &paths.dir))?;
        let workspace = openat(&dir, "workspace", flags | OFlags::NOFOLLOW, Mode::empty())
            .map_err(io_error("open", &workspace))?;
        Ok(SandboxFiles { dir, workspace })
    }
}

/// A caller's path, checked to be relative and free of `..`; `.` components are dropped, so
/// the workspace itself is the empty path.
pub fn relative_path(path: &str) -> Result<PathBuf, FilesError> {
    let bad = |reason| FilesError::BadPath {
        path: path.to_owned(),
        reason,
    };
    if path.contains('\0') {
        return Err(bad("contains a NUL byte"));
    }
    if path.starts_with('/') {
        return Err(bad(
            "is absolute: give a path relative to the workspace (e.g. src/main.rs)",
        ));
    }
    let mut clean = PathBuf::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(name) => clean.push(name),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(bad("contains `..`: paths must stay inside the workspace"));
            }
            Component::RootDir | Component::Prefix(_) => return Err(bad("is absolute")),
        }
    }
    Ok(clean)
}

/// What a download sends: an opened file or directory and the name it has in the archive.
pub struct Download {
    root: OwnedFd,
    stat: Stat,
    name: OsString,
}

impl SandboxFiles {
    /// Opens `path` (relative to the workspace, see [`relative_path`]) for a download. The
    /// archive holds one top-level entry named after the path's last component (`workspace`
    /// for the workspace itself).
    pub fn download(&self, path: &str) -> Result<Download, FilesError> {
        let rel = relative_path(path)?;
        let target = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            &rel
        };
        // NONBLOCK: a fifo planted in the workspace must not hang the open.
        let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        let root = openat2(&self.workspace, target, flags, Mode::empty(), beneath())
            .map_err(|e| resolve_error(e, path, "open"))?;
        let stat = fstat(&root).map_err(io_error("stat", &rel))?;
        let kind = FileType::from_raw_mode(stat.st_mode);
        if !matches!(kind, FileType::RegularFile | FileType::Directory) {
            return Err(FilesError::WrongType {
                path: path.to_owned(),
                reason: "is neither a regular file nor a directory",
            });
        }
        let name = rel
            .file_name()
            .map(OsStr::to_owned)
            .unwrap_or_else(|| "workspace".into());
        Ok(Download { root, stat, name })
    }

    /// Extracts the tar archive `body` into the workspace directory `path` (created if
    /// missing). All or nothing: a refused entry or a broken archive leaves the workspace as
    /// it was. Returns how many entries were extracted.
    pub fn upload(&self, path: &str, body: impl Read) -> Result<u64, FilesError> {
        let rel = relative_path(path)?;
        extract::upload(self, path, &rel, body)
    }
}

/// The error for a failed caller-path resolution.
pub(super) fn resolve_error(e: Errno, path: &str, step: &'static str) -> FilesError {
    match e {
        Errno::XDEV | Errno::LOOP => FilesError::OutOfWorkspace {
            path: path.to_owned(),
        },
        Errno::NOENT => FilesError::NotFound {
            path: path.to_owned(),
        },
        Errno::NOTDIR => FilesError::WrongType {
            path: path.to_owned(),
            reason: "has a component that is not a directory",
        },
        Errno::NAMETOOLONG => FilesError::BadPath {
            path: path.to_owned(),
            reason: "is too long",
        },
        Errno::ACCESS => FilesError::WrongType {
            path: path.to_owned(),
            reason: "is not accessible (its permissions refuse it)",
        },
        other => FilesError::Io {
            step,
            path: path.into(),
            source: other.into(),
        },
    }
}

impl Download {
    /// Writes the archive to `out`. Symlinks are archived as symlinks (never followed);
    /// fifos, sockets and devices are left out; setuid/setgid/sticky bits are dropped.
    pub fn write_tar(self, out: impl Write) -> io::Result<()> {
        let mut builder = tar::Builder::new(out);
        let name = PathBuf::from(&self.name);
        if FileType::from_raw_mode(self.stat.st_mode) == FileType::Directory {
            append_dir(&mut builder, &self.root, &name, &self.stat)?;
        } else {
            append_file(&mut builder, self.root, &name, &self.stat)?;
        }
        builder.into_inner()?.flush()
    }
}

fn header(kind: tar::EntryType, stat: &Stat, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(stat.st_mode & 0o777);
    header.set_mtime(u64::try_from(stat.st_mtime).unwrap_or(0));
    header.set_size(size);
    header
}

fn append_dir<W: Write>(
    builder: &mut tar::Builder<W>,
    dir: &OwnedFd,
    name: &Path,
    stat: &Stat,
) -> io::Result<()> {
    let mut head = header(tar::EntryType::Directory, stat, 0);
    builder.append_data(&mut head, name, io::empty())?;
    let mut names = extract::names(dir)?;
    names.sort();
    for child in names {
        let path = name.join(&child);
        // Gone meanwhile (the sandbox runs): left out.
        let Ok(stat) = statat(dir, &child, AtFlags::SYMLINK_NOFOLLOW) else {
            continue;
        };
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::Directory => {
                let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                // Swapped for a symlink meanwhile: NOFOLLOW refuses it, and it is left out.
                if let Ok(sub) = openat(dir, &child, flags, Mode::empty()) {
                    append_dir(builder, &sub, &path, &stat)?;
                }
            }
            FileType::RegularFile => {
                let flags = OFlags::RDONLY
                    | OFlags::NOFOLLOW
                    | OFlags::NONBLOCK
                    | OFlags::NOCTTY
                    | OFlags::CLOEXEC;
                if let Ok(file) = openat(dir, &child, flags, Mode::empty())
                    && let Ok(stat) = fstat(&file)
                    && FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile
                {
                    append_file(builder, file, &path, &stat)?;
                }
            }
            FileType::Symlink => {
                if let Ok(target) = rustix::fs::readlinkat(dir, &child, Vec::new()) {
                    let mut head = header(tar::EntryType::Symlink, &stat, 0);
                    let target = OsStr::from_bytes(target.as_bytes());
                    builder.append_link(&mut head, &path, target)?;
                }
            }
            // Fifos, sockets and devices have no place in a copy.
            _ => {}
        }
    }
    Ok(())
}

fn append_file<W: Write>(
    builder: &mut tar::Builder<W>,
    file: OwnedFd,
    name: &Path,
    stat: &Stat,
) -> io::Result<()> {
    let size = u64::try_from(stat.st_size).unwrap_or(0);
    let mut head = header(tar::EntryType::Regular, stat, size);
    let data = ExactSize {
        inner: std::fs::File::from(file),
        left: size,
    };
    builder.append_data(&mut head, name, data)
}

/// Exactly `left` bytes of a file that may change size while it is read (the sandbox runs):
/// cut when it grew, padded with zeros when it shrank, so the archive stays well-formed.
struct ExactSize {
    inner: std::fs::File,
    left: u64,
}

impl Read for ExactSize {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let room = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = match self.inner.read(&mut buf[..room])? {
            0 => {
                buf[..room].fill(0);
                room
            }
            n => n,
        };
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_paths_are_accepted() {
        assert_eq!(relative_path("").unwrap(), PathBuf::new());
        assert_eq!(relative_path("./a/./b/").unwrap(), PathBuf::from("a/b"));
        for bad in ["/etc", "../x", "a/../../x", "a/..", "a\0b"] {
            assert!(
                matches!(relative_path(bad), Err(FilesError::BadPath { .. })),
                "{bad:?} accepted"
            );
        }
    }
}
