//! `samos serve`: the configuration file merged with the flags, logging, the server started and
//! stopped in order on Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Parser;
use samos_server::config::{Config, ListenerConfig, TlsConfig};
use samos_server::server::Server;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
pub struct ServeArgs {
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
    /// Serve the PostgreSQL wire protocol (psql, Grafana, DBeaver) here, e.g. 127.0.0.1:5433.
    #[arg(long)]
    pg_listen: Option<SocketAddr>,
    /// Serve Arrow Flight SQL (ADBC, JDBC, pyarrow) here, e.g. 127.0.0.1:8815.
    #[arg(long)]
    flight_listen: Option<SocketAddr>,
    /// Also load readings into PostgreSQL (connection string, e.g. postgres://user@host/db).
    #[arg(long)]
    postgres: Option<String>,
    /// Once listening, write the bound addresses as JSON to this file (for scripts and tests).
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Log filter, e.g. `info`, `samos_server=debug` (also RUST_LOG).
    #[arg(long, default_value = "info,rustls=error", env = "RUST_LOG")]
    log: String,
}

pub fn run(args: ServeArgs) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(log_filter(&args.log)?)
        .with_writer(std::io::stderr)
        .init();
    samos_tools::fd_limit::raise_open_file_limit();
    samos_server::memory::release_also_with(crate::allocator::release_free_pages);
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
            proxy_protocol: false,
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
                proxy_protocol: false,
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
    if let Some(a) = args.pg_listen {
        config.pgwire.bind = Some(a);
    }
    if let Some(a) = args.flight_listen {
        config.flight.bind = Some(a);
    }
    if let Some(url) = args.postgres {
        config.storage.postgres = Some(url);
    }
    if config.api.mine_command.is_none() {
        // Mining runs started from the dashboard run this binary's `samos mine`.
        config.api.mine_command = std::env::current_exe().ok();
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

/// The `--log` filter, with the Delta Lake crates (which log every snapshot they build at
/// INFO) held at WARN unless the filter names them itself.
pub(crate) fn log_filter(spec: &str) -> Result<EnvFilter> {
    const QUIET: [&str; 4] = [
        "buoyant_kernel",
        "buoyant_kernel_engine",
        "deltalake_core",
        "deltalake_aws",
    ];
    let mut full: Vec<String> = QUIET
        .iter()
        .filter(|c| !spec.contains(*c))
        .map(|c| format!("{c}=warn"))
        .collect();
    full.push(spec.to_owned());
    EnvFilter::try_new(full.join(",")).context("invalid --log filter")
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
