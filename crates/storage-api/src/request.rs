//! What a caller asks the store: reads carry the tenant, the namespace, the
//! matchers, the time range, hints a store may use to push work down, the
//! shards to read, limits and a deadline; writes carry a shard, a batch and
//! a consistency level (the placement crate's [`WriteLevel`]: one place for
//! the arithmetic).

use crate::StoreError;
pub use cairn_cluster::WriteLevel;
use cairn_common::{Matcher, PreparedBatch, Timestamp};
use std::time::Instant;

/// The namespace every series is written to at full resolution.
pub const RAW_NAMESPACE: &str = "raw";
/// The internal namespace of rollup rules' input copies (a node with
/// aggregated namespaces holds it; see `cairn-tenancy`'s `rollup`).
pub const ROLLUP_INPUTS_NAMESPACE: &str = "rollup_inputs";

/// Which shards a read covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ShardSet {
    /// Every shard the store holds.
    #[default]
    All,
    /// Only these (sorted, distinct).
    Only(Vec<u32>),
}

impl ShardSet {
    /// A set of exactly these shards (sorted and deduplicated here).
    pub fn only(mut shards: Vec<u32>) -> Self {
        shards.sort_unstable();
        shards.dedup();
        ShardSet::Only(shards)
    }

    pub fn contains(&self, shard: u32) -> bool {
        match self {
            ShardSet::All => true,
            ShardSet::Only(s) => s.binary_search(&shard).is_ok(),
        }
    }
}

/// What the query around a selector will do with it, so a store may later
/// compute part of it where the data is (Prometheus's `SelectHints`). A store
/// is free to ignore every hint: the answer must be the same.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelectHints {
    /// The evaluation step of a range query (ms); None for instant queries.
    pub step_ms: Option<i64>,
    /// The range of the enclosing range-vector selector (ms), e.g. 5m in `rate(x[5m])`.
    pub range_ms: Option<i64>,
    /// The function applied to the selector, e.g. `rate`.
    pub func: Option<String>,
    /// The grouping labels of the enclosing aggregation.
    pub grouping: Vec<String>,
    /// True for `by (…)`, false for `without (…)`.
    pub by: bool,
}

/// Bounds on what one read may return; 0 means no bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadLimits {
    pub max_series: usize,
    pub max_samples: usize,
}

/// A read of series with their samples.
#[derive(Debug, Clone)]
pub struct SelectRequest {
    pub tenant: String,
    pub namespace: String,
    pub matchers: Vec<Matcher>,
    /// Inclusive, ms.
    pub start: Timestamp,
    /// Inclusive, ms.
    pub end: Timestamp,
    pub hints: SelectHints,
    pub shards: ShardSet,
    pub limits: ReadLimits,
    pub deadline: Option<Instant>,
    /// Whether the caller prefers encoded chunks (a remote caller decoding
    /// lazily) to decoded samples. A store may answer either way.
    pub prefer_chunks: bool,
    /// Whether the caller wants only each series' [`SampleDigest`] (a
    /// replicated read comparing a replica's copy with another's). A
    /// store may answer with samples instead.
    ///
    /// [`SampleDigest`]: crate::SampleDigest
    pub digest: bool,
    /// With `digest`: shard sums (see
    /// [`SeriesReader::shard_sums`](crate::SeriesReader::shard_sums)) of
    /// the replica whose data the caller has; a shard whose own sum the
    /// store finds equal holds the same samples and is left out of the
    /// answer. Empty: every shard asked is answered.
    pub digest_unless: crate::ShardSums,
    /// Whether the caller takes the series in any order (digests matched
    /// by id, a partial aggregation): a store may then leave them unsorted.
    pub any_order: bool,
    /// Where the store notes what the caller should warn about (a shard
    /// answered by fewer replicas than a majority); not sent over the wire.
    pub warnings: Warnings,
    /// The level a replicated store reads at (None: its default; the
    /// request's `X-Cairn-Read-Consistency`); a single store ignores it.
    pub read_level: Option<cairn_cluster::ReadLevel>,
}

