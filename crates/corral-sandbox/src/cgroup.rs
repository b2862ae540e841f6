//! Resource limits through cgroups: v2 where the controller lives on the unified hierarchy and
//! is delegated to us, v1 where that is what the host has. A sandbox's cgroups are created
//! under the caller's own cgroup (the delegation model: whoever runs corral shares its limits
//! with its sandboxes) and removed when the sandbox ends.
//!
//! Everything here takes the cgroup filesystem root and the caller's cgroup membership as
//! inputs, so tests can point it at a temporary directory.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::plan::Limits;

/// The controllers corral limits.
const CONTROLLERS: &[&str] = &["memory", "pids", "cpu"];

/// CPU quota period in microseconds.
const CPU_PERIOD_US: u64 = 100_000;

/// Which hierarchy a controller is reached through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// The unified (v2) hierarchy mounted at the given directory.
    V2(PathBuf),
    /// A v1 hierarchy for one controller, mounted at the given directory.
    V1(PathBuf),
}

/// One controller as found on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerLocation {
    /// `memory`, `pids` or `cpu`.
    pub controller: &'static str,
    /// Where it is mounted.
    pub hierarchy: Hierarchy,
    /// The caller's cgroup in that hierarchy (the directory new cgroups go under).
    pub parent: PathBuf,
}

/// The host's cgroup layout as seen by the caller.
#[derive(Debug, Clone, Default)]
pub struct CgroupLayout {
    /// Every controller corral uses that the host offers.
    pub controllers: Vec<ControllerLocation>,
}

impl CgroupLayout {
    /// Reads the layout of the running host from `/proc/self/mountinfo` and `/proc/self/cgroup`.
    pub fn detect() -> Self {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let membership = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        Self::from_proc(&mountinfo, &membership)
    }

    /// Builds the layout from the text of `/proc/self/mountinfo` and `/proc/self/cgroup`.
    ///
    /// Both formats are one record per line with fixed separators (proc(5)); a crate for two
    /// `split` calls would cost more than it saves.
    pub fn from_proc(mountinfo: &str, membership: &str) -> Self {
        let mut v2_mount = None;
        let mut v1_mounts: Vec<(String, PathBuf)> = Vec::new();
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let mount_point = left.split(' ').nth(4).map(unescape_mount_path);
            let mut right = right.split(' ');
            let (fstype, _source, options) = (right.next(), right.next(), right.next());
            match (fstype, mount_point) {
                (Some("cgroup2"), Some(point)) => v2_mount = Some(point),
                (Some("cgroup"), Some(point)) => {
                    for option in options.unwrap_or("").split(',') {
                        v1_mounts.push((option.to_string(), point.clone()));
                    }
                }
                _ => {}
            }
        }
        let mut v2_path = None;
        let mut v1_paths: Vec<(String, PathBuf)> = Vec::new();
        for line in membership.lines() {
            let mut fields = line.splitn(3, ':');
            let (Some(id), Some(list), Some(path)) = (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let path = PathBuf::from(path.trim_start_matches('/'));
            if id == "0" && list.is_empty() {
                v2_path = Some(path);
            } else {
                for controller in list.split(',') {
                    v1_paths.push((controller.to_string(), path.clone()));
                }
            }
        }
        let mut controllers = Vec::new();
        for controller in CONTROLLERS {
            let v2 = v2_mount
                .as_ref()
                .zip(v2_path.as_ref())
                .and_then(|(mount, path)| {
                    let parent = mount.join(path);
                    let available = fs::read_to_string(parent.join("cgroup.controllers")).ok()?;
                    available
                        .split_whitespace()
                        .any(|c| c == *controller)
                        .then(|| ControllerLocation {
                            controller,
                            hierarchy: Hierarchy::V2(mount.clone()),
                            parent,
                        })
                });
            let v1 = || {
                let mount = v1_mounts.iter().find(|(c, _)| c == controller)?.1.clone();
                let path = v1_paths.iter().find(|(c, _)| c == controller)?.1.clone();
                Some(ControllerLocation {
                    controller,
                    parent: mount.join(path),
                    hierarchy: Hierarchy::V1(mount),
                })
            };
            if let Some(location) = v2.or_else(v1) {
                controllers.push(location);
            }
        }
        Self { controllers }
    }

