//! Guest memory as a vhost-user backend maps it, seen through the device's [`GuestMemory`]
//! trait.
//!
//! The memory is vm-memory's `GuestMemoryAtomic<GuestMemoryMmap<BitmapMmapRegion>>`, the type
//! rust-vmm's vhost-user-backend hands to `update_memory`. Every device write goes through
//! vm-memory's `Bytes` API, so once a frontend installs a dirty log (`SET_LOG_BASE`, a later
//! issue) each write marks its pages; nothing here writes through a raw pointer.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use vhca_device::memory::{GuestMemory, MemoryError};
use vhost_user_backend::bitmap::BitmapMmapRegion;
use vm_memory::bitmap::Bitmap as _;
use vm_memory::{
    Bytes, GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryBackend as _,
    GuestMemoryMmap, VolatileMemory as _,
};

/// The guest memory map of one frontend connection.
pub type GuestMemoryMmapB = GuestMemoryMmap<BitmapMmapRegion>;
/// The atomically swappable memory map vhost-user-backend shares with the vrings.
pub type GuestMem = GuestMemoryAtomic<GuestMemoryMmapB>;

/// An empty memory map: every access fails. A VF has it until a frontend sends its memory table.
pub fn empty_memory() -> GuestMem {
    GuestMemoryAtomic::new(GuestMemoryMmapB::default())
}

/// The device's view of a frontend's guest memory. Each access loads the current map once, so
/// a memory table update is seen by the next access.
pub struct VhostMemory {
    mem: GuestMem,
    /// The frontend asked for dirty logging (`LOG_ALL` acked). Payload copies skip the
    /// bitmap while it is off: marking takes a lock per copy, and a log is only read once it
    /// is on. Set by the backend under the process lock, which every device write holds.
    logging: Arc<AtomicBool>,
}

impl VhostMemory {
    pub fn new(mem: GuestMem) -> VhostMemory {
        VhostMemory::with_logging(mem, Arc::new(AtomicBool::new(true)))
    }

    /// A view whose payload copies mark the dirty log only while `logging` is set.
    pub fn with_logging(mem: GuestMem, logging: Arc<AtomicBool>) -> VhostMemory {
        VhostMemory { mem, logging }
    }

    pub fn shared(mem: GuestMem) -> vhca_device::SharedMemory {
        Arc::new(VhostMemory::new(mem))
    }

    pub fn shared_with_logging(
        mem: GuestMem,
        logging: Arc<AtomicBool>,
    ) -> vhca_device::SharedMemory {
        Arc::new(VhostMemory::with_logging(mem, logging))
    }
}

/// The host address of `len` bytes at `gpa` when they lie inside one region of `mem`.
///
/// The bytes-per-packet path avoids `get_slice` here: a slice carries a reference-counted
/// handle to its region's dirty bitmap, and dropping it right after a payload memcpy is a
/// locked instruction that waits for the copy's stores to drain.
fn host_range(mem: &GuestMemoryMmapB, gpa: u64, len: usize) -> Option<*mut u8> {
    use vm_memory::GuestMemoryRegion as _;
    let region = mem.find_region(GuestAddress(gpa))?;
    let offset = gpa.checked_sub(region.start_addr().0)?;
    if offset.checked_add(len as u64)? > region.len() {
        return None;
    }
    region
        .get_host_address(vm_memory::MemoryRegionAddress(offset))
        .ok()
}

fn err(gpa: u64, len: usize) -> MemoryError {
    MemoryError {
        gpa,
        len: len as u64,
    }
}

