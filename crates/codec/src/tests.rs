//! Unit and property tests against a naive model: a `Vec<(i64, u64 bits)>`.

use super::*;
use crate::*;
use proptest::prelude::*;

type Model = Vec<(i64, u64)>;

fn model_of(samples: &[(i64, f64)]) -> Model {
    samples.iter().map(|&(t, v)| (t, v.to_bits())).collect()
}

fn roundtrip(samples: &[(i64, f64)]) -> Vec<u8> {
    let chunk = encode_all(samples).expect("strictly increasing input");
    let got = decode_all(&chunk).expect("valid chunk decodes");
    assert_eq!(model_of(&got), model_of(samples));
    let dec = Decoder::new(&chunk).unwrap();
    assert_eq!(dec.len(), samples.len());
    chunk
}

const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

fn special_values() -> Vec<f64> {
    vec![
        f64::from_bits(STALE_NAN),
        f64::NAN,
        f64::from_bits(0x7ff8_0000_0000_0001),
        f64::from_bits(0xfff8_dead_beef_0001), // negative quiet NaN with payload
        f64::from_bits(0x7ff0_0000_0000_0001), // signalling NaN
        f64::INFINITY,
        f64::NEG_INFINITY,
        0.0,
        -0.0,
        f64::from_bits(1), // smallest subnormal
        -f64::from_bits(0x000f_ffff_ffff_ffff),
        f64::MIN_POSITIVE,
        f64::MAX,
        f64::MIN,
        f64::EPSILON,
        1.0,
        -1.0,
        0.1,
        0.37,
        1234.56,
        9.007_199_254_740_993e15,
        9.223_372_036_854_775e18,
        -9.223_372_036_854_775e18,
        1e300,
        -1e-300,
    ]
}

#[test]
fn empty_chunk() {
    let chunk = Encoder::new().finish();
    assert_eq!(chunk, vec![FORMAT_VERSION, 0]);
    assert!(decode_all(&chunk).unwrap().is_empty());
    assert!(Decoder::new(&chunk).unwrap().is_empty());
}

#[test]
fn special_values_each_alone_and_in_sequence() {
    let specials = special_values();
    for &v in &specials {
        roundtrip(&[(0, v)]);
        roundtrip(&[(-5, 1.0), (10, v), (20, v), (30, 0.5), (40, v)]);
    }
    // Every ordered pair, so each value follows each other value (and each mode).
    let mut samples = Vec::new();
    let mut t = -1_000_000;
    for &a in &specials {
        for &b in &specials {
            samples.push((t, a));
            samples.push((t + 15_000, b));
            t += 30_000;
        }
    }
    roundtrip(&samples);
}

#[test]
fn zero_signs_are_kept() {
    let chunk = roundtrip(&[(1, 0.0), (2, -0.0), (3, 0.0), (4, 5.0), (5, -0.0)]);
    let got = decode_all(&chunk).unwrap();
    assert!(got[1].1.is_sign_negative() && got[1].1 == 0.0);
    assert!(got[2].1.is_sign_positive());
}

#[test]
fn extreme_timestamps() {
    roundtrip(&[(i64::MIN, 1.0), (i64::MAX, 2.0)]);
    roundtrip(&[
        (i64::MIN, 1.0),
        (i64::MIN + 1, 2.0),
        (i64::MAX - 1, 3.0),
        (i64::MAX, 4.0),
    ]);
    roundtrip(&[
        (i64::MIN / 2, 1.0),
        (i64::MAX / 2, 2.0),
        (i64::MAX / 2 + 1, 3.0),
    ]);
    roundtrip(&[(-30_000, 1.0), (-15_000, 1.0), (0, 1.0), (15_000, 1.0)]);
    roundtrip(&[(i64::MAX, f64::NAN)]);
    roundtrip(&[(i64::MIN, -0.0)]);
}

