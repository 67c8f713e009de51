//! Limits on connections, checked before a connection costs anything (no TLS handshake, no
//! CONNECT read, no password hash): `mqtt.max_connections` open sockets across all listeners,
//! and `mqtt.max_connection_rate_per_ip` new connections per second from one address (the
//! client's, after a PROXY header). A refused socket is closed at once; the refusal is
//! counted (`samos_refusals_total{reason="max_connections"|"connection_rate"}`) and logged at
//! most once a second with the number refused meanwhile.
//!
//! Invariants: a slot is held from accept until the connection's task ends, so the count is
//! exact however a connection ends; the rate table holds only addresses seen in the last two
//! seconds once it grows (it is pruned at 4096 entries), so a scan from many addresses cannot
//! grow it without bound.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::warn;

use crate::metrics::Metrics;
use crate::refusal::Refusal;

/// Prune the rate table once it holds this many addresses.
const PRUNE_AT: usize = 4096;

/// The connection limits every listener shares.
#[derive(Debug)]
pub struct ConnectionLimits {
    /// Open sockets left (`None`: no limit).
    slots: Option<Arc<Semaphore>>,
    max_connections: usize,
    rate: Option<RateTable>,
    refused: RefusalLog,
}

/// New connections per address in the current one-second window.
#[derive(Debug)]
struct RateTable {
    per_second: u32,
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

/// One warning a second at most, with how many were refused since the last.
#[derive(Debug, Default)]
struct RefusalLog {
    last: Mutex<Option<Instant>>,
    since_last: AtomicU64,
}

/// Held while a connection lives: its place under `max_connections`.
#[derive(Debug)]
pub struct Slot {
    _permit: Option<OwnedSemaphorePermit>,
}

impl ConnectionLimits {
    /// `max_connections` and `per_ip_per_second` of 0 mean no limit.
    pub fn new(max_connections: usize, per_ip_per_second: u32) -> ConnectionLimits {
        ConnectionLimits {
            slots: (max_connections > 0).then(|| Arc::new(Semaphore::new(max_connections))),
            max_connections,
            rate: (per_ip_per_second > 0).then(|| RateTable {
                per_second: per_ip_per_second,
                windows: Mutex::new(HashMap::new()),
            }),
            refused: RefusalLog::default(),
        }
    }

    /// A place for a new socket, or `None` (counted and logged) when all are taken.
    pub fn slot(&self, metrics: &Metrics) -> Option<Slot> {
        let Some(slots) = &self.slots else {
            return Some(Slot { _permit: None });
        };
        match slots.clone().try_acquire_owned() {
            Ok(permit) => Some(Slot {
                _permit: Some(permit),
            }),
            Err(_) => {
                metrics.refuse(Refusal::MaxConnections);
                self.refused.note(|n| {
                    warn!(
                        max_connections = self.max_connections,
                        refused = n,
                        "connections refused: mqtt.max_connections reached"
                    );
                });
                None
            }
        }
    }

    /// Whether `ip` may open another connection this second (counted and logged if not).
    pub fn admit_rate(&self, ip: IpAddr, metrics: &Metrics) -> bool {
        let Some(rate) = &self.rate else {
            return true;
        };
        if rate.admit(ip, Instant::now()) {
            return true;
        }
        metrics.refuse(Refusal::ConnectionRate);
        self.refused.note(|n| {
            warn!(%ip, per_second = rate.per_second, refused = n,
                "connections refused: mqtt.max_connection_rate_per_ip exceeded");
        });
        false
    }
}

impl RateTable {
    fn admit(&self, ip: IpAddr, now: Instant) -> bool {
        let mut windows = self.windows.lock().expect("rate table");
        if windows.len() >= PRUNE_AT {
            windows.retain(|_, (start, _)| now.duration_since(*start) < Duration::from_secs(2));
        }
        let (start, count) = windows.entry(ip).or_insert((now, 0));
        if now.duration_since(*start) >= Duration::from_secs(1) {
            *start = now;
            *count = 0;
        }
        if *count >= self.per_second {
            return false;
        }
        *count += 1;
        true
    }
}

impl RefusalLog {
    /// Counts one refusal; calls `log` with the count at most once a second.
    fn note(&self, log: impl FnOnce(u64)) {
        let n = self.since_last.fetch_add(1, Relaxed) + 1;
        let mut last = self.last.lock().expect("refusal log");
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            *last = Some(Instant::now());
            self.since_last.store(0, Relaxed);
            log(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_given_back_when_a_connection_ends() {
        let m = Metrics::default();
        let limits = ConnectionLimits::new(2, 0);
        let a = limits.slot(&m).unwrap();
        let _b = limits.slot(&m).unwrap();
        assert!(limits.slot(&m).is_none());
        drop(a);
        assert!(limits.slot(&m).is_some());
        assert_eq!(m.refusals()["max_connections"], 1);
        assert!(ConnectionLimits::new(0, 0).slot(&m).is_some());
    }

    #[test]
    fn an_address_gets_its_rate_per_second_and_others_are_unaffected() {
        let table = RateTable {
            per_second: 3,
            windows: Mutex::new(HashMap::new()),
        };
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!((0..3).all(|_| table.admit(a, t0)));
        assert!(!table.admit(a, t0 + Duration::from_millis(500)));
        assert!(table.admit(b, t0 + Duration::from_millis(500)));
        assert!(table.admit(a, t0 + Duration::from_millis(1000)));
    }

    #[test]
    fn the_rate_table_forgets_old_addresses_once_it_is_large() {
        let table = RateTable {
            per_second: 1,
            windows: Mutex::new(HashMap::new()),
        };
        let t0 = Instant::now();
        for i in 0..PRUNE_AT as u32 {
            assert!(table.admit(IpAddr::from(i.to_be_bytes()), t0));
        }
        let later = t0 + Duration::from_secs(3);
        assert!(table.admit("192.0.2.1".parse().unwrap(), later));
        assert_eq!(table.windows.lock().unwrap().len(), 1);
    }
}
