//! Fetching: the only caller of the storage contract ([`SeriesReader`]).
//! Selectors are read over the time range the plan gave them, counted
//! against the sample limit, and wrapped as [`Fetched`] series.
//!
//! The entry points are `async`, as the contract is: a remote store (the
//! cluster's query role fanning out to shards) answers asynchronously;
//! `exec::run` drives them on the calling (read-pool) thread.

use crate::ast::selector_matchers;
use crate::value::{too_many_samples, QueryError, Result};
use cairn_common::{is_stale_nan, Labels, Matcher, Sample, SeriesData, METRIC_NAME};
use cairn_storage_api::{
    decode_batch, next_batch, select_all, ErrorKind, SelectRequest, SeriesReader, StoreError,
};
use promql_parser::parser::VectorSelector;
use std::sync::Arc;

/// One fetched series. Series of range selectors have their staleness
/// markers removed at load time (range selectors never see them).
pub(crate) struct Fetched {
    pub labels: Arc<Labels>,
    pub samples: Vec<Sample>,
    /// Whether the metric name does not look like a counter's (for
    /// `rate`'s annotation), decided once.
    pub odd_counter_name: bool,
    /// Whether any sample is below its predecessor (a counter reset), so
    /// `rate` over windows of a series without one skips looking for them.
    pub may_reset: bool,
}

/// Whether `rate()` of metric `n` deserves "might not be a counter".
pub(crate) fn not_counter_name(n: &str) -> bool {
    !n.ends_with("_total")
        && !n.ends_with("_sum")
        && !n.ends_with("_count")
        && !n.ends_with("_bucket")
}

/// The series of selector `vs` over `[mint, maxt]` (the union over its
/// `or` alternatives), counted into `loaded` against `max_samples`.
pub(crate) async fn fetch(
    src: &dyn SeriesReader,
    tenant: &str,
    vs: &VectorSelector,
    mint: i64,
    maxt: i64,
    loaded: &mut usize,
    max_samples: usize,
) -> Result<Vec<SeriesData>> {
    let groups = selector_matchers(vs)?;
    let mut series: Vec<SeriesData> = Vec::new();
    for g in &groups {
        let got = select_all(src, SelectRequest::new(tenant, g.clone(), mint, maxt))
            .await
            .map_err(|e| storage_err(vs, e))?;
        if groups.len() == 1 {
            series = got;
        } else {
            for s in got {
                if !series.iter().any(|x| x.labels == s.labels) {
                    series.push(s);
                }
            }
        }
    }
    *loaded += series.iter().map(|s| s.samples.len()).sum::<usize>();
    if *loaded > max_samples {
        return Err(too_many_samples());
    }
    Ok(series)
}

/// The store's error as the query's: its kind decides the status (an
/// unavailable or rate-limited store is 503, a timeout a timeout, a
/// request the store refuses 400).
pub(crate) fn storage_err(vs: &dyn std::fmt::Display, e: StoreError) -> QueryError {
    let msg = format!("selecting {vs}: {e}");
    match e.kind() {
        ErrorKind::Unavailable | ErrorKind::RateLimited => QueryError::Unavailable(msg),
        ErrorKind::Timeout => QueryError::Timeout(msg),
        ErrorKind::LimitExceeded => QueryError::Execution(msg),
        // The selector asked for what the store does not hold or refuses
        // (a namespace it does not have): the query's fault, a 400.
        ErrorKind::NotFound | ErrorKind::InvalidInput => QueryError::Parse(msg),
        _ => QueryError::Storage(msg),
    }
}

/// Wraps fetched series; range selectors' staleness markers are dropped.
/// `name`: the selector's metric name, when it has one (then every series
/// has it, and its labels need not be looked at).
pub(crate) fn fetched(series: Vec<SeriesData>, range: bool, name: Option<&str>) -> Vec<Fetched> {
    let odd_name = name.map(not_counter_name);
    series
        .into_iter()
        .map(|mut s| {
            if range && s.samples.iter().any(|x| is_stale_nan(x.v)) {
                s.samples.retain(|x| !is_stale_nan(x.v));
            }
            Fetched {
                odd_counter_name: odd_name
                    .unwrap_or_else(|| not_counter_name(s.labels.metric_name().unwrap_or(""))),
                may_reset: s.samples.windows(2).any(|w| w[1].v < w[0].v),
                labels: s.labels,
                samples: s.samples,
            }
        })
        .collect()
}

