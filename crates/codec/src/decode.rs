//! The fast decoding path: [`Decoder`], [`decode_all`], [`decode_into`] and
//! [`decode_into_with`].
//!
//! It reads exactly the format of the crate docs, with the same state
//! updates as the encoder and the reference decoder ([`RefDecoder`]), but:
//!
//! * bits come from a 64-bit register refilled by one unaligned big-endian
//!   load ([`Bits`]), so most fields cost a shift; a unary quotient is one
//!   `leading_ones`;
//! * the coding state is plain fields (no boxed int state) that the decode
//!   loop keeps in locals, except the per-`k` timestamp costs and the
//!   predictor scores, which sit in 16-bit lanes of one word each and are
//!   updated and searched branch-free;
//! * the hot helpers are force-inlined, so no `&mut` to the state escapes
//!   into a call on the common paths;
//! * there is no per-read end-of-input check: bits past the end read as 0,
//!   and the position is checked against the length once per sample (the
//!   iterator) or once per chunk (`decode_into*`). Reads past the end only
//!   ever see zeros, every sample consumes a bounded number of bits and the
//!   sample count is bounded by the header check, so a bad chunk can cost
//!   time proportional to its length but never panic.
//!
//! Any failure (corrupt field, position past the end, trailing data) makes
//! the caller redo the chunk with [`RefDecoder`], which then produces the
//! exact error (and, for the iterator, the exact samples before it). On
//! input the fast path accepts it reads the same bits as the reference
//! decoder and applies the same arithmetic, so the samples are identical;
//! `tests.rs` checks both on random, structured and corrupted chunks.

use crate::chunk::{
    compute_k, from_int, int_repr, parse_header, snap_interval, unzigzag, zigzag, RefDecoder,
    REP_ONE, RICE_QMAX, RICE_WINDOW,
};
use crate::error::Result;

/// Failure of the fast path; the reference decoder reports the details.
#[derive(Debug)]
struct Bad;

type Fast<T> = std::result::Result<T, Bad>;

// ---------------------------------------------------------------------------
// Bit reader.

/// Refill granularity: after [`Bits::refill`] at least this many bits are
/// buffered.
const REFILL_BITS: u32 = 56;

/// MSB-first bit reader holding the next unread bits in a register.
#[derive(Debug, Clone)]
struct Bits<'a> {
    data: &'a [u8],
    /// Next byte of `data` whose bits are not yet all counted in `avail`.
    next: usize,
    /// Unread bits, MSB-first. The top `avail` are the stream's next bits;
    /// below them are further stream bits or zeros (never anything else), so
    /// OR-ing a fresh load over them is harmless. Past the end of `data`,
    /// the stream reads as zeros.
    buf: u64,
    /// Valid bits in `buf`, always < 64.
    avail: u32,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Self {
        let mut b = Self {
            data,
            next: 0,
            buf: 0,
            avail: 0,
        };
        b.refill();
        b
    }

    /// Buffers at least [`REFILL_BITS`] bits (56..=63).
    #[inline(always)]
    fn refill(&mut self) {
        let word = match self.data.get(self.next..self.next + 8) {
            Some(s) => u64::from_be_bytes(s.try_into().expect("8 bytes")),
            None => self.tail_word(),
        };
        // avail < 64, so the shift is in range.
        self.buf |= word >> self.avail;
        let bytes = (63 - self.avail) >> 3;
        self.next += bytes as usize;
        self.avail += bytes * 8;
    }

    /// The 8 bytes from `next`, zero-padded past the end of the data.
    #[cold]
    #[inline(never)]
    fn tail_word(&self) -> u64 {
        let mut w = [0u8; 8];
        let tail = self.data.get(self.next..).unwrap_or(&[]);
        let n = tail.len().min(8);
        w[..n].copy_from_slice(&tail[..n]);
        u64::from_be_bytes(w)
    }

    /// Makes at least `n` (<= 56) bits available.
    #[inline(always)]
    fn ensure(&mut self, n: u32) {
        debug_assert!(n <= REFILL_BITS);
        if self.avail < n {
            self.refill();
        }
    }

    /// Drops `n` available bits.
    #[inline(always)]
    fn skip(&mut self, n: u32) {
        debug_assert!(n <= self.avail);
        self.buf <<= n;
        self.avail -= n;
    }

    /// Takes `n` (0..=56) available bits.
    #[inline(always)]
    fn take(&mut self, n: u32) -> u64 {
        debug_assert!(n <= self.avail && n <= REFILL_BITS);
        // Two shifts so that n == 0 gives 0.
        let v = (self.buf >> 1) >> (63 - n);
        self.skip(n);
        v
    }

    /// Reads `n` (0..=56) bits.
    #[inline(always)]
    fn read(&mut self, n: u32) -> u64 {
        self.ensure(n);
        self.take(n)
    }

    /// Reads `n` (0..=64) bits.
    #[inline(always)]
    fn read_long(&mut self, n: u32) -> u64 {
        debug_assert!(n <= 64);
        if n <= REFILL_BITS {
            self.read(n)
        } else {
            let hi = self.read(32);
            (hi << (n - 32)) | self.read(n - 32)
        }
    }

    #[inline(always)]
    fn read_bit(&mut self) -> bool {
        self.ensure(1);
        let bit = (self.buf as i64) < 0;
        self.skip(1);
        bit
    }

    /// Bits consumed so far; beyond `data.len() * 8` once a read ran past the end.
    #[inline(always)]
    fn pos(&self) -> usize {
        self.next * 8 - self.avail as usize
    }

    /// Whether every read so far stayed within the data.
    #[inline(always)]
    fn in_bounds(&self) -> bool {
        self.pos() <= self.data.len() * 8
    }

    /// After the last sample: fewer than 8 bits left, all zero (the padding).
    #[inline]
    fn at_clean_end(&mut self) -> bool {
        let Some(rest) = (self.data.len() * 8).checked_sub(self.pos()) else {
            return false;
        };
        rest < 8 && self.read(rest as u32) == 0
    }
}

