//! Recovery: the state a node starts from. Known series from the index →
//! the complete filesets of each shard (incomplete ones deleted) → the
//! newest head snapshot that checks out, loaded into the head in parallel
//! across shards (its blocks that a fileset flushed after it holds are
//! skipped) → the commit log after the snapshot replayed into the head
//! (torn tails skipped; samples a fileset already holds not re-applied, so
//! an older value cannot come back; samples outside the storable range
//! dropped).

use crate::commitlog::CommitLog;
use crate::config::StorageConfig;
use crate::error::Error;
use crate::error::Result;
use crate::index::Index;
use crate::metrics::Metrics;
use crate::namespace::{block_start, Namespace};
use crate::shard::Shard;
use crate::{fileset, record, snapshot};
use cairn_common::limits::hard;
use cairn_common::{Labels, Sample, SeriesId};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// Loads the shards of namespace `ns` (filesets under `ns_root`) and
/// replays the commit log into them and into `index`; returns them with
/// the open log. Replay counters go to `metrics`; `started` is when the
/// node's open began (the log line reports the time since).
pub(crate) fn recover(
    started: Instant,
    cfg: &StorageConfig,
    ns: &Namespace,
    ns_root: &Path,
    index: &Index,
    metrics: &Metrics,
) -> Result<(Vec<Shard>, Arc<CommitLog>)> {
    let block_ms = ns.block_ms();
    let num_shards = cfg.num_shards.max(1);
    let mut shards: Vec<Shard> = (0..num_shards).map(|_| Shard::default()).collect();
    for id in index.all_series_ids()? {
        shards[id.shard(num_shards) as usize].head.register(id);
    }
    for (shard, fs) in fileset::load_all(ns_root)? {
        if let Some(s) = shards.get_mut(shard as usize) {
            s.filesets.insert(fs.block_start, Arc::new(fs));
        }
    }
    let snaps = snapshot::root(&cfg.data_dir);
    let mut replay_after = 0u64;
    let snapshot_started = Instant::now();
    for covers in snapshot::list(&snaps)? {
        match load_snapshot(&snaps, covers, &mut shards, block_ms, metrics) {
            Ok(()) => {
                replay_after = covers;
                break;
            }
            Err(e) if cfg.strict_replay => {
                return Err(Error::Corrupt(format!(
                    "{e} (storage.strict-replay refuses to start; set it to false to fall back to an older snapshot)"
                )))
            }
            Err(e) => tracing::error!(
                %e,
                "head snapshot unusable; falling back to an older one (or none) and a longer commit-log replay"
            ),
        }
    }
    let snapshot_ms = snapshot_started.elapsed().as_millis() as u64;
    let replay_started = Instant::now();
    let mut replayed = 0u64;
    let mut skipped = 0u64;
    let mut pending = Pending::new(shards.len());
    let mut out_of_range = 0u64;
    let mut lost = 0u64;
    let mut decoder = record::Decoder::default();
    let min_next = shards
        .iter()
        .flat_map(|s| s.filesets.values().map(|f| f.log_upto + 1))
        .max()
        .unwrap_or(1)
        .max(replay_after + 1);
    let (log, stats) = CommitLog::open(
        &cfg.data_dir.join("commitlog"),
        cfg.fsync,
        cfg.max_segment_bytes,
        min_next,
        replay_after,
        cfg.strict_replay,
        |seg, payload| {
            let rec = decoder.decode(seg, payload)?;
            if rec.lost_samples > 0 {
                lost += rec.lost_samples;
                tracing::error!(
                    segment = seg,
                    samples = rec.lost_samples,
                    "commit log samples lost on replay: they depend on a damaged record before them in the segment"
                );
            }
            let refs: Vec<(SeriesId, &Labels)> =
                rec.new_series.iter().map(|(i, l)| (*i, l)).collect();
            index.add_replayed_series(&rec.tenant, &refs)?;
            let mut blocks = BTreeSet::new();
            for (id, _) in &rec.new_series {
                shards[id.shard(num_shards) as usize].head.register(*id);
            }
            for (id, samples) in &rec.samples {
                let k = id.shard(num_shards) as usize;
                let shard = &shards[k];
                // Samples a fileset already holds are not replayed: the
                // fileset may hold a newer value for the same timestamp.
                // Samples outside the storable range (written before it
                // was enforced) are dropped: no read could reach them.
                let into = &mut pending.per_shard[k];
                let before = into.len();
                for s in samples {
                    if s.t < hard::MIN_TIME_MS || s.t > hard::MAX_TIME_MS {
                        out_of_range += 1;
                        continue;
                    }
                    let b = block_start(s.t, block_ms);
                    if shard.filesets.get(&b).is_some_and(|f| f.log_upto >= seg) {
                        skipped += 1;
                        continue;
                    }
                    blocks.insert(b);
                    into.push((*id, *s));
                }
                replayed += (into.len() - before) as u64;
            }
            pending.len += rec.samples.len();
            if pending.len >= REPLAY_BATCH {
                pending.apply(&mut shards, block_ms);
            }
            index.put_replayed_exemplars(&rec.exemplars)?;
            index.put_metadata(&rec.tenant, &rec.metadata)?;
            Ok(blocks)
        },
    )?;
    pending.apply(&mut shards, block_ms);
    metrics.commitlog_records_replayed.inc_by(stats.records);
    metrics
        .commitlog_records_skipped
        .inc_by(stats.skipped_records);
    metrics.commitlog_samples_lost.inc_by(lost);
    if out_of_range > 0 {
        tracing::warn!(
            samples = out_of_range,
            "commit log held samples outside the storable time range; dropped on replay"
        );
    }
    tracing::info!(
        snapshot_covers_segment = replay_after,
        snapshot_buffers = metrics.snapshot_buffers_loaded.get(),
        snapshot_ms,
        replay_ms = replay_started.elapsed().as_millis() as u64,
        records = stats.records,
        samples = replayed,
        samples_already_flushed = skipped,
        torn_segments = stats.torn_segments,
        corrupt_records_skipped = stats.skipped_records,
        samples_lost_after_them = lost,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "recovery complete"
    );
    Ok((shards, log))
}