impl GuestMemory for VhostMemory {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        if buf.is_empty() {
            return Ok(());
        }
        gpa.checked_add(buf.len() as u64)
            .ok_or(err(gpa, buf.len()))?;
        self.mem
            .memory()
            .read_slice(buf, GuestAddress(gpa))
            .map_err(|_| err(gpa, buf.len()))
    }

    fn write(&self, gpa: u64, data: &[u8]) -> Result<(), MemoryError> {
        if data.is_empty() {
            return Ok(());
        }
        gpa.checked_add(data.len() as u64)
            .ok_or(err(gpa, data.len()))?;
        // `write_slice` goes through the region's bitmap: dirty pages are marked when logging.
        self.mem
            .memory()
            .write_slice(data, GuestAddress(gpa))
            .map_err(|_| err(gpa, data.len()))
    }

    // `volatile_slice` keeps its default (`None`): a `VolatileSlice<'_, ()>` would carry no
    // dirty bitmap, so a memcpy *into* it would escape the migration log. Payload copies lend
    // the source through `with_volatile` (reading needs no log) and write through
    // `write_from`, whose destination slice keeps its bitmap.

    fn with_volatile(
        &self,
        gpa: u64,
        len: usize,
        f: &mut dyn FnMut(&vm_memory::VolatileSlice<'_, ()>),
    ) -> Result<(), MemoryError> {
        let mem = self.mem.memory();
        let Some(ptr) = host_range(&mem, gpa, len) else {
            // Not one contiguous mapping (crosses regions) or outside: read it piecewise.
            let mut tmp = vec![0u8; len];
            self.read(gpa, &mut tmp)?;
            f(&vm_memory::VolatileSlice::from(&mut tmp[..]));
            return Ok(());
        };
        // SAFETY: `host_range` checked that the `len` bytes at `ptr` lie inside one mapped
        // region of guest RAM, which stays mapped while `mem` (the loaded map) lives, and
        // `mem` outlasts `plain`, which never escapes `f`. The slice has no dirty bitmap: `f`
        // only reads through it, and a read needs no log mark.
        let plain = unsafe { vm_memory::VolatileSlice::new(ptr, len) };
        f(&plain);
        Ok(())
    }

    fn write_from(
        &self,
        gpa: u64,
        src: &vm_memory::VolatileSlice<'_, ()>,
    ) -> Result<(), MemoryError> {
        let len = src.len();
        if len == 0 {
            return Ok(());
        }
        let mem = self.mem.memory();
        if self.logging.load(Ordering::Relaxed) {
            // One memcpy; `copy_to_volatile_slice` marks the destination's dirty bitmap.
            if let Ok(d) = mem.get_slice(GuestAddress(gpa), len) {
                src.copy_to_volatile_slice(d);
                return Ok(());
            }
        } else if let Some(ptr) = host_range(&mem, gpa, len) {
            // SAFETY: as in `with_volatile`: one mapped region, mapped while `mem` lives. The
            // slice has no bitmap, which is right only while nobody logs (checked above).
            let plain = unsafe { vm_memory::VolatileSlice::new(ptr, len) };
            src.copy_to_volatile_slice(plain);
            return Ok(());
        }
        let mut tmp = vec![0u8; len];
        src.copy_to(&mut tmp[..]);
        self.write(gpa, &tmp)
    }

    fn atomic_update(&self, gpa: u64, op: &mut dyn FnMut(u64) -> u64) -> Result<u64, MemoryError> {
        let e = err(gpa, 8);
        if gpa % 8 != 0 {
            return Err(e);
        }
        let mem = self.mem.memory();
        let slice = mem.get_slice(GuestAddress(gpa), 8).map_err(|_| e)?;
        let word = slice.get_atomic_ref::<AtomicU64>(0).map_err(|_| e)?;
        let mut cur = word.load(Ordering::SeqCst);
        let old = loop {
            match word.compare_exchange(cur, op(cur), Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => break cur,
                Err(actual) => cur = actual,
            }
        };
        // The atomic reference bypasses the bitmap: mark the word's page by hand.
        slice.bitmap().mark_dirty(0, 8);
        Ok(old)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem(size: usize) -> GuestMem {
        GuestMemoryAtomic::new(
            GuestMemoryMmapB::from_ranges(&[(GuestAddress(0x1000), size)]).unwrap(),
        )
    }

    #[test]
    fn reads_writes_atomics_and_refuses_out_of_range() {
        let m = VhostMemory::new(mem(0x2000));
        m.write(0x1000, b"hello").unwrap();
        let mut b = [0u8; 5];
        m.read(0x1000, &mut b).unwrap();
        assert_eq!(&b, b"hello");
        assert!(m.read(0, &mut b).is_err(), "below the region");
        assert!(m.read(0x2ffe, &mut b).is_err(), "across its end");
        assert!(m.write(u64::MAX - 2, &b).is_err());
        m.write(0x1008, &41u64.to_le_bytes()).unwrap();
        assert_eq!(m.atomic_update(0x1008, &mut |v| v + 1).unwrap(), 41);
        assert_eq!(m.read_u64(0x1008).unwrap(), 42);
        assert!(m.atomic_update(0x100c, &mut |v| v).is_err(), "misaligned");
        assert!(m.atomic_update(0x3000, &mut |v| v).is_err(), "outside");
        let e = VhostMemory::new(empty_memory());
        assert!(e.read(0, &mut b).is_err());
    }

    #[test]
    fn a_swapped_map_is_seen_by_the_next_access() {
        let gm = mem(0x1000);
        let m = VhostMemory::new(gm.clone());
        assert!(m.write(0x1800, b"x").is_ok());
        gm.lock()
            .unwrap()
            .replace(GuestMemoryMmapB::from_ranges(&[(GuestAddress(0x8000), 0x1000)]).unwrap());
        assert!(m.write(0x1800, b"x").is_err());
        assert!(m.write(0x8800, b"x").is_ok());
    }
}
