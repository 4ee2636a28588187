//! The block float codec (chunk kind 4, `docs/format/metrics-chunks.md`): timestamps and values as
//! integer sequences, delta (or delta-of-delta) coded and bit-packed with a frame of reference.
//!
//! Values are written as decimal mantissas `m` with one exponent `e` per chunk (`v = m / 10^e`)
//! when every value of the chunk round-trips exactly that way, which is what scraped counters,
//! gauges with a few decimals and bucket counts are; other chunks stay Gorilla/XOR (kind 1).
//! Regular scrapes cost no bits for their timestamps, constants none for their values, and an
//! integer counter about as many bits as its increments need.
//!
//! Invariant: decoding never panics and never reads past the chunk; every length is checked.

/// Most samples in one chunk.
pub const MAX_SAMPLES: usize = 65_535;

/// Largest decimal exponent tried.
const MAX_EXP: u8 = 12;

/// A cursor over chunk bytes.
struct Cur<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Cur<'_> {
    fn u8(&mut self) -> Result<u8, String> {
        let v = *self.b.get(self.pos).ok_or("truncated chunk")?;
        self.pos += 1;
        Ok(v)
    }

    fn varint(&mut self) -> Result<u64, String> {
        crate::varint::get(self.b, &mut self.pos).ok_or_else(|| "truncated chunk or overlong varint".to_string())
    }

    /// A packed run of `k` values (see `pack`).
    fn unpack_run(&mut self, k: usize, out: &mut Vec<i64>) -> Result<(), String> {
        let base = crate::varint::unzigzag(self.varint()?);
        let g = self.varint()?;
        let w = self.u8()?;
        self.unpack(k, w, base, g, out)
    }

    /// `k` values of `w` bits each, least significant bit first, times `g`, plus `base`.
    fn unpack(&mut self, k: usize, w: u8, base: i64, g: u64, out: &mut Vec<i64>) -> Result<(), String> {
        if w > 64 {
            return Err(format!("bit width {w}"));
        }
        let bits = (k as u128) * u128::from(w);
        let len = usize::try_from(bits.div_ceil(8)).map_err(|_| "chunk too long")?;
        let end = self.pos.checked_add(len).filter(|&e| e <= self.b.len()).ok_or("truncated bit-packed values")?;
        let bytes = &self.b[self.pos..end];
        self.pos = end;
        if w == 0 {
            out.extend(std::iter::repeat_n(base, k));
            return Ok(());
        }
        out.reserve(k);
        if w <= 56 {
            // The common case: a value and its bit offset within a byte fit in one 64-bit word,
            // read whole while 8 bytes are left and from a zero-padded copy for the last ones
            // (the length check above means every value's bits are inside `bytes`).
            let mask: u64 = (1u64 << w) - 1;
            let w = usize::from(w);
            let word = |at: usize| -> u64 {
                match bytes.get(at..at + 8) {
                    Some(b) => u64::from_le_bytes(b.try_into().unwrap_or([0; 8])),
                    None => {
                        let mut b = [0u8; 8];
                        let tail = bytes.get(at..).unwrap_or(&[]);
                        b[..tail.len().min(8)].copy_from_slice(&tail[..tail.len().min(8)]);
                        u64::from_le_bytes(b)
                    }
                }
            };
            let mut bit = 0usize;
            for _ in 0..k {
                let v = (word(bit >> 3) >> (bit & 7)) & mask;
                out.push(base.wrapping_add(v.wrapping_mul(g) as i64));
                bit += w;
            }
            return Ok(());
        }
        let mut acc: u128 = 0;
        let mut have: u32 = 0;
        let mut it = bytes.iter();
        let mask: u128 = if w == 64 { u128::from(u64::MAX) } else { (1u128 << w) - 1 };
        for _ in 0..k {
            while have < u32::from(w) {
                acc |= u128::from(*it.next().ok_or("truncated bit-packed values")?) << have;
                have += 8;
            }
            out.push(base.wrapping_add(((acc & mask) as u64).wrapping_mul(g) as i64));
            acc >>= w;
            have -= u32::from(w);
        }
        Ok(())
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Frame of reference: the minimum, the common divisor of the offsets from it, the bit width,
/// then each offset divided by the divisor.
fn pack(ys: &[i64], out: &mut Vec<u8>) {
    let min = ys.iter().copied().min().unwrap_or(0);
    let g = ys.iter().fold(0u64, |g, &y| gcd(g, y.wrapping_sub(min) as u64));
    let max_off = ys.iter().map(|&y| y.wrapping_sub(min) as u64).max().unwrap_or(0);
    let w = max_off.checked_div(g).map_or(0, |q| (64 - q.leading_zeros()) as u8);
    crate::varint::put(out, crate::varint::zigzag(min));
    crate::varint::put(out, g);
    out.push(w);
    if w == 0 {
        return;
    }
    let mut acc: u128 = 0;
    let mut have: u32 = 0;
    for &y in ys {
        acc |= u128::from(y.wrapping_sub(min) as u64 / g) << have;
        have += u32::from(w);
        while have >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            have -= 8;
        }
    }
    if have > 0 {
        out.push(acc as u8);
    }
}

