//! Partial aggregation over a cluster: each shard's partial computed by one
//! of its replicas — the replicas of the shards taken in turn, so every
//! node computes its part and the query node merges a few accumulators per
//! group and step — and checked against as many other replicas as the read
//! level wants answers from: replica deduplication before any aggregation,
//! without moving the series. A replica is first asked for its shard sums
//! (`SeriesReader::shard_sums`: what it took into the range's block
//! windows); one equal to the computing replica's holds the same samples
//! and reads nothing; where they differ or cannot tell (data recovered at
//! open), it sends each series' digest, compared with the computing
//! replica's. A node whose partial covers a shard some replica disagrees
//! on (or that failed) has its shards aggregated here from the replicated
//! select instead, which merges the replicas' series.

use crate::{digest_of, is_request_error, level_error, read_all, ReplicatedStore};
use cairn_cluster::{evaluate, NodeId, Outcome};
use cairn_common::{IdMap, SeriesId};
use cairn_storage_api::{
    AggregateRequest, Aggregator, PartialAggregate, SampleDigest, SeriesReader, ShardSet,
    StoreError,
};
use futures_util::future::join_all;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// One node's part of a pushed-down aggregation.
struct Part {
    node: NodeId,
    data: Vec<u32>,
    digest: Vec<u32>,
    partial: Option<Result<Option<PartialAggregate>, StoreError>>,
    sums: Option<Result<cairn_storage_api::ShardSums, StoreError>>,
}

