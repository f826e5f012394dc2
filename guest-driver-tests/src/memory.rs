//! The memory the driver shares with the device, plus a small first-fit allocator for the
//! driver's rings, command buffers and the application's buffers. Addresses are always the
//! device's (guest-physical) addresses, in one of two shapes:
//!
//! - **memfd** ([`GuestRam::new`]): guest RAM as QEMU gives it to a vhost-user backend, one
//!   shared memfd mapped here and handed to the device with its file descriptor; guest-physical
//!   addresses start at 0 and equal offsets into the memfd.
//! - **regions** ([`GuestRam::from_regions`]): DMA-able memory inside a real guest (hugepages
//!   whose guest-physical addresses the kernel told us, `crate::pci::dma`). Each physically
//!   contiguous run is a region at its guest-physical address; allocations never straddle two
//!   runs, so every ring and buffer the device reads is contiguous for it.
//!
//! The driver never uses raw pointers into the mapping: every access goes through vm-memory's
//! `Bytes` API, with atomic loads and stores where the device shares a field with us (ring
//! indices, CQE owner bytes).

use crate::error::DriverError;
use rustix::fs::{ftruncate, memfd_create, MemfdFlags};
use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use vm_memory::{
    Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
};

/// Page size of the guest (MR page lists use it).
pub const PAGE_SIZE: u64 = 4096;

/// The first bytes of guest memory are never handed out, so that address 0 never names a
/// buffer (a zeroed field must not look like a valid ring).
const RESERVED_LOW: u64 = 64 * 1024;

/// One physically contiguous run of [`GuestRam::from_regions`]: `len` bytes at guest-physical
/// `gpa`, mapped from `file` at `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub gpa: u64,
    pub len: u64,
    pub offset: u64,
}

/// The guest's RAM: a memfd mapped shared, and what of it is allocated.
pub struct GuestRam {
    file: File,
    mem: GuestMemoryMmap,
    /// The end of the highest region: every address is below it.
    size: u64,
    /// Free ranges: start → length, non-overlapping and coalesced.
    free: BTreeMap<u64, u64>,
    /// The guest CPU's dirty log, one bit per page, set by every write through this type: what
    /// KVM's dirty log tells QEMU. (Device writes go to the vhost-user log instead.)
    dirty: Vec<AtomicU64>,
}

