//! `samos nodes`: the node registry of a data directory, as a table or JSON (read-only, works
//! while the server runs).

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;

#[derive(Parser)]
pub struct NodesArgs {
    /// Data directory.
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
    /// Print JSON (the whole records, configuration included) instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: NodesArgs) -> Result<()> {
    use samos_server::protocol::registry::NodeRegistry;
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
