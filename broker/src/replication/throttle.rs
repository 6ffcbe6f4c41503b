//! The replication throttle: a byte rate for replicas catching up (not in the ISR: the new
//! replicas of a partition being moved, a broker back after a long absence), shared by
//! every fetcher of a broker, so that moving data does not starve producers and in-sync
//! followers, which are never throttled.

use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// A token bucket of bytes, refilled at `rate` per second, holding at most a tenth of a
/// second's worth and empty at first: a move starts at the rate, not with a burst that
/// would compete with producers.
#[derive(Debug)]
pub struct Throttle {
    rate: f64,
    /// The most the bucket holds.
    burst: f64,
    /// Bytes that may still be fetched now (negative: owed), as of the instant.
    bucket: Mutex<(f64, Instant)>,
}

impl Throttle {
    pub fn new(bytes_per_second: u64) -> Self {
        let rate = bytes_per_second.max(1) as f64;
        Self {
            rate,
            burst: rate / 10.0,
            bucket: Mutex::new((0.0, Instant::now())),
        }
    }

    /// The most one partition of a catching-up replica should ask for in one fetch.
    pub fn fetch_limit(&self, max: usize) -> usize {
        max.min(self.rate as usize).max(1)
    }

    /// Takes `bytes` fetched for a catching-up replica; returns how long such replicas must
    /// wait before fetching again.
    pub fn take(&self, bytes: usize) -> Duration {
        let mut bucket = self.bucket.lock();
        let now = Instant::now();
        let refilled =
            (bucket.0 + now.duration_since(bucket.1).as_secs_f64() * self.rate).min(self.burst);
        let left = refilled - bytes as f64;
        *bucket = (left, now);
        if left >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-left / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bytes_beyond_the_rate_are_paid_for_with_a_wait() {
        let throttle = Throttle::new(1000);
        // Empty at first: the first bytes are paid for too.
        assert_eq!(throttle.take(600), Duration::from_millis(600));
        tokio::time::advance(Duration::from_millis(600)).await;
        assert_eq!(throttle.take(0), Duration::ZERO);
        assert_eq!(throttle.take(900), Duration::from_millis(900));
        tokio::time::advance(Duration::from_millis(900)).await;
        assert_eq!(throttle.take(0), Duration::ZERO);
        tokio::time::advance(Duration::from_secs(10)).await;
        // The bucket holds a tenth of a second's worth, not ten seconds'.
        assert_eq!(throttle.take(1100), Duration::from_secs(1));
        assert_eq!(throttle.fetch_limit(1 << 20), 1000);
    }
}
