//! A slot table that hands out small object numbers and reuses freed slots last.

use serde::{Deserialize, Serialize};

/// Objects indexed by a dense number. New numbers are handed out until the table spans its
/// limit; only then are freed numbers reused, oldest first, so a stale handle (a late packet for
/// a destroyed QP) is unlikely to name a new object soon after.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Table<T> {
    slots: Vec<Option<T>>,
    free: std::collections::VecDeque<u32>,
    live: u32,
    /// Number 0 is never handed out when set (QPN 0 and 1 are special, key index 0 is invalid).
    first: u32,
}

impl<T> Table<T> {
    pub fn new(first: u32) -> Table<T> {
        Table {
            slots: (0..first).map(|_| None).collect(),
            free: Default::default(),
            live: 0,
            first,
        }
    }

    pub fn len(&self) -> u32 {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Inserts at the next free number, refusing beyond `limit` live objects.
    pub fn insert(&mut self, limit: u32, v: T) -> Option<u32> {
        if self.live >= limit {
            return None;
        }
        // Fresh numbers first, until the table spans `limit` objects; then the oldest freed one.
        let fresh = (self.slots.len() as u64) < self.first as u64 + limit as u64;
        let idx = match (fresh, self.free.pop_front()) {
            (false, Some(i)) => i,
            (_, reused) => {
                if let Some(i) = reused {
                    self.free.push_front(i);
                }
                self.slots.push(None);
                (self.slots.len() - 1) as u32
            }
        };
        self.slots[idx as usize] = Some(v);
        self.live += 1;
        Some(idx)
    }

    /// Inserts at a chosen number (restore), failing when it is taken.
    pub fn insert_at(&mut self, idx: u32, v: T) -> bool {
        if idx < self.first {
            return false;
        }
        while self.slots.len() <= idx as usize {
            let n = self.slots.len() as u32;
            self.slots.push(None);
            if n >= self.first && n != idx {
                self.free.push_back(n);
            }
        }
        if self.slots[idx as usize].is_some() {
            return false;
        }
        self.free.retain(|&f| f != idx);
        self.slots[idx as usize] = Some(v);
        self.live += 1;
        true
    }

    pub fn get(&self, idx: u32) -> Option<&T> {
        self.slots.get(idx as usize).and_then(|s| s.as_ref())
    }

    pub fn get_mut(&mut self, idx: u32) -> Option<&mut T> {
        self.slots.get_mut(idx as usize).and_then(|s| s.as_mut())
    }

    pub fn remove(&mut self, idx: u32) -> Option<T> {
        let v = self.slots.get_mut(idx as usize)?.take()?;
        self.live -= 1;
        self.free.push_back(idx);
        Some(v)
    }

    pub fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|v| (i as u32, v)))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (u32, &mut T)> {
        self.slots
            .iter_mut()
            .enumerate()
            .filter_map(|(i, s)| s.as_mut().map(|v| (i as u32, v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_start_at_first_and_are_reused_fifo() {
        let mut t = Table::new(1);
        let a = t.insert(10, 'a').unwrap();
        let b = t.insert(10, 'b').unwrap();
        assert_eq!((a, b), (1, 2));
        t.remove(a);
        let c = t.insert(10, 'c').unwrap();
        assert_eq!(c, 3, "fresh numbers come before freed ones");
        let mut t = Table::new(0);
        for _ in 0..3 {
            t.insert(3, ()).unwrap();
        }
        assert!(t.insert(3, ()).is_none(), "limit");
        t.remove(1);
        t.remove(0);
        assert_eq!(
            t.insert(3, ()),
            Some(1),
            "oldest freed first once the table is full"
        );
        assert!(t.insert_at(0, ()));
        assert!(!t.insert_at(0, ()));
    }
}
