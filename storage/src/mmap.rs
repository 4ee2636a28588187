//! The one memory map of the storage crate: read-only maps of files that never change once
//! written (metrics block files, logs chunk data files).

#![allow(unsafe_code)]

use std::fs::File;
use std::io;

use memmap2::{Mmap, UncheckedAdvice};

/// Maps `file` read-only. Callers map only files that are complete and fsynced and that nothing
/// in Outpost writes, truncates or appends to afterwards.
pub(crate) fn map_immutable(file: &File) -> io::Result<Mmap> {
    // SAFETY: memmap2 maps are unsound only if the file changes while mapped. The two kinds of
    // file mapped here are written whole and fsynced before they are mapped — metrics block
    // files into a temporary directory then renamed into place, logs chunk data files before
    // the commit that refers to them — and are only ever deleted afterwards (compaction,
    // retention, or at open when no commit refers to a data file, before it is mapped).
    // Deleting an open file leaves the mapped pages intact on the platforms we support. The data
    // directory is locked against other Outpost processes; changing these files by hand while
    // Outpost runs is outside the contract (as for Prometheus' blocks).
    unsafe { Mmap::map(file) }
}

/// Drops `map`'s pages in `range` from this process' page tables (`MADV_DONTNEED`); the file's
/// pages stay in the kernel's page cache, and a later read of the range faults them back in with
/// the same bytes. Mapped file pages count in the process' RSS for as long as they stay mapped:
/// a scan over every logs chunk would otherwise leave the whole store in it. Errors are ignored
/// (the advice only changes what the RSS counts).
pub(crate) fn drop_pages(map: &Mmap, range: std::ops::Range<usize>) {
    let Some(len) = range.end.checked_sub(range.start).filter(|_| range.end <= map.len()) else { return };
    // SAFETY: `MADV_DONTNEED` on a shared, read-only map of a file that never changes (see
    // `map_immutable`) discards no data: the next access reads the same bytes from the page
    // cache, so references into the map, held by this or another thread, stay valid and see the
    // same contents.
    let _ = unsafe { map.unchecked_advise_range(UncheckedAdvice::DontNeed, range.start, len) };
}

/// Resident KiB of this process' file maps whose path contains every one of `parts`
/// (`/proc/self/smaps`): what a test checks to see that pages were released.
#[cfg(test)]
pub(crate) fn mapped_rss_kib(parts: &[&str]) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
    let mut ours = false;
    let mut kib = 0;
    for line in smaps.lines() {
        if line.split_whitespace().next().is_some_and(|r| r.contains('-') && !r.ends_with(':')) {
            ours = parts.iter().all(|p| line.contains(p));
        } else if ours && let Some(v) = line.strip_prefix("Rss:") {
            kib += v.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap_or(0);
        }
    }
    kib
}
