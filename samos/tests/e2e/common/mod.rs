//! Test support: a real `samos serve` process on ephemeral ports, and helpers for driving
//! real clients (mosquitto_pub/sub, paho-mqtt, raw sockets) against it.
#![allow(dead_code)]
// Test support: a panic here is the failing test's report.
#![allow(clippy::unwrap_used)]

pub mod ballista;
pub mod garage;
pub mod haproxy;
pub mod mosquitto;
pub mod pg;
pub mod raw;
pub mod synthetic_store;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A running server, killed when dropped.
pub struct TestServer {
    child: Child,
    pub dir: tempfile::TempDir,
    pub mqtt: Vec<SocketAddr>,
    pub mqtts: Vec<SocketAddr>,
    pub metrics: Option<SocketAddr>,
    pub api: Option<SocketAddr>,
    /// The PostgreSQL wire endpoint, where `[pgwire] bind` is set.
    pub pg: Option<SocketAddr>,
    /// The Flight SQL endpoint, where `[flight] bind` is set.
    pub flight: Option<SocketAddr>,
    log: PathBuf,
}

pub fn samos_bin() -> &'static str {
    env!("CARGO_BIN_EXE_samos")
}

impl TestServer {
    /// Starts with a plain loopback listener on a free port and the defaults.
    pub fn start() -> TestServer {
        Self::with_config("")
    }

    /// Starts with `toml` as the configuration file (top-level keys first, then tables).
    /// Without a `[[listener]]` table a plain loopback listener on port 0 is added.
    pub fn with_config(toml: &str) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::in_dir(dir, toml)
    }

    /// Starts in an existing directory (for restarts keeping the data directory).
    pub fn in_dir(dir: tempfile::TempDir, toml: &str) -> TestServer {
        Self::in_dir_with_env(dir, toml, &[])
    }

    /// [`TestServer::in_dir`] with extra environment variables for the server process.
    pub fn in_dir_with_env(dir: tempfile::TempDir, toml: &str, env: &[(&str, &str)]) -> TestServer {
        Self::in_dir_wrapped(dir, toml, env, &[])
    }

    /// [`TestServer::in_dir_with_env`] with the server started through `wrapper` (a command
    /// and its arguments, given the server's command line after them, which it must `exec`:
    /// the server's pid is the child's).
    pub fn in_dir_wrapped(
        dir: tempfile::TempDir,
        toml: &str,
        env: &[(&str, &str)],
        wrapper: &[&str],
    ) -> TestServer {
        let config = dir.path().join("samos.toml");
        let data = dir.path().join("data");
        std::fs::write(
            &config,
            format!("data_dir = {:?}\n{toml}", data.display().to_string()),
        )
        .expect("write config");
        let ready = dir.path().join("ready.json");
        let _ = std::fs::remove_file(&ready);
        let log = dir.path().join("samos.log");
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(samos_bin());
                c
            }
            None => Command::new(samos_bin()),
        };
        cmd.arg("serve")
            .arg("--config")
            .arg(&config)
            .arg("--metrics-listen")
            .arg("127.0.0.1:0")
            .arg("--api-listen")
            .arg("127.0.0.1:0")
            .arg("--ready-file")
            .arg(&ready)
            .arg("--log")
            .arg("info,samos_server=debug")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        if !toml.contains("[[listener]]") {
            cmd.arg("--listen").arg("127.0.0.1:0");
        }
        let child = cmd.spawn().expect("spawn samos");
        let mut server = TestServer {
            child,
            dir,
            mqtt: Vec::new(),
            mqtts: Vec::new(),
            metrics: None,
            api: None,
            pg: None,
            flight: None,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                let v: serde_json::Value = serde_json::from_str(&text).expect("ready json");
                let addrs = |k: &str| -> Vec<SocketAddr> {
                    v[k].as_array()
                        .map(|a| {
                            a.iter()
                                .map(|s| s.as_str().unwrap().parse().unwrap())
                                .collect()
                        })
                        .unwrap_or_default()
                };
                server.mqtt = addrs("mqtt");
                server.mqtts = addrs("mqtts");
                server.metrics = v["metrics"].as_str().map(|s| s.parse().unwrap());
                server.api = v["api"].as_str().map(|s| s.parse().unwrap());
                server.pg = v["pg"].as_str().map(|s| s.parse().unwrap());
                server.flight = v["flight"].as_str().map(|s| s.parse().unwrap());
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("samos exited with {status}: {}", server.log());
            }
            assert!(
                Instant::now() < deadline,
                "samos did not start: {}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn port(&self) -> u16 {
        self.mqtt[0].port()
    }

    pub fn tls_port(&self) -> u16 {
        self.mqtts[0].port()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// `GET /metrics` over a real socket.
    pub fn metrics_text(&self) -> String {
        http_get(self.metrics.expect("metrics enabled"), "/metrics")
    }

    /// One series' value from /metrics (0 when absent): `series` is its whole name with any
    /// labels, e.g. `samos_refusals_total{reason="disk_full"}`.
    pub fn metric(&self, series: &str) -> u64 {
        // The whole series: `samos_connections` must not read `samos_connections_total`.
        let series = series.trim_end();
        self.metrics_text()
            .lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .filter(|rest| rest.starts_with(char::is_whitespace))
                    .map(|v| v.trim().parse::<u64>().unwrap_or(0))
            })
            .unwrap_or(0)
    }

    /// SIGTERM (an orderly shutdown) and wait, keeping the directory.
    pub fn stop(mut self) -> tempfile::TempDir {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let dir = tempfile::tempdir().expect("tempdir");
        std::mem::replace(&mut self.dir, dir)
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// SIGKILL, keeping the directory.
    pub fn kill(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = tempfile::tempdir().expect("tempdir");
        std::mem::replace(&mut self.dir, dir)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- samos log ----\n{}", self.log());
        }
    }
}

