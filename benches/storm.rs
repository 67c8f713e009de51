//! Connection storms: every node reconnecting at once, half over TLS, all with passwords
//! (the default PBKDF2-SHA512 cost of `samos passwd`, 210,000 iterations). Nodes share
//! logins in groups (`STORM_USERS` logins, default 20), as fleets provisioned per site do.
//!
//! Five waves against one `samos serve`, each opening every connection as fast as the
//! client can (256 handshakes at a time) and then closing them all:
//!
//! 1. cold: the server has verified no password yet;
//! 2. warm: the same nodes reconnect (the verified-password cache answers);
//! 3. warm again, and
//! 4. warm a third time: memory after this one must not exceed the previous wave's by more
//!    than 5 % (the heap settles over the first waves; a leak grows on);
//! 5. restarted: the server is killed and started again, then every node reconnects.
//!
//! For each: the time until every connection was admitted, the server's CPU time per
//! admission (from `/proc/{pid}/stat`), the slow hashes it computed, and after the nodes left
//! and memory stopped falling `samos_connections`, open descriptors, resident memory and its
//! anonymous part (the heap; the rest is the executable's code pages) against the first wave's.
//!
//! The five waves run once per server key type (`STORM_KEYS`, default `ecdsa-p256,rsa-2048`):
//! a TLS handshake's cost is mostly the server's signature, about 25 times dearer with RSA-2048
//! than with ECDSA P-256, and which one a fleet uses is the operator's choice.
//!
//! `cargo bench --bench storm` (`STORM_CONNECTIONS`, default 20,000, lowered to what the
//! process's file-descriptor limit allows: each side holds one descriptor per connection).
//! Writes `target/samos-bench/storm.md`.
// A benchmark harness: a panic is its failure report.
#![allow(clippy::unwrap_used)]

#[path = "common/mod.rs"]
mod common;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    KeyKind, Samos, anon_mib, certs_with, connect_all, cpu_seconds, env_or, fd_limit, metric_value,
    metrics_text, open_fds, rss_mib,
};
use samos_server::auth::{DEFAULT_ITERATIONS, PasswordFile};
use samos_tools::client::ClientTls;

fn metric(addr: SocketAddr, name: &str) -> f64 {
    metric_value(&metrics_text(addr), name)
}

fn start(dir: &Path, certs: &Path, passwords: &Path) -> Samos {
    let logins = format!(
        "password_file = \"{}\"\nallow_anonymous = false",
        passwords.display()
    );
    Samos::with_tcp_and_tls(dir, certs, &logins)
}

/// The waves, in order; the last one restarts the server first.
const WAVES: [&str; 5] = [
    "cold",
    "warm",
    "warm again",
    "warm a third time",
    "restarted",
];

struct Wave {
    key: KeyKind,
    label: &'static str,
    admitted: usize,
    seconds: f64,
    cpu_ms_per_admission: f64,
    hashes: f64,
    connections_after: f64,
    fds_after: usize,
    rss_before_mib: f64,
    rss_after_mib: f64,
    anon_before_mib: f64,
    anon_after_mib: f64,
}