/// Selector `vs`'s series for `matchers` over `[mint, maxt]`, handed to
/// `f` in batches (in the source's order, which need not be label order)
/// until it returns false.
pub(crate) async fn select_batched(
    src: &dyn SeriesReader,
    tenant: &str,
    vs: &VectorSelector,
    matchers: &[Matcher],
    mint: i64,
    maxt: i64,
    f: &mut dyn FnMut(Vec<SeriesData>) -> bool,
) -> Result<()> {
    // A fold takes the series in any order (its groups are merged by
    // label set): the store may skip sorting every matching label set.
    let req = SelectRequest::new(tenant, matchers.to_vec(), mint, maxt).with_any_order(true);
    let mut stream = src.select(req).await.map_err(|e| storage_err(vs, e))?;
    while let Some(batch) = next_batch(&mut stream).await {
        let batch = batch
            .and_then(|b| decode_batch(b, mint, maxt))
            .map_err(|e| storage_err(vs, e))?;
        if !f(batch) {
            break;
        }
    }
    Ok(())
}

/// The `target_info` series over `[mint, maxt]`, for an `info()` call
/// without a selector of its own.
pub(crate) async fn target_info(
    src: &dyn SeriesReader,
    tenant: &str,
    mint: i64,
    maxt: i64,
) -> Result<Vec<Fetched>> {
    let req = SelectRequest::new(
        tenant,
        vec![Matcher::equal(METRIC_NAME, "target_info")],
        mint,
        maxt,
    );
    let got = select_all(src, req)
        .await
        .map_err(|e| storage_err(&"target_info", e))?;
    Ok(fetched(got, false, Some("target_info")))
}

/// A store as one query sees it: its selects note their warnings (e.g. a
/// shard answered by fewer replicas than a majority) in one sink, for the
/// query's answer, and count the series they return against the query's
/// `max_series` (0: no bound), failing the select that goes past it.
pub(crate) struct Warned<'a> {
    inner: &'a dyn SeriesReader,
    pub(crate) sink: cairn_storage_api::Warnings,
    max_series: usize,
    selected: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl<'a> Warned<'a> {
    pub(crate) fn new(inner: &'a dyn SeriesReader, max_series: usize) -> Self {
        Warned {
            inner,
            sink: Default::default(),
            max_series,
            selected: Default::default(),
        }
    }
}

/// Turns a select's `__namespace__="…"` matcher (see `resolution`) into
/// the namespace it reads; true when it also names a rollup, whose label
/// the series it returns then lose.
fn route(req: &mut SelectRequest) -> bool {
    use crate::resolution::{NAMESPACE_LABEL, ROLLUP_LABEL};
    use cairn_common::MatchOp;
    let mut rollup = false;
    req.matchers.retain(|m| {
        if m.name == NAMESPACE_LABEL && m.op == MatchOp::Equal {
            req.namespace = m.value.clone();
            return false;
        }
        rollup |= m.name == ROLLUP_LABEL;
        true
    });
    rollup
}

/// A select's stream of rollup series, their `__rollup__` label dropped
/// (one rollup per selector: the label sets stay distinct).
struct Unrolled<'a> {
    inner: cairn_storage_api::SeriesStream<'a>,
}

impl futures_core::Stream for Unrolled<'_> {
    type Item = std::result::Result<Vec<cairn_storage_api::StoredSeries>, StoreError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let mut r = self.inner.as_mut().poll_next(cx);
        if let std::task::Poll::Ready(Some(Ok(batch))) = &mut r {
            for s in batch.iter_mut() {
                let l = s.labels.without(&[crate::resolution::ROLLUP_LABEL]);
                s.labels = std::sync::Arc::new(l);
            }
        }
        r
    }
}

/// A select's stream counting its series into the query's total.
struct Counted<'a> {
    inner: cairn_storage_api::SeriesStream<'a>,
    selected: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    max: usize,
}

