//! Several Samos instances sharing one history on a real S3 server (Garage), behind a real
//! HAProxy (Debian's package) in TCP mode with the PROXY protocol: an instance killed with
//! SIGKILL in the middle of the load loses no acknowledged reading, its nodes carry on through
//! the balancer on the others with their state (severity mode), it uploads its WAL tail when
//! it comes back, and the `nodes` table shows every node once with the instance it is on now.
//! Two instances committing to the dataset at the same time for a minute lose and double
//! nothing.
// Integration tests: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use common::garage::Garage;
use common::haproxy::HaProxy;
use common::*;
use mqttbytes::QoS;
use samos_schemas::fleet::{node_document, node_id, node_location};
use samos_schemas::topic::{control_topic, data_topic};
use samos_tools::client::{Client, ConnectOptions};

const NET: &str = "fleet";
const SERVER_ID: &str = "SN";

/// Instance `id` on MQTT port `port` (PROXY protocol on), its history in `s3://…/{prefix}`.
fn instance_config(garage: &Garage, prefix: &str, id: &str, port: u16, proxied: bool) -> String {
    format!(
        "instance_id = \"{id}\"\n\n[protocol]\nnetwork = \"{NET}\"\nserver_id = \"{SERVER_ID}\"\n\n\
         [[listener]]\nbind = \"127.0.0.1:{port}\"\nproxy_protocol = {proxied}\n\n\
         [storage]\nparquet_rotate_secs = 1\nparquet_compact_files = 4\n{}",
        garage.storage_toml(prefix)
    )
}

/// What one simulated node did.
#[derive(Debug, Default)]
struct NodeRun {
    /// Reading numbers acknowledged.
    acked: Vec<u32>,
    /// Reading numbers sent on a connection that died before their acknowledgement: sent
    /// again on the next connection, so possibly stored twice (once by the dead instance).
    in_doubt: Vec<u32>,
    /// The instance of each session, in order, and the severity its join answer carried.
    sessions: Vec<(String, String)>,
}

/// How a simulated node behaves.
#[derive(Clone)]
struct Plan {
    /// Where it connects (the balancer, or one instance).
    addr: SocketAddr,
    /// Readings `0..readings` are published, one at a time…
    readings: u32,
    /// …stopping early at this time…
    until: Instant,
    /// …this far apart…
    pace: Duration,
    /// …at this QoS.
    qos: QoS,
    /// Reports `warningMode` once after its first join (counted in `warned`).
    warn: bool,
    /// Acknowledged readings over all nodes.
    progress: Arc<AtomicU64>,
    warned: Arc<AtomicU64>,
}

/// Node `i` of the fleet, following `plan`: joins (its configuration at every connection, as
/// the paper's nodes do at boot), then publishes; a lost connection is reconnected (through
/// the balancer) and the unacknowledged reading sent again.
async fn run_node(i: usize, plan: Plan) -> NodeRun {
    let Plan {
        addr,
        readings,
        until,
        pace,
        qos,
        warn,
        progress,
        warned: warned_count,
    } = plan;
    let id = node_id(i);
    let location = node_location(i);
    let control = control_topic(NET, &id, &location);
    let topic = data_topic(NET, &id, &location, "indoorTemperatureSensor");
    let join = samos_schemas::payload::join_request(&node_document(NET, SERVER_ID, i));
    let options = ConnectOptions {
        addr,
        tls: None,
        credentials: None,
        keep_alive: 30,
    };
    let mut run = NodeRun::default();
    let mut next = 0u32;
    let mut warned = !warn;
    let give_up = Instant::now() + Duration::from_secs(300);
    'session: while next < readings && Instant::now() < until {
        assert!(
            Instant::now() < give_up,
            "node {id} could not finish: {run:?}"
        );
        let Ok(mut c) = Client::connect(&options, &id).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let joined = async {
            c.subscribe("$SYS/broker/instance_id", QoS::AtMostOnce)
                .await?;
            c.subscribe(&control, QoS::AtLeastOnce).await?;
            c.publish(&control, join.as_bytes(), QoS::AtLeastOnce)
                .await?;
            let (mut instance, mut severity) = (None, None);
            while instance.is_none() || severity.is_none() {
                let Some((t, p)) = c.next_message(Duration::from_secs(10)).await? else {
                    return Err(samos_tools::client::ClientError::Timeout("the join"));
                };
                let p = String::from_utf8_lossy(&p).into_owned();
                if t.starts_with("$SYS") {
                    instance = Some(p);
                } else if let Some(rest) = p.strip_prefix("SET_CN_FUNCTIONAL_MODE, active, ") {
                    severity = Some(rest.trim().to_owned());
                } else if p.starts_with("SET_CN_FUNCTIONAL_MODE") {
                    panic!("node {id} refused: {p}");
                }
            }
            Ok((instance.unwrap(), severity.unwrap()))
        };
        match joined.await {
            Ok(session) => run.sessions.push(session),
            Err(_) => continue,
        }
        if !warned {
            if c.publish(
                &control,
                b"PUB_CN_SEVERITY_MODE, warningMode",
                QoS::AtLeastOnce,
            )
            .await
            .is_err()
            {
                continue;
            }
            warned = true;
            warned_count.fetch_add(1, Relaxed);
        }
        while next < readings && Instant::now() < until {
            // The reading's number in its value (within the declared range 0-70).
            let payload = format!("float,0-70,{}", f64::from(next) / 1000.0);
            if c.publish(&topic, payload.as_bytes(), qos).await.is_err() {
                run.in_doubt.push(next);
                continue 'session;
            }
            run.acked.push(next);
            next += 1;
            progress.fetch_add(1, Relaxed);
            tokio::time::sleep(pace).await;
        }
    }
    run
}

