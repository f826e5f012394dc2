//! A slot table that hands out small object numbers and reuses freed slots last.
//!
//! Numbers are bounded: a table made for `limit` objects starting at `first` only ever holds
//! numbers in `first..first + limit` (see [`numbers`]), whether they were handed out by
//! [`Table::insert`] or chosen by a restore through [`Table::insert_at`]. A number from a
//! checkpoint blob therefore cannot make the table grow beyond what the VF's limits allow, and
//! slots are boxed so that even a table spanning its whole range costs one pointer per number,
//! not one object.

use std::collections::VecDeque;
use std::ops::Range;

/// The numbers a table for `limit` objects starting at `first` may hold. `Table::insert` hands
/// out fresh numbers until the table spans `limit` of them and only then reuses freed ones, so
/// every number a VF ever gave out lies in this range; a restored number outside it is hostile.
pub fn numbers(first: u32, limit: u32) -> Range<u64> {
    first as u64..first as u64 + limit as u64
}

/// Why [`Table::insert_at`] refused a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlaceError {
    #[error("number {0} is outside the table's range")]
    OutOfRange(u32),
    #[error("number {0} is taken")]
    Taken(u32),
}

/// Objects indexed by a dense number. New numbers are handed out until the table spans its
/// limit; only then are freed numbers reused, oldest first, so a stale handle (a late packet for
/// a destroyed QP) is unlikely to name a new object soon after.
#[derive(Clone, Debug)]
pub struct Table<T> {
    /// Indexed by number; numbers below `first` stay empty. Boxed: a restore may place one
    /// object at the top of the range, and the slots below it should cost a pointer each.
    slots: Vec<Option<Box<T>>>,
    free: VecDeque<u32>,
    live: u32,
    /// The lowest number handed out (QPN 0 and 1 are special, key index 0 is invalid).
    first: u32,
    /// At most this many live objects, all numbered below `first + limit`.
    limit: u32,
}

impl<T> Table<T> {
    pub fn new(first: u32, limit: u32) -> Table<T> {
        Table {
            slots: (0..first).map(|_| None).collect(),
            free: Default::default(),
            live: 0,
            first,
            limit,
        }
    }

    pub fn len(&self) -> u32 {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Inserts at the next free number, refusing beyond `limit` live objects.
    pub fn insert(&mut self, v: T) -> Option<u32> {
        if self.live >= self.limit {
            return None;
        }
        // Fresh numbers first, until the table spans `limit` objects; then the oldest freed one.
        let fresh = (self.slots.len() as u64) < numbers(self.first, self.limit).end;
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
        self.slots[idx as usize] = Some(Box::new(v));
        self.live += 1;
        Some(idx)
    }

    /// Inserts at a chosen number (restore). Numbers outside [`numbers`] and taken ones are
    /// refused, so the table never grows past its range. Placing numbers in ascending order
    /// costs O(1) each (the skipped ones join the free list in order, as if freed).
    pub fn insert_at(&mut self, idx: u32, v: T) -> Result<(), PlaceError> {
        if !numbers(self.first, self.limit).contains(&(idx as u64)) {
            return Err(PlaceError::OutOfRange(idx));
        }
        if self.slots.len() <= idx as usize {
            let from = self.slots.len() as u32;
            self.slots.resize_with(idx as usize + 1, || None);
            self.free.extend(from.max(self.first)..idx);
        } else if self.slots[idx as usize].is_some() {
            return Err(PlaceError::Taken(idx));
        } else {
            self.free.retain(|&f| f != idx);
        }
        self.slots[idx as usize] = Some(Box::new(v));
        self.live += 1;
        Ok(())
    }

    /// Inserts at one of the special numbers below `first` (QP1, the GSI QP), counted against
    /// the limit like any other object. Numbers at or above `first` go through [`Table::insert`]
    /// or [`Table::insert_at`].
    pub fn insert_reserved(&mut self, idx: u32, v: T) -> Result<(), PlaceError> {
        if idx >= self.first {
            return Err(PlaceError::OutOfRange(idx));
        }
        if self.live >= self.limit {
            return Err(PlaceError::OutOfRange(idx));
        }
        let slot = &mut self.slots[idx as usize];
        if slot.is_some() {
            return Err(PlaceError::Taken(idx));
        }
        *slot = Some(Box::new(v));
        self.live += 1;
        Ok(())
    }

    pub fn get(&self, idx: u32) -> Option<&T> {
        self.slots.get(idx as usize).and_then(|s| s.as_deref())
    }

    pub fn get_mut(&mut self, idx: u32) -> Option<&mut T> {
        self.slots
            .get_mut(idx as usize)
            .and_then(|s| s.as_deref_mut())
    }

    pub fn remove(&mut self, idx: u32) -> Option<T> {
        let v = self.slots.get_mut(idx as usize)?.take()?;
        self.live -= 1;
        // A special number (below `first`) is never handed out by `insert`.
        if idx >= self.first {
            self.free.push_back(idx);
        }
        Some(*v)
    }

    pub fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_deref().map(|v| (i as u32, v)))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (u32, &mut T)> {
        self.slots
            .iter_mut()
            .enumerate()
            .filter_map(|(i, s)| s.as_deref_mut().map(|v| (i as u32, v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_start_at_first_and_are_reused_fifo() {
        let mut t = Table::new(1, 10);
        let a = t.insert('a').unwrap();
        let b = t.insert('b').unwrap();
        assert_eq!((a, b), (1, 2));
        t.remove(a);
        let c = t.insert('c').unwrap();
        assert_eq!(c, 3, "fresh numbers come before freed ones");
        let mut t = Table::new(0, 3);
        for _ in 0..3 {
            t.insert(()).unwrap();
        }
        assert!(t.insert(()).is_none(), "limit");
        t.remove(1);
        t.remove(0);
        assert_eq!(
            t.insert(()),
            Some(1),
            "oldest freed first once the table is full"
        );
        assert_eq!(t.insert_at(0, ()), Ok(()));
        assert_eq!(t.insert_at(0, ()), Err(PlaceError::Taken(0)));
    }

    #[test]
    fn insert_at_stays_inside_the_range_and_keeps_the_reuse_order() {
        let mut t = Table::new(17, 4);
        assert_eq!(t.insert_at(16, 'x'), Err(PlaceError::OutOfRange(16)));
        assert_eq!(t.insert_at(21, 'x'), Err(PlaceError::OutOfRange(21)));
        assert_eq!(
            t.insert_at(u32::MAX, 'x'),
            Err(PlaceError::OutOfRange(u32::MAX))
        );
        assert_eq!(t.slots.len(), 17, "a refused number allocates nothing");
        t.insert_at(19, 'a').unwrap();
        t.insert_at(20, 'b').unwrap();
        assert_eq!(t.insert('c'), Some(17), "the table spans its range: reuse");
        assert_eq!(t.insert('d'), Some(18));
        assert_eq!(t.insert('e'), None, "limit");
        assert_eq!(
            t.iter().map(|(i, v)| (i, *v)).collect::<Vec<_>>(),
            [(17, 'c'), (18, 'd'), (19, 'a'), (20, 'b')]
        );
        // Filling a gap below the top takes the number out of the free list.
        let mut t = Table::new(1, 8);
        t.insert_at(5, ()).unwrap();
        t.insert_at(2, ()).unwrap();
        assert_eq!(t.free, [1, 3, 4]);
    }
}
