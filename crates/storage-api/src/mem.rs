//! The contract for [`MemStore`], the in-memory store tests and
//! `cairn promqltest --storage memory` use: every call answers at once.

use crate::{
    cut_to_limit, guarded, stream_from_vec, BoxFuture, SelectRequest, SeriesQuery, SeriesReader,
    SeriesStream, ShardWriter, StoreError, StoredSeries, WriteRequest, RAW_NAMESPACE,
};
use cairn_common::{
    ExemplarSeries, Labels, MemStore, MetricMetadata, SampleWriter, SeriesSource, WriteOutcome,
};

/// Series per batch of a [`MemStore`] select.
const MEM_BATCH: usize = 256;

fn raw_only(namespace: &str) -> Result<(), StoreError> {
    if namespace != RAW_NAMESPACE {
        return Err(StoreError::not_found(format!(
            "namespace {namespace:?} does not exist (the in-memory store holds {RAW_NAMESPACE:?} only)"
        )));
    }
    Ok(())
}

fn query_checks(q: &SeriesQuery) -> Result<(), StoreError> {
    raw_only(&q.namespace)?;
    q.check()
}

impl SeriesReader for MemStore {
    fn select(&self, req: SelectRequest) -> BoxFuture<'_, Result<SeriesStream<'_>, StoreError>> {
        Box::pin(async move {
            raw_only(&req.namespace)?;
            req.check()?;
            let all = SeriesSource::select(self, &req.tenant, &req.matchers, req.start, req.end)?;
            let all = all
                .into_iter()
                .map(|s| match req.digest {
                    // Named by id, as the storage node names them.
                    true => {
                        let mut d = crate::SampleDigest::of(&s.samples);
                        d.series = Some(cairn_common::SeriesId::of(&req.tenant, &s.labels));
                        StoredSeries {
                            samples: crate::SeriesSamples::Digest(d),
                            labels: Default::default(),
                        }
                    }
                    false => StoredSeries::from(s),
                })
                .collect();
            Ok(guarded(stream_from_vec(all, MEM_BATCH), &req))
        })
    }

    fn series(&self, q: SeriesQuery) -> BoxFuture<'_, Result<Vec<Labels>, StoreError>> {
        Box::pin(async move {
            query_checks(&q)?;
            let v = SeriesSource::series(self, &q.tenant, &q.matchers, q.start, q.end)?;
            Ok(q.truncate(v))
        })
    }

    fn label_names(&self, q: SeriesQuery) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            query_checks(&q)?;
            let v = SeriesSource::label_names(self, &q.tenant, &q.matchers, q.start, q.end)?;
            Ok(q.truncate(v))
        })
    }

    fn label_values(
        &self,
        q: SeriesQuery,
        name: String,
    ) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            query_checks(&q)?;
            let v =
                SeriesSource::label_values(self, &q.tenant, &name, &q.matchers, q.start, q.end)?;
            Ok(q.truncate(v))
        })
    }

    fn exemplars(&self, q: SeriesQuery) -> BoxFuture<'_, Result<Vec<ExemplarSeries>, StoreError>> {
        Box::pin(async move {
            query_checks(&q)?;
            let v = SeriesSource::exemplars(self, &q.tenant, &q.matchers, q.start, q.end)?;
            Ok(q.truncate(v))
        })
    }

    fn metadata(
        &self,
        tenant: String,
        metric: Option<String>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(String, MetricMetadata)>, StoreError>> {
        Box::pin(async move {
            let v = SeriesSource::metadata(self, &tenant, metric.as_deref())?;
            Ok(cut_to_limit(v, limit))
        })
    }
}

impl ShardWriter for MemStore {
    fn write(&self, req: WriteRequest) -> BoxFuture<'_, Result<WriteOutcome, StoreError>> {
        Box::pin(async move {
            raw_only(&req.namespace)?;
            Ok(SampleWriter::write(self, &req.tenant, req.batch)?)
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_in_memory_store_passes_the_conformance_suite() {
        crate::conformance::run(&cairn_common::MemStore::new());
    }
}
