//! Guest memory as the device sees it: a guest-physical address space it may read and write.
//!
//! The device reaches guest memory only through [`GuestMemory`]. Every access is bounds-checked
//! by the implementation; an address outside the VF's memory is an `Err`, which the transport
//! turns into a protection error completion — never a panic, never someone else's bytes.

#[cfg(feature = "mmap")]
mod mmap;

#[cfg(feature = "mmap")]
pub use mmap::MmapMemory;
use std::sync::{Arc, RwLock};
use thiserror::Error;
use vm_memory::VolatileSlice;

/// An access the guest memory cannot serve.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[error("guest memory access of {len} bytes at {gpa:#x} is outside guest memory")]
pub struct MemoryError {
    pub gpa: u64,
    pub len: u64,
}

/// A VF's guest-physical memory.
pub trait GuestMemory: Send + Sync {
    /// Copies `buf.len()` bytes at `gpa` into `buf`.
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemoryError>;

    /// Copies `data` to `gpa`. Implementations that log dirty pages mark them here.
    fn write(&self, gpa: u64, data: &[u8]) -> Result<(), MemoryError>;

    /// Lends the `len` bytes at `gpa` to `f` as a volatile slice, without a bounce copy where
    /// the backend can (the source side of [`copy_between`]; `f` only reads it).
    fn with_volatile(
        &self,
        gpa: u64,
        len: usize,
        f: &mut dyn FnMut(&VolatileSlice<'_, ()>),
    ) -> Result<(), MemoryError> {
        if let Some(s) = self.volatile_slice(gpa, len) {
            f(&s);
            return Ok(());
        }
        let mut tmp = vec![0u8; len];
        self.read(gpa, &mut tmp)?;
        f(&VolatileSlice::from(&mut tmp[..]));
        Ok(())
    }

    /// Copies `src` (another memory's bytes, lent by [`GuestMemory::with_volatile`]) to
    /// `gpa` — the destination side of [`copy_between`]. Implementations that log dirty pages
    /// mark them here, as in `write`.
    fn write_from(&self, gpa: u64, src: &VolatileSlice<'_, ()>) -> Result<(), MemoryError> {
        let mut tmp = vec![0u8; src.len()];
        src.copy_to(&mut tmp[..]);
        self.write(gpa, &tmp)
    }

    /// The `len` bytes at `gpa` as a volatile slice when the backend is mapped memory (one
    /// region, no dirty log of its own to bypass): lets [`copy_between`] move payloads with a
    /// single memcpy. `None` means "use `read`/`write`".
    fn volatile_slice(&self, _gpa: u64, _len: usize) -> Option<VolatileSlice<'_, ()>> {
        None
    }

