//! The float chunk codec: Gorilla compression (Pelkonen et al., VLDB 2015) of `(timestamp, value)`
//! pairs, as Prometheus' XOR chunks do it — delta-of-delta timestamps and XOR-ed float bits.
//!
//! Why our own: the crates that implement Gorilla either fix the timestamp unit to seconds with
//! 14-bit first deltas (`tsz`), are unmaintained, or do not expose the encoder state we need to
//! append to a live chunk and to freeze it without copying. The codec is ~200 lines and its layout
//! is specified in `storage/docs/format/metrics-chunks.md`.
//!
//! Invariants:
//! - Timestamps within a chunk strictly increase (the head keeps out-of-order samples apart).
//! - Values round-trip bit for bit: NaN payloads, the staleness marker `0x7ff0000000000002`,
//!   `-0.0` and the infinities come back as the same 64 bits.
//! - Decoding never panics: a truncated or damaged chunk yields [`ChunkError`].

use std::fmt;

/// Samples per chunk before the head starts a new one (Prometheus cuts at 120 as well: beyond it
/// the compression gain is small and a query decodes more than it needs).
pub const SAMPLES_PER_CHUNK: u16 = 120;

/// A chunk could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkError(pub &'static str);

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// Appends bits, most significant first, to a byte vector.
#[derive(Clone, Debug, Default)]
pub struct BitWriter {
    bytes: Vec<u8>,
    /// Bits used in the last byte (0 = the last byte is full or there is none).
    used: u8,
}

impl BitWriter {
    /// Writes the low `n` bits of `v` (n <= 64), most significant first.
    pub fn write(&mut self, v: u64, mut n: u8) {
        while n > 0 {
            if self.used == 0 {
                self.bytes.push(0);
            }
            let free = 8 - self.used;
            let take = free.min(n);
            let shift = n - take;
            let bits = ((v >> shift) & ((1u64 << take) - 1)) as u8;
            let last = self.bytes.len() - 1;
            self.bytes[last] |= bits << (free - take);
            self.used = (self.used + take) % 8;
            n -= take;
        }
    }

    /// Writes one bit.
    pub fn bit(&mut self, b: bool) {
        self.write(u64::from(b), 1);
    }

    /// The bytes written; the last one is zero-padded.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Releases spare capacity (a finished chunk).
    pub fn into_boxed(self) -> Box<[u8]> {
        self.bytes.into_boxed_slice()
    }
}

/// Reads bits written by [`BitWriter`].
pub struct BitReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

const TRUNCATED: ChunkError = ChunkError("chunk ends early");

impl<'a> BitReader<'a> {
    /// Reads from `bytes`, starting at the first bit.
    pub fn new(bytes: &'a [u8]) -> Self {
        BitReader { bytes, pos: 0 }
    }

    /// Reads `n` bits (n <= 64).
    pub fn read(&mut self, mut n: u8) -> Result<u64, ChunkError> {
        if self.pos + n as usize > self.bytes.len() * 8 {
            return Err(TRUNCATED);
        }
        let mut v = 0u64;
        while n > 0 {
            let byte = self.bytes[self.pos / 8];
            let off = (self.pos % 8) as u8;
            let avail = 8 - off;
            let take = avail.min(n);
            let bits = (byte >> (avail - take)) & (((1u16 << take) - 1) as u8);
            v = (v << take) | u64::from(bits);
            self.pos += take as usize;
            n -= take;
        }
        Ok(v)
    }

    /// Reads one bit.
    pub fn bit(&mut self) -> Result<bool, ChunkError> {
        Ok(self.read(1)? == 1)
    }
}

/// Delta-of-delta buckets: (prefix, prefix bits, value bits). A dod that fits none of them is
/// written as the prefix `1111` plus 64 raw bits.
const DOD_BUCKETS: [(u64, u8, u8); 3] = [(0b10, 2, 14), (0b110, 3, 17), (0b1110, 4, 20)];

fn fits(v: i64, bits: u8) -> bool {
    let lim = 1i64 << (bits - 1);
    -lim <= v && v < lim
}

/// The appender of one chunk: encodes samples as they arrive.
#[derive(Clone, Debug, Default)]
pub struct XorAppender {
    w: BitWriter,
    count: u16,
    t: i64,
    delta: i64,
    v: u64,
    leading: u8,
    trailing: u8,
    min_t: i64,
}

impl XorAppender {
    /// Samples held.
    pub fn count(&self) -> u16 {
        self.count
    }

    /// Timestamp of the first sample (meaningless when empty).
    pub fn min_t(&self) -> i64 {
        self.min_t
    }

    /// Timestamp of the last sample (meaningless when empty).
    pub fn max_t(&self) -> i64 {
        self.t
    }

    /// Encoded bytes so far.
    pub fn bytes(&self) -> &[u8] {
        self.w.bytes()
    }

