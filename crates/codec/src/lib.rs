//! cairn-codec: the chunk codec for `(timestamp ms: i64, value: f64)` samples.
//!
//! Owns the byte format of a chunk and nothing else: it is pure (no I/O, no
//! clocks, no logging) and must never depend on storage, the network or any
//! other Cairn crate. Storage, the head block and the query path read and
//! write chunks only through [`Encoder`], [`Decoder`], [`encode_all`] and
//! [`decode_all`].
//!
//! Every sample round-trips bit-exactly: any `f64` bit pattern (NaN payloads
//! such as Prometheus's staleness marker `0x7ff0000000000002`, ±Inf, -0.0,
//! subnormals) and any strictly increasing `i64` timestamps, including gaps of
//! nearly 2^64 (all timestamp arithmetic wraps, and a 64-bit escape code holds
//! any delta-of-delta).
//!
//! # Chunk format, version 2
//!
//! ```text
//! byte 0      version (= 2)
//! varint      sample count n (unsigned LEB128)
//! varint      first timestamp, zigzag LEB128 (present only when n > 0)
//! bitstream   MSB-first, zero-padded to a whole byte; nothing follows it
//! ```
//!
//! The bitstream holds, for every sample `i` in order: its timestamp code
//! (absent for `i == 0`, whose timestamp is in the header), then its value
//! code.
//!
//! **Rice code** (timestamps and integers): an unsigned `z` is written as
//! `q = z >> k` in unary (`q` ones, then a zero) followed by the low `k` bits
//! of `z`, where `k` is the smallest value with `n * 2^k >= sum` over a
//! decaying window of recent codes (LOCO-I style; starts at sum 4, n 1,
//! halves at n 16). A quotient of 10 or more is escaped: ten ones, a `0`, the
//! bit width of `z` minus one (6 bits), then `z`. Ten ones then a `1` is a
//! *switch* (value codes only). Signed numbers are zigzag-mapped first.
//! *Universal code*: the bit length of `z` (7 bits), then its bits below the
//! leading one.
//!
//! **Timestamp code** — predicted at `p = center + interval`, plus one when
//! the center's 1/16 ms fraction is at least 8/16; `e = t - p` is Rice-coded
//! with the `k` among 0..=3 whose decaying cost over recent offsets is lowest
//! (while the running mean asks for `k <= 3`; else the mean's `k`). Normally
//! the center (x16) moves an eighth of the way to `t`, so it settles in the
//! middle of the scrape jitter. On an escape (first sample after the header,
//! a missed scrape, a new interval) the center re-anchors on `t` (fraction
//! 0) and `interval` becomes `t - t_prev`, snapped to a whole second when
//! within 50 ms of one; escaped offsets do not feed the statistics. Before
//! the second sample, `center = t0` and `interval = 0`.
//!
//! **Value code** — the value state is: the previous value's bits (0.0 before
//! the first sample), a mode (`Float`, or `Int` with decimal scale `k` and
//! shift `s`), the integer predictors' state, the XOR window and a decaying
//! repeat rate.
//!
//! *Float mode*: `0` same bits as the previous value; `10` + XOR code; `11` +
//! int switch.
//!
//! *Int mode* `(k, s)`: a value is the integer `m` with `m as f64 / 10^k`
//! bit-identical to it (checked by an exact round trip, so never lossy), and
//! all `m` in the mode are congruent mod `2^s` (page- or sector-quantised
//! gauges and counters do not pay for their zero low bits). When repeats are
//! frequent (rate x (Rice k + 1) > 1), the code starts with a flag: `0` =
//! same value, `1` = a body follows; otherwise a repeat is just a body. The
//! body is the Rice code of `(m - prediction) >> s`, where the prediction is
//! the previous `m`, plus the decaying mean delta, or plus the last delta
//! (delta terms rounded down to a multiple of `2^s`), whichever has had the
//! smallest residuals lately (decaying mean code widths kept by both sides,
//! so the choice costs no bits). A Rice switch instead is followed by `0` +
//! XOR code (to `Float`) or `1` + int switch.
//!
//! *Int switch*: `k` (3 bits) and `s` (6 bits). Same `k` as the current int
//! mode: only the shift changes (the Rice sum is rescaled) and a body
//! follows. Otherwise `s` must be 0, and `m - base` follows as a zigzag
//! universal code, where `base` is the previous value scaled by `10^k` when
//! exact, else 0; the predictors restart at `m`.
//!
//! *XOR code* (Gorilla): `x = bits ^ prev_bits` (never 0 here). `0` + the
//! meaningful bits, reusing the previous leading/trailing window when `x`
//! fits in it; or `1` + leading zeros (5 bits, capped at 31) + meaningful bit
//! count (6 bits, 64 written as 0) + the meaningful bits.
//!
//! The encoder picks the cheaper code per value, biased towards staying in
//! (or entering) int mode when the previous value was an integer at that
//! scale too, and widens the shift when recent deltas shared more trailing
//! zeros; so integers, counters and values with 1-7 decimals (0.37, 1234.56)
//! are encoded as small integer residuals while arbitrary floats fall back
//! to XOR.

