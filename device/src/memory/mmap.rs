//! [`MmapMemory`]: anonymous mapped guest RAM through vm-memory's mmap backend (the cargo
//! feature `mmap`, on by default). Crates that only need the memory trait and the packet
//! types — the wire format — build the device without it, and so without libc.

use super::{GuestMemory, MemoryError, SharedMemory};
use std::sync::Arc;
use vm_memory::{
    Bytes, GuestAddress, GuestMemoryBackend as _, GuestMemoryMmap, VolatileMemory as _,
    VolatileSlice,
};

/// Anonymous mapped guest memory through rust-vmm's vm-memory: the in-process device's guest
/// RAM. Unlike [`VecMemory`](crate::VecMemory) it takes no lock per access (vm-memory's volatile
/// slices are made for memory another party may touch at any time), so the data path is one
/// plain memcpy.
pub struct MmapMemory {
    mem: GuestMemoryMmap<()>,
    size: u64,
}

impl MmapMemory {
    pub fn new(size: usize) -> Result<MmapMemory, MemoryError> {
        let err = MemoryError {
            gpa: 0,
            len: size as u64,
        };
        let mem =
            GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), size)]).map_err(|_| err)?;
        Ok(MmapMemory {
            mem,
            size: size as u64,
        })
    }

    pub fn shared(size: usize) -> Result<SharedMemory, MemoryError> {
        Ok(Arc::new(MmapMemory::new(size)?))
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    fn check(&self, gpa: u64, len: usize) -> Result<(), MemoryError> {
        let err = MemoryError {
            gpa,
            len: len as u64,
        };
        match gpa.checked_add(len as u64) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(err),
        }
    }
}

impl GuestMemory for MmapMemory {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.check(gpa, buf.len())?;
        self.mem
            .read_slice(buf, GuestAddress(gpa))
            .map_err(|_| MemoryError {
                gpa,
                len: buf.len() as u64,
            })
    }

    fn write(&self, gpa: u64, data: &[u8]) -> Result<(), MemoryError> {
        self.check(gpa, data.len())?;
        self.mem
            .write_slice(data, GuestAddress(gpa))
            .map_err(|_| MemoryError {
                gpa,
                len: data.len() as u64,
            })
    }

    fn volatile_slice(&self, gpa: u64, len: usize) -> Option<VolatileSlice<'_, ()>> {
        self.check(gpa, len).ok()?;
        self.mem.get_slice(GuestAddress(gpa), len).ok()
    }

    fn atomic_update(&self, gpa: u64, op: &mut dyn FnMut(u64) -> u64) -> Result<u64, MemoryError> {
        self.check(gpa, 8)?;
        let err = MemoryError { gpa, len: 8 };
        if gpa % 8 != 0 {
            return Err(err);
        }
        // A real atomic RMW on guest RAM: a guest CPU touching the same word sees IB atomics
        // as atomic, as it would with a hardware HCA.
        let slice = self.mem.get_slice(GuestAddress(gpa), 8).map_err(|_| err)?;
        let word = slice
            .get_atomic_ref::<std::sync::atomic::AtomicU64>(0)
            .map_err(|_| err)?;
        let mut cur = word.load(std::sync::atomic::Ordering::SeqCst);
        loop {
            let new = op(cur);
            match word.compare_exchange(
                cur,
                new,
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
            ) {
                Ok(_) => return Ok(cur),
                Err(actual) => cur = actual,
            }
        }
    }
}
