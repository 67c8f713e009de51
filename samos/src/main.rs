//! `samos`: the command line. Parsing and dispatch live here; each subcommand is a module of
//! [`commands`] (its arguments beside its code); `samos mine`'s loading, storing and plotting
//! is [`mine`]. The server itself is the `samos-server` crate, the client-side tools
//! `samos-tools`: this crate only wires them to flags and exit codes (`anyhow` at this edge).

mod allocator;
mod commands;
mod mine;

use anyhow::Result;
use clap::{Parser, Subcommand};

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
    Serve(commands::serve::ServeArgs),
    /// Add, change or delete users in a password file (Mosquitto-compatible `$7$` hashes).
    Passwd(commands::passwd::PasswdArgs),
    /// Print the documented example configuration.
    GenerateConfig,
    /// List the node registry of a data directory (works while the server runs).
    Nodes(commands::nodes::NodesArgs),
    /// Run virtual sensor nodes speaking the paper's protocol against Samos or any broker.
    Simulate(commands::simulate::SimulateArgs),
    /// Measure an MQTT server: N clients × M messages, in the paper's mode (one exchange at a
    /// time) or pipelined; acknowledged, stored (Samos) and delivered rates.
    Bench(commands::bench::BenchArgs),
    /// Run one SQL statement over the stored readings of a data directory (read-only; works
    /// while the server runs).
    Sql(commands::sql::SqlArgs),
    /// Mine one stored series (or a CSV/Parquet column) for motifs and discords (matrix
    /// profile) and window statistics; results go to the `motifs`, `discords` and
    /// `window_stats` tables of the store.
    Mine(commands::mine::MineArgs),
    /// Run a Ballista scheduler or executor over the object-store history, for
    /// `samos sql --cluster` (distributed SQL).
    Cluster(commands::cluster::ClusterArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => commands::serve::run(args),
        Command::Passwd(args) => commands::passwd::run(args),
        Command::Nodes(args) => commands::nodes::run(args),
        Command::Simulate(args) => commands::simulate::run(args),
        Command::Bench(args) => commands::bench::run(args),
        Command::Sql(args) => commands::sql::run(args),
        Command::Mine(args) => commands::mine::run(args),
        Command::Cluster(args) => commands::cluster::run(args),
        Command::GenerateConfig => {
            print!("{}", include_str!("../../samos.toml"));
            Ok(())
        }
    }
}