#[test]
fn out_of_order_is_rejected_and_encoder_unchanged() {
    let mut enc = Encoder::new();
    enc.append(100, 1.0).unwrap();
    assert_eq!(
        enc.append(100, 2.0),
        Err(CodecError::OutOfOrder { last: 100, t: 100 })
    );
    assert!(matches!(
        enc.append(99, 2.0),
        Err(CodecError::OutOfOrder { .. })
    ));
    enc.append(101, 3.0).unwrap();
    assert_eq!(enc.len(), 2);
    assert_eq!(enc.last_timestamp(), Some(101));
    assert_eq!(
        decode_all(&enc.finish()).unwrap(),
        vec![(100, 1.0), (101, 3.0)]
    );
    assert!(matches!(
        encode_all(&[(5, 1.0), (4, 1.0)]),
        Err(CodecError::OutOfOrder { last: 5, t: 4 })
    ));
}

#[test]
fn accounting_methods() {
    let mut enc = Encoder::new();
    assert!(enc.is_empty());
    assert_eq!(enc.last_timestamp(), None);
    for i in 0..1000 {
        enc.append(i * 15_000, (i as f64) * 0.25).unwrap();
        assert_eq!(enc.encoded_len(), enc.snapshot().len());
    }
    assert!(enc.heap_bytes() >= enc.encoded_len() - 16);
    assert_eq!(enc.len(), 1000);
}

#[test]
fn decimal_values_use_integer_mode() {
    // 2-decimal gauge: far below the 64+ bits an XOR of unrelated decimals costs.
    let samples: Vec<(i64, f64)> = (0..120)
        .map(|i| (i * 15_000, [0.37, 0.41, 0.29, 1.05][i as usize % 4]))
        .collect();
    let chunk = roundtrip(&samples);
    assert!(chunk.len() < 120 * 3, "{} bytes", chunk.len());
    // A constant series at a regular interval: about 2 bits per sample.
    let samples: Vec<(i64, f64)> = (0..120).map(|i| (i * 15_000, 1.0)).collect();
    assert!(roundtrip(&samples).len() < 40);
}

#[test]
fn garbage_is_rejected_without_panicking() {
    assert_eq!(decode_all(&[]), Err(CodecError::Empty));
    assert_eq!(decode_all(&[9, 0]), Err(CodecError::UnsupportedVersion(9)));
    assert_eq!(decode_all(&[FORMAT_VERSION]), Err(CodecError::Truncated));
    assert_eq!(decode_all(&[1, 0]), Err(CodecError::UnsupportedVersion(1)));
    assert!(decode_all(&[
        FORMAT_VERSION,
        0xff,
        0xff,
        0xff,
        0xff,
        0xff,
        0xff,
        0xff,
        0xff,
        0xff,
        0xff,
        0x7f
    ])
    .is_err());
    assert!(decode_all(&[FORMAT_VERSION, 0, 0]).is_err());
    // Huge sample count with a tiny body: no huge allocation, just an error.
    assert_eq!(
        decode_all(&[FORMAT_VERSION, 0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0]),
        Err(CodecError::Truncated)
    );
    // Trailing bytes after a valid chunk.
    let mut chunk = encode_all(&[(1, 1.0), (2, 2.0)]).unwrap();
    chunk.push(0);
    assert!(matches!(decode_all(&chunk), Err(CodecError::Corrupt(_))));
    let mut state = 0x1234_5678_9abc_def0u64;
    for len in 0..2000usize {
        let bytes: Vec<u8> = (0..len % 97)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let _ = decode_all(&bytes);
        let mut with_header = vec![FORMAT_VERSION, (len % 50) as u8];
        with_header.extend_from_slice(&bytes);
        let _ = decode_all(&with_header);
    }
}

#[test]
fn iterator_stops_after_error() {
    let chunk = encode_all(&[(1, 1.5), (2, 2.25), (3, 1e300)]).unwrap();
    let cut = &chunk[..chunk.len() - 3];
    let mut dec = Decoder::new(cut).unwrap();
    let mut saw_err = false;
    for s in dec.by_ref() {
        if s.is_err() {
            saw_err = true;
        }
    }
    assert!(saw_err);
    assert!(dec.next().is_none());
}

// ---------------------------------------------------------------------------
// Property tests.

