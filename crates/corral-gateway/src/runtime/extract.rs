//! Uploads: a tar archive extracted into a staging directory beside the workspace, checked
//! entry by entry, then moved into the workspace only if every entry was accepted. See
//! `files` for the threat model.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{
    AtFlags, FileType, Mode, OFlags, linkat, mkdirat, openat, openat2, renameat, statat, symlinkat,
    unlinkat,
};
use rustix::io::Errno;

use super::files::{FilesError, SandboxFiles, beneath, io_error, resolve_error};

/// Extracts `body` into the workspace directory `rel` (`given` is the caller's spelling).
pub(super) fn upload(
    files: &SandboxFiles,
    given: &str,
    rel: &Path,
    body: impl Read,
) -> Result<u64, FilesError> {
    // A target that leads out is refused before the body is read.
    open_dir(&files.workspace, rel, false).map_err(|e| resolve_error(e, given, "open"))?;
    let staging_name = format!(
        "upload-{}",
        crate::auth::random_hex(8).map_err(|e| FilesError::Io {
            step: "name",
            path: "upload".into(),
            source: io::Error::other(e.to_string()),
        })?
    );
    mkdirat(&files.dir, &staging_name, Mode::from_raw_mode(0o700))
        .map_err(io_error("create", Path::new(&staging_name)))?;
    let result = openat(
        &files.dir,
        &staging_name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io_error("open", Path::new(&staging_name)))
    .and_then(|staging| {
        let count = extract_all(&staging, rel, body)?;
        let target =
            open_dir(&files.workspace, rel, true).map_err(|e| resolve_error(e, given, "create"))?;
        let into = Place {
            workspace: &files.workspace,
            dir: &target,
            path: rel,
        };
        // Checked first, so a conflict found half-way cannot leave half an archive moved.
        merge(&staging, &into, Path::new(""), true)?;
        merge(&staging, &into, Path::new(""), false)?;
        Ok(count)
    });
    remove_tree(&files.dir, OsStr::new(&staging_name));
    result
}

/// Opens the directory `rel` beneath `root`, creating missing components (0755) when
/// `create`. Without `create`, a missing directory is not an error (it is made later), but
/// one that leads out is.
fn open_dir(root: &OwnedFd, rel: &Path, create: bool) -> Result<OwnedFd, Errno> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let mut current = openat(root, ".", flags, Mode::empty())?;
    let mut walked = PathBuf::new();
    for component in rel.components() {
        walked.push(component);
        match openat2(root, &walked, flags, Mode::empty(), beneath()) {
            Ok(fd) => current = fd,
            Err(Errno::NOENT) if create => {
                match mkdirat(&current, component.as_os_str(), Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(e),
                }
                // Reopened beneath the root: a dangling symlink in the way is refused here.
                current = openat2(root, &walked, flags, Mode::empty(), beneath())?;
            }
            Err(Errno::NOENT) => return Ok(current),
            Err(e) => return Err(e),
        }
    }
    Ok(current)
}

/// A path from the archive, refused if absolute or containing `..`; `.` components dropped.
fn archive_path(raw: &[u8]) -> Result<PathBuf, &'static str> {
    let mut clean = PathBuf::new();
    for component in Path::new(OsStr::from_bytes(raw)).components() {
        match component {
            Component::Normal(name) => clean.push(name),
            Component::CurDir => {}
            Component::ParentDir => return Err("`..` in a path is refused"),
            Component::RootDir | Component::Prefix(_) => {
                return Err("absolute paths are refused");
            }
        }
    }
    Ok(clean)
}

/// Whether a symlink at `entry` (relative to the upload directory, itself `base_depth`
/// components below the workspace) pointing at `target` stays inside the workspace, judged
/// on the names: absolute targets and `..` climbing above the workspace lead out.
fn link_stays_inside(base_depth: usize, entry: &Path, target: &Path) -> bool {
    let mut depth = base_depth + entry.components().count().saturating_sub(1);
    for component in target.components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir if depth > 0 => depth -= 1,
            _ => return false,
        }
    }
    true
}

