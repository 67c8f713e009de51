//! The arguments of `samos cluster …` roles on loopback, for the tests and the benchmarks that
//! start a Ballista scheduler and executors as processes.
#![allow(dead_code)]
// Test support: a panic here is the failing test's report.
#![allow(clippy::unwrap_used)]

use std::path::Path;

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

/// `executor` of the scheduler on loopback `port`, its Flight and gRPC services on loopback
/// `ports`, shuffling into `work_dir`.
pub fn executor_args(port: u16, ports: [u16; 2], work_dir: &Path, dataset: &str) -> Vec<String> {
    [
        "executor",
        "--scheduler",
        &format!("127.0.0.1:{port}"),
        "--flight",
        &format!("127.0.0.1:{}", ports[0]),
        "--grpc-port",
        &ports[1].to_string(),
        "--work-dir",
        &work_dir.display().to_string(),
        "--dataset",
        dataset,
    ]
    .map(str::to_owned)
    .to_vec()
}
