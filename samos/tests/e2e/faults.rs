//! Faults a deployment meets, injected into the real server: what Samos does, what the client
//! sees, and that nothing acknowledged is lost (README, "Failure behaviour").
// Integration tests: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::raw::{self, Reply};
use common::*;

const TOPIC: &str = "Karlovasi_IoT_network/CN1/Greece/Samos/Karlovasi/AegeanUniversityCampus/indoor/A/A52/indoorTemperatureSensor";

#[test]
fn a_failed_fsync_is_never_acknowledged_the_server_exits_and_recovers_what_is_durable() {
    // The fsync after the 5th WAL record fails with EIO.
    let dir = tempfile::tempdir().unwrap();
    let mut s = TestServer::in_dir_with_env(dir, "", &[("SAMOS_FAILPOINT", "wal-fsync-eio:5")]);
    let mut c = join_paper_node(&s, "CN1");
    let mut acked = Vec::new();
    for i in 1..=10u16 {
        c.send(&raw::publish(
            4,
            TOPIC.as_bytes(),
            1,
            i,
            false,
            format!("float,0-70,{i}").as_bytes(),
        ));
        match c.next(Duration::from_secs(10)) {
            Reply::V4(mqttbytes::v4::Packet::PubAck(a)) if a.pkid == i => acked.push(i),
            _ => break,
        }
    }
    assert_eq!(
        acked,
        [1, 2, 3, 4, 5],
        "nothing after the failed fsync is acknowledged"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.is_running() {
        assert!(Instant::now() < deadline, "the server did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        s.log().contains("WAL write or fsync failed: exiting"),
        "{}",
        s.log()
    );

    // Restarted without the fault, it recovers from the WAL: every acknowledged reading once.
    let s = TestServer::in_dir(s.kill(), "");
    let out = samos_sql(
        &s.data_dir(),
        &[],
        &[],
        "SELECT CAST(value AS BIGINT) AS v, count(*) AS n FROM readings GROUP BY 1 ORDER BY 1",
    );
    for v in 1..=5 {
        assert!(out.contains(&format!("\n{v},1")), "reading {v} once: {out}");
    }
    // The unacknowledged 6th may be there (its write reached the page cache); a client would
    // resend it, as QoS 1 allows. Nothing else is.
    assert!(!out.contains("\n7,"), "{out}");
}

/// Runs the server on its own small tmpfs (a user and mount namespace: `unshare -rm`, no
/// privileges needed), so the test can fill that file system and free it again through
/// `/proc/{pid}/root`.
fn server_on_small_disk(dir: tempfile::TempDir, toml: &str, bytes: u64) -> TestServer {
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mount = format!("mount -t tmpfs -o size={bytes} tmpfs \"$0\" && exec \"$@\"");
    let probe = Command::new("unshare")
        .args(["-rm", "true"])
        .status()
        .expect("unshare (util-linux) runs");
    assert!(
        probe.success(),
        "this test mounts a small tmpfs in a user namespace: unprivileged user namespaces must be allowed (kernel.unprivileged_userns_clone=1)"
    );
    let data = data.display().to_string();
    TestServer::in_dir_wrapped(
        dir,
        toml,
        &[],
        &["unshare", "-rm", "sh", "-c", &mount, &data],
    )
}

/// Free bytes of the file system holding `path` (`stat -f`).
fn free_bytes(path: &std::path::Path) -> u64 {
    let out = Command::new("stat")
        .args(["-f", "-c", "%a %S"])
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut it = text.split_whitespace().map(|n| n.parse::<u64>().unwrap());
    it.next().unwrap() * it.next().unwrap()
}

/// Fills the file system holding `path` to the last block; returns the ballast file.
fn fill(path: &std::path::Path) -> std::path::PathBuf {
    use std::io::Write;
    let ballast = path.join("ballast");
    let mut f = std::fs::File::create(&ballast).unwrap();
    let block = vec![0x55u8; 64 << 10];
    let mut small = false;
    loop {
        let chunk = if small { &block[..4096] } else { &block[..] };
        match f.write(chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(28) && !small => small = true,
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("{e}"),
        }
    }
    ballast
}

const CN2_TOPIC: &str = "Karlovasi_IoT_network/CN2/Greece/Samos/Karlovasi/AegeanUniversityCampus/indoor/A/A52/indoorTemperatureSensor";

/// A reading whose value encodes `i` (values stay inside the declared range 0-70).
fn numbered(i: u32) -> Vec<u8> {
    format!("float,0-70,{}", f64::from(i) / 1000.0).into_bytes()
}

#[test]
fn a_full_disk_pauses_publishers_refuses_v5_with_0x97_and_ingest_resumes_once_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let toml = "[mqtt]\nsys_interval_secs = 1\n[storage]\nparquet_rotate_secs = 1\nwal_segment_bytes = 1048576\n";
    let mut s = server_on_small_disk(dir, toml, 24 << 20);
    let disk =
        std::path::PathBuf::from(format!("/proc/{}/root{}", s.pid(), s.data_dir().display()));
    assert!(
        free_bytes(&disk) < 25 << 20,
        "the data directory is on the small tmpfs"
    );

    // A 3.1.1 node publishing numbered readings one after another, each waiting for its PUBACK.
    let mut v3 = join_paper_node(&s, "CN1");
    let mut v5 = join_paper_node_with(s.port(), "CN2", 5);
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u32>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = {
        let (acked, stop) = (acked.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let pkid = (i % 60000 + 1) as u16;
                v3.send(&raw::publish(
                    4,
                    TOPIC.as_bytes(),
                    1,
                    pkid,
                    false,
                    &numbered(i),
                ));
                match v3.next(Duration::from_secs(120)) {
                    Reply::V4(mqttbytes::v4::Packet::PubAck(a)) if a.pkid == pkid => {
                        acked.lock().unwrap().push(i);
                    }
                    other => panic!("no PUBACK for reading {i}: {other:?}"),
                }
            }
        })
    };
    let acked_now = || acked.lock().unwrap().len();
    let wait_until = |what: &str, cond: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_until("readings flow", &|| acked_now() >= 300);

    // Fill the disk to the last block.
    let ballast = fill(&disk);
    wait_until("the WAL reports the disk full", &|| {
        s.metric("samos_disk_full{writer=\"wal\"}") == 1
    });
    wait_until("the Parquet writer reports the disk full", &|| {
        s.metric("samos_disk_full{writer=\"parquet\"}") == 1
    });
    // Publishers are paused: once the space the writers gave back (the unfinished Parquet
    // file, the WAL's zeroed runway) is used up, nothing more is acknowledged.
    let mut paused_at = acked_now();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = acked_now();
        if now == paused_at {
            break;
        }
        assert!(Instant::now() < deadline, "acknowledgements never stopped");
        paused_at = now;
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(s.metric("samos_disk_full{writer=\"wal\"}"), 1);
    assert_eq!(
        acked_now(),
        paused_at,
        "nothing is acknowledged while the disk is full"
    );
    // An MQTT 5 node is told: 0x97 Quota exceeded, and the reading is not stored.
    assert_eq!(v5.publish_qos1(CN2_TOPIC, &numbered(1), 7), 0x97);
    assert!(s.metric("samos_refusals_total{reason=\"disk_full\"}") >= 1);
    // $SYS says so too.
    let (mut watcher, _) = raw::Raw::connected(s.port(), 4, "watcher", true, &[]);
    watcher.send(&raw::subscribe(4, 1, "$SYS/broker/disk_full", 0));
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen.contains("wal") && Instant::now() < deadline {
        if let Some((_, payload)) = watcher.next_publish(Duration::from_secs(2)) {
            seen = String::from_utf8(payload).unwrap();
        }
    }
    assert!(seen.contains("wal"), "$SYS/broker/disk_full: {seen:?}");
    assert!(s.is_running(), "a full disk never stops the server");
    let log = s.log();
    let episodes = s.metric("samos_disk_full_episodes_total{writer=\"wal\"}");
    assert!(episodes >= 1);
    assert_eq!(
        log.matches("disk full: nothing new is acknowledged")
            .count() as u64,
        episodes,
        "logged once per episode, however many writes failed: {log}"
    );

    // Free the space: ingest resumes by itself, and the paused publisher goes on.
    std::fs::remove_file(&ballast).unwrap();
    wait_until("the WAL writes again", &|| {
        s.metric("samos_disk_full{writer=\"wal\"}") == 0
    });
    wait_until("the Parquet writer writes again", &|| {
        s.metric("samos_disk_full{writer=\"parquet\"}") == 0
    });
    wait_until("the publisher goes on", &|| acked_now() >= paused_at + 300);
    assert_eq!(v5.publish_qos1(CN2_TOPIC, &numbered(2), 8), 0);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    publisher.join().unwrap();
    assert!(s.log().contains("disk space freed: writing again"));

    // A crash-consistent copy of the data directory (the server stopped, then copied), opened
    // by a new server: the WAL recovers whole, and every acknowledged reading is there once.
    let frozen = Command::new("kill")
        .args(["-STOP", &s.pid().to_string()])
        .status()
        .unwrap();
    assert!(frozen.success());
    let copy = tempfile::tempdir().unwrap();
    let cp = Command::new("cp")
        .arg("-a")
        .arg(&disk)
        .arg(copy.path().join("data"))
        .status()
        .unwrap();
    assert!(cp.success());
    std::fs::remove_file(copy.path().join("data/ballast")).ok();
    drop(s.kill());
    let s = TestServer::in_dir(copy, "");
    assert!(!s.log().contains("corrupt"), "{}", s.log());
    let out = samos_sql(
        &s.data_dir(),
        &[],
        &[],
        "SELECT CAST(round(value * 1000) AS BIGINT) AS i, count(*) AS n FROM readings \
         WHERE node_id = 'CN1' GROUP BY 1 ORDER BY 1",
    );
    let stored: std::collections::HashMap<u32, u32> = out
        .lines()
        .skip(1)
        .map(|l| {
            let (i, n) = l.split_once(',').unwrap();
            (i.parse().unwrap(), n.parse().unwrap())
        })
        .collect();
    let acked = acked.lock().unwrap();
    for i in acked.iter() {
        assert_eq!(
            stored.get(i),
            Some(&1),
            "acknowledged reading {i} stored once"
        );
    }
    assert!(stored.values().all(|n| *n == 1), "no reading stored twice");
    let cn2 = samos_sql(
        &s.data_dir(),
        &[],
        &[],
        "SELECT CAST(round(value * 1000) AS BIGINT) AS i FROM readings WHERE node_id = 'CN2'",
    );
    assert_eq!(
        cn2.lines().skip(1).collect::<Vec<_>>(),
        ["2"],
        "the refused reading is not stored"
    );
}

