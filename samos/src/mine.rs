//! `samos mine`: pattern mining over one stored series (or a CSV/Parquet file), results kept
//! in the store as the `motifs`, `discords` and `window_stats` tables, and an optional plot.
//!
//! The series is read through `analytics` (the `readings` table, so readings not yet in Parquet
//! count too), mined by an `offload` backend, and written as Parquet under
//! `data/mining/{motifs,discords,window_stats}/run-{id}.parquet` (temporary name, fsync,
//! rename — like the readings store), which `samos sql` reads.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMillisecondArray,
    UInt32Array, UInt64Array,
};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use samos_analytics::History;
use samos_analytics::datafusion::prelude::CsvReadOptions;
use samos_offload::cpu::Cpu;
use samos_offload::fpga::Fpga;
use samos_offload::gpu::Gpu;
use samos_offload::{Backend, Discord, MatrixProfile, Motif, Progress, WindowSpec, WindowStats};

/// Why mining could not run.
#[derive(Debug, thiserror::Error)]
pub enum MineError {
    #[error(transparent)]
    Query(#[from] samos_analytics::QueryError),
    #[error(transparent)]
    Mining(#[from] samos_offload::MiningError),
    #[error("{0}")]
    Input(String),
    #[error("cannot write {path}: {message}")]
    Write { path: PathBuf, message: String },
    #[error(
        "--backend gpu: {0}. Install a Vulkan driver (Debian's mesa-vulkan-drivers gives a \
         software one) or use --backend cpu"
    )]
    NoGpu(String),
    #[error("cannot draw the PNG plot: {0}")]
    Plot(String),
}

/// Which backend `samos mine` runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    /// A hardware GPU when wgpu finds one, else the CPU.
    Auto,
    Cpu,
    /// Whatever adapter wgpu finds, software ones (lavapipe) included.
    Gpu,
    /// The FPGA kernel co-simulated: its Verilator model, driven through the register map.
    FpgaSim,
    /// An FPGA card running the kernel behind XDMA device files (`--fpga-device`).
    Fpga,
}

/// Opens the chosen backend, reporting to `progress`; also says what was chosen and why.
/// `fpga_device` is the device-file prefix of an FPGA card (`--backend fpga`).
pub fn open_backend(
    choice: BackendChoice,
    progress: &Progress,
    fpga_device: &str,
) -> Result<(Box<dyn Backend>, String), MineError> {
    let cpu = || Cpu::default().with_progress(progress.clone());
    match choice {
        BackendChoice::FpgaSim => {
            let fpga = Fpga::sim()?.with_progress(progress.clone());
            let note = format!("backend fpga-sim: {}", fpga.describe());
            Ok((Box::new(fpga), note))
        }
        BackendChoice::Fpga => {
            let fpga = Fpga::xdma(fpga_device)?.with_progress(progress.clone());
            let note = format!("backend fpga: {}", fpga.describe());
            Ok((Box::new(fpga), note))
        }
        BackendChoice::Cpu => {
            let cpu = cpu();
            let note = format!("backend cpu: {}", cpu.describe());
            Ok((Box::new(cpu), note))
        }
        BackendChoice::Gpu => {
            let gpu = Gpu::new()
                .map_err(|e| {
                    MineError::NoGpu(match e {
                        samos_offload::MiningError::Device { message, .. } => message,
                        other => other.to_string(),
                    })
                })?
                .with_progress(progress.clone());
            let note = format!("backend gpu: {}", gpu.describe());
            Ok((Box::new(gpu), note))
        }
        BackendChoice::Auto => match Gpu::new() {
            Ok(gpu) if !gpu.is_software() => {
                let gpu = gpu.with_progress(progress.clone());
                let note = format!("backend auto: found a GPU, using {}", gpu.describe());
                Ok((Box::new(gpu), note))
            }
            Ok(gpu) => {
                let cpu = cpu();
                let note = format!(
                    "backend auto: the only GPU adapter, {}, is a software renderer (slower \
                     than the CPU backend); using {} (--backend gpu runs on it anyway)",
                    gpu.adapter().name,
                    cpu.describe()
                );
                Ok((Box::new(cpu), note))
            }
            Err(e) => {
                let cpu = cpu();
                let note = format!("backend auto: no GPU ({e}); using {}", cpu.describe());
                Ok((Box::new(cpu), note))
            }
        },
    }
}

