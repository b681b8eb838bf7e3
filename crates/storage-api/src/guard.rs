//! A select's limits and deadline, enforced the same way by every store:
//! wrap the store's stream in [`guarded`].

use crate::{SelectRequest, SeriesStream, StoreError, StoredSeries};
use futures_core::Stream;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

/// `inner` with the request's `max_series`, `max_samples` and deadline
/// checked at every batch: the first batch past a limit ends the stream
/// with LimitExceeded (naming the limit), a passed deadline with Timeout.
pub fn guarded<'a>(inner: SeriesStream<'a>, req: &SelectRequest) -> SeriesStream<'a> {
    if req.limits.max_series == 0 && req.limits.max_samples == 0 && req.deadline.is_none() {
        return inner;
    }
    Box::pin(Guarded {
        inner,
        max_series: req.limits.max_series,
        max_samples: req.limits.max_samples,
        deadline: req.deadline,
        series: 0,
        samples: 0,
        done: false,
    })
}

struct Guarded<'a> {
    inner: SeriesStream<'a>,
    max_series: usize,
    max_samples: usize,
    deadline: Option<Instant>,
    series: usize,
    samples: usize,
    done: bool,
}

impl Guarded<'_> {
    fn check(&mut self, batch: &[StoredSeries]) -> Result<(), StoreError> {
        self.series += batch.len();
        self.samples += batch.iter().map(|s| s.samples.len()).sum::<usize>();
        if self.max_series > 0 && self.series > self.max_series {
            return Err(StoreError::limit_exceeded(format!(
                "the query selects more than {} series (max series per query)",
                self.max_series
            )));
        }
        if self.max_samples > 0 && self.samples > self.max_samples {
            return Err(StoreError::limit_exceeded(format!(
                "the query loads more than {} samples (max samples per query)",
                self.max_samples
            )));
        }
        Ok(())
    }
}

impl Stream for Guarded<'_> {
    type Item = Result<Vec<StoredSeries>, StoreError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            self.done = true;
            return Poll::Ready(Some(Err(StoreError::timeout(
                "the select's deadline passed",
            ))));
        }
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(batch))) => {
                let r = self.check(&batch);
                Poll::Ready(Some(match r {
                    Ok(()) => Ok(batch),
                    Err(e) => {
                        self.done = true;
                        Err(e)
                    }
                }))
            }
            Poll::Ready(Some(Err(e))) => {
                self.done = true;
                Poll::Ready(Some(Err(e)))
            }
            other => other,
        }
    }
}