#[test]
fn clock_steps_back_an_hour_and_forward_a_day_lose_nothing_and_the_sequence_keeps_order() {
    let dir = tempfile::tempdir().unwrap();
    let offset = dir.path().join("clock-offset-ms");
    std::fs::write(&offset, "0").unwrap();
    let offset_env = offset.display().to_string();
    let s = TestServer::in_dir_with_env(
        dir,
        "[storage]\nparquet_rotate_secs = 1\n",
        &[("SAMOS_CLOCK_OFFSET_FILE", &offset_env)],
    );
    let mut c = join_paper_node(&s, "CN1");
    let mut i = 0u32;
    let mut phase = |c: &mut raw::Raw, shift_ms: i64| {
        std::fs::write(&offset, shift_ms.to_string()).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        for _ in 0..50 {
            i += 1;
            let pkid = i as u16;
            assert_eq!(c.publish_qos1(TOPIC, &numbered(i), pkid), 0, "reading {i}");
        }
    };
    phase(&mut c, 0);
    phase(&mut c, -3_600_000);
    phase(&mut c, 86_400_000);
    let out = samos_sql(
        &s.data_dir(),
        &[],
        &[],
        "SELECT CAST(round(value * 1000) AS BIGINT) AS i, \
         CAST(ingest_time AS BIGINT) AS t, CAST(date AS VARCHAR) AS d, \
         CAST(to_char(ingest_time, '%Y-%m-%d') AS VARCHAR) AS day_of_t, key \
         FROM readings ORDER BY key",
    );
    let rows: Vec<Vec<&str>> = out
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    let ids: Vec<u32> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
    assert_eq!(
        ids,
        (1..=150).collect::<Vec<_>>(),
        "every reading once, in sequence order"
    );
    let time = |i: usize| rows[i][1].parse::<i64>().unwrap();
    // Stamped by the clock as it was: the second fifty an hour before the first, the last
    // fifty a day after.
    assert!(
        time(50) < time(49) - 3_000_000,
        "{} vs {}",
        time(50),
        time(49)
    );
    assert!(time(100) > time(99) + 80_000_000);
    for r in &rows {
        assert_eq!(r[2], r[3], "filed under the date of its own time: {r:?}");
    }
    assert_ne!(
        rows[149][2], rows[0][2],
        "a day later is another date partition"
    );
}

