//! A throwaway HAProxy (Debian's package) in the foreground: a TCP frontend on a free loopback
//! port balancing over the given backends with a PROXY v2 header, health-checked every 300 ms
//! (the checks carry the header too), a connection to a dead backend sent to another one.
#![allow(dead_code)]
// Test support: a panic here is the failing test's report.
#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// HAProxy, killed when dropped.
pub struct HaProxy {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl HaProxy {
    pub fn start(backends: &[SocketAddr]) -> HaProxy {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let servers: String = backends
            .iter()
            .enumerate()
            .map(|(i, b)| {
                format!(
                    "  server s{i} {b} send-proxy-v2 check check-send-proxy inter 300ms fall 1 rise 2\n"
                )
            })
            .collect();
        let config = dir.path().join("haproxy.cfg");
        std::fs::write(
            &config,
            format!(
                "global\n  maxconn 4000\n\
                 defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 120s\n  timeout server 120s\n  \
                 retries 3\n  option redispatch\n\
                 frontend mqtt\n  bind 127.0.0.1:{port}\n  default_backend samos\n\
                 backend samos\n  balance roundrobin\n{servers}"
            ),
        )
        .unwrap();
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy (Debian package haproxy; scripts/setup.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "HAProxy did not open its port");
            std::thread::sleep(Duration::from_millis(20));
        }
        HaProxy { child, port, dir }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