/// Extracts every entry of the archive into `staging`; the first refused entry stops it.
fn extract_all(staging: &OwnedFd, rel: &Path, body: impl Read) -> Result<u64, FilesError> {
    let broken = |e: io::Error| FilesError::BadArchive(e.to_string());
    let mut archive = tar::Archive::new(body);
    let mut count = 0;
    for entry in archive.entries().map_err(broken)? {
        let mut entry = entry.map_err(broken)?;
        let raw = entry.path_bytes().into_owned();
        let refuse = |reason: String| FilesError::BadEntry {
            entry: String::from_utf8_lossy(&raw).into_owned(),
            reason,
        };
        let path = archive_path(&raw).map_err(|r| refuse(r.into()))?;
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            continue;
        }
        let Some(name) = path.file_name().map(OsStr::to_owned) else {
            // The archive's root (`./`): the upload directory itself.
            continue;
        };
        let parent_path = path.parent().unwrap_or(Path::new(""));
        let parent = open_dir(staging, parent_path, true).map_err(|e| {
            refuse(match e {
                Errno::XDEV | Errno::LOOP => {
                    "its path goes through a symlink that leads out of the workspace".into()
                }
                Errno::NOTDIR => "its path goes through something that is not a directory".into(),
                other => format!("cannot create its directory: {other}"),
            })
        })?;
        let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let file = create_file(&parent, &name, mode).map_err(|e| refuse(e.to_string()))?;
                let mut file = std::fs::File::from(file);
                io::copy(&mut entry, &mut file).map_err(broken)?;
                if let Ok(mtime) = entry.header().mtime() {
                    let time = rustix::fs::Timespec {
                        tv_sec: i64::try_from(mtime).unwrap_or(0),
                        tv_nsec: 0,
                    };
                    let times = rustix::fs::Timestamps {
                        last_access: time,
                        last_modification: time,
                    };
                    let _ = rustix::fs::futimens(&file, &times);
                }
            }
            tar::EntryType::Directory => {
                let mode = Mode::from_raw_mode(mode | 0o700);
                match mkdirat(&parent, &name, mode) {
                    Ok(()) => {}
                    Err(Errno::EXIST) if is_dir(&parent, &name) => {}
                    Err(e) => return Err(refuse(format!("cannot create the directory: {e}"))),
                }
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| refuse("a symlink without a target".into()))?
                    .into_owned();
                let target = PathBuf::from(OsString::from_vec(target));
                if !link_stays_inside(rel.components().count(), &path, &target) {
                    return Err(refuse(format!(
                        "a symlink to {} leads out of the workspace",
                        target.display()
                    )));
                }
                replace_existing(&parent, &name).map_err(|e| refuse(e.to_string()))?;
                symlinkat(&target, &parent, &name)
                    .map_err(|e| refuse(format!("cannot create the symlink: {e}")))?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| refuse("a hard link without a target".into()))?
                    .into_owned();
                let target = archive_path(&target)
                    .map_err(|r| refuse(format!("a hard link whose target is refused: {r}")))?;
                hard_link(staging, &target, &parent, &name).map_err(refuse)?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                return Err(refuse("device nodes and fifos are refused".into()));
            }
            other => {
                return Err(refuse(format!("unsupported entry type {other:?}")));
            }
        }
        count += 1;
    }
    Ok(count)
}

fn is_dir(dir: &OwnedFd, name: &OsStr) -> bool {
    statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .is_ok_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::Directory)
}

/// Removes a non-directory of this name (an earlier entry of the same archive: the later one
/// wins, as with tar); a directory in the way is an error.
fn replace_existing(dir: &OwnedFd, name: &OsStr) -> Result<(), String> {
    match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(_) => Ok(()),
        Ok(s) if FileType::from_raw_mode(s.st_mode) == FileType::Directory => {
            Err("a directory of that name is earlier in the archive".into())
        }
        Ok(_) => unlinkat(dir, name, AtFlags::empty())
            .map_err(|e| format!("cannot replace an earlier entry: {e}")),
    }
}

/// A new regular file (never through a symlink), setuid/setgid/sticky bits dropped.
fn create_file(dir: &OwnedFd, name: &OsStr, mode: u32) -> Result<OwnedFd, String> {
    replace_existing(dir, name)?;
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let file = openat(dir, name, flags, Mode::from_raw_mode(mode))
        .map_err(|e| format!("cannot create the file: {e}"))?;
    // The umask may have narrowed the mode; the archive's (without special bits) is wanted.
    let _ = rustix::fs::fchmod(&file, Mode::from_raw_mode(mode));
    Ok(file)
}

/// A hard link to an earlier entry of this archive (inside the staging directory).
fn hard_link(staging: &OwnedFd, target: &Path, dir: &OwnedFd, name: &OsStr) -> Result<(), String> {
    let missing = || {
        format!(
            "a hard link to {}, which is not earlier in the archive",
            target.display()
        )
    };
    let target_name = target.file_name().ok_or_else(missing)?;
    let target_parent = target.parent().unwrap_or(Path::new(""));
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let source_dir = if target_parent.as_os_str().is_empty() {
        openat(staging, ".", flags, Mode::empty())
    } else {
        openat2(staging, target_parent, flags, Mode::empty(), beneath())
    }
    .map_err(|_| missing())?;
    replace_existing(dir, name)?;
    // No AT_SYMLINK_FOLLOW: a symlink target is linked itself, never followed.
    linkat(&source_dir, target_name, dir, name, AtFlags::empty()).map_err(|e| match e {
        Errno::NOENT => missing(),
        other => format!("cannot create the hard link: {other}"),
    })
}

