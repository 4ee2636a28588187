//! The body tokenizer and the rule that turns a substring hint into index terms.
//!
//! Invariant: a term is required for a hint only when every line containing the hint is certain to
//! contain that term as a whole token. Tokens are maximal runs of `char::is_alphanumeric`
//! characters (tantivy's `SimpleTokenizer`), kept case-sensitive, and tokens of
//! [`MAX_TOKEN_BYTES`] bytes or more are not indexed. A run inside the hint that has a
//! non-alphanumeric character on both sides (within the hint) is such a token; runs touching the
//! hint's start or end may continue in the line, so they are never required.

use std::collections::HashSet;

use tantivy::tokenizer::{RemoveLongFilter, SimpleTokenizer, TextAnalyzer};

/// Name the body tokenizer is registered under in every partition index.
pub(super) const TOKENIZER: &str = "outpost_body";

/// Tokens this long (bytes) or longer are dropped from the index. Such tokens are mostly ids
/// (hex trace and span ids, hashes, tokens) that are unique per line: indexing them would double
/// the term dictionary and its build time for searches that are rare (trace ids have their own
/// field). A line filter on one still works, by scanning.
pub(super) const MAX_TOKEN_BYTES: usize = 16;

/// The body analyzer: alphanumeric runs, case kept, long tokens dropped.
pub(super) fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default()).filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES)).build()
}

/// True for tokens the chunk index holds: shorter than [`MAX_TOKEN_BYTES`], with fewer than four
/// ASCII digits (counters, durations, timestamps, numeric ids are nearly unique per line: they
/// would swell the index for searches that are rare).
pub(super) fn indexed(tok: &str) -> bool {
    tok.len() < MAX_TOKEN_BYTES && (tok.len() < 4 || tok.bytes().filter(|b| b.is_ascii_digit()).count() < 4)
}

/// ASCII bytes that are alphanumeric (one table look-up instead of two range checks).
const ASCII_ALNUM: [bool; 128] = {
    let mut t = [false; 128];
    let mut c = 0;
    while c < 128 {
        t[c] = (c as u8).is_ascii_alphanumeric();
        c += 1;
    }
    t
};

/// Calls `f` with every maximal run of `char::is_alphanumeric` characters of `s` (the runs
/// tantivy's `SimpleTokenizer` gives). ASCII bytes are classified by table; only non-ASCII
/// characters are decoded.
pub(super) fn for_each_run<'a>(s: &'a str, mut f: impl FnMut(&'a str)) {
    let b = s.as_bytes();
    let n = b.len();
    // Whether the character at `i` is alphanumeric, and its length in bytes.
    let at = |i: usize| -> (bool, usize) {
        let c = b[i];
        if c < 0x80 {
            (ASCII_ALNUM[c as usize], 1)
        } else {
            match s.get(i..).and_then(|t| t.chars().next()) {
                Some(ch) => (ch.is_alphanumeric(), ch.len_utf8()),
                None => (false, 1),
            }
        }
    };
    let mut i = 0;
    while i < n {
        let (yes, w) = at(i);
        if !yes {
            i += w;
            continue;
        }
        let start = i;
        i += w;
        while i < n {
            let c = b[i];
            if c < 0x80 {
                if !ASCII_ALNUM[c as usize] {
                    break;
                }
                i += 1;
            } else {
                let (yes, w) = at(i);
                if !yes {
                    break;
                }
                i += w;
            }
        }
        if let Some(t) = s.get(start..i) {
            f(t);
        }
    }
}

/// A set of distinct index tokens. Every indexed token is shorter than [`MAX_TOKEN_BYTES`] (16),
/// so it is packed with its length into one `u128` (never 0: the length byte is at least 1) and
/// kept in a hash set of those integers: an insert of a token already there, by far the common
/// case, hashes and compares one integer, not a string.
#[derive(Default)]
pub(super) struct TokenSet {
    keys: HashSet<u128, foldhash::fast::FixedState>,
}

const _: () = assert!(MAX_TOKEN_BYTES <= 16);

/// `t` and its length packed into one integer (never 0), as [`TokenSet`] keeps it; `None` for an
/// empty token or one of [`MAX_TOKEN_BYTES`] bytes or more.
pub(super) fn pack(t: &str) -> Option<u128> {
    let b = t.as_bytes();
    if b.is_empty() || b.len() >= MAX_TOKEN_BYTES {
        return None;
    }
    let mut k = [0u8; 16];
    k[..b.len()].copy_from_slice(b);
    k[15] = b.len() as u8;
    Some(u128::from_le_bytes(k))
}