/// Draws `progress` on standard error (a terminal only) until the returned guard is dropped.
pub fn show_progress(progress: Progress, label: &'static str) -> ProgressDisplay {
    use std::io::{IsTerminal, Write};
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    if !std::io::stderr().is_terminal() {
        return ProgressDisplay { stop, thread: None };
    }
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        let started = std::time::Instant::now();
        let mut drew = false;
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::sleep(std::time::Duration::from_millis(200));
            let (done, total) = progress.get();
            let elapsed = started.elapsed().as_secs_f64();
            if total == 0 || elapsed < 1.0 {
                continue;
            }
            let rate = done as f64 / elapsed;
            let left = if rate > 0.0 {
                format!("{:.0} s left", (total - done.min(total)) as f64 / rate)
            } else {
                "…".into()
            };
            eprint!(
                "\r{label}: {:>3.0}% of {:.2e} pairs, {:.2e} pairs/s, {left}   ",
                100.0 * done as f64 / total as f64,
                total as f64,
                rate
            );
            let _ = std::io::stderr().flush();
            drew = true;
        }
        if drew {
            eprint!("\r{:80}\r", "");
        }
    });
    ProgressDisplay {
        stop,
        thread: Some(thread),
    }
}

/// Stops the progress line when dropped.
pub struct ProgressDisplay {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for ProgressDisplay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Where the series comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// One node's sensor in the store.
    Store { node: String, sensor: String },
    /// A column of a CSV (with a header) or Parquet file; times from `time_column` if given.
    File {
        path: PathBuf,
        column: String,
        time_column: Option<String>,
    },
}

impl Source {
    fn label(&self) -> String {
        match self {
            Source::Store { node, sensor } => format!("{node}/{sensor}"),
            Source::File { path, column, .. } => format!("{}:{column}", path.display()),
        }
    }
}

/// A series to mine: values (nulls for gaps) and, where known, their times.
pub struct Series {
    pub values: Float64Array,
    pub times: Option<TimestampMillisecondArray>,
}

