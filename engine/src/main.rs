//! `samos`: the command-line front of the engine.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use samos_engine::auth::{DEFAULT_ITERATIONS, PasswordFile};
use samos_engine::config::{Config, ListenerConfig, TlsConfig};
use samos_engine::server::Server;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "samos",
    version,
    about = "MQTT ingest engine for sensor networks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Add, change or delete users in a password file (Mosquitto-compatible `$7$` hashes).
    Passwd(PasswdArgs),
    /// Print the documented example configuration.
    GenerateConfig,
    /// List the node registry of a data directory (works while the server runs).
    Nodes(NodesArgs),
    /// Run virtual sensor nodes speaking the paper's protocol against Samos or any broker.
    Simulate(SimulateArgs),
    /// Measure an MQTT server: N clients × M messages, in the paper's mode (one exchange at a
    /// time) or pipelined; acknowledged, stored (Samos) and delivered rates.
    Bench(BenchArgs),
    /// Run one SQL statement over the stored readings of a data directory (read-only; works
    /// while the server runs).
    Sql(SqlArgs),
    /// Mine one stored series (or a CSV/Parquet column) for motifs and discords (matrix
    /// profile) and window statistics; results go to the `motifs`, `discords` and
    /// `window_stats` tables of the store.
    Mine(MineArgs),
}

#[derive(Parser)]
struct MineArgs {
    /// Node whose readings to mine (with --sensor).
    #[arg(long, requires = "sensor", conflicts_with = "file")]
    node: Option<String>,
    /// Sensor (its dataName) of that node.
    #[arg(long, requires = "node")]
    sensor: Option<String>,
    /// Mine a column of this CSV (with a header) or Parquet file instead.
    #[arg(long, required_unless_present = "node")]
    file: Option<PathBuf>,
    /// Column of --file holding the values.
    #[arg(long, default_value = "value")]
    column: String,
    /// Column of --file holding the times, if any.
    #[arg(long)]
    time_column: Option<String>,
    /// Window (subsequence) length in samples; also the width of the window statistics.
    #[arg(long, short = 'm')]
    window: usize,
    /// Only readings at or after this time (e.g. 2026-12-01 or 2026-12-01T10:00:00Z).
    #[arg(long)]
    from: Option<String>,
    /// Only readings before this time.
    #[arg(long)]
    to: Option<String>,
    /// Where the work runs: auto (a hardware GPU if wgpu finds one, else the CPU), cpu, gpu
    /// (any adapter, software ones included; fails without one), fpga-sim (the FPGA kernel's
    /// Verilator model) or fpga (a card behind XDMA device files, see --fpga-device).
    #[arg(long, value_enum, default_value = "auto")]
    backend: samos_engine::mine::BackendChoice,
    /// Device-file prefix of the FPGA card for --backend fpga: {PREFIX}_user (registers),
    /// {PREFIX}_h2c_0 and {PREFIX}_c2h_0 (streams).
    #[arg(long, default_value = "/dev/xdma0")]
    fpga_device: String,
    /// How many motifs and discords to keep.
    #[arg(long, default_value_t = 3)]
    top: usize,
    /// Data directory (read from, and the results stored in).
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
    /// Draw the series with the motifs and discords marked (FILE.svg or FILE.png).
    #[arg(long)]
    plot: Option<PathBuf>,
}

#[derive(Parser)]
struct SqlArgs {
    /// The statement, e.g. "SELECT node_id, count(*) FROM readings GROUP BY node_id". Without
    /// one: an interactive shell (statements end with `;`; `\d` lists tables, `\q` quits).
    query: Option<String>,
    /// Data directory.
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
    /// Output format: table, csv, json, ndjson or parquet.
    #[arg(long, short, default_value = "table")]
    format: samos_analytics::output::Format,
    /// Write the result to this file instead of standard output (one statement only).
    #[arg(long, short)]
    output: Option<PathBuf>,
}