// ---------------------------------------------------------------------------
// Coding state (the same as `Rice`, `TsState` and `ValueState`, unpacked).

/// Adaptive Rice statistics; see `Rice` in lib.rs (`sum < 2^46`, `n` 1..16,
/// `k` the smallest with `n * 2^k >= sum`, so `k <= 46`).
#[derive(Debug, Clone, Copy)]
struct Rice {
    sum: u64,
    n: u64,
    k: u32,
}

/// One Rice code.
enum Sym {
    /// A quotient below `RICE_QMAX` ones.
    Plain(u64),
    /// An escaped value.
    Escaped(u64),
    Switch,
}

impl Rice {
    fn new() -> Self {
        Self {
            sum: 4,
            n: 1,
            k: compute_k(4, 1),
        }
    }

    #[inline(always)]
    fn update(&mut self, z: u64) {
        let mut sum = self.sum + z.min(1 << 40);
        let mut n = self.n + 1;
        if n >= RICE_WINDOW {
            sum = (sum >> 1).max(1);
            n -= RICE_WINDOW / 2;
        }
        self.sum = sum;
        self.n = n;
        self.k = rice_k(sum, n);
    }

    fn set_sum(&mut self, sum: u64) {
        debug_assert!(sum < 1 << 46);
        self.sum = sum;
        self.k = compute_k(sum, self.n);
    }
}

/// `compute_k` for `n >= 1`, `sum >= 1` (as `update` keeps them): the
/// smallest `k` with `n << k >= sum`, with no zero tests.
#[inline(always)]
fn rice_k(sum: u64, n: u64) -> u32 {
    debug_assert!(n >= 1 && sum >= 1);
    // `x | 1` has the same log as `x >= 1` and lets the compiler drop the zero test.
    let k0 = (sum | 1).ilog2().saturating_sub((n | 1).ilog2());
    k0 + u32::from((n << k0) < sum)
}

/// Reads one Rice code with parameter `k` (<= 46); the statistics are the
/// caller's to update.
#[inline(always)]
fn read_rice(b: &mut Bits<'_>, k: u32) -> Sym {
    debug_assert!(k <= 46);
    b.ensure(RICE_QMAX + 1);
    let q = b.buf.leading_ones();
    if q < RICE_QMAX {
        b.skip(q + 1);
        Sym::Plain((u64::from(q) << k) | b.read(k))
    } else {
        read_rice_escape(b)
    }
}