    /// Appends a sample. The caller guarantees `t` is greater than [`XorAppender::max_t`] when the
    /// chunk is not empty.
    pub fn append(&mut self, t: i64, value: f64) {
        let bits = value.to_bits();
        match self.count {
            0 => {
                self.w.write(t as u64, 64);
                self.w.write(bits, 64);
                self.min_t = t;
                self.leading = 0xff;
            }
            _ => {
                let delta = t.wrapping_sub(self.t);
                let dod = delta.wrapping_sub(self.delta);
                self.write_dod(dod);
                self.delta = delta;
                self.write_xor(bits);
            }
        }
        self.t = t;
        self.v = bits;
        self.count += 1;
    }

    fn write_dod(&mut self, dod: i64) {
        if dod == 0 {
            self.w.bit(false);
            return;
        }
        for (prefix, pbits, vbits) in DOD_BUCKETS {
            if fits(dod, vbits) {
                self.w.write(prefix, pbits);
                self.w.write(dod as u64, vbits);
                return;
            }
        }
        self.w.write(0b1111, 4);
        self.w.write(dod as u64, 64);
    }

    fn write_xor(&mut self, bits: u64) {
        let x = bits ^ self.v;
        if x == 0 {
            self.w.bit(false);
            return;
        }
        self.w.bit(true);
        let leading = (x.leading_zeros() as u8).min(31);
        let trailing = x.trailing_zeros() as u8;
        if self.leading != 0xff && leading >= self.leading && trailing >= self.trailing {
            self.w.bit(false);
            let sig = 64 - self.leading - self.trailing;
            self.w.write(x >> self.trailing, sig);
        } else {
            self.leading = leading;
            self.trailing = trailing;
            self.w.bit(true);
            self.w.write(u64::from(leading), 5);
            let sig = 64 - leading - trailing;
            // 64 significant bits do not fit 6 bits; 0 stands for 64 (0 never occurs: x != 0).
            self.w.write(u64::from(sig % 64), 6);
            self.w.write(x >> trailing, sig);
        }
    }

    /// The finished bytes, shrunk to fit.
    pub fn finish(self) -> Box<[u8]> {
        self.w.into_boxed()
    }
}

/// Decodes the `count` samples of a chunk.
pub struct XorIter<'a> {
    r: BitReader<'a>,
    left: u16,
    first: bool,
    t: i64,
    delta: i64,
    v: u64,
    leading: u8,
    trailing: u8,
    window: bool,
}

impl<'a> XorIter<'a> {
    /// Iterates the `count` samples encoded in `bytes`.
    pub fn new(bytes: &'a [u8], count: u16) -> Self {
        XorIter {
            r: BitReader::new(bytes),
            left: count,
            first: true,
            t: 0,
            delta: 0,
            v: 0,
            leading: 0,
            trailing: 0,
            window: false,
        }
    }

    fn next_sample(&mut self) -> Result<(i64, f64), ChunkError> {
        if self.first {
            self.first = false;
            self.t = self.r.read(64)? as i64;
            self.v = self.r.read(64)?;
            return Ok((self.t, f64::from_bits(self.v)));
        }
        let dod = if !self.r.bit()? {
            0
        } else if !self.r.bit()? {
            sign_extend(self.r.read(14)?, 14)
        } else if !self.r.bit()? {
            sign_extend(self.r.read(17)?, 17)
        } else if !self.r.bit()? {
            sign_extend(self.r.read(20)?, 20)
        } else {
            self.r.read(64)? as i64
        };
        self.delta = self.delta.wrapping_add(dod);
        self.t = self.t.wrapping_add(self.delta);
        if self.r.bit()? {
            if self.r.bit()? {
                self.leading = self.r.read(5)? as u8;
                let sig = match self.r.read(6)? as u8 {
                    0 => 64,
                    n => n,
                };
                if self.leading + sig > 64 {
                    return Err(ChunkError("bad XOR window"));
                }
                self.trailing = 64 - self.leading - sig;
                self.window = true;
            } else if !self.window {
                return Err(ChunkError("XOR window reused before being set"));
            }
            let sig = 64 - self.leading - self.trailing;
            let x = self.r.read(sig)?;
            self.v ^= x << self.trailing;
        }
        Ok((self.t, f64::from_bits(self.v)))
    }
}

fn sign_extend(v: u64, bits: u8) -> i64 {
    let shift = 64 - bits;
    ((v << shift) as i64) >> shift
}