mod bits;

use bits::{BitReader, BitWriter};

/// Version byte written at the start of every chunk.
pub const FORMAT_VERSION: u8 = 2;

/// Errors of this crate. None are retryable: a bad chunk stays bad.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// `Encoder::append` got a timestamp not after the last one.
    #[error("out-of-order sample: timestamp {t} is not after the last appended timestamp {last}")]
    OutOfOrder { last: i64, t: i64 },
    /// The chunk has no header at all.
    #[error("empty chunk: no header byte")]
    Empty,
    /// The chunk's version byte is not one this build reads.
    #[error("unsupported chunk version {0} (this build reads version {FORMAT_VERSION})")]
    UnsupportedVersion(u8),
    /// The chunk ended before its header or all its samples were read.
    #[error("truncated chunk: input ended before all samples were decoded")]
    Truncated,
    /// The chunk is structurally invalid.
    #[error("corrupt chunk: {0}")]
    Corrupt(&'static str),
}

impl CodecError {
    /// Whether retrying the same operation could succeed. Never, for a codec.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

/// Result type of this crate.
pub type Result<T, E = CodecError> = std::result::Result<T, E>;

// ---------------------------------------------------------------------------
// Shared coding tables and helpers.

/// Largest decimal scale of the integer mode (3-bit field).
const MAX_SCALE: u32 = 7;
const POW10: [f64; 8] = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6, 1e7];

