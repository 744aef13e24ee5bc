//! # Byte budgets
//!
//! A bound on the bytes a peer can make us hold at once, as KiB permits of one semaphore.
//! The server has two shared by every connection: the publishes in the connections'
//! pipelines (from the read of their message until they are answered: `inbound_bytes_total`)
//! and the bodies of HTTP responses in flight (`outbound_bytes_total`). The client has one
//! per connection: notifications received and not yet handled by the application
//! ([`super::client::ClientOptions::notify_bytes`]). A single object larger than the whole
//! budget takes all of it (so it waits for the others rather than forever).
//!
//! Owns: [`ByteBudget`]. Calls: tokio's semaphore. Used by the server's `session` and
//! `http`, and by the client.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes held at once, in KiB permits; `0` bytes = no bound.
pub(crate) struct ByteBudget {
    permits: Arc<Semaphore>,
    /// Permits in all (what one object can take at most).
    total: u32,
}

impl ByteBudget {
    pub(crate) fn new(total_bytes: usize) -> ByteBudget {
        // Taken a u32 at a time: more permits than that could never be taken at once.
        let most = Semaphore::MAX_PERMITS.min(u32::MAX as usize);
        let total = match total_bytes {
            0 => most,
            n => (n / 1024).clamp(1, most),
        };
        ByteBudget {
            permits: Arc::new(Semaphore::new(total)),
            total: total as u32,
        }
    }

    /// The permits `len` bytes take.
    fn kib(&self, len: usize) -> u32 {
        u32::try_from(len.div_ceil(1024).max(1))
            .unwrap_or(u32::MAX)
            .min(self.total)
    }

    /// `len` bytes of the budget now, if they are free.
    pub(crate) fn try_take(&self, len: usize) -> Option<OwnedSemaphorePermit> {
        self.permits
            .clone()
            .try_acquire_many_owned(self.kib(len))
            .ok()
    }

    /// `len` bytes of the budget, once they are free (the caller waits: backpressure);
    /// `None` only if the budget was closed.
    pub(crate) async fn take(&self, len: usize) -> Option<OwnedSemaphorePermit> {
        self.permits
            .clone()
            .acquire_many_owned(self.kib(len))
            .await
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_object_larger_than_the_budget_takes_all_of_it_and_no_more() {
        let b = ByteBudget::new(4 * 1024);
        let big = b.take(10 * 1024).await.unwrap();
        assert!(b.try_take(1).is_none(), "the budget is all taken");
        drop(big);
        let a = b.try_take(3 * 1024).expect("3 KiB of 4");
        assert!(b.try_take(2 * 1024).is_none());
        assert!(b.try_take(1024).is_some());
        drop(a);
    }

    #[test]
    fn no_bound_is_a_budget_nothing_exhausts() {
        let b = ByteBudget::new(0);
        let held: Vec<_> = (0..64).map(|_| b.try_take(1 << 30).unwrap()).collect();
        assert_eq!(held.len(), 64);
    }
}