/// The rest of a Rice code after `RICE_QMAX` ones (at least 11 bits available).
#[inline(never)]
fn read_rice_escape(b: &mut Bits<'_>) -> Sym {
    b.skip(RICE_QMAX);
    if b.read_bit() {
        Sym::Switch
    } else {
        let width = b.read(6) as u32 + 1;
        Sym::Escaped(b.read_long(width))
    }
}

/// Timestamp state; see `TsState` in lib.rs.
#[derive(Debug, Clone)]
struct Ts {
    prev_t: i64,
    center: i64,
    interval: i64,
    /// Sub-millisecond part of the center in 1/16 ms (0..16).
    frac: i64,
    rice: Rice,
    /// `TsState::costs`, one 16-bit lane each (`costs[k]` in bits
    /// `16k..16k+16`; each at most 1103, so lane arithmetic never carries).
    costs: u64,
}

/// One in each 16-bit lane.
const LANES: u64 = 0x0001_0001_0001_0001;

impl Ts {
    fn new(first: i64) -> Self {
        Self {
            prev_t: first,
            center: first,
            interval: 0,
            frac: 0,
            rice: Rice::new(),
            costs: 0,
        }
    }

    #[inline(always)]
    fn k(&self) -> u32 {
        let k = self.rice.k;
        if k >= 4 {
            return k;
        }
        // The first cheapest, branch-free (the costs are close, so a branch
        // would mispredict): the minimum of `cost << 2 | k` over the lanes.
        let keys = self.costs << 2 | 0x0003_0002_0001_0000;
        let lane = |i: u32| (keys >> (16 * i)) as u16;
        let key = lane(0).min(lane(1)).min(lane(2).min(lane(3)));
        u32::from(key & 3)
    }

    /// `costs[k] = costs[k] - costs[k] / 16 + min(z >> k, 64) + 1 + k`, in all lanes at once.
    #[inline(always)]
    fn learn(&mut self, z: u64) {
        let q = if z < 64 {
            // Lane k of the product is z << (3 - k) (< 2^9), so after the
            // shift its low 13 bits are z >> k; the mask drops what came
            // down from the lane above.
            ((z * 0x0001_0002_0004_0008) >> 3) & (0x1fff * LANES)
        } else {
            (0..4).fold(0, |acc, k| acc | (z >> k).min(64) << (16 * k))
        };
        let c = self.costs;
        self.costs = c - ((c >> 4) & (0x0fff * LANES)) + q + 0x0004_0003_0002_0001;
    }

    #[inline(always)]
    fn read(&mut self, b: &mut Bits<'_>) -> Fast<i64> {
        let (z, escaped) = match read_rice(b, self.k()) {
            Sym::Plain(z) => {
                self.rice.update(z);
                self.learn(z);
                (z, false)
            }
            Sym::Escaped(z) => (z, true),
            Sym::Switch => return Err(Bad),
        };
        let pred = self
            .center
            .wrapping_add(self.interval)
            .wrapping_add(i64::from(self.frac >= 8));
        let t = pred.wrapping_add(unzigzag(z));
        if t <= self.prev_t {
            return Err(Bad);
        }
        if escaped {
            self.interval = snap_interval(t.wrapping_sub(self.prev_t));
            self.center = t;
            self.frac = 0;
        } else {
            let base = self.center.wrapping_add(self.interval);
            let o16 = t.wrapping_sub(base).wrapping_mul(16);
            let x = self.frac.wrapping_add(o16.wrapping_sub(self.frac) >> 3);
            self.center = base.wrapping_add(x >> 4);
            self.frac = x & 15;
        }
        self.prev_t = t;
        Ok(t)
    }
}

/// `ValueState::scale` in float mode.
const FLOAT: u32 = u32::MAX;

