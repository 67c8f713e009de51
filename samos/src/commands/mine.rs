//! `samos mine`: loads one series (a node's sensor from the store, or a file column), mines it on
//! the chosen backend, stores the result tables and optionally plots them.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Parser;

#[derive(Parser)]
pub struct MineArgs {
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
    backend: crate::mine::BackendChoice,
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

pub fn run(args: MineArgs) -> Result<()> {
    use crate::mine::{self, Run, Source};
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
            arrow::util::pretty::pretty_format_batches(&[
                batch.project(&(7..batch.num_columns()).collect::<Vec<_>>())?
            ])?
        );
    }
    mine::store(&args.data_dir, &run, &tables)?;
    println!(
        "stored in {}: query with samos sql \"SELECT * FROM motifs WHERE run = '{}'\"",
        args.data_dir
            .join(samos_store::layout::MINING_DIR)
            .display(),
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