/// A directory of the workspace an upload is merged into.
struct Place<'a> {
    workspace: &'a OwnedFd,
    /// The directory, opened.
    dir: &'a OwnedFd,
    /// Its path relative to the workspace.
    path: &'a Path,
}

/// Moves everything in `source` into `target`, merging directories: an archive directory
/// goes into a workspace directory of the same name, or through a workspace symlink to a
/// directory inside the workspace (one leading out is refused); anything else of the archive
/// replaces what is there, except that a file never replaces a directory. With `check`, only
/// verifies, so the real pass cannot stop half-way for a reason it could have known.
fn merge(source: &OwnedFd, target: &Place<'_>, at: &Path, check: bool) -> Result<(), FilesError> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    for name in names(source).map_err(io_error("list", at))? {
        let entry = at.join(&name);
        let refuse = |reason: &str| FilesError::BadEntry {
            entry: entry.to_string_lossy().into_owned(),
            reason: reason.into(),
        };
        let source_is_dir = is_dir(source, &name);
        let existing = statat(target.dir, &name, AtFlags::SYMLINK_NOFOLLOW)
            .ok()
            .map(|s| FileType::from_raw_mode(s.st_mode));
        let path = target.path.join(&name);
        // The directory an archive directory merges into, if there is one.
        let into = match (source_is_dir, existing) {
            (true, Some(FileType::Directory)) => Some(
                openat(target.dir, &name, flags, Mode::empty()).map_err(io_error("open", &path))?,
            ),
            (true, Some(FileType::Symlink)) => {
                let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
                match openat2(target.workspace, &path, flags, Mode::empty(), beneath()) {
                    Ok(dir) => Some(dir),
                    Err(Errno::XDEV | Errno::LOOP) => {
                        return Err(refuse(
                            "its path goes through a symlink in the workspace that leads out of it",
                        ));
                    }
                    // Dangling, or to a file: replaced.
                    Err(_) => None,
                }
            }
            (false, Some(FileType::Directory)) => {
                return Err(refuse(
                    "a directory of that name is in the way in the workspace",
                ));
            }
            _ => None,
        };
        if let Some(into) = into {
            let from =
                openat(source, &name, flags, Mode::empty()).map_err(io_error("open", &entry))?;
            let place = Place {
                workspace: target.workspace,
                dir: &into,
                path: &path,
            };
            merge(&from, &place, &entry, check)?;
            continue;
        }
        if check {
            continue;
        }
        if source_is_dir && existing.is_some() {
            // A directory cannot be renamed over a non-directory.
            unlinkat(target.dir, &name, AtFlags::empty()).map_err(io_error("replace", &path))?;
        }
        renameat(source, &name, target.dir, &name).map_err(io_error("move", &path))?;
    }
    Ok(())
}

/// The names in a directory, without `.` and `..`.
pub(super) fn names(dir: &OwnedFd) -> Result<Vec<OsString>, Errno> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let bytes = entry?.file_name().to_bytes().to_vec();
        if bytes != b"." && bytes != b".." {
            names.push(OsString::from_vec(bytes));
        }
    }
    Ok(names)
}

/// Removes `name` in `parent` and everything below it, one name at a time from descriptors
/// (never following a symlink). Best effort: it only cleans up the gateway's staging.
fn remove_tree(parent: &OwnedFd, name: &OsStr) {
    if is_dir(parent, name) {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        if let Ok(dir) = openat(parent, name, flags, Mode::empty()) {
            for child in names(&dir).unwrap_or_default() {
                remove_tree(&dir, &child);
            }
        }
        let _ = unlinkat(parent, name, AtFlags::REMOVEDIR);
    } else {
        let _ = unlinkat(parent, name, AtFlags::empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_paths_must_be_relative_without_parent_steps() {
        assert_eq!(archive_path(b"./a/b").unwrap(), PathBuf::from("a/b"));
        assert!(archive_path(b"../evil").is_err());
        assert!(archive_path(b"a/../../evil").is_err());
        assert!(archive_path(b"/etc/passwd").is_err());
    }

    #[test]
    fn symlinks_may_point_anywhere_inside_the_workspace_but_not_out() {
        let inside = |depth, entry: &str, target: &str| {
            link_stays_inside(depth, Path::new(entry), Path::new(target))
        };
        assert!(inside(0, "a/link", "../b"));
        assert!(inside(1, "link", "../b"));
        assert!(!inside(0, "link", "../b"));
        assert!(!inside(0, "a/link", "../../etc"));
        assert!(!inside(3, "link", "/etc"));
        assert!(inside(0, "link", "sub/./file"));
    }
}