    /// Reads a little-endian u64 (atomics operate on host-order 64-bit words; vhca's hosts are
    /// little-endian).
    fn read_u64(&self, gpa: u64) -> Result<u64, MemoryError> {
        let mut b = [0u8; 8];
        self.read(gpa, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Atomically applies `op` to the u64 at `gpa` and returns the original value.
    ///
    /// The default is a read followed by a write, which is atomic with respect to the device
    /// (it is single-threaded per VF) but not to a guest CPU; backends over shared guest RAM
    /// override it with a real atomic instruction.
    fn atomic_update(&self, gpa: u64, op: &mut dyn FnMut(u64) -> u64) -> Result<u64, MemoryError> {
        let old = self.read_u64(gpa)?;
        self.write(gpa, &op(old).to_le_bytes())?;
        Ok(old)
    }
}

/// Shared handle to a VF's memory; packets keep one to gather their payload late.
pub type SharedMemory = Arc<dyn GuestMemory>;

/// Guest memory backed by a heap buffer: the in-process device's "guest RAM".
pub struct VecMemory {
    bytes: RwLock<Box<[u8]>>,
}

impl VecMemory {
    pub fn new(size: usize) -> VecMemory {
        VecMemory {
            bytes: RwLock::new(vec![0u8; size].into_boxed_slice()),
        }
    }

    pub fn shared(size: usize) -> SharedMemory {
        Arc::new(VecMemory::new(size))
    }

    pub fn size(&self) -> u64 {
        self.bytes.read().map(|b| b.len() as u64).unwrap_or(0)
    }
}

fn range(gpa: u64, len: usize, size: usize) -> Result<std::ops::Range<usize>, MemoryError> {
    let err = MemoryError {
        gpa,
        len: len as u64,
    };
    let start = usize::try_from(gpa).map_err(|_| err)?;
    let end = start.checked_add(len).ok_or(err)?;
    if end > size {
        return Err(err);
    }
    Ok(start..end)
}

impl GuestMemory for VecMemory {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let bytes = self.bytes.read().unwrap_or_else(|e| e.into_inner());
        let r = range(gpa, buf.len(), bytes.len())?;
        buf.copy_from_slice(&bytes[r]);
        Ok(())
    }

    fn write(&self, gpa: u64, data: &[u8]) -> Result<(), MemoryError> {
        let mut bytes = self.bytes.write().unwrap_or_else(|e| e.into_inner());
        let r = range(gpa, data.len(), bytes.len())?;
        bytes[r].copy_from_slice(data);
        Ok(())
    }

    fn atomic_update(&self, gpa: u64, op: &mut dyn FnMut(u64) -> u64) -> Result<u64, MemoryError> {
        let mut bytes = self.bytes.write().unwrap_or_else(|e| e.into_inner());
        let r = range(gpa, 8, bytes.len())?;
        let mut w = [0u8; 8];
        w.copy_from_slice(&bytes[r.clone()]);
        let old = u64::from_le_bytes(w);
        bytes[r].copy_from_slice(&op(old).to_le_bytes());
        Ok(old)
    }
}

/// Copies `len` bytes from `src` memory at `src_gpa` to `dst` memory at `dst_gpa`: one memcpy
/// when both backends can lend their bytes (mapped memory, or vhost-user guest RAM whose
/// destination side marks its dirty log), a bounce through a buffer otherwise.
pub fn copy_between(
    src: &SharedMemory,
    src_gpa: u64,
    dst: &SharedMemory,
    dst_gpa: u64,
    len: usize,
) -> Result<(), MemoryError> {
    if let (Some(s), Some(d)) = (
        src.volatile_slice(src_gpa, len),
        dst.volatile_slice(dst_gpa, len),
    ) {
        // Both mapped: one memcpy inside vm-memory (also fine when they are the same memory,
        // as long as the ranges do not overlap, which a transport copy never does).
        s.copy_to_volatile_slice(d);
        return Ok(());
    }
    // `with_volatile` implementations hold no lock while `f` runs (the default reads into a
    // buffer first), so this is also right when `src` and `dst` are the same memory.
    let mut result = Ok(());
    src.with_volatile(src_gpa, len, &mut |s| result = dst.write_from(dst_gpa, s))?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_is_an_error_not_a_panic() {
        let m = VecMemory::new(64);
        let mut b = [0u8; 8];
        assert!(m.read(60, &mut b).is_err());
        assert!(m.read(u64::MAX, &mut b).is_err());
        assert!(m.write(u64::MAX - 3, &b).is_err());
        assert!(m.read(56, &mut b).is_ok());
        assert!(m.atomic_update(57, &mut |v| v + 1).is_err());
    }

    #[test]
    fn mmap_memory_reads_writes_copies_and_refuses_out_of_range() {
        let a = MmapMemory::shared(1 << 16).unwrap();
        let b: SharedMemory = VecMemory::shared(1 << 16);
        a.write(100, b"mapped").unwrap();
        copy_between(&a, 100, &a, 200, 6).unwrap();
        copy_between(&a, 200, &b, 300, 6).unwrap();
        let mut out = [0u8; 6];
        b.read(300, &mut out).unwrap();
        assert_eq!(&out, b"mapped");
        assert!(a.write((1 << 16) - 2, b"abc").is_err());
        assert!(a.read(u64::MAX - 1, &mut out).is_err());
        assert!(a.volatile_slice(u64::MAX, 2).is_none());
        a.write(8, &5u64.to_le_bytes()).unwrap();
        assert_eq!(a.atomic_update(8, &mut |v| v + 1).unwrap(), 5);
        assert_eq!(a.read_u64(8).unwrap(), 6);
        assert!(a.atomic_update(12, &mut |v| v).is_err(), "misaligned");
    }

    #[test]
    fn copy_between_same_and_different_memories() {
        let a = VecMemory::shared(64);
        let b = VecMemory::shared(64);
        a.write(0, b"hello").unwrap();
        copy_between(&a, 0, &b, 10, 5).unwrap();
        copy_between(&a, 0, &a, 20, 5).unwrap();
        let mut out = [0u8; 5];
        b.read(10, &mut out).unwrap();
        assert_eq!(&out, b"hello");
        a.read(20, &mut out).unwrap();
        assert_eq!(&out, b"hello");
        assert!(copy_between(&a, 60, &b, 0, 5).is_err());
    }
}
