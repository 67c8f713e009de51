//! Shared by the benchmark harnesses: Samos, Mosquitto and rumqttd as their own processes,
//! test certificates, and what `/proc` says about a process.
#![allow(dead_code)]
// A benchmark harness: a panic is its failure report.
#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "nothing listening on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The key type of a test CA and server certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    Rsa2048,
    EcdsaP256,
}

impl KeyKind {
    /// `rsa-2048` or `ecdsa-p256`.
    pub fn parse(name: &str) -> Option<KeyKind> {
        match name {
            "rsa-2048" => Some(KeyKind::Rsa2048),
            "ecdsa-p256" => Some(KeyKind::EcdsaP256),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KeyKind::Rsa2048 => "RSA-2048",
            KeyKind::EcdsaP256 => "ECDSA P-256",
        }
    }

    fn openssl_newkey(self) -> &'static str {
        match self {
            KeyKind::Rsa2048 => "rsa:2048",
            KeyKind::EcdsaP256 => "ec -pkeyopt ec_paramgen_curve:P-256",
        }
    }
}

/// A CA and a `localhost` server certificate in `dir` (`ca.crt`, `server.crt`, `server.key`),
/// RSA-2048.
pub fn certs(dir: &Path) -> PathBuf {
    certs_with(dir, KeyKind::Rsa2048)
}

/// A CA and a `localhost` server certificate in `dir`, both with keys of `kind`.
pub fn certs_with(dir: &Path, kind: KeyKind) -> PathBuf {
    let sh = format!(
        r#"set -e; cd {d}
openssl req -x509 -newkey {k} -nodes -days 2 -subj "/CN=bench CA" -keyout ca.key -out ca.crt 2>/dev/null
openssl req -newkey {k} -nodes -subj "/CN=localhost" -keyout server.key -out server.csr 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n' > ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile ext -out server.crt 2>/dev/null"#,
        d = dir.display(),
        k = kind.openssl_newkey()
    );
    let ok = Command::new("sh").arg("-c").arg(sh).status().unwrap();
    assert!(ok.success(), "openssl failed");
    dir.to_path_buf()
}

/// Mosquitto from the Debian package on free loopback ports (TCP and TLS), killed when
/// dropped; `None` when it is not installed.
pub struct Mosquitto {
    pub tcp: SocketAddr,
    pub tls: SocketAddr,
    child: Child,
}

impl Mosquitto {
    /// Allows as much in flight and queued as Samos is given, persistence off (it stores
    /// nothing); with a password file, anonymous clients are refused.
    ///
    /// `None` when Mosquitto is not installed, or `SAMOS_BENCH_NO_MOSQUITTO` is set (an A/B of
    /// two Samos builds needs no peer).
    pub fn start(dir: &Path, certs: &Path, password_file: Option<&Path>) -> Option<Mosquitto> {
        if std::env::var_os("SAMOS_BENCH_NO_MOSQUITTO").is_some() {
            return None;
        }
        let bin = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .into_iter()
            .find(|p| Path::new(p).exists())?;
        let (tcp, tls) = (free_port(), free_port());
        let conf = dir.join("mosquitto.conf");
        let auth = match password_file {
            Some(p) => format!("allow_anonymous false\npassword_file {}\n", p.display()),
            None => "allow_anonymous true\n".to_string(),
        };
        std::fs::write(
            &conf,
            format!(
                "user root\npersistence false\nmax_inflight_messages 1000\nmax_queued_messages 1000000\n\
                 log_dest none\nper_listener_settings false\n{auth}listener {tcp} 127.0.0.1\n\
                 listener {tls} 127.0.0.1\ncertfile {c}/server.crt\nkeyfile {c}/server.key\n",
                c = certs.display()
            ),
        )
        .unwrap();
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let m = Mosquitto {
            tcp: SocketAddr::from(([127, 0, 0, 1], tcp)),
            tls: SocketAddr::from(([127, 0, 0, 1], tls)),
            child,
        };
        wait_listening(m.tcp);
        Some(m)
    }
}