#[test]
fn a_session_expires_on_the_monotonic_clock_while_running_and_retention_counts_from_the_clocks_today()
 {
    let dir = tempfile::tempdir().unwrap();
    let offset = dir.path().join("clock-offset-ms");
    std::fs::write(&offset, "0").unwrap();
    let offset_env = offset.display().to_string();
    let config = "[storage]\nparquet_rotate_secs = 1\nretention_days = 1\n";
    let start =
        |dir| TestServer::in_dir_with_env(dir, config, &[("SAMOS_CLOCK_OFFSET_FILE", &offset_env)]);
    let stored = |s: &TestServer| {
        samos_sql(
            &s.data_dir(),
            &[],
            &[],
            "SELECT CAST(date AS VARCHAR) AS d, count(*) AS n FROM readings GROUP BY d ORDER BY d",
        )
        .lines()
        .skip(1)
        .map(String::from)
        .collect::<Vec<_>>()
    };
    // Session expiry interval: one hour.
    let expiry_hour = [0x11, 0, 0, 0x0e, 0x10];
    let s = start(dir);
    let mut node = join_paper_node(&s, "CN1");
    for i in 1..=20u32 {
        assert_eq!(node.publish_qos1(TOPIC, &numbered(i), i as u16), 0);
    }
    let (watcher, present) = raw::Raw::connected(s.port(), 5, "watcher", false, &expiry_hour);
    assert!(!present);
    drop((watcher, node));
    std::thread::sleep(Duration::from_millis(300));

    // A day forward while the server runs: the session closed a moment ago on the monotonic
    // clock, so it is still there.
    std::fs::write(&offset, "86400000").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (watcher, present) = raw::Raw::connected(s.port(), 5, "watcher", false, &expiry_hour);
    assert!(present, "a clock step does not expire a session");
    drop(watcher);
    std::thread::sleep(Duration::from_millis(300));
    let mut node = join_paper_node(&s, "CN1");
    for i in 21..=30u32 {
        assert_eq!(node.publish_qos1(TOPIC, &numbered(i), i as u16), 0);
    }
    drop(node);
    let before = {
        let rows = stored(&s);
        assert_eq!(rows.len(), 2, "today's and tomorrow's partitions: {rows:?}");
        rows
    };
    assert_eq!(s.metric("samos_parquet_partitions_expired_total"), 0);

    // Restarted two days after the first readings: across a restart only the wall clock
    // measures the gap, so the session (closed a day ago by that clock) has expired, and
    // retention (one day) removes the first day's partition at once.
    std::fs::write(&offset, "172800000").unwrap();
    let s = start(s.stop());
    let (_watcher, present) = raw::Raw::connected(s.port(), 5, "watcher", false, &expiry_hour);
    assert!(!present, "expired by the wall clock across the restart");
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.metric("samos_parquet_partitions_expired_total") < 1 {
        assert!(Instant::now() < deadline, "{}", s.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        stored(&s),
        before[1..],
        "only the partition older than the retention is gone"
    );
}
