//! cairn-codec: the chunk codec for `(timestamp ms: i64, value: f64)` samples.
//!
//! Owns the byte format of a chunk and nothing else: it is pure (no I/O, no
//! clocks, no logging) and must never depend on storage, the network or any
//! other Cairn crate. Storage, the head block and the query path read and
//! write chunks only through [`Encoder`], [`Decoder`], [`encode_all`],
//! [`decode_all`], [`decode_into`] and [`decode_into_with`] (the last two
//! append to a caller's buffer, the fastest way to decode whole chunks).
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
mod chunk;
mod decode;
mod error;
#[doc(hidden)]
pub mod fuzzing;

pub use chunk::{encode_all, Encoder};
pub use decode::{decode_all, decode_into, decode_into_with, Decoder};
pub use error::{CodecError, Result, FORMAT_VERSION};
