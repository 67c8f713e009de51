//! The `samos` command line: configuration errors, `samos passwd`, Mosquitto password files,
//! `samos cluster` refusing to listen beyond loopback unless opened.
// Integration tests: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn serve(args: &[&str]) -> std::process::Output {
    run(
        Command::new(samos_bin())
            .arg("serve")
            .args(["--api-listen", "127.0.0.1:0"])
            .args(args),
        Duration::from_secs(20),
    )
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn unknown_configuration_keys_are_reported_with_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[mqtt]\nmax_packet_sise = 10\n").unwrap();
    let out = serve(&["--config", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains("bad.toml") && e.contains("max_packet_sise"),
        "{e}"
    );
}

#[test]
fn unreadable_configuration_is_reported() {
    let out = serve(&["--config", "/nonexistent/samos.toml"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("cannot read configuration file /nonexistent/samos.toml"));
}

#[test]
fn a_port_in_use_is_a_clear_startup_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = serve(&[
        "--listen",
        &addr,
        "--no-metrics",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains(&format!("cannot listen on {addr}")) && e.contains("in use"),
        "{e}"
    );
}

#[test]
fn tls_listener_without_a_key_is_refused() {
    let out = serve(&["--tls-listen", "127.0.0.1:0"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--tls-listen needs --cert and --key"));
}

#[test]
fn passwd_writes_mosquitto_compatible_hashes_and_deletes_users() {
    let dir = tempfile::tempdir().unwrap();
    let file = make_passwords(dir.path(), &[("alice", "a"), ("bob", "b")]);
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0].starts_with("alice:$7$1000$"), "{text}");
    let out = run(
        Command::new(samos_bin())
            .args(["passwd", "-D"])
            .arg(&file)
            .arg("alice"),
        Duration::from_secs(10),
    );
    assert!(out.status.success());
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("bob:") && !text.contains("alice"));
    // Deleting a user who is not there is an error.
    let out = run(
        Command::new(samos_bin())
            .args(["passwd", "-D"])
            .arg(&file)
            .arg("carol"),
        Duration::from_secs(10),
    );
    assert!(!out.status.success());
}

#[test]
fn a_mosquitto_passwd_file_moves_over_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mosquitto.pw");
    let out = run(
        Command::new("mosquitto_passwd")
            .args(["-c", "-b"])
            .arg(&file)
            .args(["sensor", "from-mosquitto"]),
        Duration::from_secs(10),
    );
    assert!(
        out.status.success(),
        "mosquitto_passwd (package mosquitto): {}",
        stderr(&out)
    );
    let s = TestServer::with_config(&format!(
        "password_file = {:?}\n",
        file.display().to_string()
    ));
    let ok = mosquitto_pub(
        s.port(),
        &["-u", "sensor", "-P", "from-mosquitto", "-t", "x", "-m", "x"],
    );
    assert!(ok.status.success(), "{}", stderr(&ok));
    let bad = mosquitto_pub(
        s.port(),
        &["-u", "sensor", "-P", "nope", "-t", "x", "-m", "x"],
    );
    assert!(!bad.status.success());
}

#[test]
fn generate_config_prints_a_valid_documented_file() {
    let out = run(
        Command::new(samos_bin()).arg("generate-config"),
        Duration::from_secs(10),
    );
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gen.toml");
    std::fs::write(&path, &out.stdout).unwrap();
    let text = stdout(&out);
    assert!(text.contains("max_packet_size") && text.contains("# "));
    // It starts (on a free port, with its own data directory).
    let text = text
        .replace("127.0.0.1:1883", "127.0.0.1:0")
        .replace("127.0.0.1:9883", "127.0.0.1:0")
        .replace("data_dir = \"data\"", "");
    let s = TestServer::with_config(&text);
    assert!(
        mosquitto_pub(s.port(), &["-t", "x", "-m", "x"])
            .status
            .success()
    );
}

#[test]
fn ballista_roles_stay_on_loopback_unless_opened() {
    for args in [
        &["scheduler", "--bind", "0.0.0.0:0"][..],
        &["executor", "--flight", "0.0.0.0:0"][..],
    ] {
        let out = run(
            Command::new(samos_bin()).arg("cluster").args(args),
            Duration::from_secs(20),
        );
        assert!(!out.status.success());
        assert!(stderr(&out).contains("pass --open"), "{}", stderr(&out));
    }
}
