//! Brute force: a per-account soft lock with a growing back-off after consecutive failures, and a
//! hard lock at NIST SP 800-63B's ceiling of 100 consecutive failures (lifted by staff); per-IP
//! and per-network throttles on failed logins from everyone.

use serde::{Deserialize, Serialize};

/// `[password.lockout]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Lockout {
    /// Consecutive failures allowed before the first wait.
    pub free_failures: u32,
    /// The first wait; each further failure doubles it.
    pub first_delay_seconds: u64,
    /// The longest wait.
    pub max_delay_seconds: u64,
    /// Consecutive failures after which the account stays locked until staff unlock it (NIST SP
    /// 800-63B: at most 100).
    pub hard_lock_after: u32,
    /// Failed logins from one IP address, over all accounts, within `window_minutes`, after
    /// which password checks from it are refused for the rest of the window.
    pub ip_failures: u32,
    /// The same for its /24 (IPv4) or /48 (IPv6) network.
    pub network_failures: u32,
    pub window_minutes: u32,
}

impl Default for Lockout {
    fn default() -> Self {
        Lockout {
            free_failures: 5,
            first_delay_seconds: 30,
            max_delay_seconds: 3600,
            hard_lock_after: 100,
            ip_failures: 30,
            network_failures: 200,
            window_minutes: 15,
        }
    }
}

/// Where an account stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockState {
    Open,
    /// Locked until this time (µs UTC).
    Until(i64),
    /// Locked until staff unlock it.
    Hard,
}

impl Lockout {
    /// What is wrong with the settings (for `mamori config check`).
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=100).contains(&self.hard_lock_after) {
            return Err(format!(
                "hard_lock_after = {}: 1 to 100 (NIST SP 800-63B)",
                self.hard_lock_after
            ));
        }
        if self.free_failures >= self.hard_lock_after {
            return Err("free_failures must be below hard_lock_after".into());
        }
        if self.first_delay_seconds == 0 || self.max_delay_seconds < self.first_delay_seconds {
            return Err(
                "first_delay_seconds must be positive and at most max_delay_seconds".into(),
            );
        }
        if self.window_minutes == 0 || self.ip_failures == 0 || self.network_failures == 0 {
            return Err("window_minutes, ip_failures and network_failures must be positive".into());
        }
        Ok(())
    }

    /// The wait after `failures` consecutive failures (0 while they are free).
    pub fn delay_seconds(&self, failures: u32) -> u64 {
        if failures < self.free_failures {
            return 0;
        }
        let doublings = (failures - self.free_failures).min(40);
        self.first_delay_seconds
            .saturating_mul(1u64 << doublings)
            .min(self.max_delay_seconds)
    }

    /// The account's state at `now` after `failures` consecutive failures, the last at
    /// `last_failure_at` (µs).
    pub fn state(&self, failures: u32, last_failure_at: i64, now: i64) -> LockState {
        if failures >= self.hard_lock_after {
            return LockState::Hard;
        }
        let until = last_failure_at
            .saturating_add((self.delay_seconds(failures) as i64).saturating_mul(1_000_000));
        if until > now {
            LockState::Until(until)
        } else {
            LockState::Open
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_grows_and_stops_at_the_hard_lock() {
        let l = Lockout::default();
        assert!(l.validate().is_ok());
        let waits: Vec<u64> = (0..10).map(|f| l.delay_seconds(f)).collect();
        assert_eq!(waits, [0, 0, 0, 0, 0, 30, 60, 120, 240, 480]);
        assert_eq!(l.delay_seconds(30), 3600);
        let t = 1_000_000_000;
        assert_eq!(l.state(4, t, t), LockState::Open);
        assert_eq!(l.state(5, t, t + 1), LockState::Until(t + 30_000_000));
        assert_eq!(l.state(5, t, t + 30_000_000), LockState::Open);
        assert_eq!(l.state(99, t, t + 7_200_000_000), LockState::Open);
        assert_eq!(l.state(100, t, i64::MAX), LockState::Hard);
        assert!(
            Lockout {
                hard_lock_after: 101,
                ..l
            }
            .validate()
            .is_err()
        );
    }
}