#[inline]
fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
fn unzigzag(z: u64) -> i64 {
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

/// Bit length of `z`, at least 1.
#[inline]
fn bit_width(z: u64) -> u32 {
    (64 - z.leading_zeros()).max(1)
}

/// The value with scaled integer `m` at scale `k`. Decoder and encoder share it,
/// so the encoder's round-trip check guarantees bit-exact decoding.
#[inline]
fn from_int(m: i64, k: u32) -> f64 {
    if k == 0 {
        m as f64
    } else {
        m as f64 / POW10[k as usize]
    }
}

/// `Some(m)` when `from_int(m, k)` reproduces `v`'s exact bits.
#[inline]
fn int_repr(v: f64, k: u32) -> Option<i64> {
    let s = (v * POW10[k as usize]).round();
    // i64 range; NaN and infinities fail the comparison.
    if s.is_nan() || s.abs() >= 9.223_372_036_854_775e18 {
        return None;
    }
    let m = s as i64;
    (from_int(m, k).to_bits() == v.to_bits()).then_some(m)
}

/// Rounds `d` down to a multiple of `2^s` (`s` < 64).
#[inline]
fn align(d: i64, s: u32) -> i64 {
    d & (-1i64).wrapping_shl(s)
}

/// Universal code of `z`: its bit length (0..=64) in 7 bits, then the bits
/// below its leading one.
fn write_universal(w: &mut BitWriter, z: u64) {
    let width = 64 - z.leading_zeros();
    w.write(u64::from(width), 7);
    if width > 1 {
        w.write(z, width - 1);
    }
}

fn universal_cost(z: u64) -> u32 {
    7 + (64 - z.leading_zeros()).saturating_sub(1)
}

fn read_universal(r: &mut BitReader<'_>) -> Result<u64> {
    let width = r.read(7)? as u32;
    match width {
        0 => Ok(0),
        1..=64 => Ok((1u64 << (width - 1)) | r.read(width - 1)?),
        _ => Err(CodecError::Corrupt("universal code wider than 64 bits")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Float,
    /// Decimal scale `k`, and every scaled integer is congruent mod `2^s`.
    Int {
        k: u32,
        s: u32,
    },
}

/// Number of integer predictors (see [`ValueState::predictions`]).
const PREDICTORS: usize = 3;
/// Extra bits a float-to-int switch may cost over an XOR code when the
/// previous value was an integer at the same scale.
const SWITCH_MARGIN: u32 = 32;
/// Initial / maximum value of the repeat-rate estimate (probability x 256).
const REP_ONE: u32 = 256;

/// Value-coding state, identical on both sides.
#[derive(Debug, Clone)]
struct ValueState {
    prev_bits: u64,
    mode: Mode,
    /// Previous scaled integer and the delta that led to it.
    int_prev: i64,
    int_delta: i64,
    /// Decaying mean of the deltas, x16.
    mean16: i64,
    /// Decaying mean code widths (x8) of each predictor's residuals.
    scores: [u32; PREDICTORS],
    int_rice: Rice,
    /// Decaying rate of exact repeats (x256).
    rep: u32,
    /// Leading/trailing zeros of the XOR window; `lead == u32::MAX` means no window yet.
    lead: u32,
    trail: u32,
    /// Encoder only: min trailing zeros of recent nonzero deltas and their count.
    tz_min: u32,
    tz_n: u32,
}

/// What follows a Rice quotient of `RICE_QMAX` ones.
enum RiceSym {
    Value(u64),
    Switch,
}

impl ValueState {
    fn new() -> Self {
        Self {
            prev_bits: 0,
            mode: Mode::Float,
            int_prev: 0,
            int_delta: 0,
            mean16: 0,
            scores: [0; PREDICTORS],
            int_rice: Rice::new(true),
            rep: REP_ONE,
            lead: u32::MAX,
            trail: 0,
            tz_min: 64,
            tz_n: 0,
        }
    }

    /// Base integer after switching into scale `k` from another mode.
    #[inline]
    fn int_base(&self, k: u32) -> i64 {
        int_repr(f64::from_bits(self.prev_bits), k).unwrap_or(0)
    }

    #[inline]
    fn xor_cost(&self, bits: u64) -> u32 {
        let x = bits ^ self.prev_bits;
        let lead = x.leading_zeros().min(31);
        let trail = x.trailing_zeros();
        if self.lead != u32::MAX && lead >= self.lead && trail >= self.trail {
            1 + 64 - self.lead - self.trail
        } else {
            1 + 5 + 6 + 64 - lead - trail
        }
    }

    /// The predictions of the next scaled integer (all congruent to `int_prev`
    /// mod `2^s`): the previous one; plus the mean delta; plus the last delta.
    #[inline]
    fn predictions(&self, s: u32) -> [i64; PREDICTORS] {
        let p = self.int_prev;
        [
            p,
            p.wrapping_add(align(self.mean16.wrapping_add(8) >> 4, s)),
            p.wrapping_add(align(self.int_delta, s)),
        ]
    }

    /// The predictor that has coded smallest lately (both sides compute it
    /// from decoded data, so the choice costs no bits).
    #[inline]
    fn best(&self) -> usize {
        let mut b = 0;
        for i in 1..PREDICTORS {
            if self.scores[i] < self.scores[b] {
                b = i;
            }
        }
        b
    }

    /// Whether the int code starts with a repeat flag bit: when repeats are
    /// frequent enough to pay for it.
    #[inline]
    fn rep_flag(&self) -> bool {
        self.rep * (self.int_rice.k() + 1) > REP_ONE
    }

    /// Records the integer `m` just coded in mode `Int { s, .. }`.
    #[inline]
    fn observe_int(&mut self, m: i64, s: u32, preds: &[i64; PREDICTORS], repeat: bool) {
        for (sc, &p) in self.scores.iter_mut().zip(preds) {
            let r = m.wrapping_sub(p) >> s;
            *sc = *sc - *sc / 8 + 8 * bit_width(zigzag(r));
        }
        let d = m.wrapping_sub(self.int_prev);
        self.mean16 = self
            .mean16
            .wrapping_add(d.wrapping_mul(16).wrapping_sub(self.mean16) >> 3);
        self.int_delta = d;
        self.int_prev = m;
        self.rep = self.rep - self.rep / 8 + if repeat { REP_ONE / 8 } else { 0 };
    }

    /// Restarts the integer state on `m` after a switch from another mode or scale.
    fn reset_int(&mut self, m: i64) {
        self.int_prev = m;
        self.int_delta = 0;
        self.mean16 = 0;
        self.scores = [0; PREDICTORS];
        self.int_rice = Rice::new(true);
    }

    /// Changes the shift within the same scale; the Rice statistics follow.
    fn set_shift(&mut self, k: u32, s: u32) {
        if let Mode::Int { s: old, .. } = self.mode {
            let rice = &mut self.int_rice;
            if s > old {
                rice.set_sum((rice.sum >> (s - old)).max(1));
            } else {
                let up = (u128::from(rice.sum) << (old - s).min(64)).min(1 << 44);
                rice.set_sum(up as u64);
            }
        }
        self.mode = Mode::Int { k, s };
    }

    /// Int body in mode `Int { s, .. }`: the residual over the best prediction.
    fn write_body(&mut self, w: &mut BitWriter, m: i64, s: u32, repeat: bool) {
        let preds = self.predictions(s);
        let r = m.wrapping_sub(preds[self.best()]) >> s;
        self.int_rice.write(w, zigzag(r));
        self.observe_int(m, s, &preds, repeat);
    }

    fn body_cost(&self, m: i64, s: u32) -> u32 {
        let preds = self.predictions(s);
        let r = m.wrapping_sub(preds[self.best()]) >> s;
        self.int_rice.cost(zigzag(r))
    }

    fn read_body(&mut self, r: &mut BitReader<'_>, s: u32) -> Result<Option<i64>> {
        let preds = self.predictions(s);
        let z = match self.int_rice.read(r)? {
            RiceSym::Value(z) => z,
            RiceSym::Switch => return Ok(None),
        };
        let m = preds[self.best()].wrapping_add(unzigzag(z).wrapping_shl(s));
        self.observe_int(m, s, &preds, m == self.int_prev);
        Ok(Some(m))
    }

    fn write_xor(&mut self, w: &mut BitWriter, bits: u64) {
        let x = bits ^ self.prev_bits;
        debug_assert!(x != 0);
        let lead = x.leading_zeros().min(31);
        let trail = x.trailing_zeros();
        if self.lead != u32::MAX && lead >= self.lead && trail >= self.trail {
            w.write_bit(false);
            w.write(x >> self.trail, 64 - self.lead - self.trail);
        } else {
            let sig = 64 - lead - trail;
            w.write_bit(true);
            w.write(u64::from(lead), 5);
            w.write(u64::from(sig & 63), 6);
            w.write(x >> trail, sig);
            self.lead = lead;
            self.trail = trail;
        }
    }

    fn read_xor(&mut self, r: &mut BitReader<'_>) -> Result<u64> {
        if r.read_bit()? {
            let lead = r.read(5)? as u32;
            let mut sig = r.read(6)? as u32;
            if sig == 0 {
                sig = 64;
            }
            if lead + sig > 64 {
                return Err(CodecError::Corrupt("XOR window wider than 64 bits"));
            }
            self.lead = lead;
            self.trail = 64 - lead - sig;
        } else if self.lead == u32::MAX {
            return Err(CodecError::Corrupt("XOR window reused before it was set"));
        }
        let sig = 64 - self.lead - self.trail;
        let x = r.read(sig)? << self.trail;
        Ok(self.prev_bits ^ x)
    }

    /// The cheapest switch into an int mode for `v`: `(k, m, cost of the payload)`.
    fn int_switch(&self, v: f64) -> Option<(u32, i64, u32)> {
        (0..=MAX_SCALE).find_map(|k| {
            let m = int_repr(v, k)?;
            let z = zigzag(m.wrapping_sub(self.int_base(k)));
            Some((k, m, 9 + universal_cost(z)))
        })
    }

    /// Switch payload into `Int { k, s: 0 }` from another mode or scale.
    fn write_int_switch(&mut self, w: &mut BitWriter, k: u32, m: i64) {
        w.write(u64::from(k), 3);
        w.write(0, 6);
        write_universal(w, zigzag(m.wrapping_sub(self.int_base(k))));
        self.mode = Mode::Int { k, s: 0 };
        self.reset_int(m);
        self.tz_min = 64;
        self.tz_n = 0;
    }

    fn encode(&mut self, w: &mut BitWriter, v: f64) {
        let bits = v.to_bits();
        match self.mode {
            Mode::Float => self.encode_float_mode(w, v, bits),
            Mode::Int { k, s } => self.encode_int_mode(w, v, bits, k, s),
        }
        self.prev_bits = bits;
    }

    fn encode_float_mode(&mut self, w: &mut BitWriter, v: f64, bits: u64) {
        if bits == self.prev_bits {
            w.write_bit(false);
            return;
        }
        let xor = self.xor_cost(bits);
        match self.int_switch(v) {
            // When the previous value was an integer at that scale too, the
            // series likely stays one: int mode pays off on later samples.
            Some((k, m, cost))
                if cost <= xor
                    || (int_repr(f64::from_bits(self.prev_bits), k).is_some()
                        && cost <= xor + SWITCH_MARGIN) =>
            {
                w.write(0b11, 2);
                self.write_int_switch(w, k, m);
            }
            _ => {
                w.write(0b10, 2);
                self.write_xor(w, bits);
            }
        }
    }

    fn encode_int_mode(&mut self, w: &mut BitWriter, v: f64, bits: u64, k: u32, s: u32) {
        let flag = self.rep_flag();
        if bits == self.prev_bits {
            if flag {
                w.write_bit(false);
                let preds = self.predictions(s);
                self.observe_int(self.int_prev, s, &preds, true);
            } else {
                self.write_body(w, self.int_prev, s, true);
            }
            return;
        }
        if flag {
            w.write_bit(true);
        }
        if let Some(m) = int_repr(v, k) {
            let d = m.wrapping_sub(self.int_prev);
            let tz = d.trailing_zeros();
            if tz >= s {
                let body = self.body_cost(m, s);
                let float = RICE_QMAX + 2 + self.xor_cost(bits);
                if body <= float + SWITCH_MARGIN {
                    // Encoder heuristic: widen the shift when the recent
                    // deltas all shared more trailing zeros.
                    if self.tz_n >= 3 && self.tz_min >= s + 2 && tz >= self.tz_min {
                        let ns = self.tz_min.min(63);
                        Rice::write_switch(w);
                        w.write(0b1, 1);
                        w.write(u64::from(k), 3);
                        w.write(u64::from(ns), 6);
                        self.set_shift(k, ns);
                        self.tz_min = 64;
                        self.tz_n = 0;
                        self.write_body(w, m, ns, false);
                    } else {
                        self.tz_min = self.tz_min.min(tz);
                        self.tz_n += 1;
                        self.write_body(w, m, s, false);
                    }
                    return;
                }
            } else {
                // Same scale, fewer shared low bits: narrow the shift.
                Rice::write_switch(w);
                w.write(0b1, 1);
                w.write(u64::from(k), 3);
                w.write(u64::from(tz), 6);
                self.set_shift(k, tz);
                self.tz_min = 64;
                self.tz_n = 0;
                self.write_body(w, m, tz, false);
                return;
            }
        }
        Rice::write_switch(w);
        let xor = self.xor_cost(bits);
        match self.int_switch(v) {
            Some((nk, m, cost)) if nk != k && cost <= xor => {
                w.write(0b1, 1);
                self.write_int_switch(w, nk, m);
            }
            _ => {
                w.write(0b0, 1);
                self.mode = Mode::Float;
                self.write_xor(w, bits);
            }
        }
    }

    /// Reads a switch (after `11` in float mode or an escape in int mode).
    fn read_switch(&mut self, r: &mut BitReader<'_>, in_int: bool) -> Result<u64> {
        if in_int && !r.read_bit()? {
            self.mode = Mode::Float;
            return self.read_xor(r);
        }
        let k = r.read(3)? as u32;
        let s = r.read(6)? as u32;
        match self.mode {
            Mode::Int { k: old, .. } if old == k => {
                self.set_shift(k, s);
                let m = self
                    .read_body(r, s)?
                    .ok_or(CodecError::Corrupt("switch right after a switch"))?;
                Ok(from_int(m, k).to_bits())
            }
            _ => {
                if s != 0 {
                    return Err(CodecError::Corrupt("shift set on a scale switch"));
                }
                let m = self.int_base(k).wrapping_add(unzigzag(read_universal(r)?));
                self.mode = Mode::Int { k, s: 0 };
                self.reset_int(m);
                Ok(from_int(m, k).to_bits())
            }
        }
    }

    fn decode(&mut self, r: &mut BitReader<'_>) -> Result<f64> {
        let bits = match self.mode {
            Mode::Float => {
                if !r.read_bit()? {
                    return Ok(f64::from_bits(self.prev_bits));
                }
                if !r.read_bit()? {
                    self.read_xor(r)?
                } else {
                    self.read_switch(r, false)?
                }
            }
            Mode::Int { k, s } => {
                if self.rep_flag() && !r.read_bit()? {
                    let preds = self.predictions(s);
                    self.observe_int(self.int_prev, s, &preds, true);
                    return Ok(f64::from_bits(self.prev_bits));
                }
                match self.read_body(r, s)? {
                    Some(m) => from_int(m, k).to_bits(),
                    None => self.read_switch(r, true)?,
                }
            }
        };
        self.prev_bits = bits;
        Ok(f64::from_bits(bits))
    }
}

/// Adaptive Rice code (LOCO-I style): `z >> k` in unary, then the low `k`
/// bits, with `k` derived from the running mean of recent codes. A quotient of
/// `RICE_QMAX` or more is escaped: `RICE_QMAX` ones, a `0`, the bit width of
/// `z` minus one (6 bits), then `z` itself. `RICE_QMAX` ones then a `1` is a
/// switch (values only).
/// With `learn_escapes`, an escaped code feeds the statistics like any other
/// (values, whose magnitude may jump for good); without, it is ignored
/// (timestamps, where an escape is a one-off gap or a new interval).
#[derive(Debug, Clone)]
struct Rice {
    sum: u64,
    n: u64,
    /// Cached parameter for the current `sum` and `n`.
    k: u32,
    learn_escapes: bool,
}

const RICE_QMAX: u32 = 10;
/// Halve the statistics when this many codes have been seen (fast adaptation).
const RICE_WINDOW: u64 = 16;

impl Rice {
    fn new(learn_escapes: bool) -> Self {
        Self {
            sum: 4,
            n: 1,
            k: 2,
            learn_escapes,
        }
    }

    #[inline]
    fn k(&self) -> u32 {
        self.k
    }

    /// Sets `sum` (after a shift change) and recomputes `k`.
    fn set_sum(&mut self, sum: u64) {
        self.sum = sum;
        self.k = self.compute_k();
    }

    /// The smallest `k` with `n * 2^k >= sum`.
    #[inline]
    fn compute_k(&self) -> u32 {
        // 1 <= n < RICE_WINDOW and sum <= RICE_WINDOW * 2^44: no overflow.
        if self.n >= self.sum {
            return 0;
        }
        // n << k0 has the bit length of sum; one more doubling may be needed.
        let k0 = self.n.leading_zeros() - self.sum.leading_zeros();
        k0 + u32::from((self.n << k0) < self.sum)
    }

    #[inline]
    fn update(&mut self, z: u64) {
        self.sum += z.min(1 << 40);
        self.n += 1;
        if self.n >= RICE_WINDOW {
            self.sum = (self.sum >> 1).max(1);
            self.n >>= 1;
        }
        self.k = self.compute_k();
    }

    #[inline]
    fn cost(&self, z: u64) -> u32 {
        let k = self.k();
        let q = z >> k;
        if q < u64::from(RICE_QMAX) {
            q as u32 + 1 + k
        } else {
            RICE_QMAX + 7 + bit_width(z)
        }
    }

    /// The switch prefix: `RICE_QMAX` ones, then a one.
    #[inline]
    fn write_switch(w: &mut BitWriter) {
        w.write((1u64 << (RICE_QMAX + 1)) - 1, RICE_QMAX + 1);
    }

    /// Writes `z`; returns whether it was escaped.
    #[inline]
    fn write(&mut self, w: &mut BitWriter, z: u64) -> bool {
        self.write_k(w, z, self.k())
    }

    /// Writes `z` with parameter `k`; returns whether it was escaped.
    #[inline]
    fn write_k(&mut self, w: &mut BitWriter, z: u64, k: u32) -> bool {
        let q = z >> k;
        if q < u64::from(RICE_QMAX) {
            let q = q as u32;
            w.write(((1u64 << q) - 1) << 1, q + 1);
            w.write(z, k);
            self.update(z);
            false
        } else {
            w.write(((1u64 << RICE_QMAX) - 1) << 1, RICE_QMAX + 1);
            let width = bit_width(z);
            w.write(u64::from(width - 1), 6);
            w.write(z, width);
            if self.learn_escapes {
                self.update(z);
            }
            true
        }
    }

    /// Reads one code: a value and whether it was escaped, or a switch.
    #[inline]
    fn read_sym(&mut self, r: &mut BitReader<'_>) -> Result<(RiceSym, bool)> {
        self.read_sym_k(r, self.k())
    }

    #[inline]
    fn read_sym_k(&mut self, r: &mut BitReader<'_>, k: u32) -> Result<(RiceSym, bool)> {
        let q = r.read_unary(RICE_QMAX)?;
        if q < RICE_QMAX {
            let low = r.read(k)?;
            let z = (u64::from(q) << k) | low;
            self.update(z);
            Ok((RiceSym::Value(z), false))
        } else if r.read_bit()? {
            Ok((RiceSym::Switch, true))
        } else {
            let width = r.read(6)? as u32 + 1;
            let z = r.read(width)?;
            if self.learn_escapes {
                self.update(z);
            }
            Ok((RiceSym::Value(z), true))
        }
    }

    #[inline]
    fn read(&mut self, r: &mut BitReader<'_>) -> Result<RiceSym> {
        Ok(self.read_sym(r)?.0)
    }
}

/// Timestamp prediction state. The next timestamp is predicted at
/// `center + interval`, rounded by the 1/16 ms fraction `frac`; the center
/// follows an eighth of each offset (so it settles in the middle of the
/// scrape jitter, to a sixteenth of a millisecond); an escaped offset
/// re-anchors the center on the timestamp and resets the interval to the
/// last delta, snapped to a whole second when within 50 ms of one.
#[derive(Debug, Clone)]
struct TsState {
    prev_t: i64,
    center: i64,
    /// Sub-millisecond part of the center, in 1/16 ms (0..16).
    frac: i64,
    interval: i64,
    rice: Rice,
    /// Decaying costs (x16) of coding the recent offsets with Rice `k` = 0..4;
    /// the cheapest is used while the running mean asks for `k` <= 4.
    costs: [u32; TS_KS],
}

const TS_KS: usize = 4;

/// Snaps a delta to a whole second when within 50 ms of one.
#[inline]
fn snap_interval(d: i64) -> i64 {
    if (500..1 << 50).contains(&d) {
        let r = (d + 500) / 1000 * 1000;
        if (d - r).abs() <= 50 {
            return r;
        }
    }
    d
}

impl TsState {
    fn new(first: i64) -> Self {
        Self {
            prev_t: first,
            center: first,
            frac: 0,
            interval: 0,
            rice: Rice::new(false),
            costs: [0; TS_KS],
        }
    }

    /// Rice parameter of the next offset.
    #[inline]
    fn k(&self) -> u32 {
        let k = self.rice.k();
        if k as usize >= TS_KS {
            return k;
        }
        let mut b = 0;
        for i in 1..TS_KS {
            if self.costs[i] < self.costs[b] {
                b = i;
            }
        }
        b as u32
    }

    #[inline]
    fn learn(&mut self, z: u64) {
        for (k, c) in self.costs.iter_mut().enumerate() {
            let q = (z >> k).min(64) as u32;
            *c = *c - *c / 16 + q + 1 + k as u32;
        }
    }

    #[inline]
    fn prediction(&self) -> i64 {
        self.center
            .wrapping_add(self.interval)
            .wrapping_add(i64::from(self.frac >= 8))
    }

    #[inline]
    fn observe(&mut self, t: i64, escaped: bool) {
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
    }

    fn write(&mut self, w: &mut BitWriter, t: i64) {
        let e = t.wrapping_sub(self.prediction());
        let z = zigzag(e);
        let escaped = self.rice.write_k(w, z, self.k());
        if !escaped {
            self.learn(z);
        }
        self.observe(t, escaped);
    }

    fn read(&mut self, r: &mut BitReader<'_>) -> Result<i64> {
        let (sym, escaped) = self.rice.read_sym_k(r, self.k())?;
        if let (RiceSym::Value(z), false) = (&sym, escaped) {
            self.learn(*z);
        }
        let RiceSym::Value(z) = sym else {
            return Err(CodecError::Corrupt("switch code in a timestamp"));
        };
        let t = self.prediction().wrapping_add(unzigzag(z));
        if t <= self.prev_t {
            return Err(CodecError::Corrupt("timestamps not strictly increasing"));
        }
        self.observe(t, escaped);
        Ok(t)
    }
}

fn write_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn uvarint_len(v: u64) -> usize {
    (bit_width(v) as usize).div_ceil(7)
}

fn read_uvarint(data: &[u8], pos: &mut usize) -> Result<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *data.get(*pos).ok_or(CodecError::Truncated)?;
        *pos += 1;
        if shift == 63 && b > 1 {
            return Err(CodecError::Corrupt("varint overflows 64 bits"));
        }
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(CodecError::Corrupt("varint longer than 10 bytes"))
}

// ---------------------------------------------------------------------------
// Encoder.

/// Appends samples into an open chunk. Cheap to snapshot at any point.
#[derive(Debug, Clone)]
pub struct Encoder {
    bits: BitWriter,
    count: usize,
    first_t: i64,
    ts: TsState,
    values: ValueState,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    pub fn new() -> Self {
        Self {
            bits: BitWriter::new(),
            count: 0,
            first_t: 0,
            ts: TsState::new(0),
            values: ValueState::new(),
        }
    }

    /// Appends a sample; timestamps must be strictly increasing, else
    /// `Err(CodecError::OutOfOrder { .. })` and the encoder is unchanged.
    pub fn append(&mut self, t: i64, v: f64) -> Result<()> {
        if self.count == 0 {
            self.first_t = t;
            self.ts = TsState::new(t);
        } else {
            if t <= self.ts.prev_t {
                return Err(CodecError::OutOfOrder {
                    last: self.ts.prev_t,
                    t,
                });
            }
            self.ts.write(&mut self.bits, t);
        }
        self.values.encode(&mut self.bits, v);
        self.count += 1;
        Ok(())
    }

    /// Samples appended so far.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn last_timestamp(&self) -> Option<i64> {
        (self.count > 0).then_some(self.ts.prev_t)
    }

    /// Heap memory held by the encoder (capacity), for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.bits.heap_bytes()
    }

    /// Exact length of the bytes `snapshot()`/`finish()` would return now.
    pub fn encoded_len(&self) -> usize {
        self.header_len() + self.bits.byte_len()
    }

    fn header_len(&self) -> usize {
        let mut n = 1 + uvarint_len(self.count as u64);
        if self.count > 0 {
            n += uvarint_len(zigzag(self.first_t));
        }
        n
    }

    /// A self-contained chunk of everything appended so far; the encoder stays usable.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.push(FORMAT_VERSION);
        write_uvarint(&mut out, self.count as u64);
        if self.count > 0 {
            write_uvarint(&mut out, zigzag(self.first_t));
        }
        self.bits.copy_to(&mut out);
        out
    }

    /// The finished chunk; the same bytes as `snapshot()`.
    pub fn finish(self) -> Vec<u8> {
        self.snapshot()
    }
}