/// The five waves against one server whose certificate has a key of `key`.
fn storm(runtime: &tokio::runtime::Runtime, key: KeyKind, n: usize, users: usize) -> Vec<Wave> {
    let dir = tempfile::tempdir().unwrap();
    let certs = certs_with(dir.path(), key);
    let passwords = dir.path().join("passwords");
    let mut file = PasswordFile::default();
    for u in 0..users {
        file.set(&format!("site{u}"), "storm-password", DEFAULT_ITERATIONS);
    }
    file.save(&passwords).unwrap();
    let ca = ClientTls::from_ca(&certs.join("ca.crt"), "localhost").unwrap();
    let mut samos = start(dir.path(), &certs, &passwords);
    let mut waves = Vec::new();
    // Three warm waves: the allocator's heap settles over the first ones (fragmentation that
    // levels off); growth that goes on from the second to the third would be a leak.
    for label in WAVES {
        if label == "restarted" {
            drop(samos);
            samos = start(dir.path(), &certs, &passwords);
        }
        let pid = samos.child.id();
        let (tcp, tls, metrics) = (
            samos.ready["mqtt"][0].as_str().unwrap().parse().unwrap(),
            samos.ready["mqtts"][0].as_str().unwrap().parse().unwrap(),
            samos.addr("metrics"),
        );
        let (rss_before, anon_before) = (rss_mib(pid), anon_mib(pid));
        let hashes_before = metric(metrics, "samos_password_hashes_total");
        let cpu_before = cpu_seconds(pid);
        let (clients, seconds) = runtime.block_on(connect_all(
            n,
            tcp,
            Some((tls, ca.clone())),
            |i| Some((format!("site{}", i % users), "storm-password".into())),
            "node",
        ));
        let cpu = cpu_seconds(pid) - cpu_before;
        let admitted = metric(metrics, "samos_connections") as usize;
        assert_eq!(admitted, n, "every connection admitted");
        let hashes = metric(metrics, "samos_password_hashes_total") - hashes_before;
        runtime.block_on(async {
            for c in clients {
                let _ = c.disconnect().await;
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        while metric(metrics, "samos_connections") > 0.0 {
            assert!(
                Instant::now() < deadline,
                "connections never went back to 0"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        settle(pid);
        let wave = Wave {
            key,
            label,
            admitted,
            seconds,
            cpu_ms_per_admission: cpu * 1000.0 / n as f64,
            hashes,
            connections_after: metric(metrics, "samos_connections"),
            fds_after: open_fds(pid),
            rss_before_mib: rss_before,
            rss_after_mib: rss_mib(pid),
            anon_before_mib: anon_before,
            anon_after_mib: anon_mib(pid),
        };
        eprintln!(
            "storm: {} {label}: {} admitted in {:.2} s, {:.3} ms CPU each, {} slow hashes; after: {} connections, {} fds, {:.1} MiB, {:.1} MiB anonymous (before: {:.1}, {:.1})",
            key.name(),
            wave.admitted,
            wave.seconds,
            wave.cpu_ms_per_admission,
            wave.hashes,
            wave.connections_after,
            wave.fds_after,
            wave.rss_after_mib,
            wave.anon_after_mib,
            wave.rss_before_mib,
            wave.anon_before_mib
        );
        waves.push(wave);
    }
    waves
}

/// Waits for the server to give freed memory back: past its ten-second check for a crowd that
/// left (`memory.rs`) and the allocator's own return of free pages, until resident memory has
/// not fallen for three seconds (at most 40 s).
fn settle(pid: u32) {
    let start = Instant::now();
    let mut last = rss_mib(pid);
    let mut steady = 0;
    while start.elapsed() < Duration::from_secs(40) {
        std::thread::sleep(Duration::from_secs(1));
        let now = rss_mib(pid);
        steady = if now < last - 0.05 { 0 } else { steady + 1 };
        last = now;
        if steady >= 3 && start.elapsed() >= Duration::from_secs(12) {
            return;
        }
    }
}

fn main() {
    let users: usize = env_or("STORM_USERS", 20);
    let wanted: usize = env_or("STORM_CONNECTIONS", 20_000);
    let keys: Vec<KeyKind> = std::env::var("STORM_KEYS")
        .unwrap_or_else(|_| "ecdsa-p256,rsa-2048".into())
        .split(',')
        .map(|k| KeyKind::parse(k.trim()).unwrap_or_else(|| panic!("STORM_KEYS: unknown key {k}")))
        .collect();
    // Each side holds a descriptor per connection, plus its own files and a margin.
    let n = wanted.min(fd_limit().saturating_sub(600)) & !1;
    eprintln!(
        "storm: {n} connections (asked for {wanted}; this process may open {}), half over TLS, {users} logins at {DEFAULT_ITERATIONS} PBKDF2 iterations",
        fd_limit()
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut waves = Vec::new();
    for key in keys {
        waves.extend(storm(&runtime, key, n, users));
    }
    let mut md = format!(
        "{n} connections, half over TLS, {users} logins at {DEFAULT_ITERATIONS} PBKDF2-SHA512 iterations, 256 handshakes at a time\n\n\
         | server key | wave | admitted | all admitted after (s) | server CPU per admission (ms) | slow password hashes | connections after | fds after | RSS before → after (MiB) | anonymous before → after (MiB) |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    for w in &waves {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.2} | {:.3} | {} | {} | {} | {:.1} → {:.1} | {:.1} → {:.1} |",
            w.key.name(),
            w.label,
            w.admitted,
            w.seconds,
            w.cpu_ms_per_admission,
            w.hashes,
            w.connections_after,
            w.fds_after,
            w.rss_before_mib,
            w.rss_after_mib,
            w.anon_before_mib,
            w.anon_after_mib
        );
    }
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/samos-bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("storm.md"), &md).unwrap();
    println!("{md}");
    for key_waves in waves.chunks(WAVES.len()) {
        check(key_waves, users);
    }
}

/// What every key's five waves must show: one hash per login, none on a reconnect, memory and
/// descriptors that stop growing, and freed memory given back.
fn check(waves: &[Wave], users: usize) {
    let (cold, warm, settled) = (&waves[0], &waves[1], &waves[3]);
    let key = cold.key.name();
    assert!(
        warm.hashes == 0.0,
        "{key}: a warm reconnect computed {} hashes",
        warm.hashes
    );
    assert!(
        cold.hashes <= users as f64,
        "{key}: {} hashes for {users} logins",
        cold.hashes
    );
    assert!(
        waves[1..4].iter().all(|w| w.hashes == 0.0),
        "{key}: a warm reconnect computed hashes"
    );
    assert!(
        settled.rss_after_mib <= waves[2].rss_after_mib * 1.05
            && settled.fds_after <= cold.fds_after,
        "{key}: memory or descriptors still grow from storm to storm: {:.1} MiB after the second warm wave, {:.1} after the third",
        waves[2].rss_after_mib,
        settled.rss_after_mib
    );
    for w in waves {
        // Given back once the crowd left (`memory.rs`); before that, 626 MiB stayed.
        assert!(
            w.rss_after_mib <= cold.rss_before_mib * 1.5,
            "{key} {}: {:.1} MiB after the storm, {:.1} before it",
            w.label,
            w.rss_after_mib,
            cold.rss_before_mib
        );
    }
}
