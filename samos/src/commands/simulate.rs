//! `samos simulate`: virtual sensor nodes against Samos or any broker.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use tracing_subscriber::EnvFilter;

use super::ServerArgs;

#[derive(Parser)]
pub struct SimulateArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Number of virtual nodes (SIM000, SIM001, …).
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Network name in topics and documents.
    #[arg(long, default_value = "samos")]
    network: String,
    /// serverID in the nodes' documents.
    #[arg(long, default_value = "SN")]
    server_id: String,
    /// QoS of every publish.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Time compression: 60 turns the 60/40/20 s sampling intervals into 1 s and less.
    #[arg(long, default_value_t = 60.0)]
    speed: f64,
    /// Stop each node after this many samples.
    #[arg(long)]
    samples: Option<u64>,
    /// Stop after this many seconds (default: run until interrupted).
    #[arg(long)]
    duration: Option<f64>,
    /// Trace to replay (UCI occupancy CSV); default: the bundled office trace.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Plant a temperature ramp on this node index, which the node itself does not report.
    #[arg(long)]
    ramp: Option<usize>,
    /// Seconds a node waits for the server's answer to its join (a plain broker gives none).
    #[arg(long, default_value_t = 10.0)]
    join_timeout: f64,
    /// No progress lines.
    #[arg(long)]
    quiet: bool,
    /// Print the final counts as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: SimulateArgs) -> Result<()> {
    use samos_tools::simulate::{self, SimulateSpec};
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new("warn").expect("static filter"))
        .with_writer(std::io::stderr)
        .init();
    let trace_text = match &args.trace {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?
        }
        None => simulate::DEFAULT_TRACE.to_string(),
    };
    let trace = simulate::parse_trace(&trace_text).map_err(|e| anyhow::anyhow!("trace: {e}"))?;
    let spec = SimulateSpec {
        connect: args.server.connect_options()?,
        nodes: args.nodes,
        network: args.network,
        server_id: args.server_id,
        qos: match args.qos {
            0 => mqttbytes::QoS::AtMostOnce,
            1 => mqttbytes::QoS::AtLeastOnce,
            _ => mqttbytes::QoS::ExactlyOnce,
        },
        speed: args.speed,
        samples: args.samples,
        duration: args.duration.map(std::time::Duration::from_secs_f64),
        trace,
        ramp_node: args.ramp,
        join_timeout: std::time::Duration::from_secs_f64(args.join_timeout),
        progress: !args.quiet,
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let report = runtime.block_on(simulate::run(spec))?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{} nodes active, {} blocked, {} unanswered; {} readings; {} mode changes; {} alerts; {} errors",
            report.active,
            report.blocked,
            report.unanswered,
            report.readings,
            report.mode_changes,
            report.alerts,
            report.errors
        );
    }
    Ok(())
}
