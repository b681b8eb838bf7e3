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
//! # Chunk format, version 1
//!
//! ```text
//! byte 0      version (= 1)
//! varint      sample count n (unsigned LEB128)
//! varint      first timestamp, zigzag LEB128 (present only when n > 0)
//! bitstream   MSB-first, zero-padded to a whole byte; nothing follows it
//! ```
//!
//! The bitstream holds, for every sample `i` in order: its timestamp code
//! (absent for `i == 0`, whose timestamp is in the header), then its value
//! code.
//!
//! **Rice code** (used for timestamps and integers): an unsigned `z` is
//! written as `q = z >> k` in unary (`q` ones, then a zero) followed by the
//! low `k` bits of `z`, where `k` is the smallest value with `n * 2^k >= sum`
//! over a decaying window of recent codes (LOCO-I style; starts at sum 4,
//! n 1, halves at n 16). A quotient of 10 or more is escaped: ten ones, the
//! bit width of `z` minus one (6 bits), then `z`. Signed numbers are
//! zigzag-mapped first.
//!
//! **Timestamp code** — predicted on a grid: `p = grid + interval` (wrapping
//! `i64`), and `e = t - p` is Rice-coded. Normally `grid` becomes
//! `p + e / 4` (it settles in the middle of the scrape jitter, so `e` stays
//! within a few ms). On an escape (first sample after the header, a missed
//! scrape, a new interval) the grid re-anchors on `t` and `interval` becomes
//! `t - t_prev`, snapped to a whole second when within 50 ms of one; escaped
//! offsets do not feed the Rice statistics. Before the second sample,
//! `grid = t0` and `interval = 0`.
//!
//! **Value code** — the value state is: the previous value's bits (0.0 before
//! the first sample), a mode (`Float`, or `Int` with decimal scale `k`), the
//! previous scaled integer, an integer payload width, and the XOR window
//! (leading/trailing zeros). Opcodes:
//!
//! | code       | meaning                                                        |
//! |------------|----------------------------------------------------------------|
//! | `0`        | same bits as the previous value                                |
//! | `10` ...   | encoded in the current mode (see below)                        |
//! | `110` ...  | switch to `Float` mode, then an XOR code                        |
//! | `111` k:3 ... | switch to `Int` mode with scale `k` (0..=7), then an int code |
//!
//! *XOR code* (Gorilla): `x = bits ^ prev_bits` (never 0 here). `0` + the
//! meaningful bits, reusing the previous leading/trailing window when `x`
//! fits in it; or `1` + leading zeros (5 bits, capped at 31) + meaningful bit
//! count (6 bits, 64 written as 0) + the meaningful bits.
//!
//! *Int code*: value `v` is represented as the integer `m` with
//! `m as f64 / 10^k` bit-identical to `v` (checked by an exact round trip, so
//! never lossy). `m - prediction` (wrapping) is Rice-coded (own statistics;
//! an escape restarts them from the escaped value). The prediction is
//! `prev_m`, or `prev_m + prev_delta` when delta-of-delta has coded smaller
//! (with a little hysteresis) over recent samples (decaying means of code widths kept
//! by both sides, so steady counters cost little and the choice costs no
//! bits). After a `111` switch the prediction is the previous value scaled by
//! `10^k` when that is exact, else 0; `prev_delta` restarts at 0 and that
//! code does not feed the statistics.
//!
//! The encoder picks, per value, the cheaper of staying in or switching
//! between the modes, so integers, counters and values with 1-7 decimals
//! (0.37, 1234.56) are encoded as small integer deltas while arbitrary floats
//! fall back to XOR.

mod bits;

use bits::{BitReader, BitWriter};

/// Version byte written at the start of every chunk.
pub const FORMAT_VERSION: u8 = 1;

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

/// Payload widths of the timestamp delta-of-delta buckets (see the header).
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Float,
    Int(u32),
}

/// Value-coding state, identical on both sides.
#[derive(Debug, Clone)]
struct ValueState {
    prev_bits: u64,
    mode: Mode,
    /// Previous scaled integer and the delta that led to it.
    int_prev: i64,
    int_delta: i64,
    /// Decaying mean code widths (x8) of the delta and delta-of-delta predictors.
    score_delta: u32,
    score_dod: u32,
    int_rice: Rice,
    /// Leading/trailing zeros of the XOR window; `lead == u32::MAX` means no window yet.
    lead: u32,
    trail: u32,
}

impl ValueState {
    fn new() -> Self {
        Self {
            prev_bits: 0,
            mode: Mode::Float,
            int_prev: 0,
            int_delta: 0,
            score_delta: 0,
            score_dod: 0,
            int_rice: Rice::new(true),
            lead: u32::MAX,
            trail: 0,
        }
    }

