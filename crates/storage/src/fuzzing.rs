//! Fuzzing entry points for the decoders of on-disk bytes (used by the
//! targets in `fuzz/fuzz_targets/` and replayed over the committed corpus by
//! this module's tests). Not an API.
//!
//! Each function must return without panicking whatever the bytes; where two
//! decoders read the same bytes they must agree.

use crate::{commitlog, fileset, index, record, shard, snapshot};
use cairn_common::SeriesId;
use std::path::Path;

/// The default block window (2h), as replay uses it.
const BLOCK_MS: i64 = 2 * 3600 * 1000;

/// A commit-log record payload, decoded as replay decodes it (the record
/// decoder, [`record::Decoder`], of both versions) and applied to a shard as replay applies it (then read back); and the same bytes
/// walked as replay walks a segment (framing, checksums, resynchronising
/// after damage), each whole record decoded in turn by one decoder, as
/// replay decodes a segment (refs and previous values carried from record
/// to record).
pub fn commitlog_record(data: &[u8]) {
    apply_record(&mut record::Decoder::default(), data);
    let mut decoder = record::Decoder::default();
    let start = if data.starts_with(b"CAIRNCL1") { 8 } else { 0 };
    let mut last = None;
    for step in commitlog::Walk::new(data, start) {
        let pos = match step {
            commitlog::Step::Record { pos, payload } => {
                assert_eq!(
                    commitlog::next_record(data, pos).map(|r| r.0),
                    Some(payload)
                );
                apply_record(&mut decoder, payload);
                pos
            }
            commitlog::Step::Damaged { pos, .. } | commitlog::Step::TornTail { pos } => pos,
        };
        assert!(last.is_none_or(|l| pos > l), "the walk moves forward");
        assert!(pos < data.len());
        last = Some(pos);
    }
}

fn apply_record(decoder: &mut record::Decoder, payload: &[u8]) {
    let Ok(rec) = decoder.decode(1, payload) else {
        return;
    };
    let mut shard = shard::Shard::default();
    for (id, _) in &rec.new_series {
        shard.head.register(*id);
    }
    for (id, samples) in &rec.samples {
        shard.head.append(*id, BLOCK_MS, samples);
    }
    for (id, samples) in &rec.samples {
        let (Some(lo), Some(hi)) = (
            samples.iter().map(|s| s.t).min(),
            samples.iter().map(|s| s.t).max(),
        ) else {
            continue;
        };
        let _ = shard.read(*id, lo, hi, BLOCK_MS);
    }
}

/// A fileset made from fuzz bytes, written into `dir` (created if needed;
/// its files are overwritten), opened and read whole.
///
/// Layout: flags byte; u16 LE length of `index.db`; `index.db`; with flag 4
/// the 40 checkpoint bytes; `data.db` (the rest). Without flag 4 the harness
/// writes a checkpoint that matches the files (so opening gets past the
/// checksums); flag 1 fixes up the index header's entry count, flag 2 the
/// per-chunk checksums, for the same reason.
pub fn fileset(dir: &Path, data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (ilen, rest) = match rest {
        [a, b, rest @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), rest),
        _ => return,
    };
    let (index_bytes, rest) = rest.split_at(ilen.min(rest.len()));
    let mut index_db = index_bytes.to_vec();
    let (cp, data_db) = if flags & 4 != 0 {
        let (cp, d) = rest.split_at(40.min(rest.len()));
        (Some(cp.to_vec()), d)
    } else {
        (None, rest)
    };
    if flags & 1 != 0 && index_db.len() >= 16 {
        index_db[..8].copy_from_slice(b"CAIRNFI2");
        let count = ((index_db.len() - 16) / 24) as u64;
        index_db[8..16].copy_from_slice(&count.to_le_bytes());
    }
    if flags & 2 != 0 && index_db.len() >= 16 {
        let mut start = 0usize;
        for e in index_db[16..].chunks_exact_mut(24) {
            let end = u32::from_le_bytes([e[16], e[17], e[18], e[19]]) as usize;
            if let Some(chunk) = data_db.get(start..end) {
                e[20..24].copy_from_slice(&crc32c::crc32c(chunk).to_le_bytes());
            }
            start = end;
        }
    }
    let cp = cp.unwrap_or_else(|| {
        let mut cp = Vec::with_capacity(40);
        cp.extend_from_slice(b"CAIRNCP1");
        cp.extend_from_slice(&(data_db.len() as u64).to_le_bytes());
        cp.extend_from_slice(&crc32c::crc32c(data_db).to_le_bytes());
        cp.extend_from_slice(&(index_db.len() as u64).to_le_bytes());
        cp.extend_from_slice(&crc32c::crc32c(&index_db).to_le_bytes());
        cp.extend_from_slice(&7u64.to_le_bytes());
        cp
    });
    std::fs::create_dir_all(dir).expect("creating the fuzz fileset dir");
    for (name, bytes) in [
        ("data.db", data_db),
        ("index.db", &index_db[..]),
        ("checkpoint", &cp[..]),
    ] {
        std::fs::write(dir.join(name), bytes).expect("writing a fuzz fileset file");
    }
    let Ok(Some(fs)) = fileset::Fileset::open(dir, 0, 0) else {
        return;
    };
    let n = fs.series_count();
    let mut ids: Vec<SeriesId> = Vec::new();
    for i in 0..n {
        match fs.raw(i) {
            Ok((id, _)) => ids.push(id),
            Err(_) => return,
        }
        let _ = fs.decode(i);
    }
    let _ = fs.read_all();
    // Ids are sorted in every fileset Cairn writes: then lookups find them,
    // from any starting point.
    if ids.windows(2).all(|w| w[0] < w[1]) {
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(fs.find(*id), Some(i), "find of entry {i}");
            assert_eq!(
                fs.find_from(*id, (i * 7) % n),
                Ok(i),
                "find_from of entry {i}"
            );
            let _ = fs.read(*id);
        }
    }
    let _ = fs.read(SeriesId(0));
    let _ = fs.read(SeriesId(u128::MAX));
}

