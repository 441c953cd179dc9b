//! When to try DSM again after a failed login or API-list load: exponential, with added
//! jitter so replicas that failed together do not retry together, and starting high after a
//! refused password so N replicas stay under DSM's auto-block (about 10 failures in 5 minutes,
//! PROTOCOL.md [S5]). Callers during the window get the last failure without a DSM call.

use std::time::{Duration, Instant};

use super::error::UpstreamError;

/// First pause after a transport failure (NAS down, timeout): recover quickly.
const TRANSPORT_START: Duration = Duration::from_secs(1);
/// Longest pause after transport failures, whatever `upstream.login_backoff_max_secs` says: a
/// NAS that cannot be reached counts no failed login, so there is no auto-block to stay under,
/// and the pause only spares callers a full timeout each on a blackholed NAS. Doubled up to
/// that ceiling (300 s), it kept a gateway failing for minutes after a NAS came back from a
/// reboot (a pause of 256 s after a five-minute outage), and the outbox's backlog with it.
/// The outbox's own retries stop growing at the same 15 s.
const TRANSPORT_MAX: Duration = Duration::from_secs(15);
/// First pause after DSM refused the account (400–411): with the doubling that follows,
/// one replica makes at most 2 attempts in any 5 minutes, so 4 replicas stay under 10.
const CREDENTIALS_START: Duration = Duration::from_secs(120);
/// Jitter is added, never subtracted: up to this fraction of the pause.
const JITTER: f64 = 0.25;

#[derive(Default)]
pub struct Backoff {
    failures: u32,
    next_attempt: Option<Instant>,
    last_error: Option<UpstreamError>,
}

impl Backoff {
    /// The remembered failure while its window lasts.
    pub fn check(&self) -> Result<(), UpstreamError> {
        if let (Some(at), Some(last)) = (self.next_attempt, &self.last_error) {
            let now = Instant::now();
            if now < at {
                return Err(UpstreamError::LoginBackoff {
                    retry_after: at - now,
                    last: Box::new(last.clone()),
                });
            }
        }
        Ok(())
    }

    pub fn succeeded(&mut self) {
        *self = Self::default();
    }

    /// Records a failure; answers the pause before the next attempt.
    pub fn failed(&mut self, error: &UpstreamError, max: Duration) -> Duration {
        self.failures += 1;
        let delay = pause(self.failures, error, max, jitter_fraction());
        self.next_attempt = Some(Instant::now() + delay);
        self.last_error = Some(error.clone());
        delay
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Whether a window is in force, and until when.
    #[cfg(test)]
    pub fn remaining(&self) -> Option<Duration> {
        self.next_attempt
            .and_then(|at| at.checked_duration_since(Instant::now()))
    }
}

/// The pause after the `failures`-th failure in a row (before jitter: start, doubling, capped
/// at `max`), plus `jitter` (0..1) of up to [`JITTER`] of it.
fn pause(failures: u32, error: &UpstreamError, max: Duration, jitter: f64) -> Duration {
    let (start, max) = match error {
        // Every refusal of the account (PROTOCOL.md [S4]): wrong credentials, 2-step
        // verification, an account disabled, locked (411) or its password expired, the IP
        // blocked (407). None of them passes in a second, and each attempt counts towards DSM's
        // auto-block (§3.7).
        UpstreamError::LoginRefused { code: 400..=411 } => (CREDENTIALS_START, max),
        _ => (TRANSPORT_START, max.min(TRANSPORT_MAX)),
    };
    let exponent = failures.saturating_sub(1).min(16);
    let base = start.saturating_mul(1 << exponent).min(max);
    base.mul_f64(1.0 + JITTER * jitter.clamp(0.0, 1.0))
}

fn jitter_fraction() -> f64 {
    getrandom::u32().map_or(0.5, |n| f64::from(n) / f64::from(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_secs(300);

    #[test]
    fn transport_failures_start_at_a_second_and_double_up_to_15_s() {
        for e in [
            UpstreamError::Timeout,
            UpstreamError::Unreachable("connection failed"),
            UpstreamError::LoginRefused { code: 100 },
        ] {
            assert_eq!(pause(1, &e, MAX, 0.0), Duration::from_secs(1));
            assert_eq!(pause(2, &e, MAX, 0.0), Duration::from_secs(2));
            assert_eq!(pause(4, &e, MAX, 0.0), Duration::from_secs(8));
            // After a NAS reboot of five minutes (nine failures in a row), the gateway tries
            // again within 15 s of its return, not 256 s.
            assert_eq!(pause(9, &e, MAX, 0.0), TRANSPORT_MAX);
            assert_eq!(pause(20, &e, MAX, 0.0), TRANSPORT_MAX);
            // A lower ceiling of the operator's still wins.
            assert_eq!(
                pause(20, &e, Duration::from_secs(5), 0.0),
                Duration::from_secs(5)
            );
        }
        // Refused credentials still go up to the ceiling.
        let refused = UpstreamError::LoginRefused { code: 400 };
        assert_eq!(pause(20, &refused, MAX, 0.0), MAX);
    }

    #[test]
    fn refused_credentials_start_high_so_replicas_stay_under_the_auto_block() {
        for code in 400..=411 {
            let e = UpstreamError::LoginRefused { code };
            assert_eq!(pause(1, &e, MAX, 0.0), Duration::from_secs(120));
        }
        // A blocked IP (407) or locked account (411) lasts minutes at least; an attempt a
        // second while it does is the flood DSM's auto-block is there to stop.
        let other = UpstreamError::LoginRefused { code: 100 };
        assert_eq!(pause(1, &other, MAX, 0.0), Duration::from_secs(1));
        // Attempts of one replica in the first five minutes: t = 0, 120 (the next is at 360).
        let e = UpstreamError::LoginRefused { code: 400 };
        let mut t = Duration::ZERO;
        let mut attempts = 1;
        for failures in 1.. {
            t += pause(failures, &e, MAX, 0.0);
            if t > Duration::from_secs(300) {
                break;
            }
            attempts += 1;
        }
        assert_eq!(
            attempts, 2,
            "4 replicas make at most 8 failures in 5 minutes"
        );
        // The operator's ceiling still wins.
        assert_eq!(pause(1, &e, Duration::ZERO, 0.7), Duration::ZERO);
    }

    #[test]
    fn jitter_only_lengthens_the_pause_and_varies() {
        let e = UpstreamError::Timeout;
        assert_eq!(pause(3, &e, MAX, 1.0), Duration::from_secs(5));
        let draws: std::collections::HashSet<u64> =
            (0..20).map(|_| (jitter_fraction() * 1e9) as u64).collect();
        assert!(draws.len() > 1, "the jitter is random");
    }
}
