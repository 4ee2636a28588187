//! An append-only vector stored in fixed-size chunks.
//!
//! Why: a head holding millions of items in one `Vec` copies all of them at every doubling and
//! touches twice the memory while doing it; under sustained ingest that copying (and the kernel
//! zeroing the fresh pages) cost more CPU than decoding the requests. Chunks never move once
//! allocated, so appending costs the same at the millionth item as at the first.

use std::ops::Index;

/// Items per chunk: large enough that the chunk list stays short, small enough that a new chunk
/// is a cheap allocation.
const CHUNK: usize = 4096;

/// Append-only, indexable, never reallocates existing items.
pub(crate) struct ChunkedVec<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for ChunkedVec<T> {
    fn default() -> Self {
        ChunkedVec { chunks: Vec::new(), len: 0 }
    }
}

impl<T> ChunkedVec<T> {
    /// Appends `item`; its index is the previous `len()`.
    pub fn push(&mut self, item: T) {
        match self.chunks.last_mut() {
            Some(c) if c.len() < CHUNK => c.push(item),
            _ => {
                let mut c = Vec::with_capacity(CHUNK);
                c.push(item);
                self.chunks.push(c);
            }
        }
        self.len += 1;
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.len
    }
}

impl<T> Index<usize> for ChunkedVec<T> {
    type Output = T;

    fn index(&self, i: usize) -> &T {
        &self.chunks[i / CHUNK][i % CHUNK]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_across_chunks() {
        let mut v = ChunkedVec::default();
        for i in 0..(CHUNK * 2 + 7) {
            assert_eq!(v.len(), i);
            v.push(i);
        }
        for i in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 6] {
            assert_eq!(v[i], i);
        }
    }
}
