//! A shard: the unit placement moves. It holds its head (buffers,
//! [`crate::head`]), its filesets (the highest complete volume of each
//! block window), the blocks detached from the head while their flush is
//! writing them, the flush of one block, and reads merged across all three
//! (per block; the newer source wins on equal timestamps: head over
//! in-flight flush over fileset).

use crate::error::{Error, Result};
use crate::fileset::{self, Fileset};
use crate::head::{merge_newer_wins, BlockBuf, Head};
use crate::namespace::{block_end, block_start};
use cairn_common::{IdMap, Sample, SeriesId};
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

/// Block buffers detached from the head while they are written to a
/// fileset; reads still see them until the fileset is in place.
pub type Flushing = Arc<IdMap<BlockBuf>>;

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard").finish_non_exhaustive()
    }
}

#[derive(Default)]
pub struct Shard {
    pub head: Head,
    pub flushing: Vec<(i64, Flushing)>,
    pub filesets: BTreeMap<i64, Arc<Fileset>>,
    /// What the shard took per block window since the node opened.
    pub sums: WriteSums,
}

/// Per block window, the wrapping sum of a hash of (series, time, value)
/// over every sample this node took into the window since it opened: two
/// replicas that took the same samples have the same sums, whatever order
/// they came in and however they are stored, so a read can tell they hold
/// the same without reading them. A window that held data when the node
/// opened (recovered: taken before the counting began) or lost data since
/// (retention) is unknown. A sample taken twice counts twice (the sums
/// then differ though the data does not: a read only reads more).
#[derive(Debug, Default)]
pub struct WriteSums {
    sums: BTreeMap<i64, u64>,
    /// Windows starting at or before this are unknown.
    unknown_upto: Option<i64>,
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl WriteSums {
    /// Counts `samples` of series `id` in.
    pub fn add(&mut self, id: SeriesId, block_ms: i64, samples: &[Sample]) {
        let seed = mix(id.0 as u64 ^ mix((id.0 >> 64) as u64));
        let mut i = 0;
        while i < samples.len() {
            let w = block_start(samples[i].t, block_ms);
            let end = block_end(w, block_ms);
            let sum = self.sums.entry(w).or_insert(0);
            while i < samples.len() && samples[i].t >= w && samples[i].t < end {
                let s = samples[i];
                *sum = sum.wrapping_add(mix(seed ^ mix(s.t as u64 ^ mix(s.v.to_bits()))));
                i += 1;
            }
        }
    }

    /// Makes every window starting at or before `w` unknown.
    pub fn forget_upto(&mut self, w: i64) {
        self.unknown_upto = Some(self.unknown_upto.map_or(w, |u| u.max(w)));
        let keep = self.sums.split_off(&(w + 1));
        self.sums = keep;
    }

    /// One sum over the windows overlapping `[start, end]`, or None when
    /// one of them is unknown.
    pub fn of_range(&self, start: i64, end: i64, block_ms: i64) -> Option<u64> {
        let (first, last) = (block_start(start, block_ms), block_start(end, block_ms));
        if self.unknown_upto.is_some_and(|u| first <= u) {
            return None;
        }
        let mut h = mix(first as u64 ^ mix(last as u64));
        for (w, sum) in self.sums.range(first..=last) {
            h = mix(h ^ *w as u64) ^ *sum;
        }
        Some(h)
    }
}

impl Shard {
    /// The sums start over from what the shard holds now: every window it
    /// holds data of is unknown (at open, after recovery).
    pub fn start_counting(&mut self) {
        let mut held: BTreeSet<i64> = self.filesets.keys().copied().collect();
        held.extend(self.flushing.iter().map(|(b, _)| *b));
        self.head.blocks(&mut held);
        if let Some(&newest) = held.last() {
            self.sums.forget_upto(newest);
        }
    }

    /// Detaches the head's buffers of every block `pick` selects; they stay
    /// readable as in-flight flushes until [`Shard::flush_block`] puts
    /// their fileset in place.
    pub fn detach_for_flush(&mut self, pick: impl Fn(i64) -> bool) -> Vec<(i64, Flushing)> {
        let detached = self.head.detach(pick);
        let mut out = Vec::with_capacity(detached.len());
        for (block, data) in detached {
            let data: Flushing = Arc::new(data);
            self.flushing.push((block, data.clone()));
            out.push((block, data));
        }
        out
    }

