//! `samos bench`: measures an MQTT server with the load generator (paper mode or pipelined) and
//! checks that everything sent was acknowledged and, on Samos, stored.

use std::net::SocketAddr;

use anyhow::{Result, bail};
use clap::Parser;

use super::ServerArgs;

#[derive(Parser)]
pub struct BenchArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Clients, each with its own connection.
    #[arg(long, short, default_value_t = 1)]
    clients: usize,
    /// Messages per client.
    #[arg(long, short, default_value_t = 1000)]
    messages: usize,
    /// QoS of every message.
    #[arg(long, short, default_value_t = 2, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Messages a client keeps unacknowledged; 1 is the paper's mode (the next message only
    /// after the whole QoS exchange of the previous one).
    #[arg(long, default_value_t = 1)]
    inflight: usize,
    /// Plain messages on `bench/{client}` instead of sensor nodes that join first with a valid
    /// configuration (for servers without the sensor-network protocol).
    #[arg(long)]
    plain: bool,
    /// Nodes' readings follow a sine (18.5 to 21.5, period 200 readings, a phase per node)
    /// instead of a constant: shapes for `[[stream_profile]]` to compare.
    #[arg(long, conflicts_with = "plain")]
    wave: bool,
    /// Payload size of plain messages.
    #[arg(long, default_value_t = 64)]
    payload_bytes: usize,
    /// Network the nodes join (and serverID in their documents).
    #[arg(long, default_value = "samos")]
    network: String,
    #[arg(long, default_value = "SN")]
    server_id: String,
    /// Also run one subscriber and count what it is delivered.
    #[arg(long)]
    subscriber: bool,
    /// Samos's metrics endpoint: count the readings stored and time the last one.
    #[arg(long)]
    samos_metrics: Option<SocketAddr>,
    /// Give up after this many seconds without progress.
    #[arg(long, default_value_t = 30.0)]
    idle_timeout: f64,
    /// No progress lines.
    #[arg(long)]
    quiet: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: BenchArgs) -> Result<()> {
    use samos_tools::loadgen::{self, LoadSpec, NodeMode};
    samos_tools::fd_limit::raise_open_file_limit();
    let connect = args.server.connect_options()?;
    let qos = match args.qos {
        0 => mqttbytes::QoS::AtMostOnce,
        1 => mqttbytes::QoS::AtLeastOnce,
        _ => mqttbytes::QoS::ExactlyOnce,
    };
    let spec = LoadSpec {
        addr: connect.addr,
        tls: connect.tls,
        credentials: connect.credentials,
        publishers: args.clients,
        messages_per_publisher: args.messages,
        qos,
        inflight: args.inflight.max(1),
        payload_bytes: args.payload_bytes,
        topic_prefix: "bench".into(),
        as_nodes: (!args.plain).then(|| NodeMode {
            network: args.network.clone(),
            server_id: args.server_id.clone(),
            wave: args.wave,
        }),
        subscriber: args.subscriber,
        idle_timeout: std::time::Duration::from_secs_f64(args.idle_timeout),
        deadline: std::time::Duration::from_secs(24 * 3600),
        stored_metrics: args.samos_metrics,
        progress: !args.quiet && !args.json,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(loadgen::run(spec))?;
    let expected = (args.clients * args.messages) as u64;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "clients": args.clients, "messages_per_client": args.messages,
                "qos": args.qos, "inflight": args.inflight, "tls": args.server.cafile.is_some(),
                "as_nodes": !args.plain, "report": report,
                "acknowledged_per_second": report.acknowledged_per_second(),
                "stored_per_second": report.stored_per_second(),
                "received_per_second": args.subscriber.then(|| report.received_per_second()),
            }))?
        );
    } else {
        let mode = if args.inflight <= 1 {
            "paper mode (1 in flight)".to_string()
        } else {
            format!("pipelined ({} in flight)", args.inflight)
        };
        println!(
            "{} client(s) × {} messages, QoS {}, {mode}, {}{}",
            args.clients,
            args.messages,
            args.qos,
            if args.server.cafile.is_some() {
                "TLS"
            } else {
                "TCP"
            },
            if args.plain {
                ""
            } else {
                ", as joined sensor nodes"
            }
        );
        println!(
            "connect{}: {:.2} s",
            if args.plain { "" } else { " and join" },
            report.connect_seconds
        );
        println!(
            "acknowledged {} of {} in {:.3} s = {:.0}/s",
            report.acknowledged,
            report.published,
            report.publish_seconds,
            report.acknowledged_per_second()
        );
        if let (Some(n), Some(t), Some(rate)) = (
            report.stored,
            report.stored_seconds,
            report.stored_per_second(),
        ) {
            println!("stored {n} in {t:.3} s = {rate:.0}/s");
        }
        if args.subscriber {
            println!(
                "delivered {} in {:.3} s = {:.0}/s",
                report.received,
                report.delivery_seconds,
                report.received_per_second()
            );
        }
        let [p50, p90, p99, max] = report.ack_latency_ms;
        println!(
            "acknowledgement latency ms: p50 {p50:.2}  p90 {p90:.2}  p99 {p99:.2}  max {max:.2}"
        );
    }
    if report.acknowledged < expected {
        bail!(
            "{} of {expected} messages were not acknowledged",
            expected - report.acknowledged
        );
    }
    if report.stored.is_some_and(|n| n < expected) {
        bail!(
            "{} of {expected} readings were not stored",
            expected - report.stored.unwrap_or(0)
        );
    }
    Ok(())
}