/// True for the index tokens ([`indexed`]) a chunk's body blocks list in its bloom filter: those
/// without ASCII digits (numbers, durations and sizes are many per block and seldom searched).
pub(super) fn block_indexed(tok: &str) -> bool {
    !tok.bytes().any(|b| b.is_ascii_digit())
}

/// Bloom filter key of the token packed as `packed` ([`pack`]) in body block `block` of a chunk.
pub(super) fn block_key(packed: u128, block: usize) -> u64 {
    let h = mix(packed as u64 ^ 0x626c_6f63_6b74_6f6b);
    let h = mix(h ^ (packed >> 64) as u64);
    mix(h ^ (block as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

impl TokenSet {
    /// Adds `t` (shorter than [`MAX_TOKEN_BYTES`]; longer ones are ignored).
    pub fn insert(&mut self, t: &str) {
        if let Some(k) = pack(t) {
            self.keys.insert(k);
        }
    }

    /// The tokens, packed ([`pack`]), in no particular order.
    pub fn packed(&self) -> impl Iterator<Item = u128> + '_ {
        self.keys.iter().copied()
    }

    pub fn clear(&mut self) {
        self.keys.clear();
    }

    /// The tokens, sorted, joined by single spaces.
    pub fn joined(&self) -> String {
        let mut toks: Vec<[u8; 16]> = self.keys.iter().map(|k| k.to_le_bytes()).collect();
        toks.sort_unstable_by(|a, b| a[..a[15] as usize].cmp(&b[..b[15] as usize]));
        let mut out = String::with_capacity(toks.len() * 8);
        for k in &toks {
            // Every key was packed from a `&str`, so its bytes are UTF-8.
            if let Ok(t) = std::str::from_utf8(&k[..k[15] as usize]) {
                if !out.is_empty() {
                    out.push(' ');
                }
                out.push_str(t);
            }
        }
        out
    }
}

/// Calls `f` with every token of `s` the chunk index holds.
#[cfg(test)]
pub(super) fn for_each_token<'a>(s: &'a str, mut f: impl FnMut(&'a str)) {
    for_each_run(s, |t| {
        if indexed(t) {
            f(t)
        }
    });
}

/// Bytes per n-gram of long runs.
const GRAM: usize = 8;
/// Winnowing window (grams): every run of `WINDOW + GRAM - 1` bytes or more holds a selected gram
/// of every window, so a hint with such a run is sure to find its selections in the chunk's bloom.
const WINDOW: usize = 25;
/// Runs at least this long get their grams selected (32 bytes: a hex trace id).
pub(super) const LONG_RUN: usize = WINDOW + GRAM - 1;

fn mix(mut z: u64) -> u64 {
    // splitmix64's finaliser: a fixed, well-spread hash (the values are stored on disk).
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn gram_hash(g: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&g[..GRAM]);
    mix(u64::from_le_bytes(b) ^ 0x6c6f_6773_6772_616d)
}

/// Hash of a trace or span id for the chunk bloom filter.
pub(super) fn id_hash(id: &[u8]) -> u64 {
    let mut h = 0x6964_7369_6473_6964u64 ^ id.len() as u64;
    for c in id.chunks(8) {
        let mut b = [0u8; 8];
        b[..c.len()].copy_from_slice(c);
        h = mix(h ^ u64::from_le_bytes(b));
    }
    h
}

/// The winnowed gram hashes of one run (at least [`LONG_RUN`] bytes): the smallest hash of every
/// window of [`WINDOW`] consecutive grams.
pub(super) fn winnow(run: &[u8], mut f: impl FnMut(u64)) {
    let mut stack = [0u64; 96];
    let heap: Vec<u64>;
    let n = run.len() + 1 - GRAM;
    let hashes: &[u64] = if n <= stack.len() {
        for (h, g) in stack.iter_mut().zip(run.windows(GRAM)) {
            *h = gram_hash(g);
        }
        &stack[..n]
    } else {
        heap = run.windows(GRAM).map(gram_hash).collect();
        &heap
    };
    let mut last = None;
    for w in hashes.windows(WINDOW) {
        let m = w.iter().copied().min().unwrap_or(0);
        if last != Some(m) {
            f(m);
            last = Some(m);
        }
    }
}

/// Calls `f` with the gram hashes of `s`'s long runs the chunk bloom filter holds.
pub(super) fn for_each_gram(s: &str, mut f: impl FnMut(u64)) {
    // Fast reject: no run can be long when the line is short.
    if s.len() < LONG_RUN {
        return;
    }
    for_each_run(s, |t| {
        if t.len() >= LONG_RUN {
            winnow(t.as_bytes(), &mut f);
        }
    });
}

/// Gram hashes every line containing `hint` must have in its chunk's bloom filter: those of the
/// hint's long runs (a run of the hint lies inside a run of the line at least as long).
pub(super) fn required_grams(hint: &str) -> Vec<u64> {
    let mut out = Vec::new();
    for_each_gram(hint, |h| out.push(h));
    out.sort_unstable();
    out.dedup();
    out
}

/// Tokens every line containing `hint` must hold (see the module invariant); possibly none.
pub(super) fn required_tokens(hint: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut run_start: Option<usize> = None;
    // True once a non-alphanumeric character has been seen: a run after it starts on a boundary.
    let mut bounded_left = false;
    for (i, c) in hint.char_indices() {
        if c.is_alphanumeric() {
            if run_start.is_none() {
                run_start = Some(i);
            }
        } else {
            if let Some(s) = run_start.take()
                && bounded_left
            {
                let tok = &hint[s..i];
                if indexed(tok) && !out.contains(&tok) {
                    out.push(tok);
                }
            }
            bounded_left = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_interior_runs_are_required() {
        assert_eq!(required_tokens("error"), Vec::<&str>::new());
        assert_eq!(required_tokens("level=error"), Vec::<&str>::new());
        assert_eq!(required_tokens("level=error "), vec!["error"]);
        assert_eq!(required_tokens(" GET /api/v1 "), vec!["GET", "api", "v1"]);
        assert_eq!(required_tokens("a b a b"), vec!["b", "a"]);
        assert_eq!(required_tokens("[é1] x"), vec!["é1"]);
        let long = format!(" {} ", "x".repeat(MAX_TOKEN_BYTES));
        assert_eq!(required_tokens(&long), Vec::<&str>::new());
    }

    #[test]
    fn runs_match_the_analyzer_and_grams_are_found() {
        let line = "ab 12345 x-Ünï9 a_b ** 0af7651916cd43dd8448eb211c80319c! end";
        let mut a = analyzer();
        let mut want = Vec::new();
        let mut s = a.token_stream(line);
        while let Some(t) = s.next() {
            want.push(t.text.clone());
        }
        let mut got = Vec::new();
        for_each_token(line, |t| got.push(t.to_string()));
        want.retain(|t| indexed(t));
        assert_eq!(got, want);
        assert!(!got.contains(&"12345".to_string()));
        let mut grams = Vec::new();
        for_each_gram(line, |h| grams.push(h));
        assert!(!grams.is_empty());
        for hint in [
            "0af7651916cd43dd8448eb211c80319c",
            "=0af7651916cd43dd8448eb211c80319c! e",
            "** 0af7651916cd43dd8448eb211c80319c",
        ] {
            let need = required_grams(hint);
            assert!(need.iter().all(|h| grams.contains(h)), "{hint}");
        }
        assert!(!required_grams("0af7651916cd43dd8448eb211c80319c").is_empty());
        assert!(required_grams("0af7651916cd43dd8448eb211c8031").is_empty(), "too short for a window");
    }

    #[test]
    fn the_token_set_holds_each_token_once_in_order() {
        let mut set = TokenSet::default();
        let mut want = std::collections::BTreeSet::new();
        for i in 0..5000u32 {
            let t = format!("t{}", i % 1500);
            set.insert(&t);
            want.insert(t);
        }
        for t in ["ünï", "a", "Zz", "fifteen_bytes__", "sixteen_bytes___"] {
            set.insert(t);
            if t.len() < MAX_TOKEN_BYTES {
                want.insert(t.to_string());
            }
        }
        set.insert("");
        assert_eq!(set.joined(), want.into_iter().collect::<Vec<_>>().join(" "));
        set.clear();
        assert_eq!(set.joined(), "");
        set.insert("again");
        assert_eq!(set.joined(), "again");
    }

    #[test]
    fn analyzer_matches_the_rule() {
        let mut a = analyzer();
        let mut toks = Vec::new();
        let mut s = a.token_stream("x GET /api/v1 Ünï-9");
        while let Some(t) = s.next() {
            toks.push(t.text.clone());
        }
        assert_eq!(toks, vec!["x", "GET", "api", "v1", "Ünï", "9"]);
    }
}
