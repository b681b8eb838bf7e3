//! The ingestion rate limiter: one GCRA bucket per tenant (a theoretical
//! arrival time, TAT, and the emission interval it was computed with).
//!
//! A bucket of burst `b` at rate `r` has emission interval `T = 1/r` and
//! tolerance `b·T`; at time `now` it can take `⌊(now + b·T − max(TAT, now)) / T⌋`
//! items, and taking `n` moves the TAT to `max(TAT, now) + n·T`. When a
//! tenant's rate changes, the items already in use (`(TAT − now) / T_old`)
//! carry over to the new interval, so a change never refills the bucket
//! (rebuilding a `governor` limiter would: its issues #39 and #273), and
//! raising the limit of a throttled tenant lets through only the new rate,
//! not a fresh burst.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Seconds since the limiter's start.
    tat: f64,
    /// Seconds per item.
    interval: f64,
}

/// What the limiter made of a request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Taken: `n` items are within the rate.
    Admitted,
    /// Over the rate now; `retry_after` is when `n` would fit.
    OverRate {
        retry_after: Duration,
        available: u64,
    },
    /// Larger than the burst: it will never fit.
    OverBurst,
}

/// Per-tenant GCRA buckets.
#[derive(Debug)]
pub struct RateLimiter {
    start: Instant,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl RateLimiter {
    pub fn new() -> Self {
        RateLimiter {
            start: Instant::now(),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Seconds since the limiter's start, for `now`.
    fn secs(&self, now: Instant) -> f64 {
        now.saturating_duration_since(self.start).as_secs_f64()
    }

    /// Takes `decide(available)` items from `tenant`'s bucket at `rate`
    /// items/s with `burst`, atomically: `decide` sees what fits now and
    /// returns how many to take (at most that) and a result. A rate of 0
    /// is no limit (`available` is `u64::MAX` and nothing is kept).
    pub fn take_with<R>(
        &self,
        tenant: &str,
        rate: f64,
        burst: u64,
        now: Instant,
        decide: impl FnOnce(u64) -> (u64, R),
    ) -> R {
        if rate <= 0.0 || !rate.is_finite() {
            return decide(u64::MAX).1;
        }
        let now = self.secs(now);
        let interval = 1.0 / rate;
        let mut map = self.buckets.lock();
        let b = map
            .entry(tenant.to_string())
            .or_insert(Bucket { tat: now, interval });
        if b.interval != interval {
            // Items in use carry over: the bucket is never refilled by a change.
            let used = (b.tat - now).max(0.0) / b.interval;
            b.tat = now + used * interval;
            b.interval = interval;
        }
        let tolerance = burst as f64 * interval;
        let from = b.tat.max(now);
        // A small epsilon absorbs float error at exact boundaries.
        let available = ((now + tolerance - from) / interval + 1e-9)
            .floor()
            .max(0.0) as u64;
        let (n, r) = decide(available);
        let n = n.min(available);
        if n > 0 {
            b.tat = from + n as f64 * interval;
        }
        r
    }

    /// Takes all `n` items or none: the verdict says which, and when over
    /// the rate, how long until they would fit.
    pub fn admit(&self, tenant: &str, rate: f64, burst: u64, n: u64, now: Instant) -> Verdict {
        if rate > 0.0 && n > burst {
            return Verdict::OverBurst;
        }
        let interval = if rate > 0.0 { 1.0 / rate } else { 0.0 };
        self.take_with(tenant, rate, burst, now, |available| {
            if n <= available {
                (n, Verdict::Admitted)
            } else {
                // n − available more items must drain first.
                let wait = (n - available) as f64 * interval;
                (
                    0,
                    Verdict::OverRate {
                        retry_after: Duration::from_secs_f64(wait.max(0.0)),
                        available,
                    },
                )
            }
        })
    }

    /// Forgets a tenant's bucket (its tenant was deleted).
    pub fn forget(&self, tenant: &str) {
        self.buckets.lock().remove(tenant);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let l = RateLimiter::new();
        let t0 = l.start;
        // A full bucket takes the burst at once, then nothing more.
        assert_eq!(l.admit("a", 100.0, 1000, 1000, t0), Verdict::Admitted);
        match l.admit("a", 100.0, 1000, 10, t0) {
            Verdict::OverRate {
                retry_after,
                available,
            } => {
                assert_eq!(available, 0);
                assert!(
                    (retry_after.as_secs_f64() - 0.1).abs() < 1e-6,
                    "{retry_after:?}"
                );
            }
            v => panic!("{v:?}"),
        }
        // One second refills rate items.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(l.admit("a", 100.0, 1000, 100, t1), Verdict::Admitted);
        assert!(matches!(
            l.admit("a", 100.0, 1000, 1, t1),
            Verdict::OverRate { .. }
        ));
        // Other tenants have their own bucket.
        assert_eq!(l.admit("b", 100.0, 1000, 1000, t1), Verdict::Admitted);
        assert_eq!(l.admit("a", 100.0, 1000, 1001, t1), Verdict::OverBurst);
        assert_eq!(l.admit("a", 0.0, 0, 1 << 40, t1), Verdict::Admitted);
    }

    #[test]
    fn a_change_of_rate_never_refills_the_bucket() {
        let l = RateLimiter::new();
        let t0 = l.start;
        assert_eq!(l.admit("a", 100.0, 1000, 1000, t0), Verdict::Admitted);
        // Raised tenfold while empty: still empty now, refills at the new rate.
        assert!(matches!(
            l.admit("a", 1000.0, 1000, 1, t0),
            Verdict::OverRate { .. }
        ));
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(l.admit("a", 1000.0, 1000, 100, t1), Verdict::Admitted);
        assert!(matches!(
            l.admit("a", 1000.0, 1000, 1, t1),
            Verdict::OverRate { .. }
        ));
        // Lowered: what is in use counts at the new interval, no refill either.
        let l = RateLimiter::new();
        assert_eq!(l.admit("a", 100.0, 1000, 500, t0), Verdict::Admitted);
        let avail = l.take_with("a", 10.0, 1000, t0, |a| (0, a));
        assert_eq!(avail, 500);
    }

    #[test]
    fn accepted_over_time_is_rate_times_time_plus_burst() {
        let l = RateLimiter::new();
        let t0 = l.start;
        let mut accepted = 0u64;
        // Offered 10× the rate in requests of 50 for 60 s.
        for i in 0..(60 * 200) {
            let now = t0 + Duration::from_millis(i * 5);
            if l.admit("a", 1000.0, 5000, 50, now) == Verdict::Admitted {
                accepted += 50;
            }
        }
        let expect = 1000 * 60 + 5000;
        assert!(accepted.abs_diff(expect) <= 100, "{accepted} vs {expect}");
    }
}