fn packed_bits(ys: &[i64]) -> u64 {
    let min = ys.iter().copied().min().unwrap_or(0);
    let g = ys.iter().fold(0u64, |g, &y| gcd(g, y.wrapping_sub(min) as u64));
    let max_off = ys.iter().map(|&y| y.wrapping_sub(min) as u64).max().unwrap_or(0);
    max_off.checked_div(g).map_or(0, |q| u64::from(64 - q.leading_zeros()) * ys.len() as u64)
}

/// An integer sequence of `n ≥ 1` values: the first, then (for `n ≥ 2`) the order byte and the
/// deltas (order 1) or the first delta and the deltas of deltas (order 2), packed.
fn put_ints(xs: &[i64], out: &mut Vec<u8>) {
    crate::varint::put(out, crate::varint::zigzag(xs[0]));
    if xs.len() < 2 {
        return;
    }
    let d: Vec<i64> = xs.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
    let dd: Vec<i64> = d.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
    if dd.is_empty() || packed_bits(&d) <= packed_bits(&dd) + 8 {
        out.push(1);
        pack(&d, out);
    } else {
        out.push(2);
        crate::varint::put(out, crate::varint::zigzag(d[0]));
        pack(&dd, out);
    }
}

fn get_ints(c: &mut Cur<'_>, n: usize, out: &mut Vec<i64>) -> Result<(), String> {
    let x0 = crate::varint::unzigzag(c.varint()?);
    out.push(x0);
    if n < 2 {
        return Ok(());
    }
    // The deltas (order 1) or the first delta and the deltas of deltas (order 2) are unpacked
    // onto the end of `out` and summed up in place.
    let start = out.len();
    match c.u8()? {
        1 => c.unpack_run(n - 1, out)?,
        2 => {
            out.push(crate::varint::unzigzag(c.varint()?));
            if n > 2 {
                c.unpack_run(n - 2, out)?;
            }
            prefix_sum(&mut out[start..]);
        }
        o => return Err(format!("unknown delta order {o}")),
    }
    prefix_sum(&mut out[start - 1..]);
    Ok(())
}

/// Replaces each value with the wrapping sum of it and every value before it.
fn prefix_sum(xs: &mut [i64]) {
    let mut acc = 0i64;
    for x in xs {
        acc = acc.wrapping_add(*x);
        *x = acc;
    }
}

const POW10: [f64; MAX_EXP as usize + 1] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12];

/// `v` as `m / 10^e` exactly (bit for bit), if it is one.
fn mantissa(v: f64, e: u8) -> Option<i64> {
    let m = (v * POW10[e as usize]).round();
    // Also refuses NaN and ±Inf.
    if m.is_nan() || m.abs() >= 9.0e15 {
        return None;
    }
    let m = m as i64;
    ((m as f64 / POW10[e as usize]).to_bits() == v.to_bits()).then_some(m)
}

