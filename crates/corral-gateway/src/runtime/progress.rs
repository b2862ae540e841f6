//! What a start is doing right now, for callers watching it: "starting the sandbox", then for a
//! repo session's first start "cloning URL: Receiving objects: 45% (450/1000)" as git reports
//! it. The API shows it in a sandbox's `progress` while the start runs; the CLI and the web
//! page poll it. It lives in memory only: a start belongs to the gateway that runs it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The current step of each start under way, by sandbox id.
#[derive(Clone, Default)]
pub(super) struct Progress(Arc<Mutex<HashMap<String, String>>>);

impl Progress {
    fn steps(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        // Only whole strings are swapped under the lock; a panic cannot leave one torn.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The step `id`'s start is at, if one runs.
    pub(super) fn get(&self, id: &str) -> Option<String> {
        self.steps().get(id).cloned()
    }

    /// Shows `step` for `id` until the returned guard is dropped.
    pub(super) fn show(&self, id: &str, step: impl Into<String>) -> ShownStep {
        self.steps().insert(id.to_owned(), step.into());
        ShownStep {
            progress: self.clone(),
            id: id.to_owned(),
        }
    }
}

/// A step being shown; dropping it clears the sandbox's progress.
pub(super) struct ShownStep {
    progress: Progress,
    id: String,
}

impl ShownStep {
    /// Replaces the text shown.
    pub(super) fn update(&self, step: impl Into<String>) {
        self.progress.steps().insert(self.id.clone(), step.into());
    }
}

impl Drop for ShownStep {
    fn drop(&mut self) {
        self.progress.steps().remove(&self.id);
    }
}

/// The newest complete status line in `output`: git redraws its progress with `\r` and ends
/// each phase with `\n`, so a line is whatever lies between two of either. `None` until a
/// line is complete or when the newest one is blank.
pub(super) fn newest_line(output: &[u8]) -> Option<String> {
    let is_end = |b: &u8| *b == b'\r' || *b == b'\n';
    let end = output.iter().rposition(is_end)?;
    let start = output[..end].iter().rposition(is_end).map_or(0, |i| i + 1);
    let line = String::from_utf8_lossy(&output[start..end])
        .trim()
        .to_owned();
    (!line.is_empty()).then_some(line)
}

/// `output` as it would look on a terminal once settled: of each `\r`-redrawn line only its
/// last drawing (for the log, and for an error's summary).
pub(super) fn settled(output: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(output);
    let mut settled = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let (body, newline) = match line.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (line, ""),
        };
        let last = body
            .split('\r')
            .rev()
            .find(|drawing| !drawing.trim().is_empty())
            .unwrap_or("");
        settled.push_str(last);
        settled.push_str(newline);
    }
    settled.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_complete_line_wins_over_a_partial_one() {
        assert_eq!(
            newest_line(b"Cloning into 'w'...\n"),
            Some("Cloning into 'w'...".into())
        );
        assert_eq!(
            newest_line(b"Receiving objects:  10% (1/10)\rReceiving objects:  20% (2/10)\rRecei"),
            Some("Receiving objects:  20% (2/10)".into())
        );
        assert_eq!(newest_line(b"no end yet"), None);
        assert_eq!(newest_line(b"a\n\n"), None);
    }

    #[test]
    fn redrawn_lines_settle_to_their_last_drawing() {
        let git = b"Cloning into 'w'...\nReceiving: 50%\rReceiving: 100%, done.\r\nResolving\n";
        assert_eq!(
            String::from_utf8(settled(git)).unwrap(),
            "Cloning into 'w'...\nReceiving: 100%, done.\nResolving\n"
        );
    }

    #[test]
    fn a_step_is_shown_until_its_guard_goes() {
        let progress = Progress::default();
        {
            let step = progress.show("a", "starting");
            assert_eq!(progress.get("a").as_deref(), Some("starting"));
            step.update("cloning");
            assert_eq!(progress.get("a").as_deref(), Some("cloning"));
        }
        assert_eq!(progress.get("a"), None);
    }
}
