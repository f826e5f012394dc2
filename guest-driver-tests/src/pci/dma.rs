//! DMA-able memory for a driver in guest user space: 2 MiB hugepages from a hugetlb memfd,
//! whose guest-physical addresses the kernel reports in `/proc/self/pagemap`.
//!
//! Hugepages because a hugepage is physically contiguous (a ring of up to 2 MiB needs no
//! scatter list), the kernel neither swaps nor moves it while the file holds it, and a
//! handful of them covers a program's rings and buffers. The pages come from the pool the
//! guest reserves (`hugepages=N` on the kernel command line, or `/proc/sys/vm/nr_hugepages`).
//! Reading page frame numbers from pagemap needs CAP_SYS_ADMIN (root in the guest); without
//! it the kernel reports 0 and this is an error, never a wrong address.

use crate::error::{DriverError, DriverResult};
use crate::memory::{GuestRam, Region};
use rustix::fs::{ftruncate, memfd_create, MemfdFlags};
use std::fs::File;
use std::os::unix::fs::FileExt;
use vm_memory::mmap::MmapRegion;
use vm_memory::{FileOffset, VolatileMemory};

/// The hugepage size used (x86-64's default).
pub const HUGEPAGE: u64 = 2 << 20;
const PAGEMAP_PRESENT: u64 = 1 << 63;
const PAGEMAP_PFN_MASK: u64 = (1 << 55) - 1;
const PAGE: u64 = 4096;

/// The frame a pagemap entry names, if the page is present and the kernel told us its frame.
pub fn pagemap_frame(entry: u64) -> Option<u64> {
    let pfn = entry & PAGEMAP_PFN_MASK;
    (entry & PAGEMAP_PRESENT != 0 && pfn != 0).then_some(pfn)
}

/// The regions for hugepages `i` of the memfd at the guest-physical addresses `gpas[i]`,
/// sorted by address.
pub fn regions_of(gpas: &[u64]) -> Vec<Region> {
    let mut r: Vec<Region> = gpas
        .iter()
        .enumerate()
        .map(|(i, &gpa)| Region {
            gpa,
            len: HUGEPAGE,
            offset: i as u64 * HUGEPAGE,
        })
        .collect();
    r.sort_by_key(|r| r.gpa);
    r
}

fn memory_err(what: &str, e: impl std::fmt::Display) -> DriverError {
    DriverError::Memory(format!("{what}: {e}"))
}

/// `bytes` (rounded up to whole hugepages) of hugepage memory, as [`GuestRam`] whose
/// addresses are guest-physical.
pub fn hugepage_ram(bytes: u64) -> DriverResult<GuestRam> {
    let n = bytes.max(1).div_ceil(HUGEPAGE);
    let total = n * HUGEPAGE;
    let fd = memfd_create(
        "vhca-dma",
        MemfdFlags::CLOEXEC | MemfdFlags::HUGETLB | MemfdFlags::HUGE_2MB,
    )
    .map_err(|e| memory_err("memfd_create(MFD_HUGETLB)", e))?;
    ftruncate(&fd, total).map_err(|e| memory_err("ftruncate of the hugetlb memfd", e))?;
    let file = File::from(fd);
    let gpas = {
        let map = MmapRegion::<()>::from_file(
            FileOffset::new(file.try_clone().map_err(|e| memory_err("dup", e))?, 0),
            total as usize,
        )
        .map_err(|e| memory_err("mmap of the hugetlb memfd", e))?;
        // Fault every hugepage in. A pool too small for them is SIGBUS on first touch, so
        // check the pool first and say what to do.
        let free = free_hugepages();
        if let Some(free) = free {
            if free < n {
                return Err(DriverError::Memory(format!(
                    "{n} free 2 MiB hugepages needed, {free} available: reserve more \
                     (hugepages=N on the kernel command line or /proc/sys/vm/nr_hugepages)"
                )));
            }
        }
        for i in 0..n {
            map.get_ref::<u8>((i * HUGEPAGE) as usize)
                .map_err(|e| memory_err("touch", e))?
                .store(0);
        }
        let pagemap =
            File::open("/proc/self/pagemap").map_err(|e| memory_err("/proc/self/pagemap", e))?;
        let base = map.as_ptr() as u64;
        let mut gpas = Vec::with_capacity(n as usize);
        for i in 0..n {
            let first = frame_of(&pagemap, base + i * HUGEPAGE)?;
            let last = frame_of(&pagemap, base + (i + 1) * HUGEPAGE - PAGE)?;
            // A hugepage is one physical run; anything else means pagemap lied or the
            // mapping is not what we asked for.
            if last != first + HUGEPAGE / PAGE - 1 || (first * PAGE) % HUGEPAGE != 0 {
                return Err(DriverError::Memory(format!(
                    "hugepage {i} is not one aligned physical run (frames {first:#x}..{last:#x})"
                )));
            }
            gpas.push(first * PAGE);
        }
        gpas
    };
    let regions = regions_of(&gpas);
    tracing::info!(
        hugepages = n,
        first = format_args!("{:#x}", regions[0].gpa),
        "DMA memory"
    );
    GuestRam::from_regions(file, &regions)
}

fn frame_of(pagemap: &File, vaddr: u64) -> DriverResult<u64> {
    let mut b = [0u8; 8];
    pagemap
        .read_exact_at(&mut b, vaddr / PAGE * 8)
        .map_err(|e| memory_err("reading /proc/self/pagemap", e))?;
    pagemap_frame(u64::from_le_bytes(b)).ok_or_else(|| {
        DriverError::Memory(
            "/proc/self/pagemap gives no frame numbers (needs CAP_SYS_ADMIN: run as root)".into(),
        )
    })
}

/// Free 2 MiB hugepages in the pool, if the kernel says.
fn free_hugepages() -> Option<u64> {
    std::fs::read_to_string("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages")
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pagemap_entries_give_frames_only_when_present_and_told() {
        assert_eq!(pagemap_frame(PAGEMAP_PRESENT | 0x1234), Some(0x1234));
        assert_eq!(pagemap_frame(0x1234), None, "not present");
        assert_eq!(
            pagemap_frame(PAGEMAP_PRESENT),
            None,
            "frame hidden from non-root"
        );
        // Flag bits 55-62 (soft-dirty, exclusive, file/shared, ...) are not part of the frame.
        assert_eq!(
            pagemap_frame(PAGEMAP_PRESENT | 1 << 55 | 1 << 61 | 7),
            Some(7)
        );
    }

    #[test]
    fn hugepages_become_sorted_regions_with_their_file_offsets() {
        let r = regions_of(&[0x1240_0000, 0x1200_0000, 0x1220_0000]);
        assert_eq!(
            r.iter().map(|r| (r.gpa, r.offset)).collect::<Vec<_>>(),
            vec![
                (0x1200_0000, 0x20_0000),
                (0x1220_0000, 0x40_0000),
                (0x1240_0000, 0)
            ]
        );
    }
}
