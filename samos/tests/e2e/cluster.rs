//! Distributed SQL on Apache Ballista: a scheduler and two executors started as processes
//! (`samos cluster …`) over a dataset on a real S3 server (Garage) that two Samos instances
//! wrote; `samos sql --cluster` answers five queries exactly as single-process `samos sql`.
// Integration tests: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::garage::Garage;
use common::*;

/// A `samos cluster …` process, killed when dropped; its log in `log`.
struct Role {
    child: Child,
    log: PathBuf,
}

impl Role {
    fn start(garage: &Garage, dir: &Path, name: &str, args: &[String]) -> Role {
        let log = dir.join(format!("{name}.log"));
        let mut cmd = Command::new(samos_bin());
        cmd.arg("cluster")
            .args(args)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in garage.env() {
            cmd.env(k, v);
        }
        Role {
            child: cmd.spawn().unwrap(),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_port(port: u16, what: &str, logs: &dyn Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not open {port}\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `samos sql` over `data` (with `--cluster url` when given), CSV out.
fn sql(garage: &Garage, data: &Path, cluster: Option<&str>, query: &str) -> String {
    let extra = match cluster {
        Some(url) => vec!["--cluster", url],
        None => Vec::new(),
    };
    samos_sql(data, &garage.env(), &extra, query)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ballista_answers_as_single_process_sql_does() {
    let garage = Garage::start();
    let port = free_port();
    // Two instances write the dataset: the cluster reads the union, as `samos sql` does. The
    // first one's HTTP API may send a query to the cluster.
    let servers: Vec<TestServer> = ["a", "b"]
        .iter()
        .map(|id| {
            TestServer::with_config(&format!(
                "instance_id = \"{id}\"\n[api]\ncluster = \"df://127.0.0.1:{port}\"\n\n\
                 [storage]\nparquet_rotate_secs = 1\n{}",
                garage.storage_toml("cluster")
            ))
        })
        .collect();
    for (i, s) in servers.iter().enumerate() {
        let mut spec = samos_tools::loadgen::LoadSpec::new(s.mqtt[0]);
        spec.publishers = 10;
        spec.messages_per_publisher = 500;
        spec.qos = mqttbytes::QoS::AtLeastOnce;
        spec.as_nodes = Some(samos_tools::loadgen::NodeMode {
            network: format!("net{i}"),
            server_id: "SN".into(),
            wave: false,
        });
        let report = samos_tools::loadgen::run(spec).await.unwrap();
        assert_eq!(report.acknowledged, 5_000);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for s in &servers {
        while s.metric("samos_lake_rows_total ") < 5_000 || s.metric("samos_lake_lag_batches ") > 0
        {
            assert!(Instant::now() < deadline, "not uploaded\n{}", s.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let dataset = format!("s3://{}/cluster", garage.bucket);
    let scheduler = Role::start(
        &garage,
        dir.path(),
        "scheduler",
        &ballista::scheduler_args(port, &dataset),
    );
    wait_port(port, "the scheduler", &|| scheduler.log());
    let executors: Vec<Role> = (0..2)
        .map(|i| {
            let work = dir.path().join(format!("work{i}"));
            let mut args =
                ballista::executor_args(port, [free_port(), free_port()], &work, &dataset);
            args.extend(["--slots".into(), "2".into()]);
            Role::start(&garage, dir.path(), &format!("executor{i}"), &args)
        })
        .collect();
    let logs = || {
        let mut all = scheduler.log();
        for e in &executors {
            all.push_str(&e.log());
        }
        all
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !executors
        .iter()
        .all(|e| e.log().contains("Executor registration succeed"))
    {
        assert!(
            Instant::now() < deadline,
            "executors did not register\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let url = format!("df://127.0.0.1:{port}");
    let data = servers[0].data_dir();
    let today = chrono_today();
    let queries = [
        "SELECT count(*) AS n, \
                count(DISTINCT concat(instance, '/', CAST(key AS VARCHAR))) AS readings, \
                count(DISTINCT instance) AS instances, count(DISTINCT node_id) AS nodes \
         FROM readings"
            .to_owned(),
        "SELECT hour, network, node_id, readings, min, max, round(avg, 6) AS avg \
         FROM hourly_readings ORDER BY hour, network, node_id"
            .to_owned(),
        "SELECT network, node_id, sensor, ingest_time, value, readings FROM latest_readings \
         ORDER BY network, node_id, sensor"
            .to_owned(),
        "SELECT n.instance, n.network, count(*) AS readings, count(DISTINCT r.node_id) AS nodes \
         FROM readings r JOIN nodes n ON r.network = n.network AND r.node_id = n.node_id \
         GROUP BY 1, 2 ORDER BY 1, 2"
            .to_owned(),
        format!(
            "SELECT date, instance, count(*) AS n FROM readings \
             WHERE date = '{today}' OR date = '1999-01-01' GROUP BY 1, 2 ORDER BY 1, 2"
        ),
    ];
    for q in &queries {
        let local = sql(&garage, &data, None, q);
        let distributed = sql(&garage, &data, Some(&url), q);
        assert!(local.lines().count() > 1, "{q}: no rows\n{local}");
        assert_eq!(distributed, local, "{q}\n{}", logs());
    }
    // The HTTP API: `engine=cluster` runs there, with the same answer as in the server.
    let api = |engine: &str, q: &str| {
        let path = format!(
            "/api/v1/query?engine={engine}&format=csv&sql={}",
            percent_encode(q)
        );
        let (status, body) = http_request(servers[0].api.unwrap(), "GET", &path, None, None);
        assert_eq!(status, 200, "{engine}: {body}");
        body
    };
    for q in &queries[..2] {
        assert_eq!(api("cluster", q), api("local", q), "{q}");
    }
    // The whole dataset counted on the cluster: both instances, every reading.
    let counts = sql(&garage, &data, Some(&url), &queries[0]);
    assert_eq!(
        counts.lines().nth(1).unwrap(),
        "10000,10000,2,10",
        "{counts}"
    );
    // The executors did the scans.
    assert!(executors.iter().all(|e| !e.log().is_empty()), "{}", logs());
    drop(servers);
}

/// Today's UTC date, `YYYY-MM-DD`.
fn chrono_today() -> String {
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}