/// An SQL string literal.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Reads the series, in time order, within `[from, to)` (SQL timestamp literals) if given.
pub async fn load(
    history: &History,
    source: &Source,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<Series, MineError> {
    let mut bounds = String::new();
    let sql = match source {
        Source::Store { node, sensor } => {
            for (op, t) in [(">=", from), ("<", to)] {
                if let Some(t) = t {
                    bounds.push_str(&format!(
                        " AND ingest_time {op} CAST({} AS TIMESTAMP)",
                        quote(t)
                    ));
                }
            }
            format!(
                "SELECT value, ingest_time AS t FROM readings \
                 WHERE node_id = {} AND sensor = {}{bounds} ORDER BY ingest_time, key",
                quote(node),
                quote(sensor)
            )
        }
        Source::File {
            path,
            column,
            time_column,
        } => {
            let ctx = history.context();
            let name = path.display().to_string();
            if name.ends_with(".parquet") {
                ctx.register_parquet("mine_input", &name, Default::default())
                    .await
                    .map_err(samos_analytics::QueryError::from)?;
            } else {
                ctx.register_csv("mine_input", &name, CsvReadOptions::new())
                    .await
                    .map_err(samos_analytics::QueryError::from)?;
            }
            let time = match time_column {
                Some(c) => format!("\"{}\"", c.replace('"', "\"\"")),
                None => "NULL".into(),
            };
            format!(
                "SELECT CAST(\"{}\" AS DOUBLE) AS value, {time} AS t FROM mine_input",
                column.replace('"', "\"\"")
            )
        }
    };
    let batches = history
        .context()
        .sql(&sql)
        .await
        .map_err(samos_analytics::QueryError::from)?;
    let batches = batches
        .collect()
        .await
        .map_err(samos_analytics::QueryError::from)?;
    let mut values = Vec::new();
    let mut times = Vec::new();
    let ms = DataType::Timestamp(TimeUnit::Millisecond, None);
    for b in &batches {
        let cast = |i: usize, to: &DataType| {
            arrow::compute::cast(b.column(i), to).map_err(|e| {
                MineError::Input(format!("column {:?}: {e}", b.schema().field(i).name()))
            })
        };
        let (v, t) = (cast(0, &DataType::Float64)?, cast(1, &ms)?);
        let v = v
            .as_any()
            .downcast_ref::<Float64Array>()
            .expect("cast to f64");
        let t = t
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .expect("cast to timestamp");
        values.extend(v.iter());
        times.extend(t.iter());
    }
    if values.is_empty() {
        return Err(MineError::Input(format!(
            "no values for {}",
            source.label()
        )));
    }
    let has_times = times.iter().any(Option::is_some);
    Ok(Series {
        values: Float64Array::from(values),
        times: has_times.then(|| TimestampMillisecondArray::from(times)),
    })
}

/// What one run found.
pub struct Mined {
    pub profile: MatrixProfile,
    pub motifs: Vec<Motif>,
    pub discords: Vec<Discord>,
    pub stats: WindowStats,
}

/// Self-join, top-`k` motifs and discords, and tumbling window statistics of width `m`.
pub fn mine(
    backend: &dyn Backend,
    series: &Series,
    m: usize,
    k: usize,
) -> Result<Mined, MineError> {
    let profile = backend.self_join(&series.values, m)?;
    let stats = backend
        .window_stats(&[&series.values], WindowSpec { window: m, step: m })?
        .remove(0);
    Ok(Mined {
        motifs: profile.motifs(k),
        discords: profile.discords(k),
        profile,
        stats,
    })
}

/// Identity of a run, repeated on each of its rows.
pub struct Run {
    pub id: String,
    pub mined_at_ms: i64,
    pub source: String,
    pub node: Option<String>,
    pub sensor: Option<String>,
    pub window: usize,
    pub backend: String,
}

impl Run {
    pub fn new(source: &Source, window: usize, backend: String) -> Run {
        let now = chrono::Utc::now();
        let (node, sensor) = match source {
            Source::Store { node, sensor } => (Some(node.clone()), Some(sensor.clone())),
            Source::File { .. } => (None, None),
        };
        Run {
            id: now.format("%Y%m%dT%H%M%S%.3fZ").to_string(),
            mined_at_ms: now.timestamp_millis(),
            source: source.label(),
            node,
            sensor,
            window,
            backend,
        }
    }

    /// The shared columns for `rows` rows.
    fn columns(&self, rows: usize) -> Vec<ArrayRef> {
        let text = |v: &str| Arc::new(StringArray::from(vec![v; rows])) as ArrayRef;
        let opt =
            |v: &Option<String>| Arc::new(StringArray::from(vec![v.as_deref(); rows])) as ArrayRef;
        vec![
            text(&self.id),
            Arc::new(
                TimestampMillisecondArray::from(vec![self.mined_at_ms; rows]).with_timezone("UTC"),
            ),
            text(&self.source),
            opt(&self.node),
            opt(&self.sensor),
            Arc::new(UInt32Array::from(vec![self.window as u32; rows])),
            text(&self.backend),
        ]
    }
}

fn time_at(series: &Series, i: usize) -> Option<i64> {
    series
        .times
        .as_ref()
        .and_then(|t| (!t.is_null(i)).then(|| t.value(i)))
}

fn times(series: &Series, idx: impl Iterator<Item = usize>) -> ArrayRef {
    Arc::new(
        TimestampMillisecondArray::from(idx.map(|i| time_at(series, i)).collect::<Vec<_>>())
            .with_timezone("UTC"),
    )
}

/// The three result tables of a run, as batches.
pub fn result_batches(
    run: &Run,
    series: &Series,
    mined: &Mined,
) -> [(&'static str, RecordBatch); 3] {
    use samos_schemas::tables::{discords_schema, motifs_schema, window_stats_schema};
    let batch = |schema: SchemaRef, rows: usize, more: Vec<ArrayRef>| {
        let mut columns = run.columns(rows);
        columns.extend(more);
        RecordBatch::try_new(schema, columns).expect("columns follow the schema")
    };
    let mo = &mined.motifs;
    let motifs = batch(
        motifs_schema(),
        mo.len(),
        vec![
            Arc::new(UInt32Array::from_iter_values(1..=mo.len() as u32)),
            Arc::new(UInt64Array::from_iter_values(
                mo.iter().map(|m| m.first as u64),
            )),
            times(series, mo.iter().map(|m| m.first)),
            Arc::new(UInt64Array::from_iter_values(
                mo.iter().map(|m| m.second as u64),
            )),
            times(series, mo.iter().map(|m| m.second)),
            Arc::new(Float64Array::from_iter_values(
                mo.iter().map(|m| m.distance),
            )),
        ],
    );
    let d = &mined.discords;
    let discords = batch(
        discords_schema(),
        d.len(),
        vec![
            Arc::new(UInt32Array::from_iter_values(1..=d.len() as u32)),
            Arc::new(UInt64Array::from_iter_values(
                d.iter().map(|x| x.start as u64),
            )),
            times(series, d.iter().map(|x| x.start)),
            Arc::new(Float64Array::from_iter_values(d.iter().map(|x| x.distance))),
        ],
    );
    let s = &mined.stats;
    let n = s.mean.len();
    let f = |v: &Vec<f64>| -> ArrayRef {
        Arc::new(
            v.iter()
                .map(|x| (!x.is_nan()).then_some(*x))
                .collect::<Float64Array>(),
        )
    };
    let stats = batch(
        window_stats_schema(),
        n,
        vec![
            Arc::new(UInt64Array::from_iter_values(
                (0..n).map(|w| (w * run.window) as u64),
            )),
            times(series, (0..n).map(|w| w * run.window)),
            f(&s.min),
            f(&s.max),
            f(&s.mean),
            f(&s.std),
            f(&s.slope),
        ],
    );
    [
        ("motifs", motifs),
        ("discords", discords),
        ("window_stats", stats),
    ]
}

/// Writes a run's tables under `data_dir/mining/`, each file published whole the way the
/// readings store publishes its files (temporary name, fsync, rename, directory fsync).
pub fn store(
    data_dir: &Path,
    run: &Run,
    tables: &[(&'static str, RecordBatch)],
) -> Result<(), MineError> {
    use samos_store::{layout, parquet};
    for (name, batch) in tables {
        let dir = data_dir.join(layout::MINING_DIR).join(name);
        let err = |path: &Path, e: &dyn std::fmt::Display| MineError::Write {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(&dir).map_err(|e| err(&dir, &e))?;
        let tmp = dir.join(layout::mining_run_temporary_name(&run.id));
        let path = dir.join(layout::mining_run_name(&run.id));
        let mut w = parquet::writer(&tmp, batch.schema()).map_err(|e| err(&tmp, &e))?;
        w.write(batch).map_err(|e| err(&tmp, &e))?;
        parquet::publish(w, &tmp, &path).map_err(|e| err(&path, &e))?;
    }
    Ok(())
}

/// The SVG plot rasterized at twice its size, labels in the system's sans-serif font
/// (DejaVu Sans on Debian).
pub fn plot_png(svg: &str) -> Result<Vec<u8>, MineError> {
    use resvg::{tiny_skia, usvg};
    let mut options = usvg::Options::default();
    let fonts = options.fontdb_mut();
    fonts.load_system_fonts();
    let family = ["DejaVu Sans", "Liberation Sans", "Noto Sans", "Arial"]
        .into_iter()
        .find(|want| {
            fonts
                .faces()
                .any(|f| f.families.iter().any(|(name, _)| name == want))
        });
    if let Some(family) = family {
        fonts.set_sans_serif_family(family);
    }
    let tree = usvg::Tree::from_data(svg.as_bytes(), &options)
        .map_err(|e| MineError::Plot(e.to_string()))?;
    let size = tree.size().to_int_size();
    let mut pixmap = tiny_skia::Pixmap::new(size.width() * 2, size.height() * 2)
        .ok_or_else(|| MineError::Plot("empty image".into()))?;
    pixmap.fill(tiny_skia::Color::WHITE);
    resvg::render(
        &tree,
        tiny_skia::Transform::from_scale(2.0, 2.0),
        &mut pixmap.as_mut(),
    );
    pixmap
        .encode_png()
        .map_err(|e| MineError::Plot(e.to_string()))
}

/// An SVG of the series with the motifs (one colour per rank) and discords (red) shaded.
pub fn plot_svg(series: &Series, mined: &Mined, title: &str) -> String {
    const W: f64 = 1200.0;
    const H: f64 = 360.0;
    const PAD: f64 = 40.0;
    let v: Vec<f64> = series
        .values
        .iter()
        .map(|x| x.unwrap_or(f64::NAN))
        .collect();
    let finite = v.iter().filter(|x| x.is_finite());
    let lo = finite.clone().fold(f64::INFINITY, |a, b| a.min(*b));
    let hi = finite.fold(f64::NEG_INFINITY, |a, b| a.max(*b));
    let span = if hi > lo { hi - lo } else { 1.0 };
    let n = v.len().max(2);
    let x = |i: usize| PAD + (W - 2.0 * PAD) * i as f64 / (n - 1) as f64;
    let y = |val: f64| H - PAD - (H - 2.0 * PAD) * (val - lo) / span;
    let m = mined.profile.window;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{PAD}\" y=\"20\">{}</text>\n",
        xml_escape(title)
    );
    let shade = |svg: &mut String, start: usize, colour: &str, label: &str| {
        svg.push_str(&format!(
            "<rect x=\"{:.1}\" y=\"{PAD}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{colour}\" fill-opacity=\"0.3\"><title>{}</title></rect>\n",
            x(start),
            (x(start + m - 1) - x(start)).max(1.0),
            H - 2.0 * PAD,
            xml_escape(label)
        ));
    };
    const COLOURS: [&str; 5] = ["#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf"];
    for (r, mo) in mined.motifs.iter().enumerate() {
        let c = COLOURS[r % COLOURS.len()];
        let label = format!("motif {} (distance {:.3})", r + 1, mo.distance);
        shade(&mut svg, mo.first, c, &label);
        shade(&mut svg, mo.second, c, &label);
    }
    for (r, d) in mined.discords.iter().enumerate() {
        shade(
            &mut svg,
            d.start,
            "#d62728",
            &format!("discord {} (distance {:.3})", r + 1, d.distance),
        );
    }
    // At most two points (min and max) per horizontal pixel keep the file small.
    let buckets = (W - 2.0 * PAD) as usize;
    let per = n.div_ceil(buckets).max(1);
    let mut points = String::new();
    for chunk_start in (0..v.len()).step_by(per) {
        let chunk = &v[chunk_start..(chunk_start + per).min(v.len())];
        let (mut imin, mut imax) = (None::<usize>, None::<usize>);
        for (k, val) in chunk.iter().enumerate() {
            if !val.is_finite() {
                continue;
            }
            if imin.is_none_or(|i| *val < chunk[i]) {
                imin = Some(k);
            }
            if imax.is_none_or(|i| *val > chunk[i]) {
                imax = Some(k);
            }
        }
        let mut pts: Vec<usize> = [imin, imax].into_iter().flatten().collect();
        pts.sort_unstable();
        pts.dedup();
        for k in pts {
            points.push_str(&format!("{:.1},{:.1} ", x(chunk_start + k), y(chunk[k])));
        }
    }
    svg.push_str(&format!(
        "<polyline fill=\"none\" stroke=\"black\" stroke-width=\"1\" points=\"{points}\"/>\n\
         <text x=\"{PAD}\" y=\"{:.0}\">{lo:.2}</text><text x=\"{PAD}\" y=\"{:.0}\">{hi:.2}</text>\n</svg>\n",
        H - 8.0,
        PAD - 4.0
    ));
    svg
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