/// A head snapshot's shard file made from the input, parsed as recovery
/// parses it (`snapshot::parse`, then `snapshot::samples` for every entry).
///
/// Layout: flags byte, then the file. With flag 1 the harness rewrites the
/// file's trailing CRC32C to match (so parsing gets past the checksum). The
/// expected segment, shard and shard count are read from the file's own
/// header (so parsing gets past that check too); the same bytes expected
/// as another segment are refused. What parses accounts for every byte.
pub fn head_snapshot(data: &[u8]) {
    let Some((&flags, file)) = data.split_first() else {
        return;
    };
    let mut file = file.to_vec();
    if flags & 1 != 0 && file.len() >= 4 {
        let body = file.len() - 4;
        let crc = crc32c::crc32c(&file[..body]);
        file[body..].copy_from_slice(&crc.to_le_bytes());
    }
    // The header's magic, segment, shard and shard count (zeros past the end).
    let mut h = [0u8; 24];
    let n = file.len().min(24);
    h[..n].copy_from_slice(&file[..n]);
    let covers = u64::from_le_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]);
    let shard = u32::from_le_bytes([h[16], h[17], h[18], h[19]]);
    let shards = u32::from_le_bytes([h[20], h[21], h[22], h[23]]);
    let path = Path::new("fuzz.snap");
    let Ok(parsed) = snapshot::parse(path, &file, covers, shard, shards) else {
        return;
    };
    assert!(
        snapshot::parse(path, &file, covers.wrapping_add(1), shard, shards).is_err(),
        "a snapshot of segment {covers} accepted as another"
    );
    // magic, covers, shard, shards, count; per entry id, block, length; crc.
    let used = 32 + parsed.entries.iter().map(|e| 28 + e.2.len()).sum::<usize>() + 4;
    assert_eq!(used, file.len(), "entries account for every byte");
    for (id, _, chunk) in &parsed.entries {
        let _ = snapshot::samples(path, *id, chunk);
    }
}

/// Index values: the whole input as a series registry entry, and the input
/// split at `|` bytes as postings values merged in order.
pub fn index_decode(data: &[u8]) {
    index::registry::fuzz_entry(data);
    let parts: Vec<&[u8]> = data.split(|&b| b == b'|').take(16).collect();
    index::postings::fuzz_postings(&parts);
}

/// A downsampled namespace's progress marker file (`downsample.rs`).
pub fn downsample_marker(data: &[u8]) {
    crate::downsample::fuzz_marker(data);
}

#[cfg(test)]
mod tests {
    fn replay(target: &str, f: impl Fn(&[u8])) {
        cairn_common::fuzz_replay::replay(env!("CARGO_MANIFEST_DIR"), target, f);
    }

    #[test]
    fn commitlog_record_corpus() {
        replay("commitlog_record", super::commitlog_record);
    }

    #[test]
    fn fileset_read_corpus() {
        let d = tempfile::tempdir().unwrap();
        replay("fileset_read", |b| super::fileset(d.path(), b));
    }

