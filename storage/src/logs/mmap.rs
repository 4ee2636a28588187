//! The one memory map of the logs engine: read-only maps of chunk data files.

#![allow(unsafe_code)]

use std::fs::File;
use std::io;

use memmap2::Mmap;

/// Maps `file` read-only.
pub(super) fn map(file: &File) -> io::Result<Mmap> {
    // SAFETY: memmap2 maps are unsound only if the file changes while mapped. A chunk data file
    // is written whole and fsynced before it is mapped, and after that nothing in Outpost writes,
    // truncates or appends to it: it is only deleted (retention, or at open when no commit refers
    // to it, before it is mapped). Deleting an open file leaves the mapped pages intact on the
    // platforms we support; the data directory is locked against other Outpost processes.
    unsafe { Mmap::map(file) }
}