/// Samples replayed before they are applied: a record holds one or a few
/// samples of each of thousands of series, so applying record by record
/// costs a cache miss or three per sample (the series' entry, its
/// buffers, its encoder). Gathered per shard and sorted by series (stably:
/// a later write of a timestamp stays later), each series takes many
/// samples at once, and shards are applied in parallel.
struct Pending {
    per_shard: Vec<Vec<(SeriesId, Sample)>>,
    /// Series-sample runs gathered (a cheap measure of the batch).
    len: usize,
}

/// Series-sample runs gathered before they are applied.
const REPLAY_BATCH: usize = 1 << 20;

impl Pending {
    fn new(shards: usize) -> Self {
        Self {
            per_shard: (0..shards).map(|_| Vec::new()).collect(),
            len: 0,
        }
    }

    fn apply(&mut self, shards: &mut [Shard], block_ms: i64) {
        self.len = 0;
        let threads = std::thread::available_parallelism()
            .map_or(1, |p| p.get())
            .clamp(1, 8);
        let per = shards.len().div_ceil(threads).max(1);
        std::thread::scope(|sc| {
            for (part, bufs) in shards.chunks_mut(per).zip(self.per_shard.chunks_mut(per)) {
                sc.spawn(move || {
                    let mut run: Vec<Sample> = Vec::new();
                    for (shard, buf) in part.iter_mut().zip(bufs.iter_mut()) {
                        buf.sort_by_key(|(id, _)| *id);
                        let mut i = 0;
                        while i < buf.len() {
                            let id = buf[i].0;
                            run.clear();
                            while i < buf.len() && buf[i].0 == id {
                                run.push(buf[i].1);
                                i += 1;
                            }
                            shard.head.append(id, block_ms, &run);
                        }
                        buf.clear();
                    }
                });
            }
        });
    }
}