/// Warnings a store adds to a read's answer, shared by the request's
/// clones; the caller takes them once the read is done. Each is kept once.
#[derive(Debug, Clone, Default)]
pub struct Warnings(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl Warnings {
    /// Notes `w` (once: a repeat is dropped).
    pub fn push(&self, w: impl Into<String>) {
        let w = w.into();
        let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !v.contains(&w) {
            v.push(w);
        }
    }

    /// The warnings noted so far, in order, leaving none.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl SelectRequest {
    /// A read of `tenant`'s raw series matching `matchers` in `[start, end]`,
    /// every shard, no hints, limits or deadline.
    pub fn new(
        tenant: impl Into<String>,
        matchers: Vec<Matcher>,
        start: Timestamp,
        end: Timestamp,
    ) -> Self {
        SelectRequest {
            tenant: tenant.into(),
            namespace: RAW_NAMESPACE.to_string(),
            matchers,
            start,
            end,
            hints: SelectHints::default(),
            shards: ShardSet::All,
            limits: ReadLimits::default(),
            deadline: None,
            prefer_chunks: false,
            digest: false,
            digest_unless: Vec::new(),
            any_order: false,
            warnings: Warnings::default(),
            read_level: None,
        }
    }

    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    pub fn with_hints(mut self, hints: SelectHints) -> Self {
        self.hints = hints;
        self
    }

    pub fn with_shards(mut self, shards: ShardSet) -> Self {
        self.shards = shards;
        self
    }

    pub fn with_limits(mut self, limits: ReadLimits) -> Self {
        self.limits = limits;
        self
    }

    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    pub fn with_chunks(mut self, prefer: bool) -> Self {
        self.prefer_chunks = prefer;
        self
    }

    /// Leaves out of a digest answer the shards whose sums equal these
    /// (see [`digest_unless`](Self::digest_unless)).
    pub fn with_digest_unless(mut self, sums: crate::ShardSums) -> Self {
        self.digest_unless = sums;
        self
    }

    /// Takes the series in any order (see [`any_order`](Self::any_order)).
    pub fn with_any_order(mut self, any_order: bool) -> Self {
        self.any_order = any_order;
        self
    }

    /// Asks for digests only (see [`digest`](Self::digest)).
    pub fn with_digest(mut self, digest: bool) -> Self {
        self.digest = digest;
        self
    }

    /// Refuses a range that ends before it starts.
    pub fn validate(&self) -> Result<(), StoreError> {
        validate_range(self.start, self.end)
    }

    /// A timeout error once the deadline has passed.
    pub fn check_deadline(&self) -> Result<(), StoreError> {
        check_deadline(self.deadline)
    }

    /// [`validate`](Self::validate) and [`check_deadline`](Self::check_deadline):
    /// what every store checks before reading.
    pub fn check(&self) -> Result<(), StoreError> {
        self.validate()?;
        self.check_deadline()
    }
}

/// A read of label sets, names, values or exemplars (no samples).
#[derive(Debug, Clone)]
pub struct SeriesQuery {
    pub tenant: String,
    pub namespace: String,
    /// Empty: every series of the tenant.
    pub matchers: Vec<Matcher>,
    pub start: Timestamp,
    pub end: Timestamp,
    pub shards: ShardSet,
    /// At most this many results (0: no bound).
    pub limit: usize,
    pub deadline: Option<Instant>,
    /// As [`SelectRequest::read_level`].
    pub read_level: Option<cairn_cluster::ReadLevel>,
    /// As [`SelectRequest::warnings`].
    pub warnings: Warnings,
}

impl SeriesQuery {
    pub fn new(
        tenant: impl Into<String>,
        matchers: Vec<Matcher>,
        start: Timestamp,
        end: Timestamp,
    ) -> Self {
        SeriesQuery {
            tenant: tenant.into(),
            namespace: RAW_NAMESPACE.to_string(),
            matchers,
            start,
            end,
            shards: ShardSet::All,
            limit: 0,
            deadline: None,
            read_level: None,
            warnings: Warnings::default(),
        }
    }

    pub fn with_limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    pub fn validate(&self) -> Result<(), StoreError> {
        validate_range(self.start, self.end)
    }

    pub fn check_deadline(&self) -> Result<(), StoreError> {
        check_deadline(self.deadline)
    }

    /// [`validate`](Self::validate) and [`check_deadline`](Self::check_deadline).
    pub fn check(&self) -> Result<(), StoreError> {
        self.validate()?;
        self.check_deadline()
    }

    /// `v` cut to the limit.
    pub fn truncate<T>(&self, v: Vec<T>) -> Vec<T> {
        cut_to_limit(v, self.limit)
    }
}

/// `v` cut to its first `limit` entries (0: no limit).
pub fn cut_to_limit<T>(mut v: Vec<T>, limit: usize) -> Vec<T> {
    if limit > 0 {
        v.truncate(limit);
    }
    v
}

/// A validated batch for one tenant, to one shard or routed by series id.
#[derive(Debug, Clone)]
pub struct WriteRequest {
    pub tenant: String,
    pub namespace: String,
    /// The shard every series of the batch belongs to; None lets the writer
    /// route each series by its id.
    pub shard: Option<u32>,
    pub batch: PreparedBatch,
    pub consistency: WriteLevel,
    /// Called once the batch is applied, when all that is left is waiting
    /// for it to be durable (no CPU, no more use of the batch): the HTTP
    /// layer gives back the write's turn there, so a turn is not held idle
    /// through an fsync. Not carried to other nodes; a writer that never
    /// calls it leaves the turn held to the end, as before.
    pub applied: Option<Applied>,
    /// A transport's encoding of this request, shared by the copies sent
    /// to several replicas so it is encoded once (by the first that needs
    /// it); a copy whose tenant, namespace, shard, batch or level differs
    /// must get a fresh one.
    pub encoded: EncodedOnce,
}

/// What a store's refusal of a write says when a series given by id
/// alone is not one it holds (nothing of the write was stored): the node
/// service then asks the sender for their labels.
pub const NOT_HELD_BY_ID: &str = "was written by id alone but is not held here";

/// The slot of [`WriteRequest::encoded`].
#[derive(Clone, Default)]
pub struct EncodedOnce(std::sync::Arc<std::sync::OnceLock<std::sync::Arc<Vec<u8>>>>);

impl EncodedOnce {
    /// The encoding, made by `encode` if none is there yet.
    pub fn get_or_init(&self, encode: impl FnOnce() -> Vec<u8>) -> std::sync::Arc<Vec<u8>> {
        self.0.get_or_init(|| std::sync::Arc::new(encode())).clone()
    }
}

impl std::fmt::Debug for EncodedOnce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.get() {
            Some(b) => write!(f, "EncodedOnce({} bytes)", b.len()),
            None => f.write_str("EncodedOnce(empty)"),
        }
    }
}

