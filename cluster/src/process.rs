//! Ballista's scheduler and executor, run by Samos: the library crates' own servers with one
//! addition, the dataset's object store in every session's runtime, so that the listing tables
//! the client sends (`s3://bucket/…/part-….parquet`) resolve on the scheduler (planning) and on
//! the executors (scans). Credentials come from the options given, then the `AWS_*`
//! environment, as for every other reader of the dataset.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::start_server;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::object_store::{DefaultObjectStoreRegistry, ObjectStoreRegistry};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use samos_lake::Dataset;

use crate::ClusterError;

/// A runtime whose object-store registry holds `dataset`'s bucket (the local file system is
/// always there).
pub fn runtime(dataset: Option<&Dataset>) -> Result<Arc<RuntimeEnv>, ClusterError> {
    let registry = DefaultObjectStoreRegistry::new();
    if let Some(dataset) = dataset
        && dataset.base().scheme() != "file"
    {
        let mut bucket = dataset.base().clone();
        bucket.set_path("");
        let root = Dataset::new(bucket.as_str(), dataset.options().clone())?;
        registry.register_store(&bucket, root.store()?);
    }
    Ok(RuntimeEnvBuilder::new()
        .with_object_store_registry(Arc::new(registry))
        .build_arc()?)
}

/// Runs a scheduler on `bind` until the process ends.
pub async fn run_scheduler(bind: SocketAddr, dataset: Option<Dataset>) -> Result<(), ClusterError> {
    let runtime = runtime(dataset.as_ref())?;
    let mut config = SchedulerConfig::default()
        .with_hostname(bind.ip().to_string())
        .with_port(bind.port())
        .with_override_session_builder(Arc::new(move |config| {
            let state = ballista_core::utils::default_session_builder(config)?;
            Ok(SessionStateBuilder::new_from_existing(state)
                .with_runtime_env(runtime.clone())
                .build())
        }));
    config.bind_host = bind.ip().to_string();
    let cluster = BallistaCluster::new_from_config(&config).await?;
    start_server(cluster, bind, Arc::new(config)).await?;
    Ok(())
}

/// Where an executor listens and whom it serves.
#[derive(Debug, Clone)]
pub struct ExecutorSettings {
    pub scheduler: SocketAddr,
    /// Arrow Flight (shuffle data to other executors and the client).
    pub flight: SocketAddr,
    /// The executor's gRPC port (tasks from the scheduler), on the flight address's host.
    pub grpc_port: u16,
    /// Shuffle files.
    pub work_dir: PathBuf,
    /// Task slots (default: the machine's cores).
    pub slots: Option<usize>,
}

/// Runs an executor until the process ends.
pub async fn run_executor(
    settings: ExecutorSettings,
    dataset: Option<Dataset>,
) -> Result<(), ClusterError> {
    // Built once, for the check; each session gets its own runtime with the same store.
    runtime(dataset.as_ref())?;
    let mut config = ExecutorProcessConfig {
        bind_host: settings.flight.ip().to_string(),
        external_host: Some(settings.flight.ip().to_string()),
        port: settings.flight.port(),
        grpc_port: settings.grpc_port,
        scheduler_host: settings.scheduler.ip().to_string(),
        scheduler_port: settings.scheduler.port(),
        scheduler_connect_timeout_seconds: 30,
        work_dir: Some(settings.work_dir.display().to_string()),
        print_thread_info: false,
        executor_heartbeat_interval_seconds: 5,
        ..ExecutorProcessConfig::default()
    };
    if let Some(slots) = settings.slots {
        config.vcores = slots.max(1);
    }
    config.override_runtime_producer = Some(Arc::new(move |_| {
        runtime(dataset.as_ref())
            .map_err(|e| datafusion::error::DataFusionError::External(e.into()))
    }));
    start_executor_process(Arc::new(config)).await?;
    Ok(())
}
