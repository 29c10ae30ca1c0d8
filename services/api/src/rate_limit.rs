//! A fixed-window rate limiter per client address, in memory (per API process).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The most addresses tracked before windows that have ended are swept.
const SWEEP_AT: usize = 50_000;

/// Allows `limit` requests per client per minute. An IPv4 client is its address; an IPv6
/// client is its /64 network (one host usually holds a whole /64 and could rotate through it).
#[derive(Debug)]
pub struct RateLimiter {
    limit: u32,
    window: Duration,
    seen: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    clients: HashMap<IpAddr, (Instant, u32)>,
    last_sweep: Option<Instant>,
}

/// The key a client is counted under.
fn client_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

impl RateLimiter {
    /// A limiter of `per_minute` requests per address; 0 allows everything.
    pub fn per_minute(per_minute: u32) -> Self {
        Self {
            limit: per_minute,
            window: Duration::from_secs(60),
            seen: Mutex::new(Seen::default()),
        }
    }

    /// `Ok` if the request may go ahead, else how long until the address may try again.
    pub fn check(&self, address: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.limit == 0 {
            return Ok(());
        }
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Sweep ended windows when the map is large, at most once a second.
        if seen.clients.len() >= SWEEP_AT
            && seen
                .last_sweep
                .is_none_or(|last| now.duration_since(last) >= Duration::from_secs(1))
        {
            let window = self.window;
            seen.clients
                .retain(|_, (start, _)| now.duration_since(*start) < window);
            seen.last_sweep = Some(now);
        }
        let entry = seen.clients.entry(client_key(address)).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        if entry.1 >= self.limit {
            return Err(self.window.saturating_sub(now.duration_since(entry.0)));
        }
        entry.1 += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_limit_then_refuses_until_the_window_ends() {
        let limiter = RateLimiter::per_minute(3);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let start = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check(ip, start).is_ok());
        }
        let wait = limiter
            .check(ip, start + Duration::from_secs(10))
            .unwrap_err();
        assert_eq!(wait, Duration::from_secs(50));
        assert!(limiter.check(other, start).is_ok());
        assert!(limiter.check(ip, start + Duration::from_secs(60)).is_ok());
    }

    #[test]
    fn an_ipv6_client_is_counted_by_its_64_network() {
        let limiter = RateLimiter::per_minute(2);
        let start = Instant::now();
        assert!(
            limiter
                .check("2001:db8:1:2::1".parse().unwrap(), start)
                .is_ok()
        );
        assert!(
            limiter
                .check("2001:db8:1:2:ffff::9".parse().unwrap(), start)
                .is_ok()
        );
        assert!(
            limiter
                .check("2001:db8:1:2:abcd::1".parse().unwrap(), start)
                .is_err()
        );
        assert!(
            limiter
                .check("2001:db8:1:3::1".parse().unwrap(), start)
                .is_ok()
        );
    }

    #[test]
    fn zero_turns_it_off() {
        let limiter = RateLimiter::per_minute(0);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..1000 {
            assert!(limiter.check(ip, Instant::now()).is_ok());
        }
    }
}