    /// Seed inputs for `fileset_read`, `codec_decode` and
    /// `commitlog_record` from the real writer (run by hand when the
    /// formats change).
    #[test]
    #[ignore = "writes seeds: cargo test -p cairn-storage --lib write_seeds -- --ignored"]
    fn write_seeds() {
        use cairn_common::{Sample, SeriesId};
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
        let series: Vec<Vec<Sample>> = vec![
            (0..20)
                .map(|i| Sample {
                    t: i * 15_000,
                    v: i as f64,
                })
                .collect(),
            (0..5)
                .map(|i| Sample {
                    t: 1_000 + i * 997,
                    v: 0.37 * i as f64,
                })
                .collect(),
            vec![
                Sample { t: -5, v: f64::NAN },
                Sample {
                    t: 7,
                    v: f64::INFINITY,
                },
            ],
            vec![Sample {
                t: i64::MAX - 1,
                v: -0.0,
            }],
        ];
        for (k, n) in [1usize, 2, 4].into_iter().enumerate() {
            let d = tempfile::tempdir().unwrap();
            let ss: Vec<(SeriesId, Vec<Sample>)> = series[..n]
                .iter()
                .enumerate()
                .map(|(i, s)| (SeriesId(i as u128 * 1000 + 1), s.clone()))
                .collect();
            super::fileset::write(d.path(), &ss, 3).unwrap();
            let index = std::fs::read(d.path().join("index.db")).unwrap();
            let data = std::fs::read(d.path().join("data.db")).unwrap();
            let mut input = vec![0u8];
            input.extend_from_slice(&(index.len() as u16).to_le_bytes());
            input.extend_from_slice(&index);
            input.extend_from_slice(&data);
            let out = root.join("fileset_read");
            std::fs::create_dir_all(&out).unwrap();
            std::fs::write(out.join(format!("seed-{k}")), &input).unwrap();
        }
        // Commit-log seeds: a segment of version 2 records from the real
        // write path (new series, then refs and coded values), and its
        // first record's payload alone.
        for (name, format) in [
            ("v2", crate::CommitLogFormat::default()),
            (
                "v2-plain",
                crate::CommitLogFormat::V2(crate::CommitLogCompression::None),
            ),
        ] {
            let f = crate::test_support::Fixture::new();
            let now = f.now.load(std::sync::atomic::Ordering::SeqCst);
            let store = f.open_with(|c| c.commitlog_format = format);
            for k in 0..4i64 {
                let series = (0..6)
                    .map(|i| {
                        let v = [k as f64 * 10.0, 1.25 + k as f64, 42.0, f64::NAN, 1e300, 0.5][i];
                        let t = now + k * 15_000 + (i as i64 % 2) * 3;
                        (
                            crate::test_support::labels("m", &format!("j{i}")),
                            vec![(t, v), (t + 1, v)][..1 + i % 2].to_vec(),
                        )
                    })
                    .collect();
                use cairn_common::SampleWriter;
                store
                    .write("t", crate::test_support::batch(series))
                    .unwrap();
            }
            store.close().unwrap();
            let seg = crate::test_support::seg_files(f.dir.path())
                .into_iter()
                .find(|p| std::fs::metadata(p).unwrap().len() > 8)
                .unwrap();
            let seg = std::fs::read(seg).unwrap();
            let out = root.join("commitlog_record");
            std::fs::write(out.join(format!("seed-{name}-segment")), &seg).unwrap();
            let (first, _) = super::commitlog::next_record(&seg, 8).unwrap();
            std::fs::write(out.join(format!("seed-{name}-record")), first).unwrap();
        }
        let out = root.join("codec_decode");
        std::fs::create_dir_all(&out).unwrap();
        for (k, s) in series.iter().enumerate() {
            let chunk = super::fileset::encode(s).unwrap();
            std::fs::write(out.join(format!("seed-{k}")), chunk).unwrap();
        }
    }

    #[test]
    fn downsample_marker_parse_corpus() {
        replay("downsample_marker_parse", super::downsample_marker);
    }

    #[test]
    fn index_decode_corpus() {
        replay("index_decode", super::index_decode);
    }

    #[test]
    fn head_snapshot_parse_corpus() {
        replay("head_snapshot_parse", super::head_snapshot);
    }

    /// Seed inputs for `head_snapshot_parse`: shard files from the real
    /// snapshot writer, behind a flags byte of 0 (their checksums are
    /// right). Run by hand when the format changes.
    #[test]
    #[ignore = "writes seeds: cargo test -p cairn-storage --lib write_head_snapshot_seeds -- --ignored"]
    fn write_head_snapshot_seeds() {
        use cairn_common::SeriesId;
        let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/corpus/head_snapshot_parse");
        std::fs::create_dir_all(&out).unwrap();
        let chunk = |s: &[(i64, f64)]| cairn_codec::encode_all(s).unwrap();
        let shards: Vec<super::snapshot::ShardChunks> = vec![
            vec![],
            vec![(SeriesId(7), 0, chunk(&[(1, 1.0), (2, f64::NAN)]))],
            vec![
                (
                    SeriesId(1),
                    0,
                    chunk(&[(5, 0.5), (15_005, 1.5), (30_005, 2.5)]),
                ),
                (SeriesId(1), 7_200_000, chunk(&[(7_200_001, -0.0)])),
                (
                    SeriesId(u128::MAX),
                    -7_200_000,
                    chunk(&[(-5, f64::INFINITY), (-1, 1e300)]),
                ),
            ],
        ];
        let d = tempfile::tempdir().unwrap();
        super::snapshot::write(d.path(), 42, &shards).unwrap();
        for (k, (_, bytes)) in super::snapshot::read(d.path(), 42, 3)
            .unwrap()
            .into_iter()
            .enumerate()
        {
            let mut input = vec![0u8];
            input.extend_from_slice(&bytes);
            std::fs::write(out.join(format!("seed-{k}")), &input).unwrap();
        }
    }
}