impl futures_core::Stream for Counted<'_> {
    type Item = std::result::Result<Vec<cairn_storage_api::StoredSeries>, StoreError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let r = self.inner.as_mut().poll_next(cx);
        if let std::task::Poll::Ready(Some(Ok(batch))) = &r {
            let n = self
                .selected
                .fetch_add(batch.len(), std::sync::atomic::Ordering::Relaxed)
                + batch.len();
            if n > self.max {
                return std::task::Poll::Ready(Some(Err(too_many_series(self.max))));
            }
        }
        r
    }
}

impl SeriesReader for Warned<'_> {
    fn downsampled_until(&self, namespace: &str) -> Option<i64> {
        self.inner.downsampled_until(namespace)
    }

    fn select(
        &self,
        mut req: SelectRequest,
    ) -> cairn_storage_api::BoxFuture<
        '_,
        std::result::Result<cairn_storage_api::SeriesStream<'_>, StoreError>,
    > {
        req.warnings = self.sink.clone();
        let rollup = route(&mut req);
        if self.max_series == 0 && !rollup {
            return self.inner.select(req);
        }
        let (selected, max) = (self.selected.clone(), self.max_series);
        Box::pin(async move {
            let mut stream = self.inner.select(req).await?;
            if max > 0 {
                stream = Box::pin(Counted {
                    inner: stream,
                    selected,
                    max,
                });
            }
            if rollup {
                stream = Box::pin(Unrolled { inner: stream });
            }
            Ok(stream)
        })
    }
    fn series(
        &self,
        q: cairn_storage_api::SeriesQuery,
    ) -> cairn_storage_api::BoxFuture<'_, std::result::Result<Vec<cairn_common::Labels>, StoreError>>
    {
        self.inner.series(q)
    }
    fn label_names(
        &self,
        q: cairn_storage_api::SeriesQuery,
    ) -> cairn_storage_api::BoxFuture<'_, std::result::Result<Vec<String>, StoreError>> {
        self.inner.label_names(q)
    }
    fn label_values(
        &self,
        q: cairn_storage_api::SeriesQuery,
        name: String,
    ) -> cairn_storage_api::BoxFuture<'_, std::result::Result<Vec<String>, StoreError>> {
        self.inner.label_values(q, name)
    }
    fn exemplars(
        &self,
        q: cairn_storage_api::SeriesQuery,
    ) -> cairn_storage_api::BoxFuture<
        '_,
        std::result::Result<Vec<cairn_common::ExemplarSeries>, StoreError>,
    > {
        self.inner.exemplars(q)
    }
    fn metadata(
        &self,
        tenant: String,
        metric: Option<String>,
        limit: usize,
    ) -> cairn_storage_api::BoxFuture<
        '_,
        std::result::Result<Vec<(String, cairn_common::MetricMetadata)>, StoreError>,
    > {
        self.inner.metadata(tenant, metric, limit)
    }

    /// Pushed down to the store as a select would be (warnings into the
    /// sink, the series read counted against `max_series`) — but not over
    /// rollups, whose series lose a label the nodes would group by.
    fn aggregate(
        &self,
        mut req: cairn_storage_api::AggregateRequest,
    ) -> cairn_storage_api::BoxFuture<
        '_,
        std::result::Result<Option<cairn_storage_api::PartialAggregate>, StoreError>,
    > {
        req.select.warnings = self.sink.clone();
        if route(&mut req.select) {
            return Box::pin(async { Ok(None) });
        }
        let (selected, max) = (self.selected.clone(), self.max_series);
        Box::pin(async move {
            let p = self.inner.aggregate(req).await?;
            if let Some(p) = &p {
                let n = selected.fetch_add(p.series as usize, std::sync::atomic::Ordering::Relaxed)
                    + p.series as usize;
                if max > 0 && n > max {
                    return Err(too_many_series(max));
                }
            }
            Ok(p)
        })
    }
}

fn too_many_series(max: usize) -> StoreError {
    StoreError::new(
        ErrorKind::LimitExceeded,
        format!("the query selects more than {max} series (the tenant's max_series_per_query)"),
    )
}
