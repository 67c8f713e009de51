//! Shared by the benchmark harnesses: Samos as its own process, found by its ready file.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `samos serve`, killed when dropped.
pub struct Samos {
    pub child: Child,
    pub ready: serde_json::Value,
}

impl Samos {
    /// Starts `samos serve` with `args` and waits for its ready file in `dir`.
    pub fn start(dir: &Path, args: &[&str]) -> Samos {
        let ready = dir.join("samos-ready.json");
        let child = Command::new(env!("CARGO_BIN_EXE_samos"))
            .args(["serve", "--log", "warn", "--ready-file"])
            .arg(&ready)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("samos");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ready.exists() {
            assert!(Instant::now() < deadline, "samos did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let ready = serde_json::from_str(&std::fs::read_to_string(&ready).unwrap()).unwrap();
        Samos { child, ready }
    }

    /// The first address of `kind` (`mqtt`, `mqtts`) or the metrics endpoint (`metrics`).
    pub fn addr(&self, kind: &str) -> SocketAddr {
        let v = &self.ready[kind];
        v.as_str()
            .or_else(|| v[0].as_str())
            .expect("address in the ready file")
            .parse()
            .unwrap()
    }
}

impl Drop for Samos {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