/// Where a client command connects, and as whom.
#[derive(clap::Args)]
struct ServerArgs {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:1883")]
    server: SocketAddr,
    /// Connect with TLS, trusting this PEM CA.
    #[arg(long)]
    cafile: Option<PathBuf>,
    /// Name to check the server's certificate against.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// User name and password.
    #[arg(long, short)]
    username: Option<String>,
    #[arg(long, short = 'P')]
    password: Option<String>,
}

impl ServerArgs {
    fn connect_options(&self) -> Result<samos_engine::client::ConnectOptions> {
        let tls = match &self.cafile {
            Some(ca) => Some(
                samos_engine::client::ClientTls::from_ca(ca, &self.server_name)
                    .map_err(|e| anyhow::anyhow!("TLS: {e}"))?,
            ),
            None => None,
        };
        Ok(samos_engine::client::ConnectOptions {
            addr: self.server,
            tls,
            credentials: self
                .username
                .clone()
                .map(|u| (u, self.password.clone().unwrap_or_default())),
            keep_alive: 60,
        })
    }
}

#[derive(Parser)]
struct BenchArgs {
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

#[derive(Parser)]
struct SimulateArgs {
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

#[derive(Parser)]
struct NodesArgs {
    /// Data directory.
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
    /// Print JSON (the whole records, configuration included) instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Parser)]
struct ServeArgs {
    /// TOML configuration file (see samos.toml); flags override it.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Plain MQTT listener(s), replacing the configured ones, e.g. 127.0.0.1:1883.
    #[arg(long)]
    listen: Vec<SocketAddr>,
    /// TLS listener(s); need --cert and --key.
    #[arg(long)]
    tls_listen: Vec<SocketAddr>,
    /// PEM certificate chain for --tls-listen.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// PEM private key for --tls-listen.
    #[arg(long)]
    key: Option<PathBuf>,
    /// PEM CA for verifying client certificates on --tls-listen.
    #[arg(long)]
    client_ca: Option<PathBuf>,
    /// Require a client certificate on --tls-listen (needs --client-ca).
    #[arg(long)]
    require_client_cert: bool,
    /// Data directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Password file.
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// Admit clients without credentials on every listener, including non-loopback ones.
    #[arg(long)]
    allow_anonymous: bool,
    /// Address of the Prometheus /metrics endpoint.
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// Turn the metrics endpoint off.
    #[arg(long)]
    no_metrics: bool,
    /// Address of the HTTP query API (port 0: any free port).
    #[arg(long)]
    api_listen: Option<SocketAddr>,
    /// Turn the HTTP query API off.
    #[arg(long)]
    no_api: bool,
    /// Also load readings into PostgreSQL (connection string, e.g. postgres://user@host/db).
    #[arg(long)]
    postgres: Option<String>,
    /// Once listening, write the bound addresses as JSON to this file (for scripts and tests).
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Log filter, e.g. `info`, `samos_engine=debug` (also RUST_LOG).
    #[arg(long, default_value = "info,rustls=error", env = "RUST_LOG")]
    log: String,
}

#[derive(Parser)]
struct PasswdArgs {
    /// Password file; created if missing.
    file: PathBuf,
    /// User name.
    user: String,
    /// Password (omit to be prompted, or use --stdin). Visible in process lists: avoid on shared hosts.
    #[arg(long, short)]
    password: Option<String>,
    /// Read the password from the first line of standard input.
    #[arg(long)]
    stdin: bool,
    /// Delete the user instead.
    #[arg(long, short = 'D')]
    delete: bool,
    /// PBKDF2-SHA512 iterations.
    #[arg(long, default_value_t = DEFAULT_ITERATIONS)]
    iterations: u32,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Passwd(args) => passwd(args),
        Command::Nodes(args) => nodes(args),
        Command::Simulate(args) => simulate(args),
        Command::Bench(args) => bench(args),
        Command::Sql(args) => sql(args),
        Command::Mine(args) => mine(args),
        Command::GenerateConfig => {
            print!("{}", include_str!("../../samos.toml"));
            Ok(())
        }
    }
}

fn serve(args: ServeArgs) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&args.log).context("invalid --log filter")?)
        .with_writer(std::io::stderr)
        .init();
    raise_open_file_limit();
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if !args.listen.is_empty() || !args.tls_listen.is_empty() {
        config.listeners.clear();
    }
    for bind in &args.listen {
        config.listeners.push(ListenerConfig {
            bind: *bind,
            tls: None,
            allow_anonymous: None,
        });
    }
    if !args.tls_listen.is_empty() {
        let (Some(cert), Some(key)) = (&args.cert, &args.key) else {
            bail!("--tls-listen needs --cert and --key");
        };
        for bind in &args.tls_listen {
            config.listeners.push(ListenerConfig {
                bind: *bind,
                tls: Some(TlsConfig {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: args.client_ca.clone(),
                    require_client_cert: args.require_client_cert,
                    use_identity_as_username: false,
                }),
                allow_anonymous: None,
            });
        }
    }
    if let Some(d) = args.data_dir {
        config.data_dir = d;
    }
    if let Some(p) = args.password_file {
        config.password_file = Some(p);
    }
    if args.allow_anonymous {
        config.allow_anonymous = Some(true);
    }
    if let Some(m) = args.metrics_listen {
        config.metrics.bind = m;
    }
    if args.no_metrics {
        config.metrics.enabled = false;
    }
    if let Some(a) = args.api_listen {
        config.api.bind = a;
    }
    if args.no_api {
        config.api.enabled = false;
    }
    if let Some(url) = args.postgres {
        config.storage.postgres = Some(url);
    }
    let config = config.finish()?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("samos-worker")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let server = Server::start(config).await?;
        if let Some(path) = &args.ready_file {
            let json = serde_json::to_string(&server.endpoints)?;
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, json)
                .and_then(|()| std::fs::rename(&tmp, path))
                .with_context(|| format!("cannot write ready file {}", path.display()))?;
        }
        shutdown_signal().await;
        tracing::info!("shutting down");
        server.shutdown().await;
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn simulate(args: SimulateArgs) -> Result<()> {
    use samos_engine::simulate::{self, SimulateSpec};
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

fn bench(args: BenchArgs) -> Result<()> {
    use samos_engine::loadgen::{self, LoadSpec, NodeMode};
    raise_open_file_limit();
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

/// Lifts the soft limit on open files to the hard one: a thousand clients need a thousand
/// sockets (on either side).
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

fn sql(args: SqlArgs) -> Result<()> {
    use samos_analytics::output::Format;
    use samos_analytics::{Access, History};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let history = rt.block_on(History::open(&args.data_dir, Access::Session))?;
    let Some(query) = &args.query else {
        if args.output.is_some() {
            bail!("--output takes one statement: give it as an argument");
        }
        return sql_shell(&rt, &history, args.format);
    };
    if args.format == Format::Parquet && args.output.is_none() {
        bail!("--format parquet needs --output FILE");
    }
    let (schema, batches) = rt.block_on(run_statement(&history, query))?;
    match &args.output {
        Some(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            samos_analytics::output::write(
                &batches,
                &schema,
                args.format,
                std::io::BufWriter::new(file),
            )?;
        }
        None => samos_analytics::output::write(
            &batches,
            &schema,
            args.format,
            std::io::BufWriter::new(std::io::stdout()),
        )?,
    }
    Ok(())
}

/// Plans and collects one statement, keeping its schema for formats that need it (no rows).
async fn run_statement(
    history: &samos_analytics::History,
    sql: &str,
) -> Result<(
    samos_analytics::arrow::datatypes::SchemaRef,
    Vec<samos_analytics::arrow::record_batch::RecordBatch>,
)> {
    let frame = history.plan(sql).await?;
    let schema = std::sync::Arc::new(frame.schema().as_arrow().clone());
    let batches = frame
        .collect()
        .await
        .map_err(samos_analytics::QueryError::from)?;
    Ok((schema, batches))
}

/// The interactive shell: line editing and history on a terminal, plain lines from a pipe.
fn sql_shell(
    rt: &tokio::runtime::Runtime,
    history: &samos_analytics::History,
    format: samos_analytics::output::Format,
) -> Result<()> {
    use std::io::IsTerminal;
    let interactive = std::io::stdin().is_terminal();
    let mut editor = if interactive {
        Some(rustyline::DefaultEditor::new()?)
    } else {
        None
    };
    let history_file =
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".samos_sql_history"));
    if let (Some(e), Some(f)) = (editor.as_mut(), &history_file) {
        // No history yet on first use: nothing to load.
        let _ = e.load_history(f);
    }
    if interactive {
        println!("samos sql — statements end with ';'. \\d [table] describes, \\q quits.");
    }
    let mut stdin = std::io::stdin().lock();
    let mut statement = String::new();
    loop {
        let prompt = if statement.is_empty() {
            "samos> "
        } else {
            "   ... "
        };
        let line = match editor.as_mut() {
            Some(e) => match e.readline(prompt) {
                Ok(line) => line,
                Err(rustyline::error::ReadlineError::Interrupted) => {
                    statement.clear();
                    continue;
                }
                Err(rustyline::error::ReadlineError::Eof) => break,
                Err(e) => return Err(e.into()),
            },
            None => {
                let mut line = String::new();
                if stdin.read_line(&mut line)? == 0 {
                    break;
                }
                line
            }
        };
        let trimmed = line.trim();
        if statement.is_empty() && trimmed.starts_with('\\') {
            if let Some(e) = editor.as_mut() {
                let _ = e.add_history_entry(trimmed);
            }
            let mut words = trimmed.split_whitespace();
            match words.next() {
                Some("\\q") => break,
                Some("\\d") => match rt.block_on(history.describe(words.next())) {
                    Ok(b) if b.iter().all(|b| b.num_rows() == 0) => {
                        eprintln!("error: no such table")
                    }
                    Ok(b) => println!(
                        "{}",
                        samos_analytics::arrow::util::pretty::pretty_format_batches(&b)?
                    ),
                    Err(e) => eprintln!("error: {e}"),
                },
                _ => eprintln!("commands: \\d [table], \\q"),
            }
            continue;
        }
        if trimmed.is_empty() && statement.is_empty() {
            continue;
        }
        statement.push_str(&line);
        statement.push('\n');
        if !trimmed.ends_with(';') {
            continue;
        }
        let sql = std::mem::take(&mut statement);
        let sql = sql.trim().trim_end_matches(';');
        if let Some(e) = editor.as_mut() {
            let _ = e.add_history_entry(sql.replace('\n', " "));
        }
        let started = std::time::Instant::now();
        match rt.block_on(run_statement(history, sql)) {
            Ok((schema, batches)) => {
                samos_analytics::output::write(
                    &batches,
                    &schema,
                    format,
                    std::io::BufWriter::new(std::io::stdout()),
                )?;
                if interactive {
                    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
                    println!("{rows} row(s) in {:.3} s", started.elapsed().as_secs_f64());
                }
            }
            Err(e) => eprintln!("error: {e}"),
        }
    }
    if let (Some(e), Some(f)) = (editor.as_mut(), &history_file)
        && let Err(err) = e.save_history(f)
    {
        eprintln!("warning: cannot save the history to {}: {err}", f.display());
    }
    Ok(())
}

