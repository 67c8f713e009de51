//! `samos cluster scheduler` and `samos cluster executor`: Apache Ballista's scheduler and
//! executor with the dataset's object store registered (see `samos-cluster`); queries come
//! from `samos sql --cluster df://host:port` or any Ballista client.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
pub struct ClusterArgs {
    #[command(subcommand)]
    role: Role,
    /// Log filter, e.g. `info`, `ballista=debug` (also RUST_LOG).
    #[arg(long, global = true, default_value = "info", env = "RUST_LOG")]
    log: String,
    /// Listen on a non-loopback address. Ballista's scheduler and executors authenticate no
    /// one: whoever reaches them can run queries over the dataset (with these processes'
    /// credentials). Open them only on a private network or behind a firewall.
    #[arg(long, global = true)]
    open: bool,
}

#[derive(Subcommand)]
enum Role {
    /// Plan queries and hand their stages to executors (one per cluster).
    Scheduler {
        /// gRPC address the scheduler listens on (clients and executors connect to it).
        #[arg(long, default_value = "127.0.0.1:50050")]
        bind: SocketAddr,
        #[command(flatten)]
        dataset: DatasetArgs,
    },
    /// Run query stages: scans of the dataset, joins, aggregates; add executors for speed.
    Executor {
        /// The scheduler's address.
        #[arg(long, default_value = "127.0.0.1:50050")]
        scheduler: SocketAddr,
        /// Arrow Flight address (shuffle data to other executors and to clients).
        #[arg(long, default_value = "127.0.0.1:50051")]
        flight: SocketAddr,
        /// gRPC port for tasks from the scheduler, on the Flight address's host.
        #[arg(long, default_value_t = 50052)]
        grpc_port: u16,
        /// Directory for shuffle files (default: `samos-executor-{flight port}` in the
        /// system's temporary directory).
        #[arg(long)]
        work_dir: Option<PathBuf>,
        /// Tasks run at once (default: the machine's cores).
        #[arg(long)]
        slots: Option<usize>,
        #[command(flatten)]
        dataset: DatasetArgs,
    },
}

/// Which dataset the scheduler and executors read: credentials from the `AWS_*` environment.
#[derive(clap::Args)]
struct DatasetArgs {
    /// The dataset's base URL, as the servers' `storage.object_store` (s3://bucket/prefix).
    #[arg(long, conflicts_with = "data_dir")]
    dataset: Option<String>,
    /// Or a data directory whose `lake.json` names it.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

impl DatasetArgs {
    fn dataset(&self) -> Result<Option<samos_cluster::Dataset>> {
        Ok(match (&self.dataset, &self.data_dir) {
            (Some(url), _) => Some(samos_cluster::Dataset::new(url, Default::default())?),
            (None, Some(dir)) => {
                Some(samos_cluster::Dataset::read_marker(dir)?.with_context(|| {
                    format!("{} keeps its history locally (no lake.json)", dir.display())
                })?)
            }
            (None, None) => None,
        })
    }
}

/// Refuses a non-loopback address unless `--open` was given.
fn check_open(addr: SocketAddr, open: bool) -> Result<()> {
    if !addr.ip().is_loopback() && !open {
        anyhow::bail!(
            "{addr} is not a loopback address, and Ballista's scheduler and executors \
             authenticate no one: pass --open to serve a private network anyway"
        );
    }
    Ok(())
}

pub fn run(args: ClusterArgs) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(crate::commands::serve::log_filter(&args.log)?)
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(32 * 1024 * 1024)
        .build()?;
    match args.role {
        Role::Scheduler { bind, dataset } => {
            check_open(bind, args.open)?;
            let dataset = dataset.dataset()?;
            tracing::info!(%bind, dataset = ?dataset.as_ref().map(|d| d.base().to_string()), "Ballista scheduler");
            rt.block_on(samos_cluster::process::run_scheduler(bind, dataset))?;
        }
        Role::Executor {
            scheduler,
            flight,
            grpc_port,
            work_dir,
            slots,
            dataset,
        } => {
            check_open(flight, args.open)?;
            let dataset = dataset.dataset()?;
            let work_dir = work_dir.unwrap_or_else(|| {
                std::env::temp_dir().join(format!("samos-executor-{}", flight.port()))
            });
            std::fs::create_dir_all(&work_dir)?;
            tracing::info!(%scheduler, %flight, grpc_port, work_dir = %work_dir.display(), "Ballista executor");
            let settings = samos_cluster::process::ExecutorSettings {
                scheduler,
                flight,
                grpc_port,
                work_dir,
                slots,
            };
            rt.block_on(samos_cluster::process::run_executor(settings, dataset))?;
        }
    }
    Ok(())
}
