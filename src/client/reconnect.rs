//! When to try again: exponential backoff with jitter between reconnect attempts.
//!
//! The first retry waits about 100 ms, each further one about twice the last, up to the
//! cap. Jitter spreads the clients of a restarted server over the window instead of having
//! them all knock at once: each wait is drawn from the upper half of its step, so it never
//! shrinks below half of it. A connection that stayed open for [`RESET_AFTER`] counts as a
//! success: the next break starts from the bottom again. (Lived, not "carried an echo": a
//! server that echoes one message and then crashes would otherwise be hammered at 100 ms.)

use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

/// The first wait.
const FIRST: Duration = Duration::from_millis(100);

/// A connection open this long resets the backoff.
pub const RESET_AFTER: Duration = Duration::from_secs(10);

/// The waits between attempts.
#[derive(Debug)]
pub(crate) struct Backoff {
    /// Failed attempts since the last connection that lived.
    failures: u32,
    cap: Duration,
    seed: u64,
}

impl Backoff {
    pub(crate) fn new(cap: Duration) -> Backoff {
        // std's hasher keys are random per process: jitter without a dependency.
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Backoff {
            failures: 0,
            cap,
            seed,
        }
    }

    /// A connection opened at `opened` has ended: if it lived long enough, start over.
    pub(crate) fn connection_ended(&mut self, opened: Instant) {
        if opened.elapsed() >= RESET_AFTER {
            self.failures = 0;
        }
    }

    /// The attempt number of the next try (1 for the first retry) and how long to wait first.
    pub(crate) fn next(&mut self) -> (u32, Duration) {
        self.failures = self.failures.saturating_add(1);
        let step = FIRST
            .saturating_mul(1u32 << (self.failures - 1).min(20))
            .min(self.cap);
        // xorshift64*: plenty for jitter.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let half = step / 2;
        let nanos = half.as_nanos() as u64;
        let jitter = if nanos == 0 { 0 } else { self.seed % nanos };
        (self.failures, half + Duration::from_nanos(jitter))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_from_100_ms_up_to_the_cap_with_jitter_in_the_upper_half() {
        let mut b = Backoff::new(Duration::from_secs(1));
        let steps = [100, 200, 400, 800, 1000, 1000];
        for (i, step) in steps.into_iter().enumerate() {
            let (attempt, wait) = b.next();
            assert_eq!(attempt as usize, i + 1);
            let step = Duration::from_millis(step);
            assert!(
                wait >= step / 2 && wait <= step,
                "{wait:?} for step {step:?}"
            );
        }
    }

    #[test]
    fn a_connection_that_lived_resets_the_waits() {
        let mut b = Backoff::new(Duration::from_secs(30));
        for _ in 0..5 {
            b.next();
        }
        b.connection_ended(Instant::now() - RESET_AFTER);
        assert_eq!(b.next().0, 1);
        b.connection_ended(Instant::now());
        assert_eq!(b.next().0, 2);
    }
}