/// Value state; see `ValueState` and `IntState` in lib.rs. The int fields
/// are only read in int mode, which always starts with `reset_int`.
#[derive(Debug, Clone)]
struct Vals {
    prev_bits: u64,
    /// Decimal scale `k` of int mode, or `FLOAT`.
    scale: u32,
    /// Shift `s` of int mode.
    shift: u32,
    /// XOR window; `None` before the first one.
    window: Option<(u32, u32)>,
    rep: u32,
    // IntState:
    prev: i64,
    delta: i64,
    mean16: i64,
    rice: Rice,
    /// `IntState::scores`, in 16-bit lanes as `Ts::costs` (each at most 4103).
    scores: u64,
}

impl Vals {
    fn new() -> Self {
        Self {
            prev_bits: 0,
            scale: FLOAT,
            shift: 0,
            window: None,
            rep: u32::from(REP_ONE),
            prev: 0,
            delta: 0,
            mean16: 0,
            rice: Rice::new(),
            scores: 0,
        }
    }

    #[inline(always)]
    fn decode(&mut self, b: &mut Bits<'_>) -> Fast<u64> {
        if self.scale == FLOAT {
            if !b.read_bit() {
                return Ok(self.prev_bits);
            }
            let bits = if !b.read_bit() {
                self.read_xor(b)?
            } else {
                self.read_switch(b, false)?
            };
            self.prev_bits = bits;
            return Ok(bits);
        }
        let (k, s) = (self.scale, self.shift);
        // The repeat flag is there when repeats are frequent enough to pay for it.
        if self.rep * (self.rice.k + 1) > u32::from(REP_ONE) && !b.read_bit() {
            self.observe(self.prev, s, self.preds(s), true);
            return Ok(self.prev_bits);
        }
        let bits = match self.read_body(b, s) {
            Some(m) => from_int(m, k).to_bits(),
            None => self.read_switch(b, true)?,
        };
        self.prev_bits = bits;
        Ok(bits)
    }

    /// `IntState::predictions`.
    #[inline(always)]
    fn preds(&self, s: u32) -> [i64; 3] {
        let p = self.prev;
        [
            p,
            p.wrapping_add(align(self.mean16.wrapping_add(8) >> 4, s)),
            p.wrapping_add(align(self.delta, s)),
        ]
    }

    /// The prediction of the first best-scoring predictor, branch-free: the
    /// minimum of `score << 2 | i` over the lanes.
    #[inline(always)]
    fn best(&self, preds: [i64; 3]) -> i64 {
        let keys = self.scores << 2 | 0x0002_0001_0000;
        let lane = |i: u32| (keys >> (16 * i)) as u16;
        let best = lane(0).min(lane(1)).min(lane(2)) & 3;
        let p = if best == 1 { preds[1] } else { preds[0] };
        if best == 2 {
            preds[2]
        } else {
            p
        }
    }

    /// `IntState::observe` and the repeat rate, for the integer `m`.
    #[inline(always)]
    fn observe(&mut self, m: i64, s: u32, preds: [i64; 3], repeat: bool) {
        // bit_width(zigzag((m - pred) >> s)), from a nonzero word: no zero test.
        let width = |pr: i64| u64::from((zigzag(m.wrapping_sub(pr) >> s) | 1).ilog2() + 1);
        let widths = width(preds[0]) | width(preds[1]) << 16 | width(preds[2]) << 32;
        let sc = self.scores;
        self.scores = sc - ((sc >> 3) & (0x1fff * LANES)) + (widths << 3);
        let p = self.prev;
        let d = m.wrapping_sub(p);
        self.mean16 = self
            .mean16
            .wrapping_add(d.wrapping_mul(16).wrapping_sub(self.mean16) >> 3);
        self.delta = d;
        self.prev = m;
        self.rep = self.rep - self.rep / 8 + if repeat { u32::from(REP_ONE) / 8 } else { 0 };
    }

    /// An int body in shift `s`: `Some(m)`, or `None` for a switch.
    #[inline(always)]
    fn read_body(&mut self, b: &mut Bits<'_>, s: u32) -> Option<i64> {
        let z = match read_rice(b, self.rice.k) {
            Sym::Plain(z) | Sym::Escaped(z) => z,
            Sym::Switch => return None,
        };
        self.rice.update(z);
        let preds = self.preds(s);
        let m = self.best(preds).wrapping_add(unzigzag(z).wrapping_shl(s));
        self.observe(m, s, preds, m == self.prev);
        Some(m)
    }