/// Encodes samples (timestamps strictly increasing, at least one) as a kind-4 chunk, or `None`
/// when some value is not a short decimal (NaN, ±Inf, -0, or too many digits).
pub fn encode(ts: &[i64], vs: &[f64]) -> Option<Vec<u8>> {
    debug_assert_eq!(ts.len(), vs.len());
    if ts.is_empty() {
        return None;
    }
    let mut e = 0u8;
    for &v in vs {
        while mantissa(v, e).is_none() {
            e += 1;
            if e > MAX_EXP {
                return None;
            }
        }
    }
    let ms: Vec<i64> = vs.iter().map(|&v| mantissa(v, e)).collect::<Option<_>>()?;
    let mut out = Vec::with_capacity(16 + ts.len() / 2);
    crate::varint::put(&mut out, ts.len() as u64);
    put_ints(ts, &mut out);
    out.push(e);
    put_ints(&ms, &mut out);
    Some(out)
}

/// Decodes a kind-4 chunk into `(timestamp, value)` pairs.
#[cfg(test)]
pub fn decode(data: &[u8]) -> Result<Vec<(i64, f64)>, String> {
    let mut out = Vec::new();
    decode_each(data, |t, v| out.push((t, v)))?;
    Ok(out)
}

/// Decodes a chunk like [`decode`], handing each sample to `f` in order instead of collecting
/// them (nothing is handed over when the chunk is malformed).
pub fn decode_each(data: &[u8], mut f: impl FnMut(i64, f64)) -> Result<(), String> {
    let mut c = Cur { b: data, pos: 0 };
    let n = usize::try_from(c.varint()?).map_err(|_| "sample count too large")?;
    // Regular timestamps and constant values cost no bytes per sample, so the count is bounded
    // on its own (writers use at most `MAX_SAMPLES`).
    if n == 0 || n > MAX_SAMPLES {
        return Err(format!("sample count {n}"));
    }
    let mut ts = Vec::with_capacity(n);
    get_ints(&mut c, n, &mut ts)?;
    let e = c.u8()?;
    if e > MAX_EXP {
        return Err(format!("decimal exponent {e}"));
    }
    let mut ms = Vec::with_capacity(n);
    get_ints(&mut c, n, &mut ms)?;
    if c.pos != data.len() {
        return Err(format!("{} trailing bytes", data.len() - c.pos));
    }
    if e == 0 {
        // Integers (counters, bucket counts): `m / 1` is `m`, without a division per sample.
        for (t, m) in ts.into_iter().zip(ms) {
            f(t, m as f64);
        }
        return Ok(());
    }
    let p = POW10[e as usize];
    for (t, m) in ts.into_iter().zip(ms) {
        f(t, m as f64 / p);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(ts: &[i64], vs: &[f64]) -> usize {
        let enc = encode(ts, vs).expect("decimal");
        let dec = decode(&enc).unwrap();
        assert_eq!(dec.len(), ts.len());
        for (i, (t, v)) in dec.iter().enumerate() {
            assert_eq!(*t, ts[i]);
            assert_eq!(v.to_bits(), vs[i].to_bits(), "value {i}: {v} vs {}", vs[i]);
        }
        enc.len()
    }

    /// Every bit width packs and unpacks exactly, at every length around the 8-byte reads'
    /// edge, with and without a common divisor.
    #[test]
    fn packed_runs_round_trip_at_every_width() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for w in 0..=64u32 {
            for k in [1usize, 2, 3, 7, 8, 9, 15, 16, 17, 63, 64, 65, 130] {
                for g in [1u64, 3] {
                    let ys: Vec<i64> = (0..k)
                        .map(|_| {
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            let off = if w == 64 { x } else { x & ((1u64 << w) - 1) };
                            (-5i64).wrapping_add(off.wrapping_mul(g) as i64)
                        })
                        .collect();
                    let mut buf = Vec::new();
                    pack(&ys, &mut buf);
                    let mut c = Cur { b: &buf, pos: 0 };
                    let mut out = Vec::new();
                    c.unpack_run(k, &mut out).unwrap();
                    assert_eq!(out, ys, "w {w} k {k} g {g}");
                    assert_eq!(c.pos, buf.len());
                    // One byte short is an error, not a panic or a wrong value.
                    if buf.len() > 1 {
                        let mut c = Cur { b: &buf[..buf.len() - 1], pos: 0 };
                        let mut out = Vec::new();
                        let _ = c.unpack_run(k, &mut out);
                    }
                }
            }
        }
    }

    #[test]
    fn typical_series_are_small_and_exact() {
        let ts: Vec<i64> = (0..480).map(|i| 1_700_000_000_000 + i * 15_000).collect();
        let constant = vec![1.0; 480];
        assert!(round_trip(&ts, &constant) < 24);
        let mut c = 0u64;
        let walk: Vec<f64> = (0..480).map(|i| 180e6 + ((i * 7) % 21 - 10) as f64 * 4096.0).collect();
        assert!(round_trip(&ts, &walk) < 480 * 6 / 8 + 24, "offsets share the quantum");
        let counter: Vec<f64> = (0..480u64)
            .map(|i| {
                c += (i * 7919) % 50;
                c as f64
            })
            .collect();
        assert!(round_trip(&ts, &counter) < 480 * 6 / 8 + 24);
        let cents: Vec<f64> = (0..480).map(|i| (1000 + i * 3) as f64 / 100.0).collect();
        round_trip(&ts, &cents);
        let noisy: Vec<f64> = (0..480).map(|i| (500 + (i * 37) % 1000) as f64 / 1000.0).collect();
        round_trip(&ts, &noisy);
        let jitter: Vec<i64> = (0..480).map(|i| 1_700_000_000_000 + i * 15_000 + (i * 13) % 7).collect();
        round_trip(&jitter, &counter);
        round_trip(&[5], &[0.25]);
        round_trip(&[i64::MIN, 0, i64::MAX], &[-3.0, 1e12, 0.0]);
    }

    /// Every bit width the packer can choose (the 64-bit fast path up to 56 bits, the wide path
    /// above) and both delta orders decode exactly.
    #[test]
    fn every_bit_width_round_trips() {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for width in 0..=62u32 {
            for n in [2usize, 3, 17, 120] {
                // Timestamps: random deltas of `width` bits (order 1 or 2, as the encoder picks;
                // the codec's arithmetic wraps, so may the test's).
                let mut t = -(1i64 << 62);
                let ts: Vec<i64> = (0..n)
                    .map(|_| {
                        t = t.wrapping_add(1 + (next() >> (64 - width.max(1))) as i64);
                        t
                    })
                    .collect();
                // Values: random mantissas of up to `width` bits (at most 52) at 3 decimals.
                let vs: Vec<f64> =
                    (0..n).map(|_| (next() >> (64 - width.clamp(1, 52))) as i64 as f64 / 1000.0).collect();
                if encode(&ts, &vs).is_some() {
                    round_trip(&ts, &vs);
                }
                let regular: Vec<i64> = (0..n as i64).map(|i| i * 15_000 + (next() % 3) as i64).collect();
                round_trip(&regular, &vec![2.5; n]);
            }
        }
    }

    #[test]
    fn non_decimals_are_left_to_xor() {
        assert!(encode(&[1, 2], &[1.0, f64::NAN]).is_none());
        assert!(encode(&[1, 2], &[1.0, -0.0]).is_none());
        assert!(encode(&[1, 2], &[1.0, 0.1 + 0.2]).is_none());
        assert!(encode(&[1], &[f64::INFINITY]).is_none());
        assert!(encode(&[1], &[1e300]).is_none());
    }

    #[test]
    fn damaged_chunks_are_errors() {
        let ts: Vec<i64> = (0..100).map(|i| i * 1000 + (i % 3)).collect();
        let vs: Vec<f64> = (0..100).map(|i| (i * i) as f64 / 10.0).collect();
        let enc = encode(&ts, &vs).unwrap();
        for cut in 0..enc.len() {
            assert!(decode(&enc[..cut]).is_err());
        }
        for i in 0..enc.len() {
            for v in [0u8, 0x7f, 0x80, 0xff] {
                let mut m = enc.clone();
                m[i] = v;
                let _ = decode(&m);
            }
        }
    }
}