/// A minimal HTTP/1.1 GET returning the body.
pub fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect metrics");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or(out)
}

/// One HTTP/1.1 request over a real socket (with a bearer token and a JSON body if given):
/// the status and the body.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    json_body: Option<&str>,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect HTTP");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let body = json_body.unwrap_or("");
    let content = json_body
        .map(|b| {
            format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            )
        })
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}{content}Connection: close\r\n\r\n{body}"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("HTTP answer");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

/// A loopback port free at the time of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `samos sql --format csv --data-dir data [extra…] query` with `env` (an object store's
/// credentials) set: its standard output, after checking it succeeded.
pub fn samos_sql(data: &Path, env: &[(&str, String)], extra: &[&str], query: &str) -> String {
    let mut cmd = Command::new(samos_bin());
    cmd.args(["sql", "--format", "csv", "--data-dir"])
        .arg(data)
        .args(extra)
        .arg(query);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run(&mut cmd, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "samos sql {extra:?} {query}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(&out)
}

/// `text` for a URL's query: everything but unreserved characters as `%XX`.
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs a command to completion, killing it after `timeout`.
pub fn run(cmd: &mut Command, timeout: Duration) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    wait_output(child, timeout)
}

/// Collects a spawned child's output, killing it after `timeout`. Its pipes are drained
/// while it runs, so a child writing more than a pipe holds does not stall.
pub fn wait_output(mut child: Child, timeout: Duration) -> Output {
    fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    }
    let (out, err) = (drain(child.stdout.take()), drain(child.stderr.take()));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                break child.wait().expect("wait");
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("wait: {e}"),
        }
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `mosquitto_pub` against the server with extra arguments.
pub fn mosquitto_pub(port: u16, args: &[&str]) -> Output {
    run(
        Command::new("mosquitto_pub")
            .arg("-h")
            .arg("127.0.0.1")
            .arg("-p")
            .arg(port.to_string())
            .args(args),
        Duration::from_secs(20),
    )
}

/// Starts `mosquitto_sub` in the background; read its output with [`wait_output`].
pub fn mosquitto_sub(port: u16, args: &[&str]) -> Child {
    Command::new("mosquitto_sub")
        .arg("-h")
        .arg("127.0.0.1")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub (package mosquitto-clients)")
}