fn mine(args: MineArgs) -> Result<()> {
    use samos_engine::mine::{self, Run, Source};
    let source = match (&args.node, &args.sensor, &args.file) {
        (Some(node), Some(sensor), None) => Source::Store {
            node: node.clone(),
            sensor: sensor.clone(),
        },
        (None, None, Some(path)) => Source::File {
            path: path.clone(),
            column: args.column.clone(),
            time_column: args.time_column.clone(),
        },
        _ => bail!("give --node and --sensor, or --file"),
    };
    let plot_png = match args
        .plot
        .as_ref()
        .map(|p| p.extension().and_then(|e| e.to_str()))
    {
        None | Some(Some("svg")) => false,
        Some(Some("png")) => true,
        Some(_) => bail!("--plot draws SVG or PNG: give a file name ending in .svg or .png"),
    };
    let progress = samos_offload::Progress::new();
    let (backend, note) = mine::open_backend(args.backend, &progress, &args.fpga_device)?;
    eprintln!("{note}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let series = rt.block_on(async {
        let history =
            samos_analytics::History::open(&args.data_dir, samos_analytics::Access::Session)
                .await?;
        mine::load(&history, &source, args.from.as_deref(), args.to.as_deref()).await
    })?;
    let n = series.values.len();
    eprintln!(
        "mining {n} values, window {}, on {}",
        args.window,
        backend.describe()
    );
    let started = std::time::Instant::now();
    let mined = {
        let _display = mine::show_progress(progress, "self-join");
        mine::mine(backend.as_ref(), &series, args.window, args.top)?
    };
    let seconds = started.elapsed().as_secs_f64();
    let run = Run::new(&source, args.window, backend.describe());
    let tables = mine::result_batches(&run, &series, &mined);
    println!(
        "run {} ({:.2} s, {:.3e} window pairs/s)",
        run.id,
        seconds,
        samos_offload::self_join_pairs(n, args.window) / seconds.max(1e-9)
    );
    for (name, batch) in &tables[..2] {
        println!("{name}:");
        println!(
            "{}",
            samos_analytics::arrow::util::pretty::pretty_format_batches(&[
                batch.project(&(7..batch.num_columns()).collect::<Vec<_>>())?
            ])?
        );
    }
    mine::store(&args.data_dir, &run, &tables)?;
    println!(
        "stored in {}: query with samos sql \"SELECT * FROM motifs WHERE run = '{}'\"",
        args.data_dir.join("mining").display(),
        run.id
    );
    if let Some(path) = &args.plot {
        let title = format!("{} — window {}, {}", run.source, args.window, run.backend);
        let svg = mine::plot_svg(&series, &mined, &title);
        let bytes = if plot_png {
            mine::plot_png(&svg)?
        } else {
            svg.into_bytes()
        };
        std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
        println!("plot: {}", path.display());
    }
    Ok(())
}

