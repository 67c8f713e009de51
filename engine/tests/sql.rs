//! `samos sql` over the Parquet store a real server wrote, checked against pyarrow.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::raw::*;
use common::*;

const NET: &str = "Karlovasi_IoT_network";
const LOC: &str = "Greece/Samos/Karlovasi/AegeanUniversityCampus/indoor/A/A52";

fn sql(data: &Path, query: &str) -> String {
    let out = run(
        Command::new(samos_bin())
            .arg("sql")
            .arg("--data-dir")
            .arg(data)
            .arg(query),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "samos sql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(&out)
}

#[test]
fn sql_over_the_store_agrees_with_pyarrow() {
    let s = TestServer::start();
    let config = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets/node-configs/cn1_config.xml"),
    )
    .unwrap();
    let control = format!("{NET}/CN1/{LOC}/control");
    let (mut c, _) = Raw::connected(s.port(), 4, "CN1", true, &[]);
    c.send(&subscribe(4, 1, &control, 0));
    let _ = c.next(Duration::from_secs(10));
    c.publish_qos1(&control, format!("PUB_CONFIG_FILE, {config}").as_bytes(), 1);
    while !c
        .next_publish(Duration::from_secs(10))
        .expect("join reply")
        .1
        .starts_with(b"SET_CN_FUNCTIONAL_MODE, active")
    {}
    let topic = format!("{NET}/CN1/{LOC}/indoorTemperatureSensor");
    for i in 1..=40u16 {
        let v = format!("float,0-70,{}", f64::from(i) / 2.0);
        assert_eq!(c.publish_qos1(&topic, v.as_bytes(), i + 10), 0);
    }
    drop(c);
    let dir = s.stop();
    let data = dir.path().join("data");
    // A file being written (hidden, temporary) is not part of the table.
    let partition = std::fs::read_dir(data.join("readings"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    std::fs::write(
        partition.join(".tmp-00000000000000000099.parquet.partial"),
        b"partial",
    )
    .unwrap();

    let store = read_store(&data);
    assert_eq!(store["rows"], 40);
    let out = sql(
        &data,
        "SELECT count(*) AS n, sum(value) AS total, min(value) AS lo, max(value) AS hi, \
         count(DISTINCT key) AS keys FROM readings",
    );
    let sum: f64 = store["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .sum();
    assert_eq!(sum, 410.0);
    assert!(out.contains("| 40 | 410.0 | 0.5 | 20.0 | 40   |"), "{out}");
    let out = sql(
        &data,
        "SELECT node_id, sensor, room, count(*) AS n FROM readings GROUP BY 1, 2, 3",
    );
    assert!(
        out.contains("| CN1     | indoorTemperatureSensor | A52  | 40 |"),
        "{out}"
    );
    // The date partition is a column; a date that holds nothing gives nothing.
    let out = sql(
        &data,
        "SELECT count(*) AS n FROM readings WHERE date = '1999-01-01'",
    );
    assert!(out.contains("| 0 |"), "{out}");
    let day = store["dates"][0].as_str().unwrap().to_string();
    let out = sql(
        &data,
        &format!("SELECT count(*) AS n FROM readings WHERE date = '{day}'"),
    );
    assert!(out.contains("| 40 |"), "{out}");
}

#[test]
fn bad_sql_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        Command::new(samos_bin())
            .arg("sql")
            .arg("--data-dir")
            .arg(dir.path())
            .arg("SELECT nope FROM readings"),
        Duration::from_secs(60),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nope"), "{err}");
    // An empty store is an empty table, not an error.
    let out = sql(dir.path(), "SELECT count(*) AS n FROM readings");
    assert!(out.contains("| 0 |"), "{out}");
}