impl Mosquitto {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// rumqttd (`cargo install rumqttd`, optional) on a free loopback port, plain TCP, killed when
/// dropped; `None` when it is not installed. It forwards and stores nothing.
pub struct Rumqttd {
    pub tcp: SocketAddr,
    pub child: Child,
}

impl Rumqttd {
    /// Allows `max_connections` clients with 1000 messages in flight each.
    pub fn start(dir: &Path, max_connections: usize) -> Option<Rumqttd> {
        let bin = which("rumqttd")?;
        let tcp = free_port();
        let conf = dir.join("rumqttd.toml");
        std::fs::write(
            &conf,
            format!(
                r#"id = 0
[router]
id = 0
max_connections = {max_connections}
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10
[v4.1]
name = "v4-1"
listen = "127.0.0.1:{tcp}"
next_connection_delay_ms = 0
[v4.1.connections]
connection_timeout_ms = 60000
max_payload_size = 20480
max_inflight_count = 1000
dynamic_filters = true
"#
            ),
        )
        .unwrap();
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let r = Rumqttd {
            tcp: SocketAddr::from(([127, 0, 0, 1], tcp)),
            child,
        };
        wait_listening(r.tcp);
        Some(r)
    }
}

impl Drop for Rumqttd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `name` on `PATH` or in `~/.cargo/bin`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// The `samos` binary the benches start: this build's, or `SAMOS_BENCH_BIN` (an earlier
/// build, to compare two versions on one machine in one sitting).
pub fn samos_bin() -> PathBuf {
    std::env::var_os("SAMOS_BENCH_BIN")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_samos")), PathBuf::from)
}

/// A running `samos serve`, killed when dropped.
pub struct Samos {
    pub child: Child,
    pub ready: serde_json::Value,
}

impl Samos {
    /// Starts `samos serve` with `args` and waits for its ready file in `dir`.
    pub fn start(dir: &Path, args: &[&str]) -> Samos {
        let ready = dir.join("samos-ready.json");
        let child = Command::new(samos_bin())
            .args([
                "serve",
                "--api-listen",
                "127.0.0.1:0",
                "--log",
                "warn",
                "--ready-file",
            ])
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

    /// Starts `samos serve` with a plain and a TLS MQTT listener (`certs`: `server.crt`,
    /// `server.key`) and metrics, all on free loopback ports, no `$SYS`; `top` is added to the
    /// configuration's top level (a password file, say). Data in `dir/data`.
    pub fn with_tcp_and_tls(dir: &Path, certs: &Path, top: &str) -> Samos {
        let config = dir.join("samos.toml");
        std::fs::write(
            &config,
            format!(
                r#"data_dir = "{d}/data"
{top}
[mqtt]
sys_interval_secs = 0
[[listener]]
bind = "127.0.0.1:0"
[[listener]]
bind = "127.0.0.1:0"
[listener.tls]
cert = "{c}/server.crt"
key = "{c}/server.key"
[metrics]
bind = "127.0.0.1:0"
"#,
                d = dir.display(),
                c = certs.display(),
            ),
        )
        .unwrap();
        let _ = std::fs::remove_file(dir.join("samos-ready.json"));
        Samos::start(dir, &["--config", config.to_str().unwrap()])
    }

    /// Starts `samos serve --config {config}` with MQTT and metrics on free loopback ports.
    pub fn with_config(dir: &Path, config: &Path) -> Samos {
        Samos::start(
            dir,
            &[
                "--config",
                config.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
            ],
        )
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

/// Environment variable `name` parsed, or `default` when unset or unparsable.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The Prometheus text of a metrics endpoint.
pub fn metrics_text(addr: SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The value of sample `name` (with its labels, as written) in Prometheus text; 0 if absent.
pub fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Resident memory of process `pid`, in MiB.
pub fn rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmRSS:")
}

/// Anonymous resident memory of process `pid` in MiB (`RssAnon`: the heap and stacks, without
/// the executable's code pages that `VmRSS` also counts).
pub fn anon_mib(pid: u32) -> f64 {
    status_mib(pid, "RssAnon:")
}

fn status_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// Open file descriptors of process `pid`.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// This process's limit on open files (the soft limit, which children inherit).
pub fn fd_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        .unwrap_or(1024)
}

/// CPU seconds (user and system) process `pid` has used.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces): utime is the 12th, stime 13th.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// Waits until none of `pids` is still working off an earlier load: each used at most 1 % of a
/// core over the last second (at most 60 s). Benches that keep several servers running and
/// load them in turn call it before each load, so that what one server does after its own
/// load — Mosquitto spent 3.2 s of a core after `samos bench`'s 100 × 10,000 QoS 1 load had
/// received everything (2026-12-07), Samos writes Parquet after a large load — is not measured
/// as part of the next. Returns the seconds waited.
pub fn wait_until_idle(pids: &[u32]) -> f64 {
    let started = Instant::now();
    let used = || pids.iter().map(|&p| cpu_seconds(p)).collect::<Vec<_>>();
    let mut before = used();
    while started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_secs(1));
        let now = used();
        if now.iter().zip(&before).all(|(n, b)| n - b <= 0.01) {
            break;
        }
        before = now;
    }
    started.elapsed().as_secs_f64()
}

/// Opens `n` connections, odd ones over TLS when `tls` is given, 256 handshakes at a time,
/// each retried (50 ms apart, at most 50 times) until admitted; client ids
/// `{prefix}{i:06}`, logins from `login(i)`. Returns them and the seconds until the last was
/// admitted.
pub async fn connect_all(
    n: usize,
    tcp: SocketAddr,
    tls: Option<(SocketAddr, samos_tools::client::ClientTls)>,
    login: impl Fn(usize) -> Option<(String, String)>,
    prefix: &str,
) -> (Vec<samos_tools::client::Client>, f64) {
    use samos_tools::client::{Client, ConnectOptions};
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(256));
    let started = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let gate = gate.clone();
            let secure = tls.as_ref().filter(|_| i % 2 == 1);
            let options = ConnectOptions {
                addr: secure.map_or(tcp, |(a, _)| *a),
                tls: secure.map(|(_, t)| t.clone()),
                credentials: login(i),
                keep_alive: 600,
            };
            let id = format!("{prefix}{i:06}");
            tokio::spawn(async move {
                let _permit = gate.acquire().await.unwrap();
                let mut tries = 0;
                loop {
                    match Client::connect(&options, &id).await {
                        Ok(c) => return c,
                        Err(e) => {
                            tries += 1;
                            assert!(tries < 50, "{id} never admitted: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            })
        })
        .collect();
    let mut clients = Vec::with_capacity(n);
    for t in tasks {
        clients.push(t.await.unwrap());
    }
    (clients, started.elapsed().as_secs_f64())
}