/// Loads head snapshot `covers` into `shards`: every shard's file is read
/// and checked first (so a damaged snapshot changes nothing and an older
/// one can be tried), then applied, shards in parallel. A block a fileset
/// holds from a flush after the snapshot (its `log_upto` at or past
/// `covers`) is skipped: the fileset has all of it.
fn load_snapshot(
    root: &Path,
    covers: u64,
    shards: &mut [Shard],
    block_ms: i64,
    metrics: &Metrics,
) -> Result<()> {
    let n = shards.len() as u32;
    let files = snapshot::read(root, covers, n)?;
    for (i, (path, bytes)) in files.iter().enumerate() {
        snapshot::parse(path, bytes, covers, i as u32, n)?;
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, |p| p.get())
        .clamp(1, 8);
    let per = shards.len().div_ceil(threads).max(1);
    let loaded = std::sync::atomic::AtomicU64::new(0);
    let lost = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|sc| {
        for (k, part) in shards.chunks_mut(per).enumerate() {
            let files = &files;
            let (loaded, lost) = (&loaded, &lost);
            sc.spawn(move || {
                for (j, shard) in part.iter_mut().enumerate() {
                    let i = k * per + j;
                    let (path, bytes) = &files[i];
                    // Checked above.
                    let Ok(parsed) = snapshot::parse(path, bytes, covers, i as u32, n) else {
                        continue;
                    };
                    for (id, block, chunk) in parsed.entries {
                        if shard
                            .filesets
                            .get(&block)
                            .is_some_and(|f| f.log_upto >= covers)
                        {
                            continue;
                        }
                        match snapshot::samples(path, id, chunk) {
                            Ok(v) => {
                                shard.head.register(id);
                                shard.head.append(id, block_ms, &v);
                                loaded.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            // The checksum matched, so only a bug gets here.
                            Err(e) => {
                                lost.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                tracing::error!(%e, "head snapshot chunk lost");
                            }
                        }
                    }
                }
            });
        }
    });
    metrics.snapshot_buffers_loaded.inc_by(loaded.into_inner());
    let lost = lost.into_inner();
    if lost > 0 {
        return Err(Error::Corrupt(format!(
            "head snapshot {}: {lost} chunks failed to decode",
            root.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::enc::{self, put_bytes};
    use crate::record::VERSION_1 as RECORD_VERSION;
    use crate::test_support::*;
    use crate::{system_clock, Storage, StorageConfig};
    use cairn_common::limits::hard;
    use cairn_common::{Label, Labels, SampleWriter, SeriesId};
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    #[test]
    fn overwrite_survives_replay_of_older_segment() {
        let f = Fixture::new();
        let now = f.now.load(Ordering::SeqCst);
        let s = f.open();
        let x = labels("m", "x");
        let old_t = now - 5 * DAY;
        // Segment 1: the old sample plus one in the open window (keeps segment 1 alive).
        s.write(
            "t",
            batch(vec![(x.clone(), vec![(old_t, 1.0), (now, 7.0)])]),
        )
        .unwrap();
        s.flush(false).unwrap();
        // Last write wins: the overwrite lands in a new volume of the old block.
        s.write("t", batch(vec![(x.clone(), vec![(old_t, 2.0)])]))
            .unwrap();
        s.flush(false).unwrap();
        assert!(
            s.disk_stats().0 .0 >= 2,
            "segment 1 must still exist for the open window"
        );
        s.close().unwrap();
        drop(s);
        let s = f.open();
        let got = read(&s, "t", "m");
        assert_eq!(
            got[0].1,
            vec![(old_t, 2.0f64.to_bits()), (now, 7.0f64.to_bits())]
        );
    }

    /// A commit-log record written by the release before the hard bounds,
    /// at its decoder's limits (10,000 labels; a 5 KiB name and a 100 KiB
    /// value), with an exemplar beyond the bounds too, replays after the
    /// upgrade: the series and its sample are there, the index holds it
    /// (also after a restart that finds it already registered), nothing is
    /// skipped, strict replay starts, and the series takes new samples.
    #[test]
    fn record_at_the_old_decoder_limits_replays() {
        let f = Fixture::new();
        let now = f.now.load(Ordering::SeqCst);
        let mut v: Vec<Label> = (0..9_997)
            .map(|i| Label::new(format!("l{i:05}"), "x"))
            .collect();
        v.push(Label::new(
            format!("m{}", "n".repeat(5 * 1024)),
            "long name",
        ));
        v.push(Label::new("n", "v".repeat(100 * 1024)));
        let mut with_name = vec![Label::new("__name__", "old")];
        with_name.extend(v);
        let big = Labels::from_sorted_unchecked(with_name);
        assert_eq!(big.len(), 10_000);
        assert!(
            enc::labels_unstorable(big.iter().map(|l| (l.name.as_str(), l.value.as_str())))
                .is_some()
        );
        let ex_labels = label_set(hard::MAX_LABELS + 1, &[6], &[1], "");
        let id = SeriesId::of("t", &big);
        let mut p = vec![RECORD_VERSION];
        put_bytes(&mut p, b"t");
        enc::put_uvarint(&mut p, 1);
        p.extend_from_slice(&id.to_be_bytes());
        put_labels_raw(&mut p, &big);
        enc::put_uvarint(&mut p, 1);
        p.extend_from_slice(&id.to_be_bytes());
        enc::put_uvarint(&mut p, 1);
        enc::put_varint(&mut p, now);
        p.extend_from_slice(&7.0f64.to_bits().to_le_bytes());
        enc::put_uvarint(&mut p, 1);
        p.extend_from_slice(&id.to_be_bytes());
        enc::put_varint(&mut p, now);
        p.extend_from_slice(&1.5f64.to_bits().to_le_bytes());
        put_labels_raw(&mut p, &ex_labels);
        enc::put_uvarint(&mut p, 0);
        let mut seg = b"CAIRNCL1".to_vec();
        seg.extend_from_slice(&(p.len() as u32).to_le_bytes());
        seg.extend_from_slice(&crc32c::crc32c(&p).to_le_bytes());
        seg.extend_from_slice(&p);
        let cl = f.dir.path().join("commitlog");
        std::fs::create_dir_all(&cl).unwrap();
        std::fs::write(cl.join(format!("{:016}.log", 1)), &seg).unwrap();
        for strict in [false, true] {
            let mut cfg = StorageConfig::new(f.dir.path());
            cfg.num_shards = 4;
            cfg.strict_replay = strict;
            let clock = f.now.clone();
            let s = Storage::open(cfg, Arc::new(move || clock.load(Ordering::SeqCst))).unwrap();
            assert_eq!(s.metrics.commitlog_records_skipped.get(), 0);
            let got = read(&s, "t", "old");
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].0, big.to_string());
            let mut want = vec![(now, 7.0f64.to_bits())];
            if strict {
                want.push((now + 1, 8.0f64.to_bits()));
            }
            assert_eq!(got[0].1, want);
            let ex = s.index.exemplars(id, now, now).unwrap();
            assert_eq!(ex.len(), 1);
            assert_eq!(ex[0].labels, ex_labels);
            assert_eq!(s.index.skipped_entries(), 0);
            // The series takes new samples (its labels are not encoded
            // again); they replay at the next start.
            if !strict {
                let out = s
                    .write("t", batch(vec![(big.clone(), vec![(now + 1, 8.0)])]))
                    .unwrap();
                assert_eq!(out.accepted_samples, 1);
            }
            s.close().unwrap();
        }
    }

    /// Damaged commit-log records (bad checksum mid-segment; checksum fine
    /// but undecodable) are skipped and counted, the store opens with the
    /// rest; strict replay refuses to open, naming segment and offset.
    #[test]
    fn corrupt_commit_log_records_are_skipped_and_counted() {
        let f = Fixture::new();
        let now = f.now.load(Ordering::SeqCst);
        let s = f.open();
        for i in 0..4 {
            s.write(
                "t",
                batch(vec![(labels("c", &format!("j{i}")), vec![(now, i as f64)])]),
            )
            .unwrap();
        }
        s.close().unwrap();
        drop(s);
        let seg = seg_files(f.dir.path())
            .into_iter()
            .find(|p| std::fs::metadata(p).unwrap().len() > 8)
            .unwrap();
        let mut bytes = std::fs::read(&seg).unwrap();
        // Record boundaries.
        let mut starts = Vec::new();
        let mut pos = 8;
        while pos < bytes.len() {
            starts.push(pos);
            let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
            pos += 8 + len;
        }
        assert_eq!(starts.len(), 4);
        // Record 1: a payload byte flipped (checksum mismatch).
        bytes[starts[1] + 12] ^= 0x55;
        // Record 2: a valid checksum over a payload that does not decode.
        let junk = [RECORD_VERSION, 0xff, 0xff, 0xff];
        let mut framed = (junk.len() as u32).to_le_bytes().to_vec();
        framed.extend_from_slice(&crc32c::crc32c(&junk).to_le_bytes());
        framed.extend_from_slice(&junk);
        let mut rebuilt = bytes[..starts[2]].to_vec();
        rebuilt.extend_from_slice(&framed);
        rebuilt.extend_from_slice(&bytes[starts[3]..]);
        std::fs::write(&seg, &rebuilt).unwrap();
        let s = f.open();
        let got: Vec<String> = read(&s, "t", "c").into_iter().map(|x| x.0).collect();
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].contains("j0") && got[1].contains("j3"), "{got:?}");
        assert_eq!(s.metrics.commitlog_records_skipped.get(), 2);
        let text = crate::metrics::render(&s);
        assert!(
            text.contains("cairn_storage_commitlog_records_skipped_total 2"),
            "{text}"
        );
        drop(s);
        let mut cfg = StorageConfig::new(f.dir.path());
        cfg.num_shards = 4;
        cfg.strict_replay = true;
        let e = match Storage::open(cfg, system_clock()) {
            Ok(_) => panic!("strict replay opened a damaged log"),
            Err(e) => e.to_string(),
        };
        assert!(
            e.contains(&seg.display().to_string()) && e.contains("strict-replay"),
            "{e}"
        );
    }

    /// Replays the whole store and returns every series of metric `m`.
    pub(super) fn all(s: &Storage) -> Vec<(String, Vec<(i64, u64)>)> {
        let mut v = read(s, "t", "m");
        v.sort();
        v
    }

    /// A node-exporter-like value: counters going up, gauges of 2-3 digits,
    /// some constant, now and then a NaN (staleness) or -0.0.
    fn value(series: usize, k: i64) -> f64 {
        match series % 5 {
            0 => (1_000_000 + series as i64 * 37 + k * (series as i64 % 9)) as f64,
            1 => (12_345_600 + k * 3 + series as i64) as f64 / 100.0,
            2 => ((series as i64 * 13 + k * 7) % 900 + 100) as f64 / 1000.0,
            3 => 42.0,
            _ => [1.5e9, f64::NAN, -0.0, 0.1 + 0.2][(k as usize + series) % 4],
        }
    }

    /// Version 2 logs replay to what the head held: four writers at once
    /// on overlapping series (refs and previous values follow the order
    /// records land in), segments rotated by size and by forced flushes
    /// mid-run, a restart, then a torn last record, which loses exactly
    /// that write.
    #[test]
    fn v2_log_replays_across_rotations_concurrent_writers_and_a_torn_tail() {
        let f = Fixture::new();
        let now = f.now.load(Ordering::SeqCst);
        let s = f.open_with(|c| c.max_segment_bytes = 4 << 10);
        std::thread::scope(|sc| {
            for w in 0..4usize {
                let s = &s;
                sc.spawn(move || {
                    for k in 0..40i64 {
                        let series: Vec<(Labels, Vec<(i64, f64)>)> = (0..60)
                            .map(|i| {
                                let i = (i + w * 20) % 100;
                                let t = now + k * 15_000 + w as i64;
                                (labels("m", &format!("s{i}")), vec![(t, value(i, k))])
                            })
                            .collect();
                        s.write("t", batch(series)).unwrap();
                        // Forced flushes mid-run, however fast the machine:
                        // one writer flushes between its own writes (the
                        // others may be writing or done).
                        if w == 0 && k % 10 == 9 && k < 39 {
                            s.flush(true).unwrap();
                        }
                    }
                });
            }
        });
        // Segments are numbered from 1, so the newest one's number counts
        // the segments started (a flush removes those it made redundant):
        // more than the three flushes alone would start, so the size
        // rotated some too.
        let newest = seg_files(f.dir.path()).pop().unwrap();
        let newest: u64 = newest
            .file_stem()
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(newest > 4, "segments started: {newest}");
        let before = all(&s);
        assert_eq!(before.len(), 100);
        s.close().unwrap();
        drop(s);
        let s = f.open();
        assert_eq!(s.metrics.commitlog_records_skipped.get(), 0);
        assert_eq!(all(&s), before);
        // One more write, its record torn.
        let last: Vec<(Labels, Vec<(i64, f64)>)> = (0..100)
            .map(|i| {
                (
                    labels("m", &format!("s{i}")),
                    vec![(now + 3_600_000, value(i, 99))],
                )
            })
            .collect();
        s.write("t", batch(last)).unwrap();
        s.close().unwrap();
        drop(s);
        let seg = seg_files(f.dir.path()).pop().unwrap();
        let len = std::fs::metadata(&seg).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let s = f.open();
        assert_eq!(s.metrics.commitlog_records_skipped.get(), 0);
        assert_eq!(all(&s), before);
        s.close().unwrap();
    }

    /// A log written in version 1 (by this release's version 1 encoder, as
    /// releases before version 2 wrote it) replays after the upgrade; new
    /// writes go to a new segment in version 2, and both replay at the next
    /// start.
    #[test]
    fn a_v1_log_replays_and_v2_follows_it() {
        let f = Fixture::new();
        let now = f.now.load(Ordering::SeqCst);
        let write = |s: &Storage, k: i64| {
            let series = (0..20)
                .map(|i| {
                    (
                        labels("m", &format!("s{i}")),
                        vec![(now + k * 15_000, value(i, k))],
                    )
                })
                .collect();
            s.write("t", batch(series)).unwrap();
        };
        let s = f.open_with(|c| c.commitlog_format = crate::CommitLogFormat::V1);
        for k in 0..5 {
            write(&s, k);
        }
        s.close().unwrap();
        drop(s);
        let seg = seg_files(f.dir.path())
            .into_iter()
            .find(|p| std::fs::metadata(p).unwrap().len() > 8)
            .unwrap();
        let bytes = std::fs::read(&seg).unwrap();
        assert_eq!(bytes[16], RECORD_VERSION, "the first record is version 1");
        let s = f.open();
        let v1 = all(&s);
        assert_eq!(v1.len(), 20);
        assert!(v1.iter().all(|x| x.1.len() == 5));
        for k in 5..10 {
            write(&s, k);
        }
        let both = all(&s);
        s.close().unwrap();
        drop(s);
        let last = seg_files(f.dir.path())
            .into_iter()
            .rfind(|p| std::fs::metadata(p).unwrap().len() > 8)
            .unwrap();
        assert_eq!(std::fs::read(&last).unwrap()[16], crate::record::VERSION_2);
        let s = f.open();
        assert_eq!(all(&s), both);
        assert!(both.iter().all(|x| x.1.len() == 10));
        s.close().unwrap();
    }

    /// A v2 record damaged mid-segment is skipped; the records after it
    /// replay, each sample that depended on it (a value coded against one
    /// replay never saw) is dropped and counted, every sample replayed is
    /// the one written, and within a keyframe interval every series is
    /// whole again.
    #[test]
    fn a_damaged_v2_record_loses_only_what_depends_on_it() {
        let f = Fixture::new();
        let now = f.now.load(Ordering::SeqCst);
        let s = f.open();
        for k in 0..80 {
            let series = (0..20)
                .map(|i| {
                    (
                        labels("m", &format!("s{i}")),
                        vec![(now + k * 15_000, value(i, k))],
                    )
                })
                .collect();
            s.write("t", batch(series)).unwrap();
        }
        let before = all(&s);
        s.close().unwrap();
        drop(s);
        let seg = seg_files(f.dir.path())
            .into_iter()
            .find(|p| std::fs::metadata(p).unwrap().len() > 8)
            .unwrap();
        let mut bytes = std::fs::read(&seg).unwrap();
        let mut pos = 8;
        for _ in 0..5 {
            pos += 8 + u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        }
        bytes[pos + 12] ^= 0x55;
        std::fs::write(&seg, &bytes).unwrap();
        let s = f.open();
        assert_eq!(s.metrics.commitlog_records_skipped.get(), 1);
        let lost = s.metrics.commitlog_samples_lost.get();
        assert!((1..=20 * 31).contains(&lost), "{lost}");
        let got = all(&s);
        assert_eq!(got.len(), before.len());
        let mut replayed = 0;
        for ((name, a), (name_b, b)) in got.iter().zip(&before) {
            assert_eq!(name, name_b);
            assert!(
                a.iter().all(|x| b.contains(x)),
                "{name}: a sample never written"
            );
            // The last 40 scrapes are all there.
            assert_eq!(a[a.len() - 40..], b[b.len() - 40..], "{name}");
            replayed += a.len() as u64;
        }
        assert_eq!(replayed, 80 * 20 - 20 - lost);
        let text = crate::metrics::render(&s);
        assert!(
            text.contains(&format!(
                "cairn_storage_commitlog_samples_lost_total {lost}"
            )),
            "{text}"
        );
        s.close().unwrap();
    }
}