impl ReplicatedStore {
    /// See [`SeriesReader::aggregate`]: `None` without an aggregator (this
    /// store cannot compute its own node's part) or when a node finds
    /// folding would not pay.
    pub(crate) async fn aggregate_replicated(
        &self,
        req: AggregateRequest,
    ) -> Result<Option<PartialAggregate>, StoreError> {
        let Some(agg) = self.aggregator.clone() else {
            return Ok(None);
        };
        req.select.check()?;
        let p = self.placement();
        let rf = p.replication_factor();
        let level = req.select.read_level.unwrap_or(self.read_level);
        let want = level.wanted_acks(rf).max(1);
        let tenant = req.select.tenant.clone();
        // Per shard: the replica computing its partial (the replicas taken
        // in turn by shard), those sending digests, the ones left.
        let mut computes: BTreeMap<u32, NodeId> = BTreeMap::new();
        let mut spare: BTreeMap<u32, Vec<NodeId>> = BTreeMap::new();
        let mut fallback: BTreeSet<u32> = BTreeSet::new();
        let mut parts: BTreeMap<NodeId, (Vec<u32>, Vec<u32>)> = BTreeMap::new();
        for s in (0..p.num_shards()).filter(|s| req.select.shards.contains(*s)) {
            let mut order: Vec<NodeId> = p.readable(s).map(|r| r.node.clone()).collect();
            if order.len() < want {
                fallback.insert(s);
                continue;
            }
            order.sort();
            let k = s as usize % order.len();
            order.rotate_left(k);
            parts.entry(order[0].clone()).or_default().0.push(s);
            for n in &order[1..want] {
                parts.entry(n.clone()).or_default().1.push(s);
            }
            computes.insert(s, order[0].clone());
            spare.insert(s, order[want..].to_vec());
        }
        let mut parts: Vec<Part> = parts
            .into_iter()
            .map(|(node, (data, digest))| Part {
                node,
                data,
                digest,
                partial: None,
                sums: None,
            })
            .collect();
        // This node's own part computes on this thread: the peers' calls
        // first, so they run meanwhile.
        let me = self.preferred.clone();
        parts.sort_by_key(|x| Some(&x.node) == me.as_ref());
        let calls = parts.iter_mut().map(|part| {
            let node = self.node(&part.node).clone();
            let agg = agg.clone();
            let data_req = (!part.data.is_empty()).then(|| {
                let mut r = req.clone();
                r.select = r
                    .select
                    .with_shards(ShardSet::only(part.data.clone()))
                    .with_any_order(true);
                r.digests = want > 1;
                r
            });
            let sums_req = (!part.digest.is_empty()).then(|| {
                req.select
                    .clone()
                    .with_shards(ShardSet::only(part.digest.clone()))
            });
            async move {
                if let Some(r) = data_req {
                    part.partial = Some(match node.aggregate(r.clone()).await {
                        Ok(None) => agg.partial(&*node, r).await,
                        other => other,
                    });
                }
                if let Some(r) = sums_req {
                    part.sums = Some(node.shard_sums(r).await);
                }
            }
        });
        join_all(calls).await;
        let mut oks: BTreeMap<u32, usize> = BTreeMap::new();
        let mut failed: BTreeMap<u32, Vec<NodeId>> = BTreeMap::new();
        let mut answers: Vec<(Vec<u32>, Vec<SampleDigest>)> = Vec::new();
        let mut partials: BTreeMap<NodeId, (Vec<u32>, PartialAggregate)> = BTreeMap::new();
        let mut sums: Vec<(NodeId, Vec<u32>, cairn_storage_api::ShardSums)> = Vec::new();
        for part in parts {
            match part.partial {
                Some(Ok(Some(pa))) => {
                    for &s in &part.data {
                        *oks.entry(s).or_default() += 1;
                    }
                    partials.insert(part.node.clone(), (part.data, pa));
                }
                // Folding does not pay on that node: nor here.
                Some(Ok(None)) => return Ok(None),
                Some(Err(e)) if is_request_error(&e) => return Err(e),
                Some(Err(_)) => fallback.extend(part.data),
                None => {}
            }
            match part.sums {
                Some(Ok(v)) => sums.push((part.node, part.digest, v)),
                Some(Err(e)) if is_request_error(&e) => return Err(e),
                Some(Err(_)) => {
                    for s in part.digest {
                        failed.entry(s).or_default().push(part.node.clone());
                    }
                }
                None => {}
            }
        }
        // A replica whose shard sum equals the computing replica's holds the
        // same samples in the range: an answer. The others are asked for
        // each series' digest.
        let mut ask: BTreeMap<NodeId, Vec<u32>> = BTreeMap::new();
        for (node, shards, theirs) in sums {
            let theirs: BTreeMap<u32, Option<u64>> = theirs.into_iter().collect();
            for s in shards {
                let Some((_, pa)) = computes.get(&s).and_then(|n| partials.get(n)) else {
                    continue; // aggregated here from the replicas' series
                };
                let mine = pa.shard_sums.iter().find(|x| x.0 == s).and_then(|x| x.1);
                match (mine, theirs.get(&s).copied().flatten()) {
                    (Some(a), Some(b)) if a == b => {
                        *oks.entry(s).or_default() += 1;
                        self.reads.aggregation_shards_by_sums.fetch_add(1, Relaxed);
                    }
                    _ => ask.entry(node.clone()).or_default().push(s),
                }
            }
        }
        // Rounds of per-series digests: first from the replicas whose sums
        // did not tell, then, for shards whose replica failed, from the
        // next replica, until none is left.
        loop {
            for &s in failed.keys() {
                if oks.get(&s).copied().unwrap_or(0) >= want || fallback.contains(&s) {
                    continue;
                }
                if let Some(n) = spare
                    .get_mut(&s)
                    .and_then(|v| (!v.is_empty()).then(|| v.remove(0)))
                {
                    ask.entry(n).or_default().push(s);
                }
            }
            if ask.is_empty() {
                break;
            }
            let round = std::mem::take(&mut ask).into_iter().map(|(node, shards)| {
                let r = req
                    .select
                    .clone()
                    .with_shards(ShardSet::only(shards.clone()))
                    .with_digest(true)
                    .with_any_order(true);
                let store = self.node(&node).clone();
                let tenant = tenant.clone();
                async move { (node, shards, digests_from(&*store, r, &tenant).await) }
            });
            for (node, shards, r) in join_all(round).await {
                match r {
                    Ok(d) => {
                        for &s in &shards {
                            *oks.entry(s).or_default() += 1;
                        }
                        answers.push((shards, d));
                    }
                    Err(e) if is_request_error(&e) => return Err(e),
                    Err(_) => {
                        for s in shards {
                            failed.entry(s).or_default().push(node.clone());
                        }
                    }
                }
            }
        }
        // The computing replicas' digests against the others'.
        let mut theirs: IdMap<(SampleDigest, NodeId)> = IdMap::default();
        let mut held: BTreeMap<u32, usize> = BTreeMap::new();
        for (node, (_, pa)) in &partials {
            for d in &pa.digests {
                if let Some(id) = d.series.filter(|_| d.count > 0) {
                    theirs.insert(id, (*d, node.clone()));
                    *held.entry(p.shard_of(id)).or_default() += 1;
                }
            }
        }
        let mut tainted: BTreeSet<NodeId> = BTreeSet::new();
        for (shards, ds) in &answers {
            let mut matched: BTreeMap<u32, usize> = BTreeMap::new();
            for d in ds.iter().filter(|d| d.count > 0) {
                let Some(id) = d.series else { continue };
                let shard = p.shard_of(id);
                if shards.binary_search(&shard).is_err() {
                    continue;
                }
                match theirs.get(&id) {
                    Some((mine, _)) if mine.same_samples(d) => {
                        *matched.entry(shard).or_default() += 1;
                    }
                    _ => {
                        if let Some(n) = computes.get(&shard) {
                            tainted.insert(n.clone());
                        }
                    }
                }
            }
            for &s in shards {
                if matched.get(&s) != held.get(&s) {
                    if let Some(n) = computes.get(&s) {
                        tainted.insert(n.clone());
                    }
                }
            }
        }
        let mut out = PartialAggregate::default();
        for (node, (shards, pa)) in partials {
            if tainted.contains(&node) {
                self.reads
                    .digest_rereads
                    .fetch_add(shards.len() as u64, Relaxed);
                fallback.extend(shards);
                continue;
            }
            append(&mut out, pa);
        }
        // Every shard answered from partials at the read level.
        let mut short: Vec<u32> = Vec::new();
        let mut down: BTreeSet<NodeId> = BTreeSet::new();
        for s in computes.keys().filter(|s| !fallback.contains(s)) {
            let none = Vec::new();
            let f = failed.get(s).unwrap_or(&none);
            match evaluate(*s, level, rf, oks.get(s).copied().unwrap_or(0), f) {
                Outcome::Failure(e) => return Err(level_error(&e)),
                Outcome::Warning(_) => {
                    short.push(*s);
                    down.extend(f.iter().cloned());
                }
                Outcome::Success => {}
            }
        }
        if let Some(first) = short.first() {
            req.select.warnings.push(format!(
                "read at {level}: {} of the shards read were answered by fewer than a majority of their replicas (first: shard {first}; unavailable: {}); samples written since may be missing",
                short.len(),
                down.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ")
            ));
        }
        if !fallback.is_empty() {
            self.reads
                .aggregation_fallback_shards
                .fetch_add(fallback.len() as u64, Relaxed);
            let mut r = req.clone();
            r.select = r
                .select
                .with_shards(ShardSet::only(fallback.into_iter().collect()));
            r.digests = false;
            let this: &dyn SeriesReader = self;
            match agg.partial(this, r).await? {
                Some(pa) => append(&mut out, pa),
                None => return Ok(None),
            }
        }
        self.reads.aggregations_pushed.fetch_add(1, Relaxed);
        Ok(Some(out))
    }