    /// Whether a sandbox cgroup can be created for each controller, with the reason if not.
    pub fn writability(&self) -> Vec<(&'static str, Result<(), String>)> {
        self.controllers
            .iter()
            .map(|c| {
                let probe = c
                    .parent
                    .join(format!("corral-probe-{}", std::process::id()));
                let result = fs::create_dir(&probe)
                    .and_then(|()| fs::remove_dir(&probe))
                    .map_err(|e| format!("{}: {e}", c.parent.display()));
                (c.controller, result)
            })
            .collect()
    }
}

/// Cgroup mount points in mountinfo escape spaces and a few other bytes as `\ooo`.
fn unescape_mount_path(raw: &str) -> PathBuf {
    let mut out = Vec::with_capacity(raw.len());
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4].iter().all(u8::is_ascii_digit)
        {
            let octal = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("0");
            out.push(u8::from_str_radix(octal, 8).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    PathBuf::from(String::from_utf8_lossy(&out).into_owned())
}

/// The cgroups of one running sandbox; removed by [`SandboxCgroup::remove`].
#[derive(Debug)]
pub struct SandboxCgroup {
    dirs: Vec<PathBuf>,
}

impl SandboxCgroup {
    /// Creates cgroups named `name` for the limits that are set, and writes the limits.
    /// Returns the cgroups that could be created plus one warning per limit that could not be
    /// applied (the sandbox still runs; the caller prints the warnings).
    pub fn create(layout: &CgroupLayout, name: &str, limits: &Limits) -> (Self, Vec<String>) {
        let mut cgroup = Self { dirs: Vec::new() };
        let mut warnings = Vec::new();
        for (controller, settings) in settings_by_controller(limits) {
            if settings.is_empty() {
                continue;
            }
            let Some(location) = layout
                .controllers
                .iter()
                .find(|c| c.controller == controller)
            else {
                warnings.push(format!("the {controller} cgroup controller is not available on this host; {controller} limits are not enforced"));
                continue;
            };
            remove_stale(&location.parent);
            if let Err(e) = cgroup.apply(location, name, &settings) {
                let consequence = if controller == "pids" {
                    "the process limit is enforced per sandbox with RLIMIT_NPROC instead"
                } else {
                    "this limit is not enforced"
                };
                warnings.push(format!(
                    "cannot set the {controller} limit in {} ({e}); {consequence}; run corral as root or give it a delegated cgroup (see `corral doctor`)",
                    location.parent.display()
                ));
            }
        }
        (cgroup, warnings)
    }

    fn apply(
        &mut self,
        location: &ControllerLocation,
        name: &str,
        settings: &[Setting],
    ) -> io::Result<()> {
        let dir = location.parent.join(name);
        if !self.dirs.contains(&dir) {
            if let Hierarchy::V2(_) = location.hierarchy {
                enable_controller(&location.parent, location.controller)?;
            }
            fs::create_dir(&dir)?;
            self.dirs.push(dir.clone());
        }
        for setting in settings {
            let file = match &location.hierarchy {
                Hierarchy::V2(_) => setting.v2_file,
                Hierarchy::V1(_) => setting.v1_file,
            };
            let value = match &location.hierarchy {
                Hierarchy::V2(_) => &setting.v2_value,
                Hierarchy::V1(_) => &setting.v1_value,
            };
            let path = dir.join(file);
            if setting.optional && !path.exists() {
                continue;
            }
            fs::write(&path, value)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        }
        Ok(())
    }

    /// Moves process `pid` (and so all its future children) into every sandbox cgroup.
    pub fn add_process(&self, pid: i32) -> io::Result<()> {
        for dir in &self.dirs {
            fs::write(dir.join("cgroup.procs"), pid.to_string())?;
        }
        Ok(())
    }

    /// Whether any controller is in effect.
    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }

    /// Removes the cgroups. Processes still inside are killed first (v2 `cgroup.kill`, or a
    /// SIGKILL to each pid on v1), then the directories are removed, retrying briefly while the
    /// kernel finishes tearing the processes down.
    pub fn remove(self) {
        for dir in &self.dirs {
            kill_members(dir);
        }
        for dir in &self.dirs {
            for _ in 0..200 {
                match fs::remove_dir(dir) {
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        std::thread::sleep(std::time::Duration::from_millis(5))
                    }
                    _ => break,
                }
            }
        }
    }
}

