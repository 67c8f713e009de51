//! One module per subcommand: its arguments (clap derive) beside the code that runs it.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;

pub mod bench;
pub mod cluster;
pub mod mine;
pub mod nodes;
pub mod passwd;
pub mod serve;
pub mod simulate;
pub mod sql;

/// Where a client command connects, and as whom.
#[derive(clap::Args)]
pub struct ServerArgs {
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
    pub fn connect_options(&self) -> Result<samos_tools::client::ConnectOptions> {
        let tls = match &self.cafile {
            Some(ca) => Some(
                samos_tools::client::ClientTls::from_ca(ca, &self.server_name)
                    .map_err(|e| anyhow::anyhow!("TLS: {e}"))?,
            ),
            None => None,
        };
        Ok(samos_tools::client::ConnectOptions {
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
