//! The chunk format: the encoder, the reference decoder and the arithmetic
//! both share (integer scaling, zigzag, Rice and universal codes, the
//! header); [`crate::decode`] is the fast decoder checked against it.

use crate::bits::{BitBuf, BitReader, BitWriter};
use crate::error::{CodecError, Result, FORMAT_VERSION};

// ---------------------------------------------------------------------------
// Shared coding tables and helpers.

/// Largest decimal scale of the integer mode (3-bit field).
const MAX_SCALE: u32 = 7;
const POW10: [f64; 8] = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6, 1e7];

#[inline]
pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
pub(crate) fn unzigzag(z: u64) -> i64 {
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
pub(crate) fn from_int(m: i64, k: u32) -> f64 {
    if k == 0 {
        m as f64
    } else {
        m as f64 / POW10[k as usize]
    }
}

/// `Some(m)` when `from_int(m, k)` reproduces `v`'s exact bits.
#[inline]
pub(crate) fn int_repr(v: f64, k: u32) -> Option<i64> {
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
fn write_universal(w: &mut BitWriter<'_>, z: u64) {
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

/// Number of integer predictors (see [`IntState::predictions`]).
const PREDICTORS: usize = 3;
/// Extra bits a float-to-int switch may cost over an XOR code when the
/// previous value was an integer at the same scale.
const SWITCH_MARGIN: u32 = 32;
/// Initial / maximum value of the repeat-rate estimate (probability x 256).
pub(crate) const REP_ONE: u16 = 256;
/// `ValueState::scale` in float mode.
const FLOAT_MODE: u8 = u8::MAX;
/// `ValueState::lead` before the first XOR window.
const NO_WINDOW: u8 = u8::MAX;

/// Value-coding state, identical on both sides. Kept small: an encoder lives
/// in memory for every open series. The integer predictors live in a box
/// allocated on the first switch into int mode (and kept after it).
#[derive(Debug, Clone)]
struct ValueState {
    prev_bits: u64,
    /// Integer-mode state; `Some` whenever the mode is `Int`.
    int: Option<Box<IntState>>,
    /// Decaying rate of exact repeats in int mode (x256, at most `REP_ONE`).
    rep: u16,
    /// Mode: `FLOAT_MODE`, or `Int { k: scale, s: shift }`.
    scale: u8,
    shift: u8,
    /// Leading (<= 31) / trailing (<= 63) zeros of the XOR window;
    /// `lead == NO_WINDOW` means no window yet.
    lead: u8,
    trail: u8,
    /// Encoder only: min trailing zeros (<= 64) of recent nonzero deltas and
    /// their count (saturating; only `>= 3` matters).
    tz_min: u8,
    tz_n: u8,
}

/// Integer-mode state: the predictors and the Rice statistics of residuals.
#[derive(Debug, Clone)]
struct IntState {
    /// Previous scaled integer and the delta that led to it.
    prev: i64,
    delta: i64,
    /// Decaying mean of the deltas, x16.
    mean16: i64,
    rice: Rice,
    /// Decaying mean code widths (x8, at most 4103) of each predictor's residuals.
    scores: [u16; PREDICTORS],
}

/// What follows a Rice quotient of `RICE_QMAX` ones.
enum RiceSym {
    Value(u64),
    Switch,
}

impl IntState {
    fn new(m: i64) -> Self {
        Self {
            prev: m,
            delta: 0,
            mean16: 0,
            rice: Rice::new(),
            scores: [0; PREDICTORS],
        }
    }

    /// The predictions of the next scaled integer (all congruent to `prev`
    /// mod `2^s`): the previous one; plus the mean delta; plus the last delta.
    #[inline]
    fn predictions(&self, s: u32) -> [i64; PREDICTORS] {
        let p = self.prev;
        [
            p,
            p.wrapping_add(align(self.mean16.wrapping_add(8) >> 4, s)),
            p.wrapping_add(align(self.delta, s)),
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

    /// Records the integer `m` just coded in mode `Int { s, .. }`.
    #[inline]
    fn observe(&mut self, m: i64, s: u32, preds: &[i64; PREDICTORS]) {
        for (sc, &p) in self.scores.iter_mut().zip(preds) {
            let r = m.wrapping_sub(p) >> s;
            // At most 4103 - 512 + 512: no overflow.
            *sc = *sc - *sc / 8 + 8 * bit_width(zigzag(r)) as u16;
        }
        let d = m.wrapping_sub(self.prev);
        self.mean16 = self
            .mean16
            .wrapping_add(d.wrapping_mul(16).wrapping_sub(self.mean16) >> 3);
        self.delta = d;
        self.prev = m;
    }
}

impl ValueState {
    fn new() -> Self {
        Self {
            prev_bits: 0,
            int: None,
            rep: REP_ONE,
            scale: FLOAT_MODE,
            shift: 0,
            lead: NO_WINDOW,
            trail: 0,
            tz_min: 64,
            tz_n: 0,
        }
    }

    #[inline]
    fn mode(&self) -> Mode {
        if self.scale == FLOAT_MODE {
            Mode::Float
        } else {
            Mode::Int {
                k: u32::from(self.scale),
                s: u32::from(self.shift),
            }
        }
    }

    /// Sets the mode; `Int` only once the int state exists. `k <= 7`, `s <= 63`.
    #[inline]
    fn set_mode(&mut self, mode: Mode) {
        match mode {
            Mode::Float => self.scale = FLOAT_MODE,
            Mode::Int { k, s } => {
                debug_assert!(k <= MAX_SCALE && s < 64 && self.int.is_some());
                self.scale = k as u8;
                self.shift = s as u8;
            }
        }
    }

    /// The int state; only called in int mode, where it always exists.
    #[inline]
    fn int(&self) -> &IntState {
        self.int.as_deref().expect("int mode has int state")
    }

    #[inline]
    fn int_mut(&mut self) -> &mut IntState {
        self.int.as_deref_mut().expect("int mode has int state")
    }

    /// Base integer after switching into scale `k` from another mode.
    #[inline]
    fn int_base(&self, k: u32) -> i64 {
        int_repr(f64::from_bits(self.prev_bits), k).unwrap_or(0)
    }

    /// The XOR window `(lead, trail)`, if set.
    #[inline]
    fn window(&self) -> Option<(u32, u32)> {
        (self.lead != NO_WINDOW).then(|| (u32::from(self.lead), u32::from(self.trail)))
    }

    #[inline]
    fn xor_cost(&self, bits: u64) -> u32 {
        let x = bits ^ self.prev_bits;
        let lead = x.leading_zeros().min(31);
        let trail = x.trailing_zeros();
        match self.window() {
            Some((wl, wt)) if lead >= wl && trail >= wt => 1 + 64 - wl - wt,
            _ => 1 + 5 + 6 + 64 - lead - trail,
        }
    }

    /// Whether the int code starts with a repeat flag bit: when repeats are
    /// frequent enough to pay for it.
    #[inline]
    fn rep_flag(&self) -> bool {
        u32::from(self.rep) * (self.int().rice.k() + 1) > u32::from(REP_ONE)
    }

    /// Records the integer `m` just coded in mode `Int { s, .. }`.
    #[inline]
    fn observe_int(&mut self, m: i64, s: u32, preds: &[i64; PREDICTORS], repeat: bool) {
        self.int_mut().observe(m, s, preds);
        self.rep = self.rep - self.rep / 8 + if repeat { REP_ONE / 8 } else { 0 };
    }

    /// Records a repeat of the previous integer, coded by the repeat flag alone.
    #[inline]
    fn observe_repeat(&mut self, s: u32) {
        let st = self.int();
        let (m, preds) = (st.prev, st.predictions(s));
        self.observe_int(m, s, &preds, true);
    }

    /// Restarts the integer state on `m` after a switch from another mode or scale.
    fn reset_int(&mut self, m: i64) {
        match &mut self.int {
            Some(st) => **st = IntState::new(m),
            None => self.int = Some(Box::new(IntState::new(m))),
        }
    }

    /// Changes the shift within the same scale; the Rice statistics follow.
    fn set_shift(&mut self, k: u32, s: u32) {
        if let Mode::Int { s: old, .. } = self.mode() {
            let rice = &mut self.int_mut().rice;
            if s > old {
                rice.set_sum((rice.sum() >> (s - old)).max(1));
            } else {
                let up = (u128::from(rice.sum()) << (old - s).min(64)).min(1 << 44);
                rice.set_sum(up as u64);
            }
        }
        self.set_mode(Mode::Int { k, s });
    }

    /// Int body in mode `Int { s, .. }`: the residual over the best prediction.
    fn write_body(&mut self, w: &mut BitWriter<'_>, m: i64, s: u32, repeat: bool) {
        let st = self.int_mut();
        let preds = st.predictions(s);
        let r = m.wrapping_sub(preds[st.best()]) >> s;
        st.rice.write(w, zigzag(r), true);
        self.observe_int(m, s, &preds, repeat);
    }

    fn body_cost(&self, m: i64, s: u32) -> u32 {
        let st = self.int();
        let preds = st.predictions(s);
        let r = m.wrapping_sub(preds[st.best()]) >> s;
        st.rice.cost(zigzag(r))
    }

    fn read_body(&mut self, r: &mut BitReader<'_>, s: u32) -> Result<Option<i64>> {
        let st = self.int_mut();
        let preds = st.predictions(s);
        let z = match st.rice.read(r, true)? {
            RiceSym::Value(z) => z,
            RiceSym::Switch => return Ok(None),
        };
        let m = preds[st.best()].wrapping_add(unzigzag(z).wrapping_shl(s));
        let repeat = m == st.prev;
        self.observe_int(m, s, &preds, repeat);
        Ok(Some(m))
    }

    fn write_xor(&mut self, w: &mut BitWriter<'_>, bits: u64) {
        let x = bits ^ self.prev_bits;
        debug_assert!(x != 0);
        let lead = x.leading_zeros().min(31);
        let trail = x.trailing_zeros();
        match self.window() {
            Some((wl, wt)) if lead >= wl && trail >= wt => {
                w.write_bit(false);
                w.write(x >> wt, 64 - wl - wt);
            }
            _ => {
                let sig = 64 - lead - trail;
                w.write_bit(true);
                w.write(u64::from(lead), 5);
                w.write(u64::from(sig & 63), 6);
                w.write(x >> trail, sig);
                self.lead = lead as u8;
                self.trail = trail as u8;
            }
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
            self.lead = lead as u8;
            self.trail = (64 - lead - sig) as u8;
        }
        let Some((lead, trail)) = self.window() else {
            return Err(CodecError::Corrupt("XOR window reused before it was set"));
        };
        let sig = 64 - lead - trail;
        let x = r.read(sig)? << trail;
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

    /// Forgets the trailing-zero statistics of recent deltas (encoder only).
    #[inline]
    fn reset_tz(&mut self) {
        self.tz_min = 64;
        self.tz_n = 0;
    }

    /// Switch payload into `Int { k, s: 0 }` from another mode or scale.
    fn write_int_switch(&mut self, w: &mut BitWriter<'_>, k: u32, m: i64) {
        w.write(u64::from(k), 3);
        w.write(0, 6);
        write_universal(w, zigzag(m.wrapping_sub(self.int_base(k))));
        self.reset_int(m);
        self.set_mode(Mode::Int { k, s: 0 });
        self.reset_tz();
    }

    fn encode(&mut self, w: &mut BitWriter<'_>, v: f64) {
        let bits = v.to_bits();
        match self.mode() {
            Mode::Float => self.encode_float_mode(w, v, bits),
            Mode::Int { k, s } => self.encode_int_mode(w, v, bits, k, s),
        }
        self.prev_bits = bits;
    }

    fn encode_float_mode(&mut self, w: &mut BitWriter<'_>, v: f64, bits: u64) {
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

    fn encode_int_mode(&mut self, w: &mut BitWriter<'_>, v: f64, bits: u64, k: u32, s: u32) {
        let flag = self.rep_flag();
        if bits == self.prev_bits {
            if flag {
                w.write_bit(false);
                self.observe_repeat(s);
            } else {
                let m = self.int().prev;
                self.write_body(w, m, s, true);
            }
            return;
        }
        if flag {
            w.write_bit(true);
        }
        if let Some(m) = int_repr(v, k) {
            let d = m.wrapping_sub(self.int().prev);
            let tz = d.trailing_zeros();
            if tz >= s {
                let body = self.body_cost(m, s);
                let float = RICE_QMAX + 2 + self.xor_cost(bits);
                if body <= float + SWITCH_MARGIN {
                    // Encoder heuristic: widen the shift when the recent
                    // deltas all shared more trailing zeros.
                    let tz_min = u32::from(self.tz_min);
                    if self.tz_n >= 3 && tz_min >= s + 2 && tz >= tz_min {
                        let ns = tz_min.min(63);
                        Rice::write_switch(w);
                        w.write(0b1, 1);
                        w.write(u64::from(k), 3);
                        w.write(u64::from(ns), 6);
                        self.set_shift(k, ns);
                        self.reset_tz();
                        self.write_body(w, m, ns, false);
                    } else {
                        // tz <= 64.
                        self.tz_min = self.tz_min.min(tz as u8);
                        self.tz_n = self.tz_n.saturating_add(1);
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
                self.reset_tz();
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
                self.set_mode(Mode::Float);
                self.write_xor(w, bits);
            }
        }
    }

    /// Reads a switch (after `11` in float mode or an escape in int mode).
    fn read_switch(&mut self, r: &mut BitReader<'_>, in_int: bool) -> Result<u64> {
        if in_int && !r.read_bit()? {
            self.set_mode(Mode::Float);
            return self.read_xor(r);
        }
        let k = r.read(3)? as u32;
        let s = r.read(6)? as u32;
        match self.mode() {
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
                self.reset_int(m);
                self.set_mode(Mode::Int { k, s: 0 });
                Ok(from_int(m, k).to_bits())
            }
        }
    }

    fn decode(&mut self, r: &mut BitReader<'_>) -> Result<f64> {
        let bits = match self.mode() {
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
                    self.observe_repeat(s);
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
///
/// The statistics are packed in one word: `sum` (always below 2^46: each
/// code adds at most 2^40, `set_sum` at most 2^44, and it halves every 8
/// codes, 15 at first) in bits 0..48, `n` (1..=16, 16 only within `update`)
/// in bits 48..53, a 4-bit field the owner may use in bits 53..57 (the
/// timestamp state keeps its center fraction there) and the cached `k`
/// (<= 46) in bits 58..64.
#[derive(Debug, Clone, Copy)]
struct Rice(u64);

pub(crate) const RICE_QMAX: u32 = 10;
/// Halve the statistics when this many codes have been seen (fast adaptation).
pub(crate) const RICE_WINDOW: u64 = 16;
const RICE_SUM_MASK: u64 = (1 << 48) - 1;
const RICE_N_SHIFT: u32 = 48;
const RICE_AUX_SHIFT: u32 = 53;
const RICE_K_SHIFT: u32 = 58;

impl Rice {
    fn new() -> Self {
        Self(4 | 1 << RICE_N_SHIFT).with_k()
    }

    /// Recomputes the cached `k` from `sum` and `n`.
    #[inline]
    fn with_k(self) -> Self {
        let x = self.0 & ((1 << RICE_K_SHIFT) - 1);
        Self(x | u64::from(compute_k(self.sum(), self.n())) << RICE_K_SHIFT)
    }

    #[inline]
    fn sum(self) -> u64 {
        self.0 & RICE_SUM_MASK
    }

    #[inline]
    fn n(self) -> u64 {
        (self.0 >> RICE_N_SHIFT) & 31
    }

    #[inline]
    fn k(self) -> u32 {
        (self.0 >> RICE_K_SHIFT) as u32
    }

    /// The owner's 4-bit field.
    #[inline]
    fn aux(self) -> u64 {
        (self.0 >> RICE_AUX_SHIFT) & 15
    }

    #[inline]
    fn set_aux(&mut self, aux: u64) {
        debug_assert!(aux < 16);
        self.0 = (self.0 & !(15 << RICE_AUX_SHIFT)) | aux << RICE_AUX_SHIFT;
    }

    /// Sets `sum` (after a shift change) and recomputes `k`.
    fn set_sum(&mut self, sum: u64) {
        debug_assert!(sum < 1 << 46);
        *self = Self((self.0 & !RICE_SUM_MASK) | sum).with_k();
    }

    #[inline]
    fn update(&mut self, z: u64) {
        // sum < 2^46 stays below the `n` field.
        let mut x = self.0 + z.min(1 << 40) + (1 << RICE_N_SHIFT);
        if (x >> RICE_N_SHIFT) & 31 >= RICE_WINDOW {
            let sum = ((x & RICE_SUM_MASK) >> 1).max(1);
            x = ((x - ((RICE_WINDOW / 2) << RICE_N_SHIFT)) & !RICE_SUM_MASK) | sum;
        }
        *self = Self(x).with_k();
    }

    #[inline]
    fn cost(self, z: u64) -> u32 {
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
    fn write_switch(w: &mut BitWriter<'_>) {
        w.write((1u64 << (RICE_QMAX + 1)) - 1, RICE_QMAX + 1);
    }

    /// Writes `z`; returns whether it was escaped.
    #[inline]
    fn write(&mut self, w: &mut BitWriter<'_>, z: u64, learn_escapes: bool) -> bool {
        self.write_k(w, z, self.k(), learn_escapes)
    }

    /// Writes `z` with parameter `k`; returns whether it was escaped.
    #[inline]
    fn write_k(&mut self, w: &mut BitWriter<'_>, z: u64, k: u32, learn_escapes: bool) -> bool {
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
            if learn_escapes {
                self.update(z);
            }
            true
        }
    }

    /// Reads one code with parameter `k`: a value and whether it was
    /// escaped, or a switch.
    #[inline]
    fn read_sym_k(
        &mut self,
        r: &mut BitReader<'_>,
        k: u32,
        learn_escapes: bool,
    ) -> Result<(RiceSym, bool)> {
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
            if learn_escapes {
                self.update(z);
            }
            Ok((RiceSym::Value(z), true))
        }
    }

    #[inline]
    fn read(&mut self, r: &mut BitReader<'_>, learn_escapes: bool) -> Result<RiceSym> {
        Ok(self.read_sym_k(r, self.k(), learn_escapes)?.0)
    }
}

/// The smallest `k` with `n * 2^k >= sum`.
#[inline]
pub(crate) fn compute_k(sum: u64, n: u64) -> u32 {
    // 1 <= n < RICE_WINDOW and sum < 2^46: no overflow.
    if n >= sum {
        return 0;
    }
    // n << k0 has the bit length of sum; one more doubling may be needed.
    let k0 = n.leading_zeros() - sum.leading_zeros();
    k0 + u32::from((n << k0) < sum)
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
    interval: i64,
    /// Offsets' Rice statistics; its owner field holds `frac`, the
    /// sub-millisecond part of the center in 1/16 ms (0..16).
    rice: Rice,
    /// Decaying costs (x16, at most 1103) of coding the recent offsets with
    /// Rice `k` = 0..4; the cheapest is used while the running mean asks for
    /// `k` <= 4.
    costs: [u16; TS_KS],
}

const TS_KS: usize = 4;

/// Snaps a delta to a whole second when within 50 ms of one.
#[inline]
pub(crate) fn snap_interval(d: i64) -> i64 {
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
            interval: 0,
            rice: Rice::new(),
            costs: [0; TS_KS],
        }
    }

    #[inline]
    fn frac(&self) -> i64 {
        self.rice.aux() as i64
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
            let q = (z >> k).min(64) as u16;
            *c = *c - *c / 16 + q + 1 + k as u16;
        }
    }

    #[inline]
    fn prediction(&self) -> i64 {
        self.center
            .wrapping_add(self.interval)
            .wrapping_add(i64::from(self.frac() >= 8))
    }

    #[inline]
    fn observe(&mut self, t: i64, escaped: bool) {
        if escaped {
            self.interval = snap_interval(t.wrapping_sub(self.prev_t));
            self.center = t;
            self.rice.set_aux(0);
        } else {
            let base = self.center.wrapping_add(self.interval);
            let o16 = t.wrapping_sub(base).wrapping_mul(16);
            let frac = self.frac();
            let x = frac.wrapping_add(o16.wrapping_sub(frac) >> 3);
            self.center = base.wrapping_add(x >> 4);
            self.rice.set_aux((x & 15) as u64);
        }
        self.prev_t = t;
    }

    fn write(&mut self, w: &mut BitWriter<'_>, t: i64) {
        let e = t.wrapping_sub(self.prediction());
        let z = zigzag(e);
        let escaped = self.rice.write_k(w, z, self.k(), false);
        if !escaped {
            self.learn(z);
        }
        self.observe(t, escaped);
    }

    fn read(&mut self, r: &mut BitReader<'_>) -> Result<i64> {
        let (sym, escaped) = self.rice.read_sym_k(r, self.k(), false)?;
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
///
/// Small (96 bytes; the head keeps one per open series): the chunk's bytes
/// after the sample count (the first timestamp, then the bitstream) are built
/// in place in one buffer, and the integer-mode state is boxed.
#[derive(Debug, Clone)]
pub struct Encoder {
    /// First timestamp (zigzag varint, once a sample is in), then the bitstream.
    bits: BitBuf,
    count: usize,
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
            bits: BitBuf::new(),
            count: 0,
            ts: TsState::new(0),
            values: ValueState::new(),
        }
    }

    /// Appends a sample; timestamps must be strictly increasing, else
    /// `Err(CodecError::OutOfOrder { .. })` and the encoder is unchanged.
    pub fn append(&mut self, t: i64, v: f64) -> Result<()> {
        if self.count > 0 && t <= self.ts.prev_t {
            return Err(CodecError::OutOfOrder {
                last: self.ts.prev_t,
                t,
            });
        }
        let mut w = self.bits.writer();
        if self.count == 0 {
            // The header's first timestamp (zigzag varint, as `write_uvarint`).
            let mut z = zigzag(t);
            while z >= 0x80 {
                w.write(z | 0x80, 8);
                z >>= 7;
            }
            w.write(z, 8);
            self.ts = TsState::new(t);
        } else {
            self.ts.write(&mut w, t);
        }
        self.values.encode(&mut w, v);
        drop(w);
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
        let int = if self.values.int.is_some() {
            std::mem::size_of::<IntState>()
        } else {
            0
        };
        self.bits.heap_bytes() + int
    }

    /// Exact length of the bytes `snapshot()`/`finish()` would return now.
    pub fn encoded_len(&self) -> usize {
        1 + uvarint_len(self.count as u64) + self.bits.byte_len()
    }

    /// A self-contained chunk of everything appended so far; the encoder stays usable.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.push(FORMAT_VERSION);
        write_uvarint(&mut out, self.count as u64);
        out.extend_from_slice(self.bits.bytes());
        out
    }

    /// The finished chunk; the same bytes as `snapshot()`.
    pub fn finish(self) -> Vec<u8> {
        self.snapshot()
    }
}

// ---------------------------------------------------------------------------
// Reference decoder.

/// Parses a chunk header: `(sample count, first timestamp, bitstream)`.
pub(crate) fn parse_header(chunk: &[u8]) -> Result<(usize, i64, &[u8])> {
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
    // Bounded by body.len() * 8 above, so it fits in usize.
    Ok((count as usize, first_t, body))
}

/// The reference decoder: a straightforward, fully checked reading of the
/// format, one bit-reader call per field. [`Decoder`] and [`decode_all`] use
/// the fast path in `decode.rs` and fall back to this one only when that
/// path fails, so corrupt input gets exactly this decoder's samples and
/// errors. Corrupt or truncated input yields one `Err` (then the iterator
/// ends), never a panic.
#[derive(Debug, Clone)]
pub(crate) struct RefDecoder<'a> {
    bits: BitReader<'a>,
    pub(crate) count: usize,
    pub(crate) index: usize,
    pub(crate) failed: bool,
    ts: TsState,
    values: ValueState,
}

impl<'a> RefDecoder<'a> {
    /// Parses the chunk header.
    pub(crate) fn new(chunk: &'a [u8]) -> Result<Self> {
        let (count, first_t, body) = parse_header(chunk)?;
        Ok(Self {
            bits: BitReader::new(body),
            count,
            index: 0,
            failed: false,
            ts: TsState::new(first_t),
            values: ValueState::new(),
        })
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

impl Iterator for RefDecoder<'_> {
    type Item = Result<(i64, f64)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.index >= self.count {
            return None;
        }
        let r = self.decode_next();
        self.failed = r.is_err();
        Some(r)
    }
}

/// Encodes samples (timestamps strictly increasing) into one chunk.
pub fn encode_all(samples: &[(i64, f64)]) -> Result<Vec<u8>> {
    let mut enc = Encoder::new();
    for &(t, v) in samples {
        enc.append(t, v)?;
    }
    Ok(enc.finish())
}

// The codec's tests reach the format's internals (integer scaling, the
// reference decoder), so they are this module's child.
#[cfg(test)]
#[path = "tests.rs"]
mod tests;