    /// Everything the shard holds only in memory, as chunks in the order a
    /// restart applies them: blocks of a flush under way or waiting to be
    /// retried (older), then the head's buffers (newer).
    pub fn snapshot_chunks(
        &self,
    ) -> std::result::Result<crate::snapshot::ShardChunks, cairn_codec::CodecError> {
        let mut out = Vec::new();
        for (b, data) in &self.flushing {
            for (id, buf) in data.iter() {
                out.push((*id, *b, buf.chunk()?));
            }
        }
        for (id, buf) in self.head.buffers() {
            out.push((id, buf.start, buf.chunk()?));
        }
        Ok(out)
    }

    /// Block windows that still hold data only in memory.
    pub fn blocks_in_memory(&self, into: &mut BTreeSet<i64>) {
        self.head.blocks(into);
        into.extend(self.flushing.iter().map(|(b, _)| *b));
    }

    /// Whether `id` has data in a block window overlapping `[start, end]`
    /// (filesets, in-flight flushes or head), without decoding anything.
    pub fn has_data(&self, id: SeriesId, start: i64, end: i64, block_ms: i64) -> bool {
        if start > end {
            return false;
        }
        let overlaps = |b: i64| b <= end && block_end(b, block_ms) > start;
        let first_block = block_start(start, block_ms);
        // A fileset inside the range has data if it has the series; one the
        // range cuts is decoded to see whether a sample falls inside.
        let inside = |b: i64| b >= start && block_end(b, block_ms) - 1 <= end;
        self.filesets.range(first_block..=end).any(|(&b, f)| {
            f.find(id).is_some_and(|i| {
                inside(b)
                    || f.decode(i)
                        .is_ok_and(|v| v.iter().any(|s| s.t >= start && s.t <= end))
            })
        }) || self.flushing.iter().any(|(b, data)| {
            overlaps(*b)
                && data
                    .get(&id)
                    .is_some_and(|buf| buf.has_samples_in(start, end))
        }) || self.head.has_data(id, start, end, block_ms)
    }

    pub fn read(&self, id: SeriesId, start: i64, end: i64, block_ms: i64) -> Result<Vec<Sample>> {
        self.read_hinted(id, start, end, block_ms, &mut Vec::new())
    }

    /// [`read`](Self::read) for ids read in ascending order with the same
    /// `start`/`end`: `hints` keeps, per fileset in range, where the
    /// previous id was found (start with an empty Vec).
    pub fn read_hinted(
        &self,
        id: SeriesId,
        start: i64,
        end: i64,
        block_ms: i64,
        hints: &mut Vec<usize>,
    ) -> Result<Vec<Sample>> {
        // An empty range (a BTreeMap range with start > end would panic).
        if start > end {
            return Ok(Vec::new());
        }
        let first_block = block_start(start, block_ms);
        // (block start, samples), ascending by block: filesets come in
        // order; newer in-memory data merges into its block's entry.
        let mut per_block: Vec<(i64, Vec<Sample>)> = Vec::new();
        for (k, (&b, f)) in self.filesets.range(first_block..=end).enumerate() {
            if hints.len() <= k {
                hints.push(0);
            }
            let i = match f.find_from(id, hints[k]) {
                Ok(i) => i,
                Err(i) => {
                    hints[k] = i;
                    continue;
                }
            };
            hints[k] = i + 1;
            let v = f.decode(i)?;
            if !v.is_empty() {
                per_block.push((b, v));
            }
        }
        let mut merge_in =
            |b: i64, newer: Vec<Sample>| match per_block.binary_search_by_key(&b, |e| e.0) {
                Ok(i) => {
                    let older = std::mem::take(&mut per_block[i].1);
                    per_block[i].1 = merge_newer_wins(older, newer);
                }
                Err(i) => per_block.insert(i, (b, newer)),
            };
        for (b, data) in &self.flushing {
            if block_end(*b, block_ms) <= start || *b > end {
                continue;
            }
            if let Some(buf) = data.get(&id) {
                merge_in(*b, buf.samples());
            }
        }
        self.head
            .read_blocks(id, start, end, block_ms, &mut merge_in);
        // Common case: one block, already inside the range: return it as is.
        let in_range = |s: &Sample| s.t >= start && s.t <= end;
        if per_block.len() == 1 {
            let mut v = per_block.pop().map(|e| e.1).unwrap_or_default();
            if !v.first().is_some_and(in_range) || !v.last().is_some_and(in_range) {
                v.retain(in_range);
            }
            return Ok(v);
        }
        let total = per_block.iter().map(|e| e.1.len()).sum();
        let mut out = Vec::with_capacity(total);
        for (_, v) in per_block {
            out.extend(v.into_iter().filter(in_range));
        }
        Ok(out)
    }

    /// (active series, head bytes, head samples).
    pub fn memory(&self) -> (usize, usize, usize) {
        self.head.memory()
    }