/// Removes the cgroups of sandboxes whose corral is gone: a corral killed with SIGKILL never
/// runs [`SandboxCgroup::remove`], and its empty `corral-<pid>-<n>` directories would stay
/// forever. A cgroup whose launcher pid still runs is left alone, and one that still has
/// processes refuses removal (EBUSY). (A corral in another pid namespace sharing this cgroup
/// looks gone; at worst its start then fails to join the cgroup it just made and reports it.)
fn remove_stale(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(launcher_pid) else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = fs::remove_dir(entry.path());
        }
    }
}

/// The launcher pid in a sandbox cgroup's name, `corral-<pid>-<n>`.
fn launcher_pid(name: &str) -> Option<u32> {
    let (pid, suffix) = name.strip_prefix("corral-")?.split_once('-')?;
    suffix.parse::<u64>().ok()?;
    pid.parse().ok()
}

fn kill_members(dir: &Path) {
    if fs::write(dir.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
    }
}

/// On v2 a controller must be enabled in the parent's `cgroup.subtree_control` before a child
/// can use it.
fn enable_controller(parent: &Path, controller: &str) -> io::Result<()> {
    let control = parent.join("cgroup.subtree_control");
    let enabled = fs::read_to_string(&control)?;
    if enabled.split_whitespace().any(|c| c == controller) {
        return Ok(());
    }
    fs::write(&control, format!("+{controller}"))
}

/// One limit file, with its v1 and v2 spelling.
#[derive(Debug, Clone, PartialEq)]
struct Setting {
    v1_file: &'static str,
    v1_value: String,
    v2_file: &'static str,
    v2_value: String,
    /// Skip silently when the file does not exist (swap accounting may be off).
    optional: bool,
}

fn setting(v1_file: &'static str, v2_file: &'static str, v1: String, v2: String) -> Setting {
    Setting {
        v1_file,
        v1_value: v1,
        v2_file,
        v2_value: v2,
        optional: false,
    }
}