// ---------------------------------------------------------------------------
// Decoder.

/// Iterates the samples of a chunk. Corrupt or truncated input yields one
/// `Err` (then the iterator ends), never a panic.
#[derive(Debug, Clone)]
pub struct Decoder<'a> {
    bits: BitReader<'a>,
    count: usize,
    index: usize,
    failed: bool,
    ts: TsState,
    values: ValueState,
}

impl<'a> Decoder<'a> {
    /// Parses the chunk header.
    pub fn new(chunk: &'a [u8]) -> Result<Self> {
        let (&version, _) = chunk.split_first().ok_or(CodecError::Empty)?;
        if version != FORMAT_VERSION {
            return Err(CodecError::UnsupportedVersion(version));
        }
        let mut pos = 1;
        let count = read_uvarint(chunk, &mut pos)?;
        let first_t = if count > 0 {
            unzigzag(read_uvarint(chunk, &mut pos)?)
        } else {
            0
        };
        let body = &chunk[pos..];
        // Every sample takes at least one bit; this also bounds allocations.
        if count > (body.len() as u64) * 8 {
            return Err(CodecError::Truncated);
        }
        if count == 0 && !body.is_empty() {
            return Err(CodecError::Corrupt("data after an empty chunk's header"));
        }
        Ok(Self {
            bits: BitReader::new(body),
            // Bounded by body.len() * 8 above, so it fits in usize.
            count: count as usize,
            index: 0,
            failed: false,
            ts: TsState::new(first_t),
            values: ValueState::new(),
        })
    }