/// The hook of [`WriteRequest::applied`]: runs at most once, however often
/// it is called (and the request cloned).
#[derive(Clone)]
pub struct Applied(std::sync::Arc<std::sync::Mutex<Option<AppliedFn>>>);

type AppliedFn = Box<dyn FnOnce() + Send>;

impl Applied {
    pub fn new(f: impl FnOnce() + Send + 'static) -> Self {
        Applied(std::sync::Arc::new(std::sync::Mutex::new(Some(Box::new(
            f,
        )))))
    }

    /// Runs the hook if it has not run yet.
    pub fn call(&self) {
        let f = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(f) = f {
            f();
        }
    }
}

impl std::fmt::Debug for Applied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Applied(..)")
    }
}

impl WriteRequest {
    /// A raw-namespace write routed by series id, majority consistency.
    pub fn new(tenant: impl Into<String>, batch: PreparedBatch) -> Self {
        WriteRequest {
            tenant: tenant.into(),
            namespace: RAW_NAMESPACE.to_string(),
            shard: None,
            batch,
            consistency: WriteLevel::default(),
            applied: None,
            encoded: EncodedOnce::default(),
        }
    }

    /// Sets the [`applied`](Self::applied) hook.
    pub fn on_applied(mut self, f: impl FnOnce() + Send + 'static) -> Self {
        self.applied = Some(Applied::new(f));
        self
    }

    /// A write to `namespace` (an aggregated one) rather than raw.
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    pub fn to_shard(mut self, shard: u32) -> Self {
        self.shard = Some(shard);
        self
    }

    pub fn with_consistency(mut self, consistency: WriteLevel) -> Self {
        self.consistency = consistency;
        self
    }
}

fn validate_range(start: Timestamp, end: Timestamp) -> Result<(), StoreError> {
    if start > end {
        return Err(StoreError::invalid(format!(
            "time range ends ({end}) before it starts ({start})"
        )));
    }
    Ok(())
}

fn check_deadline(deadline: Option<Instant>) -> Result<(), StoreError> {
    match deadline {
        Some(d) if Instant::now() >= d => Err(StoreError::timeout("deadline exceeded")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consistency_counts_acknowledgements() {
        assert_eq!(WriteLevel::One.required_acks(3), 1);
        assert_eq!(WriteLevel::Majority.required_acks(3), 2);
        assert_eq!(WriteLevel::Majority.required_acks(1), 1);
        assert_eq!(WriteLevel::Majority.required_acks(4), 3);
        assert_eq!(WriteLevel::All.required_acks(3), 3);
        assert_eq!(WriteLevel::One.required_acks(0), 0);
    }

    #[test]
    fn shard_sets_and_ranges() {
        let s = ShardSet::only(vec![5, 1, 5]);
        assert_eq!(s, ShardSet::Only(vec![1, 5]));
        assert!(s.contains(5) && !s.contains(2) && ShardSet::All.contains(2));
        let r = SelectRequest::new("t", vec![], 10, 5);
        assert_eq!(
            r.validate().unwrap_err().kind(),
            crate::ErrorKind::InvalidInput
        );
        let past = Instant::now() - std::time::Duration::from_secs(1);
        let e = SelectRequest::new("t", vec![], 0, 5)
            .with_deadline(past)
            .check_deadline()
            .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Timeout);
        assert_eq!(
            SeriesQuery::new("t", vec![], 0, 1)
                .with_limit(2)
                .truncate(vec![1, 2, 3]),
            [1, 2]
        );
    }
}