fn arb_value() -> impl Strategy<Value = f64> {
    prop_oneof![
        3 => any::<u64>().prop_map(f64::from_bits),
        2 => (-1_000_000i64..1_000_000).prop_map(|i| i as f64),
        1 => any::<i64>().prop_map(|i| i as f64),
        3 => (-10_000_000i64..10_000_000, 1u32..=3).prop_map(|(m, k)| m as f64 / POW10[k as usize]),
        1 => (any::<i32>(), 0u32..=7).prop_map(|(m, k)| m as f64 / POW10[k as usize]),
        2 => proptest::sample::select(special_values()),
    ]
}

/// Values with runs of repeats, to exercise the repeat opcode and mode changes.
fn arb_values(max: usize) -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec((arb_value(), 1usize..4), 0..max).prop_map(|runs| {
        runs.into_iter()
            .flat_map(|(v, n)| std::iter::repeat_n(v, n))
            .collect()
    })
}

fn arb_timestamps(n: usize) -> impl Strategy<Value = Vec<i64>> {
    let regular = (
        -2_000_000_000_000i64..2_000_000_000_000,
        proptest::sample::select(vec![1_000i64, 10_000, 15_000, 30_000, 60_000]),
        0i64..6,
        prop::collection::vec(any::<u32>(), n),
    )
        .prop_map(|(start, interval, jitter, noise)| {
            let mut prev = i64::MIN;
            noise
                .iter()
                .enumerate()
                .map(|(i, &r)| {
                    let j = if jitter == 0 {
                        0
                    } else {
                        i64::from(r % (2 * jitter as u32 + 1)) - jitter
                    };
                    let t = (start + i as i64 * interval + j).max(prev + 1);
                    prev = t;
                    t
                })
                .collect::<Vec<_>>()
        });
    let arbitrary = prop::collection::btree_set(any::<i64>(), n)
        .prop_map(|s| s.into_iter().collect::<Vec<_>>());
    let gaps =
        (any::<i64>(), prop::collection::vec(1u64..u64::MAX / 4, n)).prop_map(|(start, gaps)| {
            let mut t = start;
            let mut out = Vec::new();
            for g in gaps {
                match t.checked_add_unsigned(g) {
                    Some(next) => {
                        out.push(t);
                        t = next;
                    }
                    None => break,
                }
            }
            out
        });
    prop_oneof![3 => regular, 1 => arbitrary, 1 => gaps]
}