fn nodes(args: NodesArgs) -> Result<()> {
    use samos_engine::protocol::registry::NodeRegistry;
    let records = NodeRegistry::read_records(&args.data_dir)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&records)?);
        return Ok(());
    }
    let time = |ms: Option<i64>| {
        ms.and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_else(|| "-".into())
    };
    println!(
        "{:<24} {:<12} {:<8} {:<8} {:<8} {:>9} {:>9} {:<19} {:<15} location / refusal",
        "network",
        "node",
        "mode",
        "severity",
        "assessed",
        "accepted",
        "rejected",
        "last seen",
        "address"
    );
    for r in &records {
        let detail = match (&r.config, r.refusal.first()) {
            (Some(c), _) => c.location.path(),
            (None, Some(e)) => e.to_string(),
            (None, None) => String::new(),
        };
        println!(
            "{:<24} {:<12} {:<8} {:<8} {:<8} {:>9} {:>9} {:<19} {:<15} {}",
            r.network,
            r.node_id,
            r.functional_mode.as_str(),
            r.severity.as_str(),
            r.assessed_severity.as_str(),
            r.readings_accepted,
            r.readings_rejected,
            time(r.last_seen_ms),
            r.address.as_deref().unwrap_or("-"),
            detail
        );
    }
    Ok(())
}

fn passwd(args: PasswdArgs) -> Result<()> {
    let mut file = if args.file.exists() {
        PasswordFile::load(&args.file)?
    } else {
        PasswordFile::default()
    };
    if args.user.contains(':') || args.user.is_empty() {
        bail!("a user name must be non-empty and must not contain ':'");
    }
    if args.delete {
        if !file.remove(&args.user) {
            bail!("no user {:?} in {}", args.user, args.file.display());
        }
    } else {
        let password = match (args.password, args.stdin) {
            (Some(p), _) => p,
            (None, true) => {
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line)?;
                line.trim_end_matches(['\r', '\n']).to_string()
            }
            (None, false) => {
                let p = rpassword::prompt_password("Password: ")?;
                let again = rpassword::prompt_password("Reenter password: ")?;
                if p != again {
                    bail!("passwords do not match");
                }
                p
            }
        };
        if password.is_empty() {
            bail!("empty password");
        }
        file.set(&args.user, &password, args.iterations);
    }
    file.save(&args.file)?;
    std::io::stdout().flush()?;
    Ok(())
}
