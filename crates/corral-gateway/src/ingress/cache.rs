//! A short-lived memo of store look-ups on the proxied path (who a token or cookie belongs to,
//! a sandbox's owner and ports), so a stream of requests to one session does not query the
//! store for each. Entries live [`TTL`]: a revoked token, an expired cookie or a deleted
//! sandbox stops working at session hosts within that time. Negative answers are not kept.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an answer is reused.
pub const TTL: Duration = Duration::from_secs(2);
/// Entries kept at most; past this the memo is emptied (a flood of distinct keys cannot grow
/// it without bound).
const MAX_ENTRIES: usize = 10_000;

/// Answers by key, each for [`TTL`].
pub struct Memo<K, V>(Mutex<HashMap<K, (Instant, V)>>);

impl<K, V> Default for Memo<K, V> {
    fn default() -> Self {
        Self(Mutex::default())
    }
}

impl<K: Eq + Hash, V: Clone> Memo<K, V> {
    /// The answer for `key`, if one younger than [`TTL`] is kept.
    pub fn get(&self, key: &K) -> Option<V> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key)
            .filter(|(at, _)| at.elapsed() < TTL)
            .map(|(_, v)| v.clone())
    }

    /// Keeps `value` for `key`.
    pub fn put(&self, key: K, value: V) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(key, (Instant::now(), value));
    }

    /// Forgets `key` (its sandbox stopped or was deleted).
    pub fn forget(&self, key: &K) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_kept_and_forgotten() {
        let memo = Memo::default();
        assert_eq!(memo.get(&"a"), None);
        memo.put("a", 1);
        assert_eq!(memo.get(&"a"), Some(1));
        memo.forget(&"a");
        assert_eq!(memo.get(&"a"), None);
    }
}