    #[inline(always)]
    fn read_xor(&mut self, b: &mut Bits<'_>) -> Fast<u64> {
        if b.read_bit() {
            let lead = b.read(5) as u32;
            let sig = match b.read(6) as u32 {
                0 => 64,
                sig => sig,
            };
            if lead + sig > 64 {
                return Err(Bad);
            }
            self.window = Some((lead, 64 - lead - sig));
        }
        let (lead, trail) = self.window.ok_or(Bad)?;
        let x = b.read_long(64 - lead - trail) << trail;
        Ok(self.prev_bits ^ x)
    }

    /// A switch, after `11` in float mode or a Rice switch in int mode.
    #[inline(never)]
    fn read_switch(&mut self, b: &mut Bits<'_>, in_int: bool) -> Fast<u64> {
        if in_int && !b.read_bit() {
            self.scale = FLOAT;
            return self.read_xor(b);
        }
        let k = b.read(3) as u32;
        let s = b.read(6) as u32;
        if self.scale == k {
            // Same scale: a new shift; the Rice sum is rescaled.
            let old = self.shift;
            let sum = self.rice.sum;
            if s > old {
                self.rice.set_sum((sum >> (s - old)).max(1));
            } else {
                let up = (u128::from(sum) << (old - s).min(64)).min(1 << 44);
                self.rice.set_sum(up as u64);
            }
            self.shift = s;
            let m = self.read_body(b, s).ok_or(Bad)?;
            return Ok(from_int(m, k).to_bits());
        }
        if s != 0 {
            return Err(Bad);
        }
        let base = int_repr(f64::from_bits(self.prev_bits), k).unwrap_or(0);
        let m = base.wrapping_add(unzigzag(read_universal(b)?));
        self.prev = m;
        self.delta = 0;
        self.mean16 = 0;
        self.rice = Rice::new();
        self.scores = 0;
        self.scale = k;
        self.shift = 0;
        Ok(from_int(m, k).to_bits())
    }
}

/// Rounds `d` down to a multiple of `2^s` (`s` < 64).
#[inline(always)]
fn align(d: i64, s: u32) -> i64 {
    d & (-1i64).wrapping_shl(s)
}

fn read_universal(b: &mut Bits<'_>) -> Fast<u64> {
    match b.read(7) as u32 {
        0 => Ok(0),
        w @ 1..=64 => Ok((1u64 << (w - 1)) | b.read_long(w - 1)),
        _ => Err(Bad),
    }
}

// ---------------------------------------------------------------------------
// Whole chunks.

/// Decodes the bitstream of `count` (>= 1) samples into `out` through `f`.
#[inline(always)]
fn decode_body<T>(
    body: &[u8],
    count: usize,
    first_t: i64,
    out: &mut Vec<T>,
    f: &mut impl FnMut(i64, f64) -> T,
) -> Fast<()> {
    let mut b = Bits::new(body);
    let mut ts = Ts::new(first_t);
    let mut vals = Vals::new();
    let mut t = first_t;
    for i in 0..count {
        // One loop body for all samples (smaller code than peeling the first).
        if i > 0 {
            t = ts.read(&mut b)?;
        }
        let v = vals.decode(&mut b)?;
        out.push(f(t, f64::from_bits(v)));
    }
    if b.in_bounds() && b.at_clean_end() {
        Ok(())
    } else {
        Err(Bad)
    }
}

/// Decodes a whole chunk.
pub fn decode_all(chunk: &[u8]) -> Result<Vec<(i64, f64)>> {
    let mut out = Vec::new();
    decode_into(chunk, &mut out)?;
    Ok(out)
}

/// Decodes a whole chunk, appending its samples to `out`. On error `out`
/// is left as it was.
pub fn decode_into(chunk: &[u8], out: &mut Vec<(i64, f64)>) -> Result<()> {
    decode_into_with(chunk, out, |t, v| (t, v))
}

