//! A hash map split by hash into [`SHARDS`] maps, so that growing it never rehashes more than
//! a small part of its entries at once.
//!
//! One hash table holding every fill of the day doubles at 114,688, 229,376, 458,752, …
//! entries, and each doubling moves every entry while the run loop waits: with the input rules'
//! fills and the fills table growing together, 100–250 ms with nothing delivered at half a
//! million fills (`harbour-bench freshness`), and longer as the day grows. Split 64 ways, the
//! parts cross their thresholds one at a time (their sizes differ by a few percent), each
//! moving a 64th of the entries.

use std::borrow::Borrow;
use std::collections::hash_map::Entry;
use std::hash::{BuildHasher, Hash};

use rustc_hash::{FxBuildHasher, FxHashMap};

/// How many maps a [`ShardedMap`] is split into.
pub const SHARDS: usize = 64;

/// A hash map split into [`SHARDS`] [`FxHashMap`]s by bits 51–56 of a key's hash: bits neither
/// the parts' bucket index (the low bits) nor their control bytes (the top seven) read, and, as
/// `FxHasher::finish` rotates its state left by 26, the state's well-mixed middle bits 25–30
/// (bits 32–37 were its bits 6–11, which depend on the low bits of the words hashed only: keys
/// ending in a round number crowded into a few parts).
#[derive(Clone, Debug)]
pub struct ShardedMap<K, V> {
    shards: Vec<FxHashMap<K, V>>,
}

impl<K, V> Default for ShardedMap<K, V> {
    fn default() -> Self {
        ShardedMap { shards: (0..SHARDS).map(|_| FxHashMap::default()).collect() }
    }
}

fn shard_of<Q: Hash + ?Sized>(key: &Q) -> usize {
    ((FxBuildHasher.hash_one(key) >> 51) as usize) % SHARDS
}

impl<K: Hash + Eq, V> ShardedMap<K, V> {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.shards.iter().map(FxHashMap::len).sum()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(FxHashMap::is_empty)
    }

    /// The value of `key`.
    pub fn get<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.shards[shard_of(key)].get(key)
    }

    /// The value of `key`, to change.
    pub fn get_mut<Q: Hash + Eq + ?Sized>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
    {
        self.shards[shard_of(key)].get_mut(key)
    }

    /// Whether `key` has a value.
    pub fn contains_key<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.shards[shard_of(key)].contains_key(key)
    }

    /// Sets `key`'s value; returns the one it replaced.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.shards[shard_of(&key)].insert(key, value)
    }

    /// `key`'s entry, to read, fill or change in place.
    pub fn entry(&mut self, key: K) -> Entry<'_, K, V> {
        self.shards[shard_of(&key)].entry(key)
    }

    /// Removes `key`; returns its value.
    pub fn remove<Q: Hash + Eq + ?Sized>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        self.shards[shard_of(key)].remove(key)
    }

    /// Every entry, part by part.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.shards.iter().flat_map(|s| s.iter())
    }

    /// Every value.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.shards.iter().flat_map(|s| s.values())
    }

    /// Every value, to change.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.shards.iter_mut().flat_map(|s| s.values_mut())
    }
}

impl<K: Hash + Eq, V> Extend<(K, V)> for ShardedMap<K, V> {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, entries: I) {
        for (k, v) in entries {
            self.insert(k, v);
        }
    }
}

impl<K: Hash + Eq, V> FromIterator<(K, V)> for ShardedMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(entries: I) -> Self {
        let mut m = ShardedMap::new();
        m.extend(entries);
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn behaves_as_one_map_and_spreads_its_entries() {
        let mut m: ShardedMap<String, u32> = ShardedMap::new();
        let mut reference: HashMap<String, u32> = HashMap::new();
        for i in 0..20_000u32 {
            let k = format!("E{}", i % 15_000);
            assert_eq!(m.insert(k.clone(), i), reference.insert(k, i));
            if i % 7 == 0 {
                let gone = format!("E{}", i / 3);
                assert_eq!(m.remove(gone.as_str()), reference.remove(&gone));
            }
        }
        assert_eq!(m.len(), reference.len());
        assert!(!m.is_empty());
        for (k, v) in &reference {
            assert_eq!(m.get(k.as_str()), Some(v));
            assert!(m.contains_key(k.as_str()));
        }
        assert_eq!(m.get("absent"), None);
        let mut all: Vec<(String, u32)> = m.iter().map(|(k, v)| (k.clone(), *v)).collect();
        let mut expected: Vec<(String, u32)> = reference.into_iter().collect();
        all.sort();
        expected.sort();
        assert_eq!(all, expected);
        for v in m.values_mut() {
            *v += 1;
        }
        *m.entry("E1".to_string()).or_insert(0) += 1;
        *m.entry("new".to_string()).or_insert(0) += 5;
        expected.push(("new".to_string(), 4)); // (the sum below adds 1 to each expected value)
        if let Some(e) = expected.iter_mut().find(|(k, _)| k == "E1") {
            e.1 += 1;
        }
        assert_eq!(
            m.values().map(|v| *v as u64).sum::<u64>(),
            expected.iter().map(|(_, v)| *v as u64 + 1).sum::<u64>()
        );
        assert_eq!(m.len(), expected.len());
        // No part holds much more than its share (so none rehashes much more than a 64th), for
        // names and for keys ending in round numbers (a group's minute, in nanoseconds).
        let largest = m.shards.iter().map(|s| s.len()).max().unwrap();
        assert!(largest < 2 * m.len() / SHARDS, "largest part {largest} of {}", m.len());
        let minutes: ShardedMap<(u32, i64), ()> = (0..20_000i64)
            .map(|i| ((i % 7) as u32, 1_700_000_000_000_000_000 + i * 60_000_000_000))
            .map(|k| (k, ()))
            .collect();
        let largest = minutes.shards.iter().map(|s| s.len()).max().unwrap();
        assert!(largest < 2 * minutes.len() / SHARDS, "largest part {largest} of {}", minutes.len());
        let copy: ShardedMap<String, u32> = m.iter().map(|(k, v)| (k.clone(), *v)).collect();
        assert_eq!(copy.len(), m.len());
    }
}