    /// Number of samples in the chunk, from its header.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn decode_next(&mut self) -> Result<(i64, f64)> {
        if self.index > 0 {
            self.ts.read(&mut self.bits)?;
        }
        let v = self.values.decode(&mut self.bits)?;
        self.index += 1;
        if self.index == self.count {
            let rest = self.bits.remaining();
            if rest >= 8 || self.bits.read(rest as u32)? != 0 {
                return Err(CodecError::Corrupt("trailing data after the last sample"));
            }
        }
        Ok((self.ts.prev_t, v))
    }
}

impl Iterator for Decoder<'_> {
    type Item = Result<(i64, f64)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.index >= self.count {
            return None;
        }
        let r = self.decode_next();
        self.failed = r.is_err();
        Some(r)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.failed {
            (0, Some(0))
        } else {
            (0, Some(self.count - self.index))
        }
    }
}

/// Decodes a whole chunk.
pub fn decode_all(chunk: &[u8]) -> Result<Vec<(i64, f64)>> {
    let dec = Decoder::new(chunk)?;
    let mut out = Vec::with_capacity(dec.len());
    for s in dec {
        out.push(s?);
    }
    Ok(out)
}

/// Encodes samples (timestamps strictly increasing) into one chunk.
pub fn encode_all(samples: &[(i64, f64)]) -> Result<Vec<u8>> {
    let mut enc = Encoder::new();
    for &(t, v) in samples {
        enc.append(t, v)?;
    }
    Ok(enc.finish())
}

#[cfg(test)]
mod tests;