fn arb_samples() -> impl Strategy<Value = Vec<(i64, f64)>> {
    arb_values(80).prop_flat_map(|values| {
        let n = values.len();
        arb_timestamps(n).prop_map(move |ts| {
            ts.into_iter()
                .zip(values.iter().copied())
                .collect::<Vec<_>>()
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn prop_roundtrip_bit_exact(samples in arb_samples()) {
        let chunk = encode_all(&samples).unwrap();
        let got = decode_all(&chunk).unwrap();
        prop_assert_eq!(model_of(&got), model_of(&samples));
        let dec = Decoder::new(&chunk).unwrap();
        prop_assert_eq!(dec.len(), samples.len());
    }

    #[test]
    fn prop_snapshot_is_prefix(samples in arb_samples()) {
        let mut enc = Encoder::new();
        for (i, &(t, v)) in samples.iter().enumerate() {
            enc.append(t, v).unwrap();
            let snap = enc.snapshot();
            prop_assert_eq!(snap.len(), enc.encoded_len());
            let got = decode_all(&snap).unwrap();
            prop_assert_eq!(model_of(&got), model_of(&samples[..=i]));
        }
        let snap = enc.snapshot();
        prop_assert_eq!(enc.finish(), snap);
    }

    #[test]
    fn prop_truncated_or_flipped_never_panics(
        samples in arb_samples(),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let chunk = encode_all(&samples).unwrap();
        let cut = cut.index(chunk.len() + 1);
        let model = model_of(&samples);
        // A strict prefix never decodes to more samples than the model's, and
        // whatever decodes before an error matches the model.
        if let Ok(dec) = Decoder::new(&chunk[..cut]) {
            for (i, s) in dec.enumerate() {
                match s {
                    Ok((t, v)) => prop_assert_eq!((t, v.to_bits()), model[i]),
                    Err(_) => break,
                }
            }
        }
        if cut < chunk.len() {
            prop_assert!(decode_all(&chunk[..cut]).is_err());
        }
        let mut flipped = chunk.clone();
        let i = flip.index(flipped.len());
        flipped[i] ^= 1 << bit;
        let _ = decode_all(&flipped);
    }

    #[test]
    fn prop_random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_all(&bytes);
        let mut with_header = vec![FORMAT_VERSION];
        with_header.extend_from_slice(&bytes);
        if let Ok(dec) = Decoder::new(&with_header) {
            let n = dec.len();
            let got: Vec<_> = dec.collect();
            prop_assert!(got.len() <= n);
        }
    }
}

/// Integer streams shaped like real counters and gauges: deltas sharing
/// trailing zeros (page- or sector-quantised), runs of repeats, occasional
/// odd deltas, scale changes and float interludes, to exercise the shift
/// widening/narrowing switches, the repeat flag and every predictor.
fn arb_structured() -> impl Strategy<Value = Vec<f64>> {
    (
        any::<i64>().prop_map(|m| m >> 8),
        0u32..20,
        0u32..=3,
        prop::collection::vec((any::<u16>(), 0u8..100, any::<u64>()), 0..200),
    )
        .prop_map(|(start, shift, k, steps)| {
            let mut m: i64 = start >> shift << shift;
            let mut k = k;
            let mut out = Vec::new();
            for (step, kind, raw) in steps {
                match kind {
                    0..=29 => {} // repeat
                    30..=79 => {
                        m = m.wrapping_add(i64::from(step as i16) << shift);
                    }
                    80..=84 => m = m.wrapping_add(i64::from(step)), // odd delta
                    85..=89 => k = u32::from(step % 4),
                    90..=94 => {
                        out.push(f64::from_bits(raw));
                        continue;
                    }
                    _ => m = m.wrapping_add(i64::from(step) << 40), // burst
                }
                out.push(from_int(m, k));
            }
            out
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn prop_roundtrip_structured_ints(values in arb_structured(), ts in arb_timestamps(200)) {
        let samples: Vec<(i64, f64)> = ts.into_iter().zip(values).collect();
        let chunk = encode_all(&samples).unwrap();
        let got = decode_all(&chunk).unwrap();
        prop_assert_eq!(model_of(&got), model_of(&samples));
        // Every strict prefix of the chunk fails cleanly.
        for cut in [chunk.len() / 2, chunk.len().saturating_sub(1)] {
            if cut < chunk.len() {
                prop_assert!(decode_all(&chunk[..cut]).is_err());
            }
        }
    }
}

#[test]
fn quantised_gauge_uses_the_shift() {
    // A memory gauge moving by whole 4 KiB pages: the 12 zero bits are not coded.
    let mut v = 6_000_000_000i64;
    let mut st = 7u64;
    let samples: Vec<(i64, f64)> = (0..120)
        .map(|i| {
            st ^= st << 13;
            st ^= st >> 7;
            st ^= st << 17;
            v += ((st % 2001) as i64 - 1000) * 4096;
            (i * 15_000, v as f64)
        })
        .collect();
    let chunk = roundtrip(&samples);
    assert!(chunk.len() < 120 * 2, "{} bytes", chunk.len());
}

#[test]
fn encoder_stays_small() {
    // One encoder per open series in the head: a regression here multiplies
    // by the number of active series.
    assert!(
        std::mem::size_of::<Encoder>() <= 96,
        "size_of::<Encoder>() = {}",
        std::mem::size_of::<Encoder>()
    );
    // A short chunk holds about its own length of heap, plus the boxed int state.
    let mut enc = Encoder::new();
    for i in 0..20 {
        enc.append(1_700_000_000_000 + i * 15_000, (i * 3) as f64)
            .unwrap();
    }
    let slack = std::mem::size_of::<IntState>() + 16;
    assert!(
        enc.heap_bytes() <= enc.encoded_len() + enc.encoded_len() / 4 + slack,
        "heap {} for {} bytes",
        enc.heap_bytes(),
        enc.encoded_len()
    );
}

// ---------------------------------------------------------------------------
// Differential tests: the fast decoding path (`decode.rs`) against the
// reference decoder (`RefDecoder`, the straightforward fully checked one).

#[path = "../benches/data.rs"]
mod data;
#[path = "../benches/loadgen.rs"]
mod loadgen;

type Items = Vec<Result<(i64, u64)>>;

fn bits_of(items: impl Iterator<Item = Result<(i64, f64)>>) -> Items {
    items.map(|r| r.map(|(t, v)| (t, v.to_bits()))).collect()
}

/// The reference decoder's items, as `decode_all` / the iterator must give them.
fn reference(chunk: &[u8]) -> Result<Items> {
    RefDecoder::new(chunk).map(bits_of)
}

/// Every fast entry point agrees with the reference decoder on `chunk`:
/// same samples (bit for bit), same error, same items before the error.
fn assert_same_as_reference(chunk: &[u8]) {
    let want = reference(chunk);
    // The iterator, item by item, and it stays ended.
    let got = Decoder::new(chunk).map(|mut d| {
        let items = bits_of(d.by_ref());
        assert!(d.next().is_none(), "iterator resumed after its end");
        items
    });
    assert_eq!(got, want, "Decoder vs reference on {chunk:02x?}");
    // The whole-chunk functions.
    let want_all: Result<Model> = want.and_then(|items| items.into_iter().collect());
    assert_eq!(
        decode_all(chunk).map(|s| model_of(&s)),
        want_all,
        "decode_all vs reference on {chunk:02x?}"
    );
    let mut out = vec![(-1, 0.5)];
    let r = decode_into(chunk, &mut out);
    let mut want_out = vec![(-1, 0.5f64.to_bits())];
    match &want_all {
        Ok(m) => {
            assert_eq!(r, Ok(()));
            want_out.extend_from_slice(m);
        }
        Err(e) => assert_eq!(r.as_ref(), Err(e)),
    }
    assert_eq!(
        model_of(&out),
        want_out,
        "decode_into appends, or leaves out as is"
    );
    let mut structs: Vec<[u64; 2]> = vec![[7, 7]];
    let r = decode_into_with(chunk, &mut structs, |t, v| [t as u64, v.to_bits()]);
    assert_eq!(r.is_ok(), want_all.is_ok());
    let want_structs: Vec<[u64; 2]> = std::iter::once([7, 7])
        .chain(want_out[1..].iter().map(|&(t, v)| [t as u64, v]))
        .collect();
    assert_eq!(structs, want_structs);
}

/// `samples` round-trip through every entry point, and the fast path never
/// needs the reference decoder on the encoder's output.
fn assert_fast_roundtrip(samples: &[(i64, f64)]) {
    let chunk = encode_all(samples).unwrap();
    let model = model_of(samples);
    let fast = decode::decode_fast_only(&chunk).expect("fast path accepts encoder output");
    assert_eq!(model_of(&fast), model);
    let mut dec = Decoder::new(&chunk).unwrap();
    let items: Vec<_> = dec.by_ref().map(|s| s.unwrap()).collect();
    assert!(!dec.fell_back(), "iterator fell back on encoder output");
    assert_eq!(model_of(&items), model);
    assert_same_as_reference(&chunk);
    // Every prefix of the encoder's output (as a snapshot would be cut).
    for cut in [
        chunk.len() / 3,
        chunk.len() / 2,
        chunk.len().saturating_sub(1),
    ] {
        assert_same_as_reference(&chunk[..cut]);
    }
}

#[test]
fn fast_path_matches_reference_on_special_values() {
    const T0: i64 = 1_700_000_000_000;
    let specials = special_values();
    // Each special value between counters, gauges and decimals, at an
    // irregular interval with gaps and a missed scrape.
    let mut samples = Vec::new();
    let mut t = T0;
    let mut st = 99u64;
    for i in 0..600i64 {
        st ^= st << 13;
        st ^= st >> 7;
        st ^= st << 17;
        t += match i % 97 {
            0 => 45_000,                       // missed scrapes
            50 => 1 << 40,                     // huge gap
            _ => 15_000 + (st % 7) as i64 - 3, // jitter
        };
        let v = match (i / 40) % 6 {
            0 => (i * 1000) as f64,            // counter
            1 => ((st % 1000) as f64) / 100.0, // 2 decimals
            2 => f64::from_bits(st),           // raw bits
            3 => {
                if i % 3 == 0 {
                    1.0
                } else {
                    0.0
                }
            } // flapping
            4 => (i64::MAX - (st % 1000) as i64) as f64, // large ints
            _ => 42.0,                         // constant
        };
        samples.push((t, v));
        if i % 13 == 0 {
            t += 1;
            samples.push((t, specials[(i / 13) as usize % specials.len()]));
        }
        if i % 29 == 0 {
            // A run of staleness markers, then the series resumes.
            for _ in 0..3 {
                t += 15_000;
                samples.push((t, f64::from_bits(STALE_NAN)));
            }
        }
    }
    for n in [1, 2, 3, 10, 120, samples.len()] {
        assert_fast_roundtrip(&samples[..n]);
    }
    for &v in &specials {
        assert_fast_roundtrip(&[(i64::MIN, v)]);
        assert_fast_roundtrip(&[(-5, v), (i64::MAX, v)]);
        assert_fast_roundtrip(&[(0, v), (1, 1.5), (2, v), (3, v), (4, 1.0), (5, v)]);
    }
}

#[test]
fn fast_path_matches_reference_on_loadgen_and_bench_data() {
    for s in loadgen::node_workload(860, 120) {
        assert_fast_roundtrip(&s.samples);
    }
    for s in loadgen::node_workload(50, 1000) {
        assert_fast_roundtrip(&s.samples);
    }
    for kind in data::ALL {
        for c in data::chunks(kind, 20, 3) {
            assert_fast_roundtrip(&c);
        }
    }
}

#[test]
fn fast_path_matches_reference_on_garbage() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for len in 0..3000usize {
        let bytes: Vec<u8> = (0..len % 131).map(|_| rnd() as u8).collect();
        assert_same_as_reference(&bytes);
        let mut with_header = vec![FORMAT_VERSION, (len % 70) as u8];
        with_header.extend_from_slice(&bytes);
        assert_same_as_reference(&with_header);
    }
    // Every single-bit flip of a small mixed chunk.
    let samples: Vec<(i64, f64)> = (0..40)
        .map(|i| {
            (
                i * 15_000 + i % 3,
                [1.5, 2.0, f64::NAN, 1e300, 7.25][i as usize % 5],
            )
        })
        .collect();
    let chunk = encode_all(&samples).unwrap();
    for i in 0..chunk.len() * 8 {
        let mut c = chunk.clone();
        c[i / 8] ^= 0x80 >> (i % 8);
        assert_same_as_reference(&c);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn prop_fast_path_matches_reference(samples in arb_samples()) {
        assert_fast_roundtrip(&samples);
    }

    #[test]
    fn prop_fast_path_matches_reference_structured(
        values in arb_structured(),
        ts in arb_timestamps(200),
    ) {
        let samples: Vec<(i64, f64)> = ts.into_iter().zip(values).collect();
        assert_fast_roundtrip(&samples);
    }

    #[test]
    fn prop_fast_path_matches_reference_when_corrupted(
        samples in arb_samples(),
        cut in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..4),
    ) {
        let chunk = encode_all(&samples).unwrap();
        assert_same_as_reference(&chunk[..cut.index(chunk.len() + 1)]);
        let mut flipped = chunk.clone();
        for (i, bit) in flips {
            let i = i.index(flipped.len());
            flipped[i] ^= 1 << bit;
        }
        assert_same_as_reference(&flipped);
    }

    #[test]
    fn prop_fast_path_matches_reference_on_random_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..300),
        count in 0u8..200,
    ) {
        assert_same_as_reference(&bytes);
        let mut with_header = vec![FORMAT_VERSION, count & 0x7f];
        with_header.extend_from_slice(&bytes);
        assert_same_as_reference(&with_header);
    }
}