    /// Partial aggregations pushed down by `aggregator` (the query engine),
    /// which computes this node's part and every part aggregated here.
    pub fn with_aggregator(mut self, aggregator: Arc<dyn Aggregator>) -> Self {
        self.aggregator = Some(aggregator);
        self
    }
}

/// A replica's digests of the series it holds in the request's shards,
/// each named by its id.
async fn digests_from(
    node: &dyn SeriesReader,
    r: cairn_storage_api::SelectRequest,
    tenant: &str,
) -> Result<Vec<SampleDigest>, StoreError> {
    let (start, end) = (r.start, r.end);
    let got = read_all(node, r).await?;
    got.iter()
        .map(|s| {
            let mut d = digest_of(&s.samples, start, end)?;
            if d.series.is_none() {
                d.series = Some(SeriesId::of(tenant, &s.labels));
            }
            Ok(d)
        })
        .collect()
}

/// `b`'s groups and counts added to `a`'s (the groups are merged by the
/// caller).
fn append(a: &mut PartialAggregate, b: PartialAggregate) {
    a.groups.extend(b.groups);
    a.series += b.series;
    a.samples += b.samples;
    if a.step_samples.len() < b.step_samples.len() {
        a.step_samples.resize(b.step_samples.len(), 0);
    }
    for (x, y) in a.step_samples.iter_mut().zip(&b.step_samples) {
        *x += y;
    }
    for n in b.not_counters {
        if !a.not_counters.contains(&n) {
            a.not_counters.push(n);
        }
    }
}