/// Decodes a whole chunk, appending `f(t, v)` for each sample to `out`
/// (e.g. `|t, v| Sample { t, v }`). On error `out` is left as it was (`f`
/// may have been called for some samples).
pub fn decode_into_with<T>(
    chunk: &[u8],
    out: &mut Vec<T>,
    mut f: impl FnMut(i64, f64) -> T,
) -> Result<()> {
    let (count, first_t, body) = parse_header(chunk)?;
    if count == 0 {
        return Ok(());
    }
    let start = out.len();
    out.reserve(count);
    if decode_body(body, count, first_t, out, &mut f).is_ok() {
        return Ok(());
    }
    out.truncate(start);
    decode_slow(chunk, out, f)
}

/// The reference decoder's result for a chunk the fast path failed on.
#[cold]
#[inline(never)]
fn decode_slow<T>(chunk: &[u8], out: &mut Vec<T>, mut f: impl FnMut(i64, f64) -> T) -> Result<()> {
    let start = out.len();
    for s in RefDecoder::new(chunk)? {
        match s {
            Ok((t, v)) => out.push(f(t, v)),
            Err(e) => {
                out.truncate(start);
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Iterates the samples of a chunk. Corrupt or truncated input yields one
/// `Err` (then the iterator ends), never a panic. Whole chunks decode
/// faster with [`decode_into`] / [`decode_into_with`].
#[derive(Debug, Clone)]
pub struct Decoder<'a> {
    chunk: &'a [u8],
    bits: Bits<'a>,
    count: usize,
    index: usize,
    ts: Ts,
    vals: Vals,
    /// After a failure of the fast path: the reference decoder, past the
    /// samples already returned.
    slow: Option<Box<RefDecoder<'a>>>,
}

impl<'a> Decoder<'a> {
    /// Parses the chunk header.
    pub fn new(chunk: &'a [u8]) -> Result<Self> {
        let (count, first_t, body) = parse_header(chunk)?;
        Ok(Self {
            chunk,
            bits: Bits::new(body),
            count,
            index: 0,
            ts: Ts::new(first_t),
            vals: Vals::new(),
            slow: None,
        })
    }

    /// Number of samples in the chunk, from its header.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    #[inline(always)]
    fn next_fast(&mut self) -> Fast<(i64, f64)> {
        let t = if self.index > 0 {
            self.ts.read(&mut self.bits)?
        } else {
            self.ts.prev_t
        };
        let v = self.vals.decode(&mut self.bits)?;
        if !self.bits.in_bounds() || (self.index + 1 == self.count && !self.bits.at_clean_end()) {
            return Err(Bad);
        }
        self.index += 1;
        Ok((t, f64::from_bits(v)))
    }

    /// Switches to the reference decoder, positioned after the samples
    /// returned so far, and returns its next item.
    #[cold]
    #[inline(never)]
    fn next_slow(&mut self) -> Option<Result<(i64, f64)>> {
        let slow = match &mut self.slow {
            Some(slow) => slow,
            None => {
                let mut slow = match RefDecoder::new(self.chunk) {
                    Ok(d) => d,
                    Err(e) => return Some(Err(e)),
                };
                // The fast path returned exactly these samples.
                for _ in 0..self.index {
                    slow.next();
                }
                self.slow.insert(Box::new(slow))
            }
        };
        slow.next()
    }
}

impl Iterator for Decoder<'_> {
    type Item = Result<(i64, f64)>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.slow.is_some() {
            return self.next_slow();
        }
        if self.index >= self.count {
            return None;
        }
        match self.next_fast() {
            Ok(s) => Some(Ok(s)),
            Err(Bad) => self.next_slow(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match &self.slow {
            Some(slow) if slow.failed => (0, Some(0)),
            Some(slow) => (0, Some(slow.count - slow.index)),
            None => (0, Some(self.count - self.index)),
        }
    }
}

#[cfg(test)]
impl Decoder<'_> {
    /// Whether the reference decoder has taken over.
    pub(crate) fn fell_back(&self) -> bool {
        self.slow.is_some()
    }
}

/// The fast path alone: `None` where `decode_into` would fall back.
#[cfg(test)]
pub(crate) fn decode_fast_only(chunk: &[u8]) -> Option<Vec<(i64, f64)>> {
    let (count, first_t, body) = parse_header(chunk).ok()?;
    let mut out = Vec::new();
    if count > 0 {
        decode_body(body, count, first_t, &mut out, &mut |t, v| (t, v)).ok()?;
    }
    Some(out)
}