/// Waits until every instance's table holds all its WAL (nothing pending, no lag).
fn wait_uploaded(servers: &[&TestServer]) {
    let deadline = Instant::now() + Duration::from_secs(120);
    for s in servers {
        while s.metric("samos_lake_lag_batches ") > 0 || s.metric("samos_lake_pending_files ") > 0 {
            assert!(Instant::now() < deadline, "not uploaded\n{}", s.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The dataset as delta-rs (Python) reads it, with every reading's node and value.
fn read_dataset(garage: &Garage, prefix: &str) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/read_delta.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script)
        .arg(format!("s3://{}/{prefix}", garage.bucket))
        .arg("--values");
    for (k, v) in garage.env() {
        cmd.env(k, v);
    }
    let out = run(&mut cmd, Duration::from_secs(300));
    assert!(
        out.status.success(),
        "read_delta.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout(&out)).unwrap()
}

/// Per node, how many times each reading number is stored, over every instance's table.
fn stored_counts(read: &serde_json::Value) -> HashMap<String, BTreeMap<u32, u32>> {
    let mut counts: HashMap<String, BTreeMap<u32, u32>> = HashMap::new();
    for rows in read["values"].as_object().unwrap().values() {
        for row in rows.as_array().unwrap() {
            let node = row[0].as_str().unwrap().to_owned();
            let n = (row[1].as_f64().unwrap() * 1000.0).round() as u32;
            *counts.entry(node).or_default().entry(n).or_default() += 1;
        }
    }
    counts
}

/// Every acknowledged reading is stored; a reading stored twice was in doubt (sent again
/// after its connection died); nothing else is stored. Returns how many were stored twice.
fn assert_acked_stored(runs: &[NodeRun], counts: &HashMap<String, BTreeMap<u32, u32>>) -> usize {
    let empty = BTreeMap::new();
    let mut doubled = 0;
    for (i, run) in runs.iter().enumerate() {
        let id = node_id(i);
        let stored = counts.get(&id).unwrap_or(&empty);
        for n in &run.acked {
            assert!(
                stored.contains_key(n),
                "{id}: acknowledged reading {n} is not stored"
            );
        }
        for (n, times) in stored {
            assert!(
                run.acked.contains(n) || run.in_doubt.contains(n),
                "{id}: reading {n} stored but never sent"
            );
            if *times > 1 {
                assert!(
                    *times == 2 && run.in_doubt.contains(n),
                    "{id}: reading {n} stored {times} times: {run:?}"
                );
                doubled += 1;
            }
        }
    }
    doubled
}

/// `samos sql` over a data directory, with the bucket's credentials (CSV out).
fn samos_sql(garage: &Garage, data: &Path, sql: &str) -> String {
    common::samos_sql(data, &garage.env(), &[], sql)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_behind_haproxy_survive_a_killed_one_without_losing_a_reading() {
    const NODES: usize = 300;
    const READINGS: u32 = 100;
    let garage = Garage::start();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let ids = ["i1", "i2", "i3"];
    let configs: Vec<String> = ids
        .iter()
        .zip(&ports)
        .map(|(id, port)| instance_config(&garage, "fleet", id, *port, true))
        .collect();
    let mut servers: Vec<Option<TestServer>> = configs
        .iter()
        .map(|c| Some(TestServer::with_config(c)))
        .collect();
    let backends: Vec<SocketAddr> = ports
        .iter()
        .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
        .collect();
    let lb = HaProxy::start(&backends);

    let progress = Arc::new(AtomicU64::new(0));
    let warned = Arc::new(AtomicU64::new(0));
    let far = Instant::now() + Duration::from_secs(3600);
    let nodes: Vec<_> = (0..NODES)
        .map(|i| {
            let qos = if i % 2 == 0 {
                QoS::AtLeastOnce
            } else {
                QoS::ExactlyOnce
            };
            tokio::spawn(run_node(
                i,
                Plan {
                    addr: lb.addr(),
                    readings: READINGS,
                    until: far,
                    pace: Duration::from_millis(50),
                    qos,
                    warn: i % 5 == 0,
                    progress: progress.clone(),
                    warned: warned.clone(),
                },
            ))
        })
        .collect();

    // A third of the way through, i2 dies without a word (SIGKILL): after the severity
    // reports have had time to reach the store (an instance mirrors its registry every
    // second; what a node reported in the last second or two before a crash is not carried).
    let deadline = Instant::now() + Duration::from_secs(60);
    while warned.load(Relaxed) < (NODES / 5) as u64 {
        assert!(Instant::now() < deadline, "severity reports stalled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let total = NODES as u64 * u64::from(READINGS);
    let wait_for = |share: u64| {
        let progress = progress.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(240);
            while progress.load(Relaxed) < total * share / 3 {
                assert!(Instant::now() < deadline, "the load stalled");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_for(1).await;
    let victim = servers[1].take().unwrap();
    let victim_dir = victim.kill();
    // It comes back two thirds of the way through, on the same data directory and port.
    wait_for(2).await;
    servers[1] = Some(TestServer::in_dir(victim_dir, &configs[1]));
    let mut runs = Vec::new();
    for n in nodes {
        runs.push(n.await.unwrap());
    }
    let servers: Vec<TestServer> = servers.into_iter().map(Option::unwrap).collect();
    // The restarted instance found readings in its WAL that were not in its table yet.
    let recovered = servers[1]
        .log()
        .lines()
        .find(|l| l.contains("WAL recovered into Parquet"))
        .map(str::to_owned)
        .unwrap_or_default();
    let tail_rows: u64 = recovered
        .split_whitespace()
        .find_map(|w| w.strip_prefix("rows="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(tail_rows > 0, "no WAL tail at the restart: {recovered}");
    wait_uploaded(&servers.iter().collect::<Vec<_>>());

    let acked: usize = runs.iter().map(|r| r.acked.len()).sum();
    assert_eq!(acked as u64, total);
    let moved: Vec<usize> = (0..NODES)
        .filter(|&i| {
            let s = &runs[i].sessions;
            s.windows(2).any(|w| w[0].0 != w[1].0)
        })
        .collect();
    assert!(!moved.is_empty(), "no node moved to another instance");
    // A node that reported warningMode is told so by the instance it moved to.
    for &i in moved.iter().filter(|&&i| i % 5 == 0) {
        for (instance, severity) in &runs[i].sessions[1..] {
            assert_eq!(
                severity,
                "warningMode",
                "{} on {instance}: {:?}",
                node_id(i),
                runs[i].sessions
            );
        }
    }

    // The table, read by delta-rs: each (instance, key) once; every acknowledged reading.
    let read = read_dataset(&garage, "fleet");
    assert_eq!(
        read["instances"],
        serde_json::json!(ids),
        "{}",
        read["instances"]
    );
    assert_eq!(read["rows"], read["unique_keys"]);
    let doubled = assert_acked_stored(&runs, &stored_counts(&read));
    let in_doubt: usize = runs.iter().map(|r| r.in_doubt.len()).sum();
    eprintln!(
        "{acked} acknowledged, {} stored, {in_doubt} in doubt at the kill, {doubled} of them \
         stored twice, {} nodes moved, {tail_rows} rows in the killed instance's WAL tail",
        read["rows"],
        moved.len()
    );

    // `nodes` over every instance: each node once, on the instance it last joined.
    let data = servers[0].data_dir();
    let deadline = Instant::now() + Duration::from_secs(30);
    let expected: BTreeMap<String, String> = (0..NODES)
        .map(|i| (node_id(i), runs[i].sessions.last().unwrap().0.clone()))
        .collect();
    loop {
        let csv = samos_sql(
            &garage,
            &data,
            &format!(
                "SELECT node_id, instance, severity FROM nodes WHERE network = '{NET}' ORDER BY node_id"
            ),
        );
        let got: BTreeMap<String, String> = csv
            .lines()
            .skip(1)
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                (f[0].to_owned(), f[1].to_owned())
            })
            .collect();
        let rows = csv.lines().count() - 1;
        if rows == NODES && got == expected {
            let warned = csv.lines().filter(|l| l.ends_with(",warning")).count();
            assert_eq!(warned, NODES / 5, "{csv}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nodes: {rows} rows, {} differ from the clients' view",
            expected
                .iter()
                .filter(|(k, v)| got.get(*k) != Some(v))
                .count()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // `events` covers every instance; each move is one.
    let csv = samos_sql(
        &garage,
        &data,
        "SELECT count(DISTINCT instance) AS instances, \
                count(*) FILTER (WHERE kind = 'moved') AS moves FROM events",
    );
    let row: Vec<u64> = csv
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(row[0], 3, "{csv}");
    assert!(row[1] >= moved.len() as u64, "{csv}");
    // `readings` through the SQL layer agrees with delta-rs.
    let csv = samos_sql(&garage, &data, "SELECT count(*) FROM readings");
    assert_eq!(csv.lines().nth(1).unwrap(), read["rows"].to_string());
    drop(lb);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_committing_at_once_for_a_minute_lose_and_double_nothing() {
    const NODES: usize = 8;
    let garage = Garage::start();
    let servers: Vec<TestServer> = ["a", "b"]
        .iter()
        .map(|id| TestServer::with_config(&instance_config(&garage, "pair", id, 0, false)))
        .collect();
    let progress = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(60);
    // Half the nodes on each instance, publishing until the minute is up.
    let nodes: Vec<_> = (0..NODES)
        .map(|i| {
            tokio::spawn(run_node(
                i,
                Plan {
                    addr: servers[i % 2].mqtt[0],
                    readings: u32::MAX,
                    until,
                    pace: Duration::ZERO,
                    qos: QoS::AtLeastOnce,
                    warn: false,
                    progress: progress.clone(),
                    warned: Arc::default(),
                },
            ))
        })
        .collect();
    let mut runs = Vec::new();
    for n in nodes {
        runs.push(n.await.unwrap());
    }
    wait_uploaded(&servers.iter().collect::<Vec<_>>());
    for s in &servers {
        assert!(
            s.metric("samos_lake_files_total ") > 20,
            "few commits\n{}",
            s.log()
        );
    }
    let read = read_dataset(&garage, "pair");
    assert_eq!(read["instances"], serde_json::json!(["a", "b"]));
    let acked: usize = runs.iter().map(|r| r.acked.len()).sum();
    assert_eq!(read["rows"], acked, "{}", read["rows"]);
    assert_eq!(read["unique_keys"], acked);
    assert_eq!(assert_acked_stored(&runs, &stored_counts(&read)), 0);
    assert!(runs.iter().all(|r| r.in_doubt.is_empty()));
    eprintln!(
        "{acked} readings in a minute, {} commits",
        servers
            .iter()
            .map(|s| s.metric("samos_lake_files_total ") + s.metric("samos_lake_compactions_total "))
            .sum::<u64>()
    );
}