fn settings_by_controller(limits: &Limits) -> Vec<(&'static str, Vec<Setting>)> {
    let mut memory = Vec::new();
    if let Some(max) = limits.memory_max {
        memory.push(setting(
            "memory.limit_in_bytes",
            "memory.max",
            max.to_string(),
            max.to_string(),
        ));
        // Without a swap limit a memory hog pushes the host into swap instead of being stopped.
        memory.push(Setting {
            optional: true,
            ..setting(
                "memory.memsw.limit_in_bytes",
                "memory.swap.max",
                max.to_string(),
                "0".into(),
            )
        });
    }
    if let Some(high) = limits.memory_high {
        memory.push(setting(
            "memory.soft_limit_in_bytes",
            "memory.high",
            high.to_string(),
            high.to_string(),
        ));
    }
    let mut pids = Vec::new();
    if let Some(max) = limits.pids {
        pids.push(setting(
            "pids.max",
            "pids.max",
            max.to_string(),
            max.to_string(),
        ));
    }
    let mut cpu = Vec::new();
    if let Some(cpus) = limits.cpus {
        let quota = ((cpus * CPU_PERIOD_US as f64).round() as u64).max(1000);
        cpu.push(setting(
            "cpu.cfs_period_us",
            "cpu.max",
            CPU_PERIOD_US.to_string(),
            format!("{quota} {CPU_PERIOD_US}"),
        ));
        cpu.push(Setting {
            optional: false,
            ..setting(
                "cpu.cfs_quota_us",
                "cpu.max",
                quota.to_string(),
                format!("{quota} {CPU_PERIOD_US}"),
            )
        });
    }
    vec![("memory", memory), ("pids", pids), ("cpu", cpu)]
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTINFO: &str = "\
30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
32 30 0:28 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
33 30 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
34 30 0:30 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const HYBRID_CGROUP: &str = "4:memory:/jobs/a\n8:pids:/\n1:cpu:/\n0::/\n";

    fn fake_root(dir: &Path) -> String {
        HYBRID_MOUNTINFO.replace("/sys/fs/cgroup", &dir.display().to_string())
    }

    #[test]
    fn v1_controllers_are_found_under_the_callers_cgroup() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("unified")).unwrap();
        std::fs::write(dir.path().join("unified/cgroup.controllers"), "hugetlb\n").unwrap();
        let layout = CgroupLayout::from_proc(&fake_root(dir.path()), HYBRID_CGROUP);
        let memory = &layout.controllers[0];
        assert_eq!(memory.controller, "memory");
        assert_eq!(memory.parent, dir.path().join("memory/jobs/a"));
        assert!(matches!(memory.hierarchy, Hierarchy::V1(_)));
        assert_eq!(layout.controllers.len(), 3);
    }

    #[test]
    fn v2_is_preferred_when_it_offers_the_controller() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("unified")).unwrap();
        std::fs::write(
            dir.path().join("unified/cgroup.controllers"),
            "memory pids\n",
        )
        .unwrap();
        let layout = CgroupLayout::from_proc(&fake_root(dir.path()), HYBRID_CGROUP);
        assert!(matches!(layout.controllers[0].hierarchy, Hierarchy::V2(_)));
        assert!(
            matches!(layout.controllers[2].hierarchy, Hierarchy::V1(_)),
            "cpu stays on v1"
        );
    }

    #[test]
    fn limits_are_written_in_each_hierarchys_spelling() {
        let dir = tempfile::tempdir().unwrap();
        for c in ["memory/jobs/a", "pids", "cpu"] {
            std::fs::create_dir_all(dir.path().join(c)).unwrap();
        }
        std::fs::create_dir_all(dir.path().join("unified")).unwrap();
        std::fs::write(dir.path().join("unified/cgroup.controllers"), "").unwrap();
        let layout = CgroupLayout::from_proc(&fake_root(dir.path()), HYBRID_CGROUP);
        let limits = Limits {
            memory_max: Some(1 << 30),
            memory_high: None,
            cpus: Some(1.5),
            pids: Some(64),
        };
        let (cgroup, warnings) = SandboxCgroup::create(&layout, "corral-t", &limits);
        assert!(warnings.is_empty(), "{warnings:?}");
        let read = |p: &str| std::fs::read_to_string(dir.path().join(p)).unwrap();
        assert_eq!(
            read("memory/jobs/a/corral-t/memory.limit_in_bytes"),
            "1073741824"
        );
        assert_eq!(read("pids/corral-t/pids.max"), "64");
        assert_eq!(read("cpu/corral-t/cpu.cfs_quota_us"), "150000");
        assert_eq!(cgroup.dirs.len(), 3);
    }

    #[test]
    fn an_unwritable_hierarchy_gives_a_warning_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let layout = CgroupLayout::from_proc(&fake_root(dir.path()), HYBRID_CGROUP);
        let limits = Limits {
            pids: Some(64),
            ..Limits::default()
        };
        let (cgroup, warnings) = SandboxCgroup::create(&layout, "corral-t", &limits);
        assert!(cgroup.is_empty());
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("pids"), "{warnings:?}");
    }

    #[test]
    fn cgroups_of_launchers_that_are_gone_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        // Above the kernel's pid_max: no such process.
        let gone = "corral-2147483647-12";
        let running = format!("corral-{}-34", std::process::id());
        for name in [gone, &running, "corral-probe-56", "someone-else"] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
        }
        remove_stale(dir.path());
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, [running.as_str(), "corral-probe-56", "someone-else"]);
    }

    #[test]
    fn escaped_mount_points_are_decoded() {
        assert_eq!(unescape_mount_path("/a\\040b"), PathBuf::from("/a b"));
    }
}