/// Head snapshots at recovery: what loads, what is replayed after it, and
/// what happens when a snapshot is damaged or interrupted.
#[cfg(test)]
mod snapshot_tests {
    use super::tests::all;
    use crate::test_support::*;
    use crate::Storage;
    use cairn_common::SampleWriter;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Duration;

    fn open_snapshotting(f: &Fixture) -> Arc<Storage> {
        f.open_with(|c| c.snapshot_interval = Duration::from_secs(600))
    }

    /// `k`-th scrape of 50 series at `t`.
    fn scrape(s: &Storage, t: i64, k: i64) {
        let series = (0..50)
            .map(|i| {
                (
                    labels("m", &format!("s{i}")),
                    vec![(t, (i * 1000 + k) as f64)],
                )
            })
            .collect();
        s.write("t", batch(series)).unwrap();
    }

    fn snapshot_dirs(f: &Fixture) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(f.dir.path().join("snapshots"))
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().to_string_lossy().to_string())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// A crash (the store dropped without `close`) after a snapshot: the
    /// restart loads it and replays only the records after it, and ends
    /// with exactly what the head held — out-of-order samples, overwrites
    /// before and after the snapshot, and a flush after it included.
    #[test]
    fn a_restart_loads_the_snapshot_and_replays_only_what_came_after() {
        let f = Fixture::new();
        let now = f.now.load(Ordering::SeqCst);
        let s = open_snapshotting(&f);
        for k in 0..20 {
            scrape(&s, now + k * 15_000, k);
        }
        // Out of order, and an overwrite, inside the snapshot.
        s.write("t", batch(vec![(labels("m", "s1"), vec![(now + 1, 0.5)])]))
            .unwrap();
        s.write("t", batch(vec![(labels("m", "s2"), vec![(now, -1.0)])]))
            .unwrap();
        let covered = s.snapshot().unwrap();
        assert!(covered > 0);
        assert_eq!(s.metrics.snapshots.get(), 1);
        // After it: more scrapes and an overwrite of a sample it holds.
        for k in 20..25 {
            scrape(&s, now + k * 15_000, k);
        }
        s.write(
            "t",
            batch(vec![(labels("m", "s3"), vec![(now + 15_000, 9.0)])]),
        )
        .unwrap();
        let before = all(&s);
        drop(s);
        let s = open_snapshotting(&f);
        assert_eq!(all(&s), before);
        assert_eq!(s.metrics.commitlog_records_replayed.get(), 6);
        assert_eq!(s.metrics.snapshot_buffers_loaded.get(), 50);
        // A flush after a second snapshot puts the block in a fileset that
        // covers it: a restart takes the block from the fileset, not twice.
        // An overwrite of a sample the snapshot holds lands in the fileset
        // only: loading the snapshot's block would bring the old value back.
        s.snapshot().unwrap();
        s.write("t", batch(vec![(labels("m", "s4"), vec![(now, 7.0)])]))
            .unwrap();
        s.flush(true).unwrap();
        s.write("t", batch(vec![(labels("m", "s5"), vec![(now, 8.0)])]))
            .unwrap();
        let before = all(&s);
        drop(s);
        let s = open_snapshotting(&f);
        assert_eq!(all(&s), before);
        assert_eq!(s.metrics.snapshot_buffers_loaded.get(), 0);
        // Only the newest two snapshots stay.
        s.snapshot().unwrap();
        assert_eq!(snapshot_dirs(&f).len(), 2, "{:?}", snapshot_dirs(&f));
        // With nothing written since, a snapshot is the newest one again:
        // the log is not sealed (a new segment would declare every series
        // again).
        let segs = seg_files(f.dir.path());
        let newest = s.snapshot().unwrap();
        assert_eq!(s.snapshot().unwrap(), newest);
        assert_eq!(seg_files(f.dir.path()), segs);
        s.close().unwrap();
    }

    /// Segments the previous snapshot covers are deleted; a graceful close
    /// takes a snapshot, so the next start replays nothing.
    #[test]
    fn snapshots_bound_the_log_and_close_takes_one() {
        let f = Fixture::new();
        let now = f.now.load(Ordering::SeqCst);
        let s = open_snapshotting(&f);
        for round in 0..4 {
            for k in 0..10 {
                scrape(&s, now + (round * 10 + k) * 15_000, k);
            }
            s.snapshot().unwrap();
        }
        // Segments up to the one before the last snapshot are gone: the
        // last snapshot's, the one after it and the active one remain.
        let segs = seg_files(f.dir.path());
        assert!(segs.len() <= 3, "{segs:?}");
        let before = all(&s);
        s.close().unwrap();
        drop(s);
        let s = open_snapshotting(&f);
        assert_eq!(all(&s), before);
        assert_eq!(s.metrics.commitlog_records_replayed.get(), 0);
        s.close().unwrap();
    }

    /// A newest snapshot that fails its checksum falls back to the one
    /// before it and the log after that (nothing lost); with strict replay
    /// the start is refused, naming the file. An interrupted snapshot
    /// (`.tmp`) is ignored and removed.
    #[test]
    fn a_damaged_snapshot_falls_back_and_an_interrupted_one_is_ignored() {
        let f = Fixture::new();
        let now = f.now.load(Ordering::SeqCst);
        let s = open_snapshotting(&f);
        for k in 0..10 {
            scrape(&s, now + k * 15_000, k);
        }
        s.snapshot().unwrap();
        for k in 10..20 {
            scrape(&s, now + k * 15_000, k);
        }
        s.snapshot().unwrap();
        scrape(&s, now + 20 * 15_000, 20);
        let before = all(&s);
        drop(s);
        let dirs = snapshot_dirs(&f);
        assert_eq!(dirs.len(), 2);
        let newest = f.dir.path().join("snapshots").join(&dirs[1]);
        let file = newest.join("00002.snap");
        let mut bytes = std::fs::read(&file).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 1;
        std::fs::write(&file, &bytes).unwrap();
        std::fs::create_dir_all(f.dir.path().join("snapshots/0000000000009999.tmp")).unwrap();

        let cfg = |c: &mut crate::StorageConfig| {
            c.snapshot_interval = Duration::from_secs(600);
            c.strict_replay = true;
            c.num_shards = 4;
        };
        let now_c = f.now.clone();
        let mut strict = crate::StorageConfig::new(f.dir.path());
        cfg(&mut strict);
        let e = Storage::open(strict, Arc::new(move || now_c.load(Ordering::SeqCst)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("00002.snap") && e.contains("checksum"), "{e}");

        let s = open_snapshotting(&f);
        assert_eq!(all(&s), before);
        // The older snapshot was loaded, then 11 records replayed.
        assert_eq!(s.metrics.commitlog_records_replayed.get(), 11);
        assert!(!f.dir.path().join("snapshots/0000000000009999.tmp").exists());
        s.close().unwrap();
    }
}
