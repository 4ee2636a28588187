//! The one memory map of the metrics engine: read-only maps of immutable block files.

#![allow(unsafe_code)]

use std::fs::File;
use std::io;

use memmap2::Mmap;

/// Maps `file` read-only.
pub(crate) fn map(file: &File) -> io::Result<Mmap> {
    // SAFETY: memmap2 maps are unsound only if the file changes while mapped. Block files are
    // written once into a temporary directory, fsynced and renamed into place; after that nothing
    // in Outpost writes, truncates or appends to them — they are only deleted (by compaction or
    // retention), and deleting an open file leaves the mapped pages intact on the platforms we
    // support. The data directory is locked against other Outpost processes; changing block
    // files by hand while Outpost runs is outside the contract (as for Prometheus' blocks).
    unsafe { Mmap::map(file) }
}
