//! Agent logs: bounded in size, readable across a rotation.
//!
//! A sandbox's `corral run` writes its `agent.log` itself (stdout and stderr, opened with
//! `O_APPEND`), and keeps writing while the gateway is down, so the gateway cannot swap the
//! file under it. It rotates by copy-then-truncate instead: once the log is over the
//! configured size, its content is copied to `agent.log.1` (replacing the previous one) and
//! the log is truncated to zero; the writer's next append lands at the new start. Bytes
//! written between the copy and the truncation are copied in a second pass just before the
//! truncation, leaving only that instant uncovered (as with logrotate's `copytruncate`).
//!
//! Readers go through a [`LogCursor`]: every rotation bumps the sandbox's generation, so a
//! reader that was part-way through the log knows the rest of what it was reading is now in
//! `agent.log.1` at the same offset. A rotation and a read never interleave (one lock).

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Runtime;

/// Bytes read from a log file at a time.
const LOG_CHUNK: usize = 64 * 1024;
/// How often running sandboxes' logs are checked against the size limit.
const LOG_CHECK: Duration = Duration::from_secs(1);

impl Runtime {
    /// A cursor at the start of the sandbox's kept log (the previous file, then the current).
    pub fn log_cursor(&self, id: &str) -> LogCursor {
        self.log_rotations.cursor_at_start(id)
    }

    /// The next bytes of the sandbox's log after `cursor` (empty when there is no more yet),
    /// following it across rotations.
    pub async fn read_log(&self, id: &str, cursor: &mut LogCursor) -> std::io::Result<Vec<u8>> {
        self.log_rotations
            .read(id, &self.paths(id).log(), cursor)
            .await
    }

    /// Rotates running sandboxes' logs that grew over the configured size, every
    /// [`LOG_CHECK`], until the gateway shuts down. Call once.
    pub fn spawn_log_rotation(self: &Arc<Self>) {
        let runtime = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(LOG_CHECK);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = runtime.shutting_down() => return,
                }
                let running: Vec<String> = runtime.watched_lock().keys().cloned().collect();
                for id in running {
                    let log = runtime.paths(&id).log();
                    match runtime
                        .log_rotations
                        .rotate_if_over(&id, log, runtime.log_max_size)
                        .await
                    {
                        Ok(true) => tracing::info!(sandbox = %id, "agent log rotated"),
                        Ok(false) => {}
                        Err(e) => {
                            tracing::warn!(sandbox = %id, error = %e, "cannot rotate the agent log")
                        }
                    }
                }
            }
        });
    }
}

/// The previous log beside `log`: `agent.log.1`.
pub(super) fn previous(log: &Path) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// The rotation state of every sandbox's log: a generation per sandbox, and the lock that
/// keeps reads and rotations apart.
#[derive(Default)]
pub(super) struct Rotations {
    generations: Mutex<HashMap<String, u64>>,
    lock: tokio::sync::RwLock<()>,
}

/// Where a reader of a sandbox's log is.
#[derive(Debug, Clone)]
pub struct LogCursor {
    generation: u64,
    in_previous: bool,
    offset: u64,
}

impl Rotations {
    fn generation(&self, id: &str) -> u64 {
        let generations = self.generations.lock().unwrap_or_else(|e| e.into_inner());
        generations.get(id).copied().unwrap_or(0)
    }

    /// A cursor at the start of what is kept: the previous log, then the current one.
    pub(super) fn cursor_at_start(&self, id: &str) -> LogCursor {
        LogCursor {
            generation: self.generation(id),
            in_previous: true,
            offset: 0,
        }
    }

    /// Rotates `log` if it is larger than `max` bytes. Returns whether it did.
    pub(super) async fn rotate_if_over(
        &self,
        id: &str,
        log: PathBuf,
        max: u64,
    ) -> std::io::Result<bool> {
        let over = tokio::fs::metadata(&log).await.is_ok_and(|m| m.len() > max);
        if !over {
            return Ok(false);
        }
        let _exclusive = self.lock.write().await;
        tokio::task::spawn_blocking(move || copy_then_truncate(&log))
            .await
            .map_err(std::io::Error::other)??;
        let mut generations = self.generations.lock().unwrap_or_else(|e| e.into_inner());
        *generations.entry(id.to_owned()).or_default() += 1;
        Ok(true)
    }