    /// (filesets, bytes) on disk.
    pub fn disk(&self) -> (usize, u64) {
        (
            self.filesets.len(),
            self.filesets.values().map(|f| f.disk_bytes()).sum(),
        )
    }

    /// Takes out the filesets whose whole window ends by `cutoff`; the
    /// caller deletes their directories (outside the shard's lock).
    pub fn expire(&mut self, cutoff: i64, block_ms: i64) -> Vec<Arc<Fileset>> {
        let old: Vec<i64> = self
            .filesets
            .keys()
            .copied()
            .filter(|&b| block_end(b, block_ms) <= cutoff)
            .collect();
        if let Some(&newest) = old.last() {
            self.sums.forget_upto(newest);
        }
        old.iter().filter_map(|b| self.filesets.remove(b)).collect()
    }

    /// Writes one block of the shard `this` (number `shard`) as a fileset
    /// under `root`, merged with the block's previous volume. `sealed`: every commit-log segment up to
    /// it had been applied to the head when the data was detached.
    pub fn flush_block(
        this: &Mutex<Shard>,
        root: &Path,
        shard: u32,
        block: i64,
        data: &Flushing,
        sealed: u64,
    ) -> Result<()> {
        let existing = this.lock().filesets.get(&block).cloned();
        let volume = existing.as_ref().map_or(0, |f| f.volume + 1);
        let mut new: Vec<(&SeriesId, &BlockBuf)> = data.iter().collect();
        new.sort_unstable_by_key(|(id, _)| **id);
        let codec_err = |id: SeriesId| {
            move |e: cairn_codec::CodecError| Error::Corrupt(format!("encoding series {id}: {e}"))
        };
        // Merge-join with the previous volume by id: series only in one side
        // keep their chunk bytes as they are; only series in both are decoded.
        let old_count = existing.as_ref().map_or(0, |f| f.series_count());
        let mut chunks: Vec<(SeriesId, Vec<u8>)> = Vec::with_capacity(old_count.max(new.len()));
        let (mut i, mut j) = (0usize, 0usize);
        while i < old_count || j < new.len() {
            let old_id = existing
                .as_ref()
                .filter(|_| i < old_count)
                .map(|f| (f, f.raw(i)));
            match (old_id, new.get(j)) {
                (Some((_, r)), None) => {
                    let (id, chunk) = r?;
                    chunks.push((id, chunk.to_vec()));
                    i += 1;
                }
                (None, Some((id, buf))) => {
                    chunks.push((**id, buf.chunk().map_err(codec_err(**id))?));
                    j += 1;
                }
                (Some((f, r)), Some((nid, buf))) => {
                    let (oid, chunk) = r?;
                    if oid < **nid {
                        chunks.push((oid, chunk.to_vec()));
                        i += 1;
                    } else if **nid < oid {
                        chunks.push((**nid, buf.chunk().map_err(codec_err(**nid))?));
                        j += 1;
                    } else {
                        let merged = merge_newer_wins(f.decode(i)?, buf.samples());
                        chunks.push((oid, fileset::encode(&merged).map_err(codec_err(oid))?));
                        i += 1;
                        j += 1;
                    }
                }
                (None, None) => break,
            }
        }
        let dir = fileset::fileset_dir(root, shard, block, volume);
        fileset::write_chunks(&dir, &chunks, sealed)?;
        let fs = fileset::Fileset::open(&dir, block, volume)?.ok_or_else(|| {
            Error::Corrupt(format!(
                "fileset {} incomplete right after writing",
                dir.display()
            ))
        })?;
        {
            let mut g = this.lock();
            g.filesets.insert(block, Arc::new(fs));
            g.flushing
                .retain(|(b, d)| !(*b == block && Arc::ptr_eq(d, data)));
        }
        if let Some(old) = existing {
            let _ = std::fs::remove_dir_all(&old.dir);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Head reads equal a BTreeMap model with last-write-wins.
        #[test]
        fn head_matches_model(writes in proptest::collection::vec((0i64..20_000, any::<u64>()), 1..300)) {
            let mut shard = Shard::default();
            let id = SeriesId(1);
            let mut model = std::collections::BTreeMap::new();
            for (t, bits) in &writes {
                shard.head.append(id, 7_000, &[Sample::new(*t, f64::from_bits(*bits))]);
                model.insert(*t, *bits);
            }
            let got = shard.read(id, 0, 20_000, 7_000).unwrap();
            let want: Vec<(i64, u64)> = model.into_iter().collect();
            let got: Vec<(i64, u64)> = got.iter().map(|s| (s.t, s.v.to_bits())).collect();
            prop_assert_eq!(got, want);
        }
    }
}
