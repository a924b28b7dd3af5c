//! [`Memo`]: values worth keeping rather than working out again (parsed configuration,
//! rows read for the hot path), in a map of bounded size that starts over when full.
//! Whoever keeps a value decides when it is stale, typically by keeping with it what it
//! was derived from.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard};

/// A map of at most `max` entries, shared between threads.
#[derive(Debug)]
pub struct Memo<K, V> {
    max: usize,
    entries: Mutex<HashMap<K, V>>,
}

impl<K: Eq + Hash, V: Clone> Memo<K, V> {
    /// An empty memo of at most `max` entries.
    pub fn new(max: usize) -> Self {
        Memo {
            max,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The value kept for `key`.
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.entries().get(key).cloned()
    }

    /// Keeps `value` for `key`; a memo already full forgets everything first.
    pub fn insert(&self, key: K, value: V) {
        let mut entries = self.entries();
        if entries.len() >= self.max && !entries.contains_key(&key) {
            entries.clear();
        }
        entries.insert(key, value);
    }

    /// Forgets everything kept.
    pub fn clear(&self) {
        self.entries().clear();
    }

    /// How many entries are kept.
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A panic while the lock was held cannot leave a map of plain values half-changed.
    fn entries(&self) -> MutexGuard<'_, HashMap<K, V>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_values_and_starts_over_when_full() {
        let memo = Memo::new(2);
        memo.insert("a".to_owned(), 1);
        memo.insert("b".to_owned(), 2);
        assert_eq!(memo.get("a"), Some(1));
        memo.insert("b".to_owned(), 3);
        assert_eq!((memo.len(), memo.get("b")), (2, Some(3)), "a replacement");
        memo.insert("c".to_owned(), 4);
        assert_eq!(memo.len(), 1);
        assert_eq!((memo.get("a"), memo.get("c")), (None, Some(4)));
        memo.clear();
        assert!(memo.is_empty());
    }
}
