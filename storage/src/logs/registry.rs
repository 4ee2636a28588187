//! The registry: stream label sets, resources and scopes, each under a dense `u32` id that log
//! records refer to, persisted in one append-only file (`registry.log`, see
//! `docs/format/logs.md`).
//!
//! Invariants: ids are assigned in order from 0 and never reused or changed; an entry reaches the
//! file before any partition commit that refers to it (the engine calls [`Registry::sync`] first).

use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::FastMap;
use crate::intern::Identity;
use crate::model::{Labels, Resource, Scope};

/// One frame's payload.
#[derive(Serialize, Deserialize)]
pub(super) enum Entry {
    Stream(u32, Labels),
    Resource(u32, Resource),
    Scope(u32, Scope),
}

/// Values with dense ids, deduplicated by structural identity.
pub(super) struct Table<T> {
    pub values: Vec<Arc<T>>,
    by_hash: FastMap<u64, Vec<u32>>,
    hasher: foldhash::fast::RandomState,
    /// Values before this index are in the file.
    pub persisted: usize,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table { values: Vec::new(), by_hash: FastMap::default(), hasher: Default::default(), persisted: 0 }
    }
}

impl<T: Identity> Table<T> {
    fn hash(&self, v: &T) -> u64 {
        let mut h = self.hasher.build_hasher();
        v.hash_into(&mut h);
        h.finish()
    }

    /// The id of `value`, assigned on first sight.
    pub fn intern(&mut self, value: T) -> u32 {
        let h = self.hash(&value);
        if let Some(ids) = self.by_hash.get(&h)
            && let Some(&id) = ids.iter().find(|&&id| self.values[id as usize].same(&value))
        {
            return id;
        }
        let id = self.values.len() as u32;
        self.values.push(Arc::new(value));
        self.by_hash.entry(h).or_default().push(id);
        id
    }

    /// Inserts a loaded value under its recorded id (ids arrive in order).
    fn load(&mut self, id: u32, value: T) -> bool {
        if id as usize != self.values.len() {
            return false;
        }
        let h = self.hash(&value);
        self.values.push(Arc::new(value));
        self.by_hash.entry(h).or_default().push(id);
        self.persisted = self.values.len();
        true
    }
}

impl Identity for Labels {
    fn hash_into(&self, h: &mut impl Hasher) {
        std::hash::Hash::hash(self, h);
    }

    fn same(&self, other: &Self) -> bool {
        self == other
    }
}

/// Streams, resources and scopes.
#[derive(Default)]
pub(super) struct Registry {
    pub streams: Table<Labels>,
    pub resources: Table<Resource>,
    pub scopes: Table<Scope>,
}

/// Frame header: payload length (u32 LE) and CRC-32C of the payload (u32 LE).
const HEADER: usize = 8;

impl Registry {
    /// Reads `path` (absent = empty). A torn or damaged tail is cut off: entries after it were
    /// never referenced by a committed partition, because the file is synced before each commit.
    pub fn load(path: &Path) -> io::Result<Registry> {
        let mut reg = Registry::default();
        let mut bytes = Vec::new();
        match File::open(path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(reg),
            Err(e) => return Err(e),
        }
        let mut at = 0;
        while at + HEADER <= bytes.len() {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
            let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
            let Some(payload) = bytes.get(at + HEADER..at + HEADER + len) else { break };
            if crc32c::crc32c(payload) != crc {
                break;
            }
            let Ok(entry) = postcard::from_bytes::<Entry>(payload) else { break };
            let ok = match entry {
                Entry::Stream(id, v) => reg.streams.load(id, v),
                Entry::Resource(id, v) => reg.resources.load(id, v),
                Entry::Scope(id, v) => reg.scopes.load(id, v),
            };
            if !ok {
                break;
            }
            at += HEADER + len;
        }
        if at < bytes.len() {
            OpenOptions::new().write(true).open(path)?.set_len(at as u64)?;
        }
        Ok(reg)
    }

    /// Entries not yet in the file, in id order.
    pub fn unpersisted(&self) -> Vec<Entry> {
        let mut out = Vec::new();
        for (i, v) in self.streams.values.iter().enumerate().skip(self.streams.persisted) {
            out.push(Entry::Stream(i as u32, (**v).clone()));
        }
        for (i, v) in self.resources.values.iter().enumerate().skip(self.resources.persisted) {
            out.push(Entry::Resource(i as u32, (**v).clone()));
        }
        for (i, v) in self.scopes.values.iter().enumerate().skip(self.scopes.persisted) {
            out.push(Entry::Scope(i as u32, (**v).clone()));
        }
        out
    }

    /// Marks `entries` (from [`Registry::unpersisted`]) as written.
    pub fn mark_persisted(&mut self, entries: &[Entry]) {
        for e in entries {
            match e {
                Entry::Stream(id, _) => self.streams.persisted = self.streams.persisted.max(*id as usize + 1),
                Entry::Resource(id, _) => self.resources.persisted = self.resources.persisted.max(*id as usize + 1),
                Entry::Scope(id, _) => self.scopes.persisted = self.scopes.persisted.max(*id as usize + 1),
            }
        }
    }
}

/// Appends `entries` to the file at `path` and syncs it.
pub(super) fn append(path: &PathBuf, entries: &[Entry]) -> io::Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut buf = Vec::new();
    for e in entries {
        let payload = postcard::to_allocvec(e).map_err(io::Error::other)?;
        buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        buf.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
        buf.extend_from_slice(&payload);
    }
    let mut f = OpenOptions::new().create(true).append(true).open(path)?;
    f.write_all(&buf)?;
    f.sync_data()
}
