//! A throwaway Garage (a real S3-compatible server) in single-node mode: metadata and data in
//! a temporary directory, RPC and S3 API on free loopback ports, one bucket and one key made
//! by the test. It can be stopped and started again on the same ports and data (an outage).
//!
//! The binary comes from `scripts/setup.sh` (built once per machine); `SAMOS_GARAGE` names
//! another.
#![allow(dead_code)]
// Test support: a panic here is the failing test's report.
#![allow(clippy::unwrap_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Garage {
    pub dir: tempfile::TempDir,
    config: PathBuf,
    bin: PathBuf,
    child: Option<Child>,
    /// The S3 API: `http://127.0.0.1:{s3_port}`.
    pub s3_port: u16,
    pub bucket: String,
    pub key_id: String,
    pub secret: String,
}

/// The Garage binary: `SAMOS_GARAGE`, where setup.sh builds it, or `garage` on the PATH.
pub fn garage_bin() -> PathBuf {
    find_garage().expect(
        "no Garage binary: run scripts/setup.sh (it builds one into /opt/garage) or set SAMOS_GARAGE",
    )
}

/// [`garage_bin`], or `None` where there is none (benchmarks then skip the object store).
pub fn find_garage() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SAMOS_GARAGE") {
        return Some(PathBuf::from(p));
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let candidates = [
        PathBuf::from("/opt/garage/bin/garage"),
        PathBuf::from(format!("{home}/.local/opt/garage/bin/garage")),
    ];
    if let Some(found) = candidates.iter().find(|p| p.exists()) {
        return Some(found.clone());
    }
    let on_path = Command::new("sh")
        .args(["-c", "command -v garage"])
        .output()
        .ok()?;
    on_path
        .status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&on_path.stdout).trim()))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Garage {
    /// Starts Garage, lays out its one node, and creates bucket `samos` with a key allowed
    /// to read and write it.
    pub fn start() -> Garage {
        let dir = tempfile::tempdir().unwrap();
        let (rpc, s3) = (free_port(), free_port());
        let secret: String = (0..32)
            .map(|_| format!("{:02x}", rand_byte()))
            .collect::<String>();
        let config = dir.path().join("garage.toml");
        std::fs::write(
            &config,
            format!(
                "metadata_dir = {meta:?}\ndata_dir = {data:?}\ndb_engine = \"sqlite\"\n\
                 replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{secret}\"\n\n\
                 [s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3}\"\n\
                 root_domain = \".s3.garage.localhost\"\n",
                meta = dir.path().join("meta").display().to_string(),
                data = dir.path().join("data").display().to_string(),
            ),
        )
        .unwrap();
        let mut garage = Garage {
            dir,
            config,
            bin: garage_bin(),
            child: None,
            s3_port: s3,
            bucket: "samos".into(),
            key_id: String::new(),
            secret: String::new(),
        };
        garage.resume();
        let node = garage.cli(&["node", "id", "-q"]);
        let node = node.split('@').next().unwrap().trim().to_owned();
        garage.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &node]);
        garage.cli(&["layout", "apply", "--version", "1"]);
        garage.cli(&["bucket", "create", "samos"]);
        let key = garage.cli(&["key", "create", "samos-key"]);
        let field = |name: &str| {
            key.lines()
                .find_map(|l| l.trim().strip_prefix(name))
                .map(|v| v.trim_start_matches(':').trim().to_owned())
                .unwrap_or_else(|| panic!("no {name} in: {key}"))
        };
        garage.key_id = field("Key ID");
        garage.secret = field("Secret key");
        garage.cli(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            "samos",
            "--key",
            "samos-key",
        ]);
        garage.wait_s3();
        garage
    }

    /// Runs `garage -c CONFIG args…`, retrying while the node is still starting.
    pub fn cli(&self, args: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = Command::new(&self.bin)
                .arg("-c")
                .arg(&self.config)
                .args(args)
                .env("RUST_LOG", "warn")
                .output()
                .unwrap();
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).into_owned();
            }
            assert!(
                Instant::now() < deadline,
                "garage {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The S3 endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// `storage` settings pointing Samos at `s3://samos/{prefix}` on this server.
    pub fn storage_toml(&self, prefix: &str) -> String {
        format!(
            "object_store = \"s3://{bucket}/{prefix}\"\n\n[storage.object_store_options]\n\
             endpoint = \"{endpoint}\"\nregion = \"garage\"\nallow_http = \"true\"\n\
             access_key_id = \"{key}\"\nsecret_access_key = \"{secret}\"\n",
            bucket = self.bucket,
            endpoint = self.endpoint(),
            key = self.key_id,
            secret = self.secret,
        )
    }

    /// The environment a reader (Python, `samos sql`) needs to reach the bucket.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_REGION", "garage".into()),
            ("AWS_ACCESS_KEY_ID", self.key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    /// Stops the server (SIGKILL): the S3 port refuses connections until [`Garage::resume`].
    pub fn pause(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server on the same ports and data.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "Garage is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("garage.log"))
            .unwrap();
        self.child = Some(
            Command::new(&self.bin)
                .arg("-c")
                .arg(&self.config)
                .arg("server")
                .env("RUST_LOG", "garage=warn")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spawn garage"),
        );
        if !self.key_id.is_empty() {
            self.wait_s3();
        }
    }

    /// Waits until the S3 API accepts connections.
    fn wait_s3(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.s3_port)).is_err() {
            assert!(Instant::now() < deadline, "Garage's S3 API did not open");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("garage.log")).unwrap_or_default()
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.pause();
    }
}

/// A random byte from the kernel (no extra crate for the test secret).
fn rand_byte() -> u8 {
    use std::io::Read;
    let mut b = [0u8; 1];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut b)
        .unwrap();
    b[0]
}
