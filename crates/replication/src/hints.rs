//! Hinted handoff: the parts of writes a replica missed (it was down,
//! restarting, or did not answer in time) kept on the gateway that sent
//! them, and replayed to that replica once it answers again, so that a
//! replica that was away comes back holding every sample the others
//! acknowledged — and what it computes from them (its downsampled windows,
//! recomputed as late windows) matches theirs.
//!
//! Kept in memory, per replica, oldest first, within a byte budget: past
//! it the oldest hints are dropped (counted). A gateway that dies loses its
//! hints; the samples are still on the replicas that acknowledged them.

use cairn_cluster::NodeId;
use cairn_common::PreparedBatch;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A missed replica write, as it was sent.
#[derive(Debug, Clone)]
pub(crate) struct Hint {
    pub(crate) tenant: String,
    pub(crate) namespace: String,
    pub(crate) shard: Option<u32>,
    pub(crate) batch: Arc<PreparedBatch>,
    /// Its place in the replica's queue (delivery removes exactly it).
    seq: u64,
    samples: u64,
    bytes: u64,
}

impl Hint {
    pub(crate) fn new(
        tenant: &str,
        namespace: &str,
        shard: Option<u32>,
        batch: Arc<PreparedBatch>,
    ) -> Hint {
        let samples = batch.sample_count() as u64;
        Hint {
            tenant: tenant.to_string(),
            namespace: namespace.to_string(),
            shard,
            bytes: estimate_bytes(&batch),
            batch,
            seq: 0,
            samples,
        }
    }
}

/// Roughly what a batch holds in memory: its samples, exemplars and label
/// spans (the label bytes themselves are shared with the request).
fn estimate_bytes(b: &PreparedBatch) -> u64 {
    let per_series: u64 = b
        .series
        .iter()
        .map(|s| 64 + 16 * s.samples.len() as u64 + 96 * s.exemplars.len() as u64)
        .sum();
    per_series + 128 * b.metadata.len() as u64 + 64
}

/// One replica's hints and what became of those it held.
#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<Hint>,
    bytes: u64,
    next_seq: u64,
    stats: HintStats,
}

/// What the hints of one replica amount to (for `/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HintStats {
    /// Hints waiting, their samples and estimated bytes.
    pub pending: u64,
    pub pending_samples: u64,
    pub pending_bytes: u64,
    /// Samples replayed to the replica, which acknowledged them.
    pub delivered_samples: u64,
    /// Samples dropped because the budget was full (oldest first).
    pub dropped_samples: u64,
    /// Samples the replica refused when they were replayed (e.g. past its
    /// retention by then): the request's own error, not retried.
    pub refused_samples: u64,
}

/// The hints of every replica, within `max_bytes` each.
#[derive(Debug)]
pub struct Hints {
    max_bytes: u64,
    queues: Mutex<BTreeMap<NodeId, Queue>>,
    delivering: AtomicBool,
}

impl Hints {
    /// Hints within `max_bytes` per replica (0 keeps none).
    pub fn new(max_bytes: u64) -> Hints {
        Hints {
            max_bytes,
            queues: Mutex::default(),
            delivering: AtomicBool::new(false),
        }
    }

    fn queues(&self) -> std::sync::MutexGuard<'_, BTreeMap<NodeId, Queue>> {
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `hint` for `node`, dropping that node's oldest hints while
    /// the budget is exceeded (a hint larger than the whole budget is
    /// dropped itself).
    pub(crate) fn push(&self, node: &NodeId, mut hint: Hint) {
        let mut qs = self.queues();
        let q = qs.entry(node.clone()).or_default();
        if hint.bytes > self.max_bytes {
            q.stats.dropped_samples += hint.samples;
            return;
        }
        hint.seq = q.next_seq;
        q.next_seq += 1;
        q.bytes += hint.bytes;
        q.items.push_back(hint);
        while q.bytes > self.max_bytes {
            let Some(old) = q.items.pop_front() else {
                break;
            };
            q.bytes -= old.bytes;
            q.stats.dropped_samples += old.samples;
        }
    }