/// Gives a background subscriber time to subscribe: polls the server's subscription gauge.
pub fn wait_subscriptions(server: &TestServer, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.metric("samos_subscriptions ") < n {
        assert!(Instant::now() < deadline, "subscriptions never reached {n}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a paho-mqtt scenario from `tests/paho_scenarios.py`.
pub fn paho(scenario: &str, port: u16, extra: &[&str]) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/paho_scenarios.py");
    run(
        Command::new("python3")
            .arg(script)
            .arg(scenario)
            .arg(port.to_string())
            .args(extra),
        Duration::from_secs(60),
    )
}

/// Creates a CA, a server certificate for 127.0.0.1/localhost and a client certificate with
/// CN `cn`, using the openssl command line. Returns the directory.
pub fn make_certs(dir: &Path, client_cn: &str) -> PathBuf {
    let d = dir.join("certs");
    std::fs::create_dir_all(&d).unwrap();
    let sh = format!(
        r#"set -e
cd {d}
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=Samos Test CA" \
  -keyout ca.key -out ca.crt -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n' > server.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile server.ext -out server.crt 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN={client_cn}" -keyout client.key -out client.csr 2>/dev/null
printf 'basicConstraints=critical,CA:FALSE\nextendedKeyUsage=clientAuth\n' > client.ext
openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile client.ext -out client.crt 2>/dev/null
"#,
        d = d.display()
    );
    let out = run(
        Command::new("sh").arg("-c").arg(sh),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    d
}

/// Writes a password file with `samos passwd` (few iterations to keep tests quick).
pub fn make_passwords(dir: &Path, users: &[(&str, &str)]) -> PathBuf {
    let path = dir.join("passwords");
    for (u, p) in users {
        let out = run(
            Command::new(samos_bin())
                .args(["passwd", "--iterations", "1000", "--password", p])
                .arg(&path)
                .arg(u),
            Duration::from_secs(30),
        );
        assert!(
            out.status.success(),
            "passwd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    path
}

/// The Parquet store of a data directory as pyarrow (an independent reader) sees it:
/// rows, files, sorted values, distinct keys, nodes, sensors, dates, columns.
pub fn read_store(data: &Path) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/read_parquet.py");
    let out = run(
        Command::new("python3").arg(script).arg(data),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "pyarrow: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout(&out)).unwrap()
}

/// Node `id` (`cn1` or `cn2` of the paper) joins with its configuration over MQTT 3.1.1 on the
/// paper's Karlovasi topics; returns the connection once the server answered `active`.
pub fn join_paper_node(s: &TestServer, id: &str) -> raw::Raw {
    join_paper_node_at(s.port(), id)
}

/// [`join_paper_node`] through any port (a load balancer's, or from a thread holding only the
/// port).
pub fn join_paper_node_at(port: u16, id: &str) -> raw::Raw {
    join_paper_node_with(port, id, 4)
}

/// [`join_paper_node_at`] over MQTT `level` (4: 3.1.1, 5: 5.0).
pub fn join_paper_node_with(port: u16, id: &str, level: u8) -> raw::Raw {
    const NET: &str = "Karlovasi_IoT_network";
    const LOC: &str = "Greece/Samos/Karlovasi/AegeanUniversityCampus/indoor/A/A52";
    let config = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
        "../datasets/node-configs/{}_config.xml",
        id.to_lowercase()
    )))
    .unwrap();
    let control = format!("{NET}/{id}/{LOC}/control");
    let (mut c, _) = raw::Raw::connected(port, level, id, true, &[]);
    c.send(&raw::subscribe(level, 1, &control, 0));
    let _ = c.next(Duration::from_secs(10));
    c.publish_qos1(&control, format!("PUB_CONFIG_FILE, {config}").as_bytes(), 1);
    while !c
        .next_publish(Duration::from_secs(10))
        .expect("join reply")
        .1
        .starts_with(b"SET_CN_FUNCTIONAL_MODE, active")
    {}
    c
}

/// Resident memory of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// Anonymous resident memory of `pid` in KiB (`RssAnon`: heap and stacks, not the code pages
/// of the executable that `VmRSS` also counts).
pub fn anon_kib(pid: u32) -> u64 {
    status_kib(pid, "RssAnon:")
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// The names of `pid`'s threads.
pub fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|name| name.trim_end().to_string())
        .collect()
}

/// Runs `work` while sampling `pid`'s RSS every 20 ms: its result and the peak growth in MiB.
pub fn with_peak_rss<T>(pid: u32, work: impl FnOnce() -> T) -> (T, f64) {
    let base = rss_kib(pid);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_kib(pid));
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        })
    };
    let result = work();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    (result, peak.saturating_sub(base) as f64 / 1024.0)
}

/// Publishes `values` from paper node `id` (`float,0-70,v` on its temperature topic), QoS 1,
/// each acknowledged before the next, packet ids from `first_pkid`.
pub fn publish_temperatures(
    c: &mut raw::Raw,
    id: &str,
    values: impl IntoIterator<Item = f64>,
    first_pkid: u16,
) {
    const NET: &str = "Karlovasi_IoT_network";
    const LOC: &str = "Greece/Samos/Karlovasi/AegeanUniversityCampus/indoor/A/A52";
    let topic = format!("{NET}/{id}/{LOC}/indoorTemperatureSensor");
    for (i, v) in values.into_iter().enumerate() {
        let payload = format!("float,0-70,{v}");
        assert_eq!(
            c.publish_qos1(&topic, payload.as_bytes(), first_pkid + i as u16),
            0
        );
    }
}

/// Polls `done` every 20 ms until it holds; panics after `timeout`.
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "not reached in {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
