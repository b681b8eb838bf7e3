//! The head: per series, one open buffer per block window, compressed on the
//! fly. In-order samples go to a Gorilla encoder; samples older than the
//! encoder's last timestamp (out of order or backfill) go to a small side
//! buffer that is merged at read and at flush. On a duplicate timestamp the
//! last write wins (an upsert, as in M3; Prometheus's test scripts expect the
//! same). Replay never re-applies data that a fileset already holds (filesets
//! record the commit-log position they cover), so an old value cannot come back.

use cairn_codec::Encoder;
use cairn_common::{IdMap, Sample, SeriesId};
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::fileset::Fileset;

/// Start of the block window holding `t`, without overflow: stored samples
/// lie within `hard::MIN_TIME_MS..=hard::MAX_TIME_MS`, far from the i64
/// ends; for read bounds near `i64::MIN` the answer saturates (any value at
/// or below `t` is a valid lower bound there).
pub fn block_start(t: i64, block_ms: i64) -> i64 {
    t.checked_sub(t.rem_euclid(block_ms)).unwrap_or(i64::MIN)
}

/// End (exclusive) of the block window starting at `b`, saturating.
pub fn block_end(b: i64, block_ms: i64) -> i64 {
    b.saturating_add(block_ms)
}

pub struct BlockBuf {
    pub start: i64,
    enc: Encoder,
    ooo: Vec<Sample>,
}

impl BlockBuf {
    fn new(start: i64) -> Self {
        Self {
            start,
            enc: Encoder::new(),
            ooo: Vec::new(),
        }
    }

    fn append(&mut self, s: Sample) {
        let in_order = self.enc.last_timestamp().is_none_or(|last| s.t > last);
        // Invariant: append only fails for non-increasing timestamps, checked above.
        if !in_order || self.enc.append(s.t, s.v).is_err() {
            self.ooo.push(s);
        }
    }

    /// The buffer's samples, sorted, one per timestamp (last write wins:
    /// side-buffer entries are always newer than encoder entries with the
    /// same timestamp, because the encoder only takes timestamps above its last).
    pub fn samples(&self) -> Vec<Sample> {
        let snapshot = self.enc.snapshot();
        let mut in_order: Vec<Sample> = Vec::new();
        if let Err(e) =
            cairn_codec::decode_into_with(&snapshot, &mut in_order, |t, v| Sample { t, v })
        {
            // Invariant: the encoder's own snapshot always decodes.
            tracing::error!(?e, "head chunk failed to decode");
            in_order.clear();
        }
        if self.ooo.is_empty() {
            return in_order;
        }
        let mut ooo = self.ooo.clone();
        ooo.reverse(); // newest first, so the stable sort + dedup keeps the newest
        ooo.sort_by_key(|s| s.t);
        ooo.dedup_by_key(|s| s.t);
        merge_newer_wins(in_order, ooo)
    }

    /// The buffer as one encoded chunk: the encoder's bytes as they are when
    /// nothing arrived out of order (the common case: no decode, no re-encode).
    pub fn chunk(&self) -> Result<Vec<u8>, cairn_codec::CodecError> {
        if self.ooo.is_empty() {
            return Ok(self.enc.snapshot());
        }
        crate::fileset::encode(&self.samples())
    }

    pub fn heap_bytes(&self) -> usize {
        self.enc.heap_bytes() + self.ooo.capacity() * std::mem::size_of::<Sample>()
    }

    pub fn len(&self) -> usize {
        self.enc.len() + self.ooo.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Merges two sorted, de-duplicated runs; on equal timestamps `newer` wins.
pub fn merge_newer_wins(older: Vec<Sample>, newer: Vec<Sample>) -> Vec<Sample> {
    if older.is_empty() {
        return newer;
    }
    if newer.is_empty() {
        return older;
    }
    let mut out = Vec::with_capacity(older.len() + newer.len());
    let (mut a, mut b) = (older.into_iter().peekable(), newer.into_iter().peekable());
    loop {
        match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => {
                if x.t < y.t {
                    out.extend(a.next());
                } else if y.t < x.t {
                    out.extend(b.next());
                } else {
                    a.next();
                    out.extend(b.next());
                }
            }
            (Some(_), None) => out.extend(a.by_ref()),
            (None, Some(_)) => out.extend(b.by_ref()),
            (None, None) => break,
        }
    }
    out
}

#[derive(Default)]
pub struct HeadSeries {
    /// Usually one (the open window); more with out-of-order or backfill.
    pub blocks: Vec<BlockBuf>,
}

/// Block buffers detached from the head while they are written to a
/// fileset; reads still see them until the fileset is in place.
pub type Flushing = Arc<IdMap<BlockBuf>>;

/// One shard's in-memory state. The map also serves as the set of known
/// series (those registered in the index): a series whose blocks were all
/// flushed stays with an empty buffer list.
#[derive(Default)]
pub struct HeadShard {
    pub series: IdMap<HeadSeries>,
    pub flushing: Vec<(i64, Flushing)>,
    pub filesets: BTreeMap<i64, Arc<Fileset>>,
    /// Open block buffers per block start, so a read over windows that
    /// are all flushed skips the (cache-missing) series lookup.
    open_blocks: BTreeMap<i64, usize>,
}

impl HeadShard {
    pub fn append(&mut self, id: SeriesId, block_ms: i64, samples: &[Sample]) {
        let s = self.series.entry(id).or_default();
        for smp in samples {
            let start = block_start(smp.t, block_ms);
            let buf = match s.blocks.iter().position(|b| b.start == start) {
                Some(i) => &mut s.blocks[i],
                None => {
                    // Exact growth: a Vec's first push reserves 4 slots, and a
                    // buffer is ~260 bytes; most series only ever hold one.
                    s.blocks.reserve_exact(1);
                    s.blocks.push(BlockBuf::new(start));
                    *self.open_blocks.entry(start).or_default() += 1;
                    // Invariant: just pushed, so last() exists.
                    let last = s.blocks.len() - 1;
                    &mut s.blocks[last]
                }
            };
            buf.append(*smp);
        }
    }

