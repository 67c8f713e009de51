//! The arguments of `samos cluster …` roles on loopback, for the tests and the benchmarks that
//! start a Ballista scheduler and executors as processes.
#![allow(dead_code)]
// Test support: a panic here is the failing test's report.
#![allow(clippy::unwrap_used)]

use std::net::TcpListener;
use std::path::Path;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `scheduler` on loopback `port` over `dataset`.
pub fn scheduler_args(port: u16, dataset: &str) -> Vec<String> {
    [
        "scheduler",
        "--bind",
        &format!("127.0.0.1:{port}"),
        "--dataset",
        dataset,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// `executor` of the scheduler on loopback `port`, on free ports, shuffling into `work_dir`.
pub fn executor_args(port: u16, work_dir: &Path, dataset: &str) -> Vec<String> {
    [
        "executor",
        "--scheduler",
        &format!("127.0.0.1:{port}"),
        "--flight",
        &format!("127.0.0.1:{}", free_port()),
        "--grpc-port",
        &free_port().to_string(),
        "--work-dir",
        &work_dir.display().to_string(),
        "--dataset",
        dataset,
    ]
    .map(str::to_owned)
    .to_vec()
}