impl Iterator for XorIter<'_> {
    type Item = Result<(i64, f64), ChunkError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let r = self.next_sample();
        if r.is_err() {
            self.left = 0;
        }
        Some(r)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::STALE_NAN_BITS;

    /// xorshift64*: deterministic pseudo-random data without a dependency.
    pub(crate) struct Rng(pub u64);
    impl Rng {
        pub fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
    }

    fn round_trip(samples: &[(i64, u64)]) {
        let mut a = XorAppender::default();
        for &(t, v) in samples {
            a.append(t, f64::from_bits(v));
        }
        assert_eq!(a.count() as usize, samples.len());
        let bytes = a.finish();
        let got: Vec<(i64, u64)> =
            XorIter::new(&bytes, samples.len() as u16).map(|r| r.map(|(t, v)| (t, v.to_bits())).unwrap()).collect();
        assert_eq!(got, samples);
    }

    #[test]
    fn bit_writer_round_trip() {
        let mut w = BitWriter::default();
        let items: Vec<(u64, u8)> = vec![(1, 1), (0x3f, 6), (u64::MAX, 64), (0, 3), (0x1234, 13), (5, 64)];
        for &(v, n) in &items {
            w.write(v, n);
        }
        let mut r = BitReader::new(w.bytes());
        for &(v, n) in &items {
            let mask = if n == 64 { u64::MAX } else { (1 << n) - 1 };
            assert_eq!(r.read(n).unwrap(), v & mask);
        }
        assert!(r.read(8).is_err());
    }

    #[test]
    fn special_values_round_trip_bit_exactly() {
        let vals = [
            STALE_NAN_BITS,
            f64::NAN.to_bits(),
            f64::INFINITY.to_bits(),
            f64::NEG_INFINITY.to_bits(),
            (-0.0f64).to_bits(),
            0.0f64.to_bits(),
            1.5f64.to_bits(),
            STALE_NAN_BITS,
            f64::MIN_POSITIVE.to_bits(),
            f64::MAX.to_bits(),
            1,
            u64::MAX,
            STALE_NAN_BITS,
        ];
        let samples: Vec<(i64, u64)> = vals.iter().enumerate().map(|(i, &v)| (i as i64 * 15_000, v)).collect();
        round_trip(&samples);
    }

    #[test]
    fn big_and_negative_deltas() {
        round_trip(&[(i64::MIN, 0), (i64::MIN + 1, 1), (-5, 2), (0, 3), (1, 4), (i64::MAX - 1, 5), (i64::MAX, 6)]);
        round_trip(&[(0, 0), (1 << 13, 0), (1 << 14, 0), (1 << 30, 0), (1 << 31, 7), (1 << 40, 7)]);
        round_trip(&[(1_700_000_000_000, 42f64.to_bits())]);
        round_trip(&[]);
    }

    #[test]
    fn random_data_round_trips() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for case in 0..300 {
            let n = (rng.next() % 121) as usize;
            let mut t = rng.next() as i64 >> (rng.next() % 64);
            let mut v = (rng.next() % 1000) as f64;
            let mut samples = Vec::new();
            for _ in 0..n {
                let step = match rng.next() % 4 {
                    0 => 15_000,
                    1 => 15_000 + (rng.next() % 50) as i64 - 25,
                    2 => 1 + (rng.next() % (1 << 22)) as i64,
                    _ => 1 + (rng.next() >> (rng.next() % 64).max(2)) as i64,
                };
                t = match t.checked_add(step) {
                    Some(t) => t,
                    None => break,
                };
                v = match (case + rng.next() as usize) % 5 {
                    0 => v,
                    1 => v + 1.0,
                    2 => f64::from_bits(rng.next()),
                    3 => (rng.next() % 100) as f64 / 7.0,
                    _ => f64::from_bits(STALE_NAN_BITS),
                };
                samples.push((t, v.to_bits()));
            }
            round_trip(&samples);
        }
    }

    #[test]
    fn regular_scrapes_compress_well() {
        let mut a = XorAppender::default();
        for i in 0..120 {
            a.append(1_700_000_000_000 + i * 15_000, (i * 3) as f64);
        }
        // 16 bytes of header plus about 2 bytes per sample for a steadily growing counter.
        assert!(a.bytes().len() < 16 + 120 * 2, "{} bytes", a.bytes().len());
    }

    #[test]
    fn damaged_chunks_error_without_panicking() {
        let mut a = XorAppender::default();
        for i in 0..50 {
            a.append(i * 1000, (i as f64).sqrt());
        }
        let bytes = a.finish();
        for cut in 0..bytes.len() {
            let r: Result<Vec<_>, _> = XorIter::new(&bytes[..cut], 50).collect();
            assert!(r.is_err(), "cut at {cut}");
        }
        let mut rng = Rng(7);
        for _ in 0..2000 {
            let mut b = bytes.to_vec();
            let i = (rng.next() as usize) % b.len();
            b[i] ^= 1 << (rng.next() % 8);
            let _ = XorIter::new(&b, 50).collect::<Vec<_>>();
            let junk: Vec<u8> = (0..(rng.next() % 40)).map(|_| rng.next() as u8).collect();
            let _ = XorIter::new(&junk, 120).collect::<Vec<_>>();
        }
    }
}
