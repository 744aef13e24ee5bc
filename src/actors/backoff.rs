//! [`Backoff`]: the pause before retrying something that keeps failing (doubling up to a
//! ceiling, back to the first pause after a success), and when such a failure is worth a
//! `warning` (the first at once, then at most one every [`WARN_EVERY`]), so a failure that
//! lasts is visible but neither floods the log nor costs a retry a second.
//!
//! Owns: one retry schedule. Calls: nothing (tokio's sleep). Used by the outbox drain
//! ([`super::drain`]) and the account's flushes (`account_actor`).

use std::time::{Duration, Instant};

/// Failures are logged as a warning at most once in this long (the first at once).
pub const WARN_EVERY: Duration = Duration::from_secs(60);

/// The pause before the next attempt while failures last, and when the last warning was.
#[derive(Debug)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    pause: Duration,
    warned: Option<Instant>,
}

impl Backoff {
    /// Pauses of `first`, doubling up to `max`.
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max,
            pause: first,
            warned: None,
        }
    }

    /// One more failure; whether it is to be logged as a warning.
    pub fn failed(&mut self) -> bool {
        self.failed_at(Instant::now())
    }

    pub fn failed_at(&mut self, now: Instant) -> bool {
        let warn = self
            .warned
            .map_or(true, |at| now.duration_since(at) >= WARN_EVERY);
        if warn {
            self.warned = Some(now);
        }
        warn
    }

    /// The pause [`Backoff::next_pause`] returns next.
    pub fn pause(&self) -> Duration {
        self.pause
    }

    /// Waits the next pause.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_pause()).await;
    }

    /// The pause before the next attempt (the one after it is twice as long, up to the
    /// ceiling).
    pub fn next_pause(&mut self) -> Duration {
        let pause = self.pause;
        self.pause = (pause * 2).min(self.max);
        pause
    }

    /// Progress: the next failure waits the first pause again (warnings stay spaced).
    pub fn succeeded(&mut self) {
        self.pause = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_ceiling_and_warnings_are_spaced() {
        let mut b = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        let t0 = Instant::now();
        let pauses: Vec<u128> = (0..9).map(|_| b.next_pause().as_millis()).collect();
        assert_eq!(
            pauses,
            [200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000]
        );
        let secs = |s| t0 + Duration::from_secs(s);
        assert!(b.failed_at(secs(0)));
        assert!(!b.failed_at(secs(59)));
        // Successes in between neither warn again early nor keep the long pause.
        b.succeeded();
        assert_eq!(b.pause(), Duration::from_millis(200));
        assert_eq!(b.next_pause(), Duration::from_millis(200));
        assert!(!b.failed_at(secs(30)));
        assert!(b.failed_at(secs(61)));
        assert!(!b.failed_at(secs(62)));
    }
}
