//! Login throttling per source address, decided before any hashing.
//!
//! Each source (an IPv4 address, or an IPv6 /64) has a bucket of attempts
//! that refills slowly. Only the source is limited, never the user name, so
//! a flood from one place cannot lock the owner out from another.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Attempts a source may make at once, and how fast they come back.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    pub burst: u32,
    pub every: Duration,
}

impl Default for Rate {
    /// 10 attempts, then one more every 6 s (20 a minute at most).
    fn default() -> Rate {
        Rate {
            burst: 10,
            every: Duration::from_secs(6),
        }
    }
}

/// Tracks at most this many sources; full buckets are forgotten first.
const MAX_SOURCES: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
    /// The last attempt was refused (so the next refusal is not news).
    refusing: bool,
}

/// A refused attempt: when to retry, and whether this source was let
/// through last time (the start of a refusal streak, worth one audit row).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Refused {
    pub retry_after: Duration,
    pub first: bool,
}

/// The per-source limiter.
#[derive(Debug)]
pub struct Throttle {
    rate: Rate,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl Throttle {
    pub fn new(rate: Rate) -> Throttle {
        Throttle {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Take one attempt for `source`.
    pub fn attempt(&self, source: IpAddr) -> Result<(), Refused> {
        self.attempt_at(source, Instant::now())
    }

    fn attempt_at(&self, source: IpAddr, now: Instant) -> Result<(), Refused> {
        let key = bucket_key(source);
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_SOURCES && !map.contains_key(&key) {
            self.forget_full(&mut map, now);
        }
        let per_sec = 1.0 / self.rate.every.as_secs_f64();
        let burst = f64::from(self.rate.burst);
        let b = map.entry(key).or_insert(Bucket {
            tokens: burst,
            at: now,
            refusing: false,
        });
        let refill = now.saturating_duration_since(b.at).as_secs_f64() * per_sec;
        b.tokens = (b.tokens + refill).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            b.refusing = false;
            Ok(())
        } else {
            let first = !b.refusing;
            b.refusing = true;
            Err(Refused {
                retry_after: Duration::from_secs_f64((1.0 - b.tokens) / per_sec),
                first,
            })
        }
    }

    /// Drop buckets that have refilled completely (they hold no memory of
    /// abuse); if none has, drop the oldest half.
    fn forget_full(&self, map: &mut HashMap<IpAddr, Bucket>, now: Instant) {
        let full_after = self.rate.every * self.rate.burst;
        map.retain(|_, b| now.saturating_duration_since(b.at) < full_after);
        if map.len() >= MAX_SOURCES {
            let mut ages: Vec<Instant> = map.values().map(|b| b.at).collect();
            ages.sort();
            let cut = ages[ages.len() / 2];
            map.retain(|_, b| b.at > cut);
        }
    }
}

/// IPv6 clients usually own a whole /64; count it as one source.
fn bucket_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut seg = v6.segments();
                seg[4..].fill(0);
                IpAddr::V6(seg.into())
            }
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_from_one_source_leaves_others_alone() {
        let t = Throttle::new(Rate::default());
        let now = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let passed = (0..10).filter(|_| t.attempt_at(a, now).is_ok()).count();
        assert_eq!(passed, 10);
        assert!(t.attempt_at(a, now).unwrap_err().first);
        let passed = (0..10_000).filter(|_| t.attempt_at(a, now).is_ok()).count();
        assert_eq!(passed, 0);
        let refused = t.attempt_at(a, now).unwrap_err();
        assert!(refused.retry_after <= Duration::from_secs(6), "{refused:?}");
        assert!(!refused.first, "the streak began with the 11th attempt");
        assert!(
            t.attempt_at(b, now).is_ok(),
            "another source is not limited"
        );
        // A minute later the source has earned ten more attempts, no more.
        let later = now + Duration::from_secs(60);
        let passed = (0..1000).filter(|_| t.attempt_at(a, later).is_ok()).count();
        assert_eq!(passed, 10);
    }

    #[test]
    fn ipv6_counts_per_64() {
        let t = Throttle::new(Rate {
            burst: 1,
            every: Duration::from_secs(60),
        });
        let now = Instant::now();
        assert!(t.attempt_at("2001:db8::1".parse().unwrap(), now).is_ok());
        assert!(t.attempt_at("2001:db8::2".parse().unwrap(), now).is_err());
        assert!(
            t.attempt_at("2001:db8:0:1::1".parse().unwrap(), now)
                .is_ok()
        );
        assert!(
            t.attempt_at("::ffff:10.0.0.9".parse().unwrap(), now)
                .is_ok()
        );
        assert!(t.attempt_at("10.0.0.9".parse().unwrap(), now).is_err());
    }
}
