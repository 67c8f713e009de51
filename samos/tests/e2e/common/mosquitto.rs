//! A throwaway Mosquitto (Debian's `mosquitto`) as an upstream broker: a TLS listener with a
//! password (what a bridge connects to) and a plain anonymous one on loopback (what the test
//! reads with), persistence on, so a stop and a start keep queued messages and sessions.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, run};

pub struct Mosquitto {
    pub tls_port: u16,
    pub plain_port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// The bridge's login at this broker.
pub const USER: &str = "samos-bridge";
pub const PASSWORD: &str = "upstream-pw";

impl Mosquitto {
    /// Starts with the server certificate of `certs` (from [`super::make_certs`]).
    pub fn start(certs: &Path) -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        let passwords = dir.path().join("passwd");
        let out = run(
            Command::new("mosquitto_passwd")
                .args(["-c", "-b"])
                .arg(&passwords)
                .args([USER, PASSWORD]),
            Duration::from_secs(30),
        );
        assert!(out.status.success(), "mosquitto_passwd: {out:?}");
        let (tls_port, plain_port) = (free_port(), free_port());
        let conf = format!(
            "per_listener_settings true\n\
             user root\n\
             persistence true\n\
             persistence_location {dir}/\n\
             max_queued_messages 1000000\n\
             log_dest file {dir}/mosquitto.log\n\
             listener {tls_port} 127.0.0.1\n\
             cafile {certs}/ca.crt\n\
             certfile {certs}/server.crt\n\
             keyfile {certs}/server.key\n\
             allow_anonymous false\n\
             password_file {passwords}\n\
             listener {plain_port} 127.0.0.1\n\
             allow_anonymous true\n",
            dir = dir.path().display(),
            certs = certs.display(),
            passwords = passwords.display(),
        );
        std::fs::write(dir.path().join("mosquitto.conf"), conf).unwrap();
        let mut m = Mosquitto {
            tls_port,
            plain_port,
            dir,
            child: None,
        };
        m.resume();
        m
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("mosquitto.conf")
    }

    /// Starts the broker (again) with the same configuration and persistence file.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        self.child = Some(
            Command::new("/usr/sbin/mosquitto")
                .arg("-c")
                .arg(self.conf())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("mosquitto (Debian package mosquitto)"),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while [self.tls_port, self.plain_port]
            .iter()
            .any(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_err())
        {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the broker as an operator would (SIGTERM: it saves its persistence file).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
