//! [`Table`]: a slab whose keys cannot go stale into a new entry.
//!
//! A slab reuses the most recently freed slot first, so a bare index kept after its entry was
//! removed (a late call, a late readiness event, a cancelled timer's handle) would land on
//! whatever took the slot next. Every key therefore carries the slot's generation, bumped each
//! time the slot is freed, and every lookup compares it. Sockets, listeners and timers all
//! live in one of these; their ids ([`SocketId`](crate::SocketId),
//! [`ListenerId`](crate::ListenerId), `TimerId`) are its keys.
//!
//! Generations are 30 bits wide — what fits beside the index and the kind in a mio token
//! (see `id.rs`) — and wrap: a kept key could alias a new entry only after its slot was
//! reused 2³⁰ times while the key was still held.

use slab::Slab;

/// Mask of a generation's 30 bits.
pub(crate) const GENERATION_MASK: u32 = (1 << 30) - 1;

/// The generation a slot gets after `generation` is freed.
pub(crate) fn next_generation(generation: u32) -> u32 {
    generation.wrapping_add(1) & GENERATION_MASK
}

/// A key of a [`Table`]: slot index plus generation.
pub(crate) trait Key: Copy {
    fn from_parts(index: u32, generation: u32) -> Self;
    fn index(self) -> u32;
    fn generation(self) -> u32;
}

/// Generational slab: entries addressed by keys of type `K`.
#[derive(Debug)]
pub(crate) struct Table<K, T> {
    entries: Slab<T>,
    /// Per slot, the generation of its current (or next) entry. Kept outside the slab, which
    /// forgets a freed slot entirely.
    generations: Vec<u32>,
    _key: std::marker::PhantomData<fn() -> K>,
}

impl<K: Key, T> Default for Table<K, T> {
    fn default() -> Self {
        Table::with_capacity(0)
    }
}

impl<K: Key, T> Table<K, T> {
    /// An empty table with room for `capacity` entries before it grows.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Table {
            entries: Slab::with_capacity(capacity),
            generations: Vec::with_capacity(capacity),
            _key: std::marker::PhantomData,
        }
    }

    /// The key the next [`insert`](Self::insert) will return (an entry that needs to know its
    /// own id is built with it, then inserted).
    pub(crate) fn next_key(&self) -> K {
        let index = self.entries.vacant_key();
        let generation = self.generations.get(index).copied().unwrap_or(0);
        K::from_parts(index_u32(index), generation)
    }

    /// Inserts `value` and returns its key.
    ///
    /// # Panics
    ///
    /// Only with more than `u32::MAX` entries at once, which would need hundreds of gigabytes
    /// first.
    pub(crate) fn insert(&mut self, value: T) -> K {
        let index = self.entries.insert(value);
        if index >= self.generations.len() {
            self.generations.resize(index + 1, 0);
        }
        K::from_parts(index_u32(index), self.generations[index])
    }

    pub(crate) fn get(&self, key: K) -> Option<&T> {
        let index = key.index() as usize;
        match self.entries.get(index) {
            Some(v) if self.generations[index] == key.generation() => Some(v),
            _ => None,
        }
    }

    pub(crate) fn get_mut(&mut self, key: K) -> Option<&mut T> {
        let index = key.index() as usize;
        match self.entries.get_mut(index) {
            Some(v) if self.generations[index] == key.generation() => Some(v),
            _ => None,
        }
    }

    /// The entry in slot `index`, whatever its generation (for callers that check identity
    /// their own way, such as the timers' heap entries).
    pub(crate) fn get_at(&self, index: u32) -> Option<&T> {
        self.entries.get(index as usize)
    }

    /// The key of the entry now in slot `index`, if any.
    pub(crate) fn key_at(&self, index: u32) -> Option<K> {
        self.entries
            .contains(index as usize)
            .then(|| K::from_parts(index, self.generations[index as usize]))
    }

    pub(crate) fn contains(&self, key: K) -> bool {
        self.get(key).is_some()
    }

    /// Removes the entry, bumping its slot's generation so `key` is stale from now on.
    pub(crate) fn remove(&mut self, key: K) -> Option<T> {
        if !self.contains(key) {
            return None;
        }
        let index = key.index() as usize;
        let value = self.entries.remove(index);
        self.generations[index] = next_generation(self.generations[index]);
        Some(value)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every entry with its key, in slot order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (K, &T)> {
        self.entries
            .iter()
            .map(|(i, v)| (K::from_parts(i as u32, self.generations[i]), v))
    }
}

fn index_u32(index: usize) -> u32 {
    u32::try_from(index).expect("more than u32::MAX entries in one table")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct K(u32, u32);
    impl Key for K {
        fn from_parts(index: u32, generation: u32) -> Self {
            K(index, generation)
        }
        fn index(self) -> u32 {
            self.0
        }
        fn generation(self) -> u32 {
            self.1
        }
    }

    #[test]
    fn a_removed_key_never_reaches_the_entry_that_reuses_its_slot() {
        let mut t: Table<K, &str> = Table::default();
        let a = t.insert("a");
        assert_eq!(t.next_key(), K(1, 0));
        assert_eq!(t.remove(a), Some("a"));
        assert_eq!(
            t.next_key(),
            K(0, 1),
            "slot reused with the next generation"
        );
        let b = t.insert("b");
        assert_eq!(b, K(0, 1));
        assert_eq!(t.get(a), None);
        assert_eq!(t.remove(a), None, "a stale key removes nothing");
        assert_eq!(t.get(b), Some(&"b"));
        assert_eq!(t.get_at(0), Some(&"b"));
        assert_eq!(t.key_at(0), Some(b));
        assert_eq!(t.iter().collect::<Vec<_>>(), [(b, &"b")]);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn generations_wrap_inside_their_bits() {
        assert_eq!(next_generation(GENERATION_MASK), 0);
        assert_eq!(next_generation(5), 6);
    }
}
