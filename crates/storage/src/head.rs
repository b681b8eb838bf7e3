//! The head: buffers only. Per series, one open buffer per block window,
//! compressed on the fly. In-order samples go to a Gorilla encoder; samples
//! older than the encoder's last timestamp (out of order or backfill) go to a small side
//! buffer that is merged at read and at flush. On a duplicate timestamp the
//! last write wins (an upsert, as in M3; Prometheus's test scripts expect the
//! same). Replay never re-applies data that a fileset already holds (filesets
//! record the commit-log position they cover), so an old value cannot come back.
//!
//! Filesets, in-flight flushes and merged reads are the shard's
//! (`shard.rs`); the head knows nothing of them.

use crate::namespace::{block_end, block_start};
use cairn_codec::Encoder;
use cairn_common::{IdMap, Sample, SeriesId};
use std::collections::{BTreeMap, BTreeSet};

impl std::fmt::Debug for BlockBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockBuf").finish_non_exhaustive()
    }
}

pub struct BlockBuf {
    pub start: i64,
    enc: Encoder,
    ooo: Vec<Sample>,
    /// Earliest and latest sample time held (metadata reads ask whether a
    /// series has a sample in a range, not only in the block).
    min_t: i64,
    max_t: i64,
}

impl BlockBuf {
    fn new(start: i64) -> Self {
        Self {
            start,
            enc: Encoder::new(),
            ooo: Vec::new(),
            min_t: i64::MAX,
            max_t: i64::MIN,
        }
    }

    /// Whether a sample held is in `[start, end]` — as far as the earliest
    /// and latest tell (Prometheus's head answers from its chunks' time
    /// bounds alike).
    pub fn has_samples_in(&self, start: i64, end: i64) -> bool {
        self.min_t <= end && self.max_t >= start
    }

    fn append(&mut self, s: Sample) {
        self.min_t = self.min_t.min(s.t);
        self.max_t = self.max_t.max(s.t);
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

    /// The newest sample time held (`i64::MIN` when empty).
    pub fn max_t(&self) -> i64 {
        self.max_t
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

impl std::fmt::Debug for HeadSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadSeries").finish_non_exhaustive()
    }
}

#[derive(Default)]
pub struct HeadSeries {
    /// Usually one (the open window); more with out-of-order or backfill.
    pub blocks: Vec<BlockBuf>,
}

impl std::fmt::Debug for Head {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Head").finish_non_exhaustive()
    }
}

/// One shard's head. The map also serves as the set of known series (those
/// registered in the index): a series whose blocks were all flushed stays
/// with an empty buffer list.
#[derive(Default)]
pub struct Head {
    series: IdMap<HeadSeries>,
    /// Open block buffers per block start, so a read over windows that
    /// are all flushed skips the (cache-missing) series lookup.
    open_blocks: BTreeMap<i64, usize>,
}

impl Head {
    /// Records `id` as a known series (registered in the index).
    pub fn register(&mut self, id: SeriesId) {
        self.series.entry(id).or_default();
    }

    /// Whether `id` is a known series.
    pub fn knows(&self, id: SeriesId) -> bool {
        self.series.contains_key(&id)
    }

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

    /// Every non-empty buffer held, with its series.
    pub fn buffers(&self) -> impl Iterator<Item = (SeriesId, &BlockBuf)> + '_ {
        self.series
            .iter()
            .flat_map(|(id, s)| s.blocks.iter().map(move |b| (*id, b)))
            .filter(|(_, b)| !b.is_empty())
    }

    /// The newest sample time the head holds.
    pub fn newest(&self) -> Option<i64> {
        self.buffers().map(|(_, b)| b.max_t()).max()
    }

    /// Block windows the head holds data of.
    pub fn blocks(&self, into: &mut BTreeSet<i64>) {
        for s in self.series.values() {
            into.extend(s.blocks.iter().map(|b| b.start));
        }
    }

    /// Whether the head holds samples of `id` in a block window
    /// overlapping `[start, end]`.
    pub fn has_data(&self, id: SeriesId, start: i64, end: i64, block_ms: i64) -> bool {
        let overlaps = |b: i64| b <= end && block_end(b, block_ms) > start;
        self.series.get(&id).is_some_and(|s| {
            s.blocks
                .iter()
                .any(|b| overlaps(b.start) && !b.is_empty() && b.has_samples_in(start, end))
        })
    }

    /// Calls `f` with the block start and samples of each of `id`'s
    /// buffers whose window overlaps `[start, end]`.
    pub fn read_blocks(
        &self,
        id: SeriesId,
        start: i64,
        end: i64,
        block_ms: i64,
        mut f: impl FnMut(i64, Vec<Sample>),
    ) {
        // The latest open block starting by `end` is the one that reaches
        // furthest; if it ends before `start`, so do all earlier ones.
        let overlaps = self
            .open_blocks
            .range(..=end)
            .next_back()
            .is_some_and(|(&b, _)| block_end(b, block_ms) > start);
        if let Some(s) = self.series.get(&id).filter(|_| overlaps) {
            for buf in &s.blocks {
                if block_end(buf.start, block_ms) <= start || buf.start > end {
                    continue;
                }
                f(buf.start, buf.samples());
            }
        }
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