    /// Base integer after switching into scale `k`.
    #[inline]
    fn int_base(&self, k: u32) -> i64 {
        int_repr(f64::from_bits(self.prev_bits), k).unwrap_or(0)
    }

    /// Cost of switching into int mode with integer `m` over `base`.
    #[inline]
    fn int_switch_cost(&self, m: i64, base: i64) -> u32 {
        self.int_rice.cost(zigzag(m.wrapping_sub(base)))
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

    /// Prediction of the next scaled integer: the previous one, or (for
    /// counters growing at a steady rate) the previous one plus the previous
    /// delta, whichever has coded smaller lately. Both sides compute it from
    /// decoded data, so the choice costs no bits.
    #[inline]
    fn int_prediction(&self) -> i64 {
        if self.score_dod + 16 < self.score_delta {
            self.int_prev.wrapping_add(self.int_delta)
        } else {
            self.int_prev
        }
    }

    /// Records the integer `m` just coded; `switched` after a `111` switch.
    #[inline]
    fn observe_int(&mut self, m: i64, switched: bool) {
        if switched {
            self.int_delta = 0;
        } else {
            let d = m.wrapping_sub(self.int_prev);
            let dd = d.wrapping_sub(self.int_delta);
            self.score_delta = self.score_delta - self.score_delta / 8 + 8 * bit_width(zigzag(d));
            self.score_dod = self.score_dod - self.score_dod / 8 + 8 * bit_width(zigzag(dd));
            self.int_delta = d;
        }
        self.int_prev = m;
    }

    /// Writes `m`; after a switch `int_prev` holds the base and is the prediction.
    fn write_int(&mut self, w: &mut BitWriter, m: i64, switched: bool) {
        let pred = if switched {
            self.int_prev
        } else {
            self.int_prediction()
        };
        self.int_rice
            .write(w, zigzag(m.wrapping_sub(pred)), !switched);
        self.observe_int(m, switched);
    }

    fn read_int(&mut self, r: &mut BitReader<'_>, switched: bool) -> Result<i64> {
        let pred = if switched {
            self.int_prev
        } else {
            self.int_prediction()
        };
        let (z, _) = self.int_rice.read(r, !switched)?;
        let m = pred.wrapping_add(unzigzag(z));
        self.observe_int(m, switched);
        Ok(m)
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

    fn encode(&mut self, w: &mut BitWriter, v: f64) {
        let bits = v.to_bits();
        if bits == self.prev_bits {
            w.write_bit(false);
            return;
        }
        if let Mode::Int(k) = self.mode {
            if let Some(m) = int_repr(v, k) {
                w.write(0b10, 2);
                self.write_int(w, m, false);
                self.prev_bits = bits;
                return;
            }
        }
        // Float in place (`10` in float mode) or a switch to float (`110`).
        let float_cost = self.xor_cost(bits) + if self.mode == Mode::Float { 2 } else { 3 };
        let mut best_int = None;
        for k in 0..=MAX_SCALE {
            if Mode::Int(k) == self.mode {
                continue; // already known not to fit
            }
            if let Some(m) = int_repr(v, k) {
                let base = self.int_base(k);
                let cost = 3 + 3 + self.int_switch_cost(m, base);
                best_int = Some((k, m, base, cost));
                break;
            }
        }
        match best_int {
            Some((k, m, base, cost)) if cost <= float_cost => {
                w.write(0b111, 3);
                w.write(u64::from(k), 3);
                self.mode = Mode::Int(k);
                self.int_prev = base;
                self.write_int(w, m, true);
            }
            _ => {
                if self.mode == Mode::Float {
                    w.write(0b10, 2);
                } else {
                    w.write(0b110, 3);
                    self.mode = Mode::Float;
                }
                self.write_xor(w, bits);
            }
        }
        self.prev_bits = bits;
    }

    fn decode(&mut self, r: &mut BitReader<'_>) -> Result<f64> {
        if !r.read_bit()? {
            return Ok(f64::from_bits(self.prev_bits));
        }
        let bits = if !r.read_bit()? {
            match self.mode {
                Mode::Float => self.read_xor(r)?,
                Mode::Int(k) => from_int(self.read_int(r, false)?, k).to_bits(),
            }
        } else if !r.read_bit()? {
            self.mode = Mode::Float;
            self.read_xor(r)?
        } else {
            let k = r.read(3)? as u32;
            self.int_prev = self.int_base(k);
            self.mode = Mode::Int(k);
            from_int(self.read_int(r, true)?, k).to_bits()
        };
        self.prev_bits = bits;
        Ok(f64::from_bits(bits))
    }
}

/// Adaptive Rice code (LOCO-I style): `z >> k` in unary, then the low `k`
/// bits, with `k` derived from the running mean of recent codes. A quotient of
/// `RICE_QMAX` or more is escaped: `RICE_QMAX` ones, the bit width of `z`
/// minus one (6 bits), then `z` itself.
/// With `learn_escapes`, an escaped code restarts the statistics from it
/// (values, whose magnitude may jump for good); without, it is ignored
/// (timestamps, where an escape is a one-off gap or a new interval). Codes
/// written with `learn == false` never touch the statistics.
#[derive(Debug, Clone)]
struct Rice {
    sum: u64,
    n: u64,
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
            learn_escapes,
        }
    }

