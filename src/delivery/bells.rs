//! One bell per target for the sends that wait on it: a delivery's finish wakes only the waits
//! on its own target. With one bell for all, every finish woke every waiting send, and each
//! asked the store again: with many sends waiting on busy channels, each finish cost as many
//! store reads as there were waits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;

/// Bells are kept while a wait holds them; those nobody holds are swept when the map has
/// doubled since the last sweep (and holds at least this many).
const SWEEP_FLOOR: usize = 64;

#[derive(Default)]
pub(super) struct FinishBells {
    inner: Mutex<Bells>,
}

#[derive(Default)]
struct Bells {
    by_target: HashMap<String, Weak<Notify>>,
    sweep_above: usize,
}

impl FinishBells {
    /// The bell of `target`, shared by every wait that holds it. A wait registers on it (see
    /// [`Notify::notified`] and `enable`) before it reads the store, so a finish between the two
    /// is not missed.
    pub(super) fn bell(&self, target: &str) -> Arc<Notify> {
        let mut bells = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bell) = bells.by_target.get(target).and_then(Weak::upgrade) {
            return bell;
        }
        if bells.by_target.len() >= bells.sweep_above.max(SWEEP_FLOOR) {
            bells.by_target.retain(|_, bell| bell.strong_count() > 0);
            bells.sweep_above = bells.by_target.len() * 2;
        }
        let bell = Arc::new(Notify::new());
        bells
            .by_target
            .insert(target.to_owned(), Arc::downgrade(&bell));
        bell
    }

    /// Wakes the waits on `target` (a delivery of it finished).
    pub(super) fn ring(&self, target: &str) {
        let bell = {
            let mut bells = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            match bells.by_target.get(target).map(Weak::upgrade) {
                Some(Some(bell)) => bell,
                Some(None) => {
                    bells.by_target.remove(target);
                    return;
                }
                None => return,
            }
        };
        bell.notify_waiters();
    }

    #[cfg(test)]
    fn kept(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_target
            .len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn woken(bell: &Notify, by: impl FnOnce()) -> bool {
        let notified = bell.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        by();
        tokio::time::timeout(Duration::from_millis(50), notified)
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_finish_wakes_the_waits_on_its_target_only() {
        let bells = FinishBells::default();
        let general = bells.bell("channel:1");
        let random = bells.bell("channel:2");
        assert!(Arc::ptr_eq(&general, &bells.bell("channel:1")));
        assert!(woken(&general, || bells.ring("channel:1")).await);
        assert!(!woken(&random, || bells.ring("channel:1")).await);
        assert!(woken(&random, || bells.ring("channel:2")).await);
    }

    #[test]
    fn bells_nobody_holds_are_not_kept() {
        let bells = FinishBells::default();
        let held: Vec<_> = (0..10).map(|n| bells.bell(&format!("user:{n}"))).collect();
        for n in 0..1_000 {
            drop(bells.bell(&format!("channel:{n}")));
        }
        assert!(bells.kept() <= 2 * SWEEP_FLOOR, "{}", bells.kept());
        // A ring of a target nobody waits on drops its bell; the held ones stay.
        bells.ring("channel:999");
        for (n, bell) in held.iter().enumerate() {
            assert!(Arc::ptr_eq(bell, &bells.bell(&format!("user:{n}"))));
        }
    }
}
