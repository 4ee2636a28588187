//! The one memory map of the storage crate: read-only maps of files that never change once
//! written (metrics block files, logs chunk data files).

#![allow(unsafe_code)]

use std::fs::File;
use std::io;

use memmap2::Mmap;

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