    #[inline]
    fn k(&self) -> u32 {
        let mut k = 0;
        // sum <= RICE_WINDOW * 2^40, so `n << k` never overflows before exceeding it.
        while (self.n << k) < self.sum {
            k += 1;
        }
        k
    }

    fn restart(&mut self, z: u64) {
        self.sum = z.clamp(1, 1 << 40);
        self.n = 1;
    }

    #[inline]
    fn update(&mut self, z: u64) {
        self.sum += z.min(1 << 40);
        self.n += 1;
        if self.n >= RICE_WINDOW {
            self.sum = (self.sum >> 1).max(1);
            self.n >>= 1;
        }
    }

    #[inline]
    fn cost(&self, z: u64) -> u32 {
        let k = self.k();
        let q = z >> k;
        if q < u64::from(RICE_QMAX) {
            q as u32 + 1 + k
        } else {
            RICE_QMAX + 6 + bit_width(z)
        }
    }

    /// Writes `z`; returns whether it was escaped.
    #[inline]
    fn write(&mut self, w: &mut BitWriter, z: u64, learn: bool) -> bool {
        let k = self.k();
        let q = z >> k;
        if q < u64::from(RICE_QMAX) {
            let q = q as u32;
            w.write(((1u64 << q) - 1) << 1, q + 1);
            w.write(z, k);
            if learn {
                self.update(z);
            }
            false
        } else {
            w.write((1u64 << RICE_QMAX) - 1, RICE_QMAX);
            let width = bit_width(z);
            w.write(u64::from(width - 1), 6);
            w.write(z, width);
            if learn && self.learn_escapes {
                self.restart(z);
            }
            true
        }
    }

    /// Reads one code; returns `(z, escaped)`.
    #[inline]
    fn read(&mut self, r: &mut BitReader<'_>, learn: bool) -> Result<(u64, bool)> {
        let q = r.read_unary(RICE_QMAX)?;
        if q < RICE_QMAX {
            let k = self.k();
            let low = r.read(k)?;
            let z = (u64::from(q) << k) | low;
            if learn {
                self.update(z);
            }
            Ok((z, false))
        } else {
            let width = r.read(6)? as u32 + 1;
            let z = r.read(width)?;
            if learn && self.learn_escapes {
                self.restart(z);
            }
            Ok((z, true))
        }
    }
}

/// Timestamp prediction state: a grid of interval `interval` whose last
/// point is `grid`; a timestamp is coded as its offset from the next grid
/// point. The grid follows a quarter of each offset (so it settles in the
/// middle of the scrape jitter); an escaped offset re-anchors the grid on the
/// timestamp and resets the interval to the last delta, snapped to a whole
/// second when within 50 ms of one.
#[derive(Debug, Clone)]
struct TsState {
    prev_t: i64,
    grid: i64,
    interval: i64,
    rice: Rice,
}

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
            grid: first,
            interval: 0,
            rice: Rice::new(false),
        }
    }

    #[inline]
    fn observe(&mut self, t: i64, e: i64, escaped: bool) {
        if escaped {
            self.interval = snap_interval(t.wrapping_sub(self.prev_t));
            self.grid = t;
        } else {
            self.grid = t.wrapping_sub(e - e / 4);
        }
        self.prev_t = t;
    }

    fn write(&mut self, w: &mut BitWriter, t: i64) {
        let e = t.wrapping_sub(self.grid.wrapping_add(self.interval));
        let escaped = self.rice.write(w, zigzag(e), true);
        self.observe(t, e, escaped);
    }

    fn read(&mut self, r: &mut BitReader<'_>) -> Result<i64> {
        let (z, escaped) = self.rice.read(r, true)?;
        let e = unzigzag(z);
        let t = self.grid.wrapping_add(self.interval).wrapping_add(e);
        if t <= self.prev_t {
            return Err(CodecError::Corrupt("timestamps not strictly increasing"));
        }
        self.observe(t, e, escaped);
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