    /// Detaches the buffers of every block `pick` selects; returns them by block.
    pub fn detach(&mut self, pick: impl Fn(i64) -> bool) -> BTreeMap<i64, IdMap<BlockBuf>> {
        let mut out: BTreeMap<i64, IdMap<BlockBuf>> = BTreeMap::new();
        for (id, s) in self.series.iter_mut() {
            if s.blocks.is_empty() {
                continue;
            }
            let mut i = 0;
            while i < s.blocks.len() {
                if pick(s.blocks[i].start) {
                    let b = s.blocks.swap_remove(i);
                    if let Some(n) = self.open_blocks.get_mut(&b.start) {
                        *n -= 1;
                        if *n == 0 {
                            self.open_blocks.remove(&b.start);
                        }
                    }
                    if !b.is_empty() {
                        out.entry(b.start).or_default().insert(*id, b);
                    }
                } else {
                    i += 1;
                }
            }
            if s.blocks.is_empty() {
                s.blocks = Vec::new(); // release capacity
            }
        }
        out
    }

    /// Block windows that still hold data only in memory.
    pub fn blocks_in_memory(&self, into: &mut std::collections::BTreeSet<i64>) {
        for s in self.series.values() {
            into.extend(s.blocks.iter().map(|b| b.start));
        }
        into.extend(self.flushing.iter().map(|(b, _)| *b));
    }

    /// Samples of `id` in `[start, end]` from filesets, flushing and head.
    /// Whether `id` has data in a block window overlapping `[start, end]`
    /// (filesets, in-flight flushes or head), without decoding anything.
    pub fn has_data(&self, id: SeriesId, start: i64, end: i64, block_ms: i64) -> bool {
        if start > end {
            return false;
        }
        let overlaps = |b: i64| b <= end && block_end(b, block_ms) > start;
        let first_block = block_start(start, block_ms);
        self.filesets
            .range(first_block..=end)
            .any(|(_, f)| f.find(id).is_some())
            || self
                .flushing
                .iter()
                .any(|(b, data)| overlaps(*b) && data.contains_key(&id))
            || self
                .series
                .get(&id)
                .is_some_and(|s| s.blocks.iter().any(|b| overlaps(b.start) && !b.is_empty()))
    }

    pub fn read(
        &self,
        id: SeriesId,
        start: i64,
        end: i64,
        block_ms: i64,
    ) -> crate::Result<Vec<Sample>> {
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
    ) -> crate::Result<Vec<Sample>> {
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
        // The latest open block starting by `end` is the one that reaches
        // furthest; if it ends before `start`, so do all earlier ones.
        let head_overlaps = self
            .open_blocks
            .range(..=end)
            .next_back()
            .is_some_and(|(&b, _)| block_end(b, block_ms) > start);
        if let Some(s) = self.series.get(&id).filter(|_| head_overlaps) {
            for buf in &s.blocks {
                if block_end(buf.start, block_ms) <= start || buf.start > end {
                    continue;
                }
                merge_in(buf.start, buf.samples());
            }
        }
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

    pub fn memory(&self) -> (usize, usize, usize) {
        let mut bytes = self.series.capacity()
            * (std::mem::size_of::<SeriesId>() + std::mem::size_of::<HeadSeries>() + 1);
        let mut active = 0;
        let mut samples = 0;
        for s in self.series.values() {
            if !s.blocks.is_empty() {
                active += 1;
            }
            bytes += s.blocks.capacity() * std::mem::size_of::<BlockBuf>();
            for b in &s.blocks {
                bytes += b.heap_bytes();
                samples += b.len();
            }
        }
        (active, bytes, samples)
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
            let mut shard = HeadShard::default();
            let id = SeriesId(1);
            let mut model = std::collections::BTreeMap::new();
            for (t, bits) in &writes {
                shard.append(id, 7_000, &[Sample::new(*t, f64::from_bits(*bits))]);
                model.insert(*t, *bits);
            }
            let got = shard.read(id, 0, 20_000, 7_000).unwrap();
            let want: Vec<(i64, u64)> = model.into_iter().collect();
            let got: Vec<(i64, u64)> = got.iter().map(|s| (s.t, s.v.to_bits())).collect();
            prop_assert_eq!(got, want);
        }
    }
}
