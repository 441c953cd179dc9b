//! Liveness for the shared locks: every DSM exchange has a deadline, so the login and API-list
//! locks are only ever held for a bounded time. A lock held for several timeouts means the
//! gateway is wedged (a bug, a starved runtime), and `/healthz` says so, so an orchestrator
//! restarts the process instead of routing to it forever.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long, in units of `upstream.timeout`, a lock may be held before the gateway counts as
/// wedged. A login legitimately holds its lock for up to three exchanges (API list, login, and
/// the wait for the API-list lock).
pub const WEDGED_AFTER_TIMEOUTS: u32 = 4;

/// When a lock was taken (milliseconds since `epoch`, plus one; 0 = free).
pub struct LockWatch {
    epoch: Instant,
    taken_at: AtomicU64,
}

impl Default for LockWatch {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            taken_at: AtomicU64::new(0),
        }
    }
}

/// Marks the lock free again when dropped (also on a cancelled or panicking holder).
pub struct Held<'a>(&'a LockWatch);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.taken_at.store(0, Ordering::Relaxed);
    }
}

impl LockWatch {
    /// Call right after taking the lock; keep the result alive as long as the lock.
    pub fn hold(&self) -> Held<'_> {
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        self.taken_at.store(now, Ordering::Relaxed);
        Held(self)
    }

    /// How long the lock has been held, if it is.
    pub fn held_for(&self) -> Option<Duration> {
        match self.taken_at.load(Ordering::Relaxed) {
            0 => None,
            at => {
                let now = self.epoch.elapsed().as_millis() as u64 + 1;
                Some(Duration::from_millis(now.saturating_sub(at)))
            }
        }
    }

    /// Whether the lock has been held longer than `limit`.
    pub fn stuck(&self, limit: Duration) -> bool {
        self.held_for().is_some_and(|held| held > limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_held_past_the_limit_is_stuck_and_released_is_not() {
        let watch = LockWatch::default();
        assert!(!watch.stuck(Duration::ZERO));
        let held = watch.hold();
        std::thread::sleep(Duration::from_millis(30));
        assert!(watch.stuck(Duration::from_millis(10)));
        assert!(!watch.stuck(Duration::from_secs(5)));
        drop(held);
        assert!(!watch.stuck(Duration::ZERO));
    }
}
