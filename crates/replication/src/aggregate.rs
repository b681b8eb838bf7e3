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

use crate::{digest_of, is_request_error, read_all, ReplicatedStore};
use cairn_cluster::NodeId;
use cairn_common::{IdMap, SeriesId};
use cairn_storage_api::{
    AggregateRequest, Aggregator, PartialAggregate, SampleDigest, SeriesReader, ShardSet,
    StoreError,
};
use futures_util::future::join_all;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// One node's answer to its part of a pushed-down aggregation: the partial
/// of the shards it computes (None: folding does not pay there), its shard
/// sums of those it checks.
struct Part {
    node: NodeId,
    data: Vec<u32>,
    partial: Option<PartialAggregate>,
    checks: Vec<u32>,
    sums: cairn_storage_api::ShardSums,
}

impl ReplicatedStore {
    /// See [`SeriesReader::aggregate`]: `None` without an aggregator (this
    /// store cannot compute its own node's part) or when a node finds
    /// folding would not pay. The replicas are asked as a select asks
    /// them (`fan_out`: as many as the read level wants answers from, a
    /// failed one replaced by the shard's next, the level checked per
    /// shard), in the spread order: each shard's first replica computes its
    /// partial, the others answer their shard sums.
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
        let parts: Vec<Part> = self
            .fan_out(
                &req.select.shards,
                req.select.read_level,
                &req.select.warnings,
                Self::spread_order,
                |id, node, shards| {
                    let asked = match &shards {
                        ShardSet::Only(v) => v.clone(),
                        ShardSet::All => (0..p.num_shards()).collect(),
                    };
                    let (data, checks): (Vec<u32>, Vec<u32>) = asked
                        .into_iter()
                        .partition(|&s| self.spread_order(&p, s).first() == Some(id));
                    let data_req = (!data.is_empty()).then(|| {
                        let mut r = req.clone();
                        r.select = r
                            .select
                            .with_shards(ShardSet::only(data.clone()))
                            .with_any_order(true);
                        r.digests = want > 1;
                        r
                    });
                    let sums_req = (!checks.is_empty()).then(|| {
                        req.select
                            .clone()
                            .with_shards(ShardSet::only(checks.clone()))
                    });
                    let (agg, id) = (agg.clone(), id.clone());
                    Box::pin(async move {
                        let mut part = Part {
                            node: id,
                            data,
                            partial: None,
                            checks,
                            sums: Vec::new(),
                        };
                        if let Some(r) = data_req {
                            part.partial = match node.aggregate(r.clone()).await? {
                                Some(pa) => Some(pa),
                                None => agg.partial(&*node, r).await?,
                            };
                            if part.partial.is_none() {
                                return Ok(part);
                            }
                        }
                        if let Some(r) = sums_req {
                            part.sums = node.shard_sums(r).await?;
                        }
                        Ok(part)
                    })
                },
            )
            .await?;
        let mut partials: BTreeMap<NodeId, (Vec<u32>, PartialAggregate)> = BTreeMap::new();
        let mut computes: BTreeMap<u32, NodeId> = BTreeMap::new();
        let mut checked: Vec<(NodeId, Vec<u32>, cairn_storage_api::ShardSums)> = Vec::new();
        for part in parts {
            if !part.data.is_empty() {
                // Folding does not pay on that node: nor here.
                let Some(pa) = part.partial else {
                    return Ok(None);
                };
                for &s in &part.data {
                    computes.insert(s, part.node.clone());
                }
                partials.insert(part.node.clone(), (part.data, pa));
            }
            if !part.checks.is_empty() {
                checked.push((part.node, part.checks, part.sums));
            }
        }
        // A replica whose shard sum equals the computing replica's holds the
        // same samples in the range; the others send each series' digest.
        let mut ask: BTreeMap<NodeId, Vec<u32>> = BTreeMap::new();
        let mut tainted: BTreeSet<NodeId> = BTreeSet::new();
        for (node, shards, theirs) in checked {
            let theirs: BTreeMap<u32, Option<u64>> = theirs.into_iter().collect();
            for s in shards {
                // A shard no replica computed is aggregated here below.
                let Some(computer) = computes.get(&s) else {
                    continue;
                };
                let mine = partials[computer]
                    .1
                    .shard_sums
                    .iter()
                    .find(|x| x.0 == s)
                    .and_then(|x| x.1);
                match (mine, theirs.get(&s).copied().flatten()) {
                    (Some(a), Some(b)) if a == b => {
                        self.reads.aggregation_shards_by_sums.fetch_add(1, Relaxed);
                    }
                    _ => ask.entry(node.clone()).or_default().push(s),
                }
            }
        }
        let round = ask.into_iter().map(|(node, shards)| {
            let r = req
                .select
                .clone()
                .with_shards(ShardSet::only(shards.clone()))
                .with_digest(true)
                .with_any_order(true);
            let store = self.node(&node).clone();
            let tenant = tenant.clone();
            async move { (shards, digests_from(&*store, r, &tenant).await) }
        });
        let mut answers: Vec<(Vec<u32>, Vec<SampleDigest>)> = Vec::new();
        for (shards, r) in join_all(round).await {
            match r {
                Ok(d) => answers.push((shards, d)),
                Err(e) if is_request_error(&e) => return Err(e),
                // Not checked: those shards are aggregated here.
                Err(_) => tainted.extend(shards.iter().filter_map(|s| computes.get(s).cloned())),
            }
        }
        // The computing replicas' digests against the others'.
        let mut theirs: IdMap<SampleDigest> = IdMap::default();
        let mut held: BTreeMap<u32, usize> = BTreeMap::new();
        for (_, pa) in partials.values() {
            for d in &pa.digests {
                if let Some(id) = d.series.filter(|_| d.count > 0) {
                    theirs.insert(id, *d);
                    *held.entry(p.shard_of(id)).or_default() += 1;
                }
            }
        }
        for (shards, ds) in &answers {
            let mut matched: BTreeMap<u32, usize> = BTreeMap::new();
            for d in ds.iter().filter(|d| d.count > 0) {
                let Some(id) = d.series else { continue };
                let shard = p.shard_of(id);
                if shards.binary_search(&shard).is_err() {
                    continue;
                }
                match theirs.get(&id) {
                    Some(mine) if mine.same_samples(d) => {
                        *matched.entry(shard).or_default() += 1;
                    }
                    _ => tainted.extend(computes.get(&shard).cloned()),
                }
            }
            for &s in shards {
                if matched.get(&s) != held.get(&s) {
                    tainted.extend(computes.get(&s).cloned());
                }
            }
        }
        // Shards no replica computed (their first ones failed), and those
        // of a node whose partial some replica disagrees with: aggregated
        // here from the replicated select, which merges the replicas.
        let mut fallback: BTreeSet<u32> = (0..p.num_shards())
            .filter(|s| req.select.shards.contains(*s) && !computes.contains_key(s))
            .collect();
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