    /// The next bytes of `log` for `cursor` (empty at the end of what there is), moving it on.
    pub(super) async fn read(
        &self,
        id: &str,
        log: &Path,
        cursor: &mut LogCursor,
    ) -> std::io::Result<Vec<u8>> {
        let _shared = self.lock.read().await;
        let generation = self.generation(id);
        if generation != cursor.generation {
            if cursor.in_previous {
                // The previous log it was reading was replaced: start the new one.
                cursor.offset = 0;
            }
            // What it had not read of the log is now at the same offset in the previous one.
            cursor.in_previous = true;
            cursor.generation = generation;
        }
        if cursor.in_previous {
            let chunk = read_chunk(&previous(log), cursor.offset).await?;
            if !chunk.is_empty() {
                cursor.offset += chunk.len() as u64;
                return Ok(chunk);
            }
            cursor.in_previous = false;
            cursor.offset = 0;
        }
        let chunk = read_chunk(log, cursor.offset).await?;
        cursor.offset += chunk.len() as u64;
        Ok(chunk)
    }

    /// Forgets a deleted sandbox.
    pub(super) fn forget(&self, id: &str) {
        let mut generations = self.generations.lock().unwrap_or_else(|e| e.into_inner());
        generations.remove(id);
    }
}

/// Copies `log` to its previous file (through a temporary file, renamed, so a reader never
/// sees half a copy), copies what was appended meanwhile, then truncates `log`.
fn copy_then_truncate(log: &Path) -> std::io::Result<()> {
    let previous = previous(log);
    let mut temporary = previous.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let mut source = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(log)?;
    let mut copy = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&temporary)?;
    std::io::copy(&mut source, &mut copy)?;
    std::fs::rename(&temporary, &previous)?;
    // Appended during the copy: one more short pass, then the cut.
    let mut rest = Vec::new();
    source.read_to_end(&mut rest)?;
    copy.write_all(&rest)?;
    source.set_len(0)?;
    source.seek(SeekFrom::Start(0))?;
    Ok(())
}

/// Up to [`LOG_CHUNK`] bytes of the file at `offset`; empty at its end or if it does not
/// exist (never started, or never rotated).
pub(super) async fn read_chunk(path: &Path, offset: u64) -> std::io::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    file.seek(SeekFrom::Start(offset)).await?;
    let mut chunk = vec![0; LOG_CHUNK];
    let n = file.read(&mut chunk).await?;
    chunk.truncate(n);
    Ok(chunk)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reader_part_way_through_continues_in_the_previous_log_after_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("agent.log");
        let append = |text: &str| {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap();
            f.write_all(text.as_bytes()).unwrap();
        };
        let rotations = Rotations::default();
        append("one\n");
        let mut cursor = rotations.cursor_at_start("s");
        assert_eq!(
            rotations.read("s", &log, &mut cursor).await.unwrap(),
            b"one\n"
        );
        append("two\n");
        assert!(
            !rotations
                .rotate_if_over("s", log.clone(), 100)
                .await
                .unwrap()
        );
        assert!(rotations.rotate_if_over("s", log.clone(), 4).await.unwrap());
        append("three\n");
        let mut read = Vec::new();
        loop {
            let chunk = rotations.read("s", &log, &mut cursor).await.unwrap();
            if chunk.is_empty() {
                break;
            }
            read.extend(chunk);
        }
        assert_eq!(read, b"two\nthree\n");
        assert_eq!(std::fs::read(previous(&log)).unwrap(), b"one\ntwo\n");
        assert_eq!(std::fs::read(&log).unwrap(), b"three\n");
    }
}
