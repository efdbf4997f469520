//! Limits on what one peer may take: failed logins per source address and
//! connections per user.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Addresses tracked at most; past it the ones with the oldest failure are
/// forgotten first, so a flood of sources cannot grow the table without bound.
const MAX_TRACKED_ADDRESSES: usize = 100_000;

/// Failed logins per source address within a sliding window. Past the limit
/// an address is refused without its credentials being checked until its
/// oldest failure in the window has aged out.
#[derive(Debug)]
pub struct LoginLimiter {
    /// Failures allowed within `window` (0: no limit).
    max_failures: u32,
    /// The window.
    window: Duration,
    /// Recent failures by address, oldest first.
    failures: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl LoginLimiter {
    /// A limiter allowing `max_failures` per `window` (0: unlimited).
    pub fn new(max_failures: u32, window: Duration) -> Self {
        Self {
            max_failures,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// How long failures count against an address.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Whether `addr` may try to log in now.
    pub fn allowed(&self, addr: IpAddr, now: Instant) -> bool {
        if self.max_failures == 0 {
            return true;
        }
        let mut failures = self.failures.lock();
        let Some(times) = failures.get_mut(&addr) else {
            return true;
        };
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            times.pop_front();
        }
        if times.is_empty() {
            failures.remove(&addr);
            return true;
        }
        times.len() < self.max_failures as usize
    }

    /// Records a failed login from `addr`.
    pub fn failed(&self, addr: IpAddr, now: Instant) {
        if self.max_failures == 0 {
            return;
        }
        let mut failures = self.failures.lock();
        if failures.len() >= MAX_TRACKED_ADDRESSES && !failures.contains_key(&addr) {
            let window = self.window;
            failures.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.duration_since(*t) < window)
            });
            if failures.len() >= MAX_TRACKED_ADDRESSES {
                let oldest = failures
                    .iter()
                    .min_by_key(|(_, times)| times.back().copied())
                    .map(|(a, _)| *a);
                if let Some(oldest) = oldest {
                    failures.remove(&oldest);
                }
            }
        }
        let times = failures.entry(addr).or_default();
        times.push_back(now);
        while times.len() > self.max_failures as usize {
            times.pop_front();
        }
    }
}

/// Open connections per authenticated user.
#[derive(Debug, Default)]
pub struct UserConnections {
    /// Connections by user name.
    counts: Mutex<HashMap<String, u32>>,
}

/// One counted connection; uncounted when dropped.
#[derive(Debug)]
pub struct UserSlot {
    /// Whose connection.
    user: String,
    /// The table it is counted in.
    table: Arc<UserConnections>,
}

impl UserConnections {
    /// Counts a connection of `user` unless it already has `max` open
    /// (0: unlimited); None when it has.
    pub fn acquire(self: &Arc<Self>, user: &str, max: u32) -> Option<UserSlot> {
        let mut counts = self.counts.lock();
        let count = counts.entry(user.to_owned()).or_insert(0);
        if max > 0 && *count >= max {
            return None;
        }
        *count += 1;
        Some(UserSlot {
            user: user.to_owned(),
            table: Arc::clone(self),
        })
    }

    /// Connections `user` has open.
    pub fn count(&self, user: &str) -> u32 {
        self.counts.lock().get(user).copied().unwrap_or(0)
    }
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut counts = self.table.counts.lock();
        if let Some(count) = counts.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn an_address_is_refused_after_its_failures_until_the_window_passes() {
        let limiter = LoginLimiter::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(limiter.allowed(ip(1), t0), "attempt {i}");
            limiter.failed(ip(1), t0 + Duration::from_secs(i));
        }
        assert!(!limiter.allowed(ip(1), t0 + Duration::from_secs(10)));
        assert!(
            limiter.allowed(ip(2), t0),
            "other addresses are not affected"
        );
        // The oldest failure ages out: one more try.
        assert!(!limiter.allowed(
            ip(1),
            t0 + Duration::from_secs(60) - Duration::from_millis(1)
        ));
        assert!(limiter.allowed(ip(1), t0 + Duration::from_secs(60)));
    }

    #[test]
    fn zero_means_no_limit() {
        let limiter = LoginLimiter::new(0, Duration::from_secs(60));
        let t0 = Instant::now();
        for _ in 0..100 {
            limiter.failed(ip(1), t0);
        }
        assert!(limiter.allowed(ip(1), t0));
    }

    #[test]
    fn the_table_stays_bounded() {
        let limiter = LoginLimiter::new(1, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED_ADDRESSES as u32 + 10) {
            limiter.failed(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert!(limiter.failures.lock().len() <= MAX_TRACKED_ADDRESSES);
    }

    #[test]
    fn user_connections_are_counted_and_released() {
        let table = Arc::new(UserConnections::default());
        let a = table.acquire("alice", 2).expect("first");
        let _b = table.acquire("alice", 2).expect("second");
        assert!(table.acquire("alice", 2).is_none(), "third refused");
        assert!(table.acquire("bob", 2).is_some());
        drop(a);
        assert_eq!(table.count("alice"), 1);
        assert!(table.acquire("alice", 2).is_some());
        assert!(table.acquire("carol", 0).is_some(), "0 is unlimited");
    }
}