impl GuestRam {
    /// Creates `size` bytes (a multiple of the page size) of shared guest memory.
    pub fn new(size: u64) -> Result<GuestRam, DriverError> {
        if size == 0 || size % PAGE_SIZE != 0 || size <= RESERVED_LOW {
            return Err(DriverError::Config("guest memory size must be whole pages"));
        }
        let fd = memfd_create("vhca-guest-ram", MemfdFlags::CLOEXEC)
            .map_err(|e| DriverError::Memory(format!("memfd_create: {e}")))?;
        ftruncate(&fd, size).map_err(|e| DriverError::Memory(format!("ftruncate: {e}")))?;
        let file = File::from(fd);
        let mem = GuestMemoryMmap::from_ranges_with_files([(
            GuestAddress(0),
            size as usize,
            Some(FileOffset::new(
                file.try_clone()
                    .map_err(|e| DriverError::Memory(format!("dup memfd: {e}")))?,
                0,
            )),
        )])
        .map_err(|e| DriverError::Memory(format!("mmap guest memory: {e}")))?;
        let mut free = BTreeMap::new();
        free.insert(RESERVED_LOW, size - RESERVED_LOW);
        let pages = size / PAGE_SIZE;
        Ok(GuestRam {
            file,
            mem,
            size,
            free,
            dirty: (0..pages.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    /// Memory made of `regions` of `file` (each a multiple of the page size, sorted by
    /// guest-physical address, not overlapping), all of it free. Physically adjacent regions
    /// are one free range.
    pub fn from_regions(file: File, regions: &[Region]) -> Result<GuestRam, DriverError> {
        if regions.is_empty() {
            return Err(DriverError::Config("DMA memory needs at least one region"));
        }
        let mut ranges = Vec::with_capacity(regions.len());
        let mut free: BTreeMap<u64, u64> = BTreeMap::new();
        let mut end = 0u64;
        for r in regions {
            if r.len == 0 || r.len % PAGE_SIZE != 0 || r.gpa % PAGE_SIZE != 0 || r.gpa < end {
                return Err(DriverError::Config(
                    "DMA regions must be whole pages, sorted and disjoint",
                ));
            }
            let dup = file
                .try_clone()
                .map_err(|e| DriverError::Memory(format!("dup DMA memory file: {e}")))?;
            ranges.push((
                GuestAddress(r.gpa),
                r.len as usize,
                Some(FileOffset::new(dup, r.offset)),
            ));
            match free.iter_mut().next_back() {
                Some((&s, l)) if s + *l == r.gpa => *l += r.len,
                _ => {
                    free.insert(r.gpa, r.len);
                }
            }
            end = r.gpa + r.len;
        }
        let mem = GuestMemoryMmap::from_ranges_with_files(ranges)
            .map_err(|e| DriverError::Memory(format!("mmap DMA memory: {e}")))?;
        let pages = end / PAGE_SIZE;
        Ok(GuestRam {
            file,
            mem,
            size: end,
            free,
            dirty: (0..pages.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    /// A fresh memory of the same size whose allocator state matches this one's (the
    /// destination RAM of a migration; its content is copied page by page).
    pub fn twin(&self) -> Result<GuestRam, DriverError> {
        let mut r = GuestRam::new(self.size)?;
        r.free = self.free.clone();
        Ok(r)
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn mem(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// The memfd the device maps (sent with the memory table).
    pub fn raw_fd(&self) -> i32 {
        self.file.as_raw_fd()
    }

    /// The regions' (guest-physical start, length), in order.
    pub fn regions(&self) -> Vec<(u64, u64)> {
        self.mem
            .iter()
            .map(|r| (r.start_addr().0, r.len()))
            .collect()
    }

    /// Where guest-physical address 0 is mapped in this process: vhost-user ring addresses are
    /// in the frontend's virtual address space, as QEMU's are.
    pub fn host_base(&self) -> u64 {
        let region = self.mem.iter().next().expect("one region");
        // The address is only sent to the device, which translates it back; never dereferenced.
        region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .map(|p| p as u64)
            .unwrap_or(0)
    }

    /// Allocates `len` bytes aligned to `align` (a power of two), zeroed.
    pub fn alloc(&mut self, len: u64, align: u64) -> Result<u64, DriverError> {
        let len = len.max(1).next_multiple_of(16);
        let align = align.max(16);
        let found = self.free.iter().find_map(|(&start, &flen)| {
            let a = start.next_multiple_of(align);
            (a + len <= start + flen).then_some((start, flen, a))
        });
        let (start, flen, a) = found.ok_or(DriverError::OutOfMemory(len))?;
        self.free.remove(&start);
        if a > start {
            self.free.insert(start, a - start);
        }
        if a + len < start + flen {
            self.free.insert(a + len, start + flen - (a + len));
        }
        self.zero(a, len)?;
        Ok(a)
    }

    /// Returns `[addr, addr + len)` (as allocated) to the free ranges.
    pub fn free(&mut self, addr: u64, len: u64) {
        let len = len.max(1).next_multiple_of(16);
        let mut start = addr;
        let mut end = addr + len;
        if let Some((&p, &plen)) = self.free.range(..addr).next_back() {
            if p + plen == addr {
                self.free.remove(&p);
                start = p;
            }
        }
        if let Some(&nlen) = self.free.get(&end) {
            self.free.remove(&end);
            end += nlen;
        }
        self.free.insert(start, end - start);
    }

    /// Bytes not allocated.
    pub fn free_bytes(&self) -> u64 {
        self.free.values().sum()
    }

    fn check(&self, addr: u64, len: u64) -> Result<(), DriverError> {
        let inside = match addr.checked_add(len) {
            Some(end) if end <= self.size => {
                len == 0 || self.mem.check_range(GuestAddress(addr), len as usize)
            }
            _ => false,
        };
        if inside {
            Ok(())
        } else {
            Err(DriverError::OutsideMemory { addr, len })
        }
    }

    /// Marks the pages of `[addr, addr + len)` in the CPU dirty log (the range is checked).
    fn mark(&self, addr: u64, len: u64) {
        if len == 0 {
            return;
        }
        for p in addr / PAGE_SIZE..=(addr + len - 1) / PAGE_SIZE {
            self.dirty[(p / 64) as usize].fetch_or(1 << (p % 64), Ordering::Relaxed);
        }
    }

    /// Takes and clears the CPU dirty log: `f` gets every page written since the last call.
    pub fn take_dirty(&self, mut f: impl FnMut(u64)) {
        for (w, word) in self.dirty.iter().enumerate() {
            let mut bits = word.swap(0, Ordering::AcqRel);
            while bits != 0 {
                let b = bits.trailing_zeros() as u64;
                f(w as u64 * 64 + b);
                bits &= bits - 1;
            }
        }
    }

    pub fn zero(&self, addr: u64, len: u64) -> Result<(), DriverError> {
        self.check(addr, len)?;
        let zeros = [0u8; 4096];
        let mut off = 0;
        while off < len {
            let n = (len - off).min(zeros.len() as u64);
            self.write(addr + off, &zeros[..n as usize])?;
            off += n;
        }
        Ok(())
    }

    pub fn write(&self, addr: u64, data: &[u8]) -> Result<(), DriverError> {
        self.check(addr, data.len() as u64)?;
        self.mark(addr, data.len() as u64);
        self.mem
            .write_slice(data, GuestAddress(addr))
            .map_err(|_| DriverError::OutsideMemory {
                addr,
                len: data.len() as u64,
            })
    }

    pub fn read(&self, addr: u64, len: usize) -> Result<Vec<u8>, DriverError> {
        self.check(addr, len as u64)?;
        let mut v = vec![0u8; len];
        self.mem
            .read_slice(&mut v, GuestAddress(addr))
            .map_err(|_| DriverError::OutsideMemory {
                addr,
                len: len as u64,
            })?;
        Ok(v)
    }

    pub fn store_u16(&self, addr: u64, v: u16, order: Ordering) -> Result<(), DriverError> {
        self.check(addr, 2)?;
        self.mark(addr, 2);
        self.mem
            .store(v, GuestAddress(addr), order)
            .map_err(|_| DriverError::OutsideMemory { addr, len: 2 })
    }

    pub fn load_u16(&self, addr: u64, order: Ordering) -> Result<u16, DriverError> {
        self.mem
            .load(GuestAddress(addr), order)
            .map_err(|_| DriverError::OutsideMemory { addr, len: 2 })
    }

    pub fn load_u8(&self, addr: u64, order: Ordering) -> Result<u8, DriverError> {
        self.mem
            .load(GuestAddress(addr), order)
            .map_err(|_| DriverError::OutsideMemory { addr, len: 1 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_are_aligned_zeroed_and_coalesce_when_freed() {
        let mut ram = GuestRam::new(1 << 20).unwrap();
        let total = ram.free_bytes();
        let a = ram.alloc(100, 4096).unwrap();
        assert_eq!(a % 4096, 0);
        assert!(a >= RESERVED_LOW);
        ram.write(a, &[7; 100]).unwrap();
        let b = ram.alloc(5000, 64).unwrap();
        assert!(b >= a + 100 && b % 64 == 0);
        ram.free(a, 100);
        let c = ram.alloc(64, 16).unwrap();
        assert_eq!(c, a, "first fit reuses the freed range");
        assert_eq!(
            ram.read(c, 64).unwrap(),
            vec![0; 64],
            "allocations are zeroed"
        );
        ram.free(c, 64);
        ram.free(b, 5000);
        assert_eq!(ram.free_bytes(), total);
        assert_eq!(ram.free.len(), 1, "free ranges coalesce");
        assert!(matches!(
            ram.alloc(2 << 20, 16),
            Err(DriverError::OutOfMemory(_))
        ));
    }

    #[test]
    fn writes_mark_their_pages_in_the_dirty_log() {
        let ram = GuestRam::new(1 << 20).unwrap();
        let taken = |r: &GuestRam| {
            let mut v = Vec::new();
            r.take_dirty(|p| v.push(p));
            v
        };
        taken(&ram);
        ram.write(4095, &[1, 2]).unwrap();
        ram.store_u16(70 * 4096, 9, Ordering::Release).unwrap();
        ram.zero(100 * 4096, 3 * 4096).unwrap();
        assert_eq!(taken(&ram), vec![0, 1, 70, 100, 101, 102]);
        assert_eq!(taken(&ram), Vec::<u64>::new(), "taking clears the log");
        let _ = ram.read(0, 64).unwrap();
        assert_eq!(taken(&ram), Vec::<u64>::new(), "reads do not dirty");
    }

    /// DMA memory as the PCI driver builds it: runs of pages at scattered guest-physical
    /// addresses (here from an ordinary memfd; in a guest, hugepages).
    fn scattered() -> GuestRam {
        let fd = memfd_create("regions-test", MemfdFlags::CLOEXEC).unwrap();
        ftruncate(&fd, 4 * 65536).unwrap();
        let file = File::from(fd);
        let r = |gpa: u64, offset: u64| Region {
            gpa,
            len: 65536,
            offset,
        };
        // Two physically adjacent runs (one free range), a gap, one more run.
        GuestRam::from_regions(
            file,
            &[
                r(0x10_0000, 0x2_0000),
                r(0x11_0000, 0),
                r(0x40_0000, 0x1_0000),
            ],
        )
        .unwrap()
    }

    #[test]
    fn regions_coalesce_only_where_physically_adjacent_and_allocations_never_straddle_a_gap() {
        let mut ram = scattered();
        assert_eq!(
            ram.regions(),
            vec![(0x10_0000, 65536), (0x11_0000, 65536), (0x40_0000, 65536)]
        );
        assert_eq!(ram.free_bytes(), 3 * 65536);
        // 128 KiB fits only in the adjacent pair, across its region boundary.
        let a = ram.alloc(2 * 65536, 4096).unwrap();
        assert_eq!(a, 0x10_0000);
        // The same bytes, written across the boundary, read back: the two mappings are
        // one range for the driver.
        let data: Vec<u8> = (0..8192u32).map(|i| i as u8).collect();
        ram.write(0x10_f000, &data).unwrap();
        assert_eq!(ram.read(0x10_f000, 8192).unwrap(), data);
        // What is left is the lone run: 64 KiB, not more.
        assert!(matches!(
            ram.alloc(65536 + 16, 16),
            Err(DriverError::OutOfMemory(_))
        ));
        assert_eq!(ram.alloc(65536, 4096).unwrap(), 0x40_0000);
        ram.free(a, 2 * 65536);
        assert_eq!(ram.free_bytes(), 2 * 65536);
    }

    #[test]
    fn the_gaps_between_regions_are_outside_memory() {
        let ram = scattered();
        for (addr, len) in [
            (0, 4),
            (0x12_0000, 1),
            (0x11_fffe, 4),
            (0x3f_ffff, 2),
            (0x41_0000, 1),
        ] {
            assert!(
                matches!(
                    ram.write(addr, &vec![0; len]),
                    Err(DriverError::OutsideMemory { .. })
                ),
                "{addr:#x}+{len}"
            );
            assert!(ram.read(addr, len).is_err(), "{addr:#x}+{len}");
        }
        assert!(ram.write(0x40_fffc, &[1, 2, 3, 4]).is_ok());
    }

    #[test]
    fn bad_region_lists_are_refused() {
        let file = || File::from(memfd_create("bad", MemfdFlags::CLOEXEC).unwrap());
        let r = |gpa: u64, len: u64| Region {
            gpa,
            len,
            offset: 0,
        };
        assert!(GuestRam::from_regions(file(), &[]).is_err());
        assert!(
            GuestRam::from_regions(file(), &[r(0x1000, 100)]).is_err(),
            "not whole pages"
        );
        assert!(
            GuestRam::from_regions(file(), &[r(0x1800, 4096)]).is_err(),
            "unaligned"
        );
        assert!(
            GuestRam::from_regions(file(), &[r(0x2000, 4096), r(0x1000, 8192)]).is_err(),
            "unsorted and overlapping"
        );
    }

    #[test]
    fn accesses_outside_memory_are_errors() {
        let ram = GuestRam::new(1 << 20).unwrap();
        assert!(ram.write((1 << 20) - 2, &[1, 2, 3]).is_err());
        assert!(ram.read(u64::MAX - 1, 4).is_err());
        assert!(ram.host_base() != 0);
        assert!(GuestRam::new(1000).is_err());
    }
}