    /// The oldest hint of `node`, left in place.
    pub(crate) fn front(&self, node: &NodeId) -> Option<Hint> {
        self.queues().get(node)?.items.front().cloned()
    }

    /// The nodes holding hints now.
    pub(crate) fn nodes(&self) -> Vec<NodeId> {
        self.queues()
            .iter()
            .filter(|(_, q)| !q.items.is_empty())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// `hint` (from [`front`](Self::front)) was replayed (`delivered`) or
    /// refused: removed unless the budget dropped it meanwhile.
    pub(crate) fn done(&self, node: &NodeId, hint: &Hint, delivered: bool) {
        let mut qs = self.queues();
        let Some(q) = qs.get_mut(node) else { return };
        if q.items.front().map(|h| h.seq) != Some(hint.seq) {
            return;
        }
        q.items.pop_front();
        q.bytes -= hint.bytes;
        if delivered {
            q.stats.delivered_samples += hint.samples;
        } else {
            q.stats.refused_samples += hint.samples;
        }
    }

    /// Per replica (ever hinted): pending and past hints.
    pub fn stats(&self) -> Vec<(NodeId, HintStats)> {
        self.queues()
            .iter()
            .map(|(n, q)| {
                let mut s = q.stats;
                s.pending = q.items.len() as u64;
                s.pending_samples = q.items.iter().map(|h| h.samples).sum();
                s.pending_bytes = q.bytes;
                (n.clone(), s)
            })
            .collect()
    }

    /// Claims the delivery turn (one delivery round at a time).
    pub(crate) fn begin_delivery(&self) -> Option<DeliveryTurn<'_>> {
        self.delivering
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| DeliveryTurn(&self.delivering))
    }
}

/// Held while a delivery round runs.
pub(crate) struct DeliveryTurn<'a>(&'a AtomicBool);

impl Drop for DeliveryTurn<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_common::{Labels, Sample, SeriesWrite};

    fn batch(samples: usize) -> Arc<PreparedBatch> {
        let s = SeriesWrite {
            labels: Labels::from_pairs(&[("__name__", "m")]),
            samples: (0..samples as i64).map(|t| Sample::new(t, 1.0)).collect(),
            exemplars: vec![],
        };
        Arc::new(PreparedBatch::from_series("t", vec![s], vec![]))
    }

    #[test]
    fn the_budget_drops_the_oldest_hints_first_and_counts_them() {
        let one = estimate_bytes(&batch(10));
        let hints = Hints::new(one * 2);
        let n = NodeId::new("node-3");
        for _ in 0..3 {
            hints.push(&n, Hint::new("t", "raw", None, batch(10)));
        }
        let s = hints.stats()[0].1;
        assert_eq!(
            (s.pending, s.pending_samples, s.dropped_samples),
            (2, 20, 10)
        );
        // Delivery removes the front; a hint dropped meanwhile is not
        // removed twice.
        let front = hints.front(&n).unwrap();
        assert_eq!(front.seq, 1, "the oldest was dropped");
        hints.push(&n, Hint::new("t", "raw", None, batch(10)));
        hints.done(&n, &front, true);
        let s = hints.stats()[0].1;
        assert_eq!(
            (s.pending, s.delivered_samples, s.dropped_samples),
            (2, 0, 20)
        );
        let front = hints.front(&n).unwrap();
        hints.done(&n, &front, true);
        let s = hints.stats()[0].1;
        assert_eq!((s.pending, s.delivered_samples), (1, 10));
        // Larger than the whole budget: dropped at once.
        hints.push(&n, Hint::new("t", "raw", None, batch(1000)));
        assert_eq!(hints.stats()[0].1.pending, 1);
        assert_eq!(hints.nodes(), vec![n]);
        let off = Hints::new(0);
        off.push(&NodeId::new("x"), Hint::new("t", "raw", None, batch(1)));
        assert!(off.nodes().is_empty());
    }
}
