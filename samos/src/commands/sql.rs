//! `samos sql`: one statement over a data directory in any output format, or an interactive shell
//! with history (read-only, works while the server runs).

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Parser;

#[derive(Parser)]
pub struct SqlArgs {
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
    /// Run on the Ballista scheduler at this address (`df://host:port`, see `samos cluster`)
    /// over the data directory's object-store dataset, instead of in this process. Sees what
    /// the instances have committed to the object store (not their WAL tails).
    #[arg(long)]
    cluster: Option<String>,
}

pub fn run(args: SqlArgs) -> Result<()> {
    use samos_analytics::output::Format;
    use samos_analytics::{Access, History};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let history = match &args.cluster {
        Some(url) => {
            let ctx = rt
                .block_on(samos_cluster::connect(url, &args.data_dir, None))
                .with_context(|| format!("cannot reach the cluster at {url}"))?;
            History::from_context(ctx, Access::Session)
        }
        None => rt.block_on(History::open(&args.data_dir, Access::Session))?,
    };
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
    arrow::datatypes::SchemaRef,
    Vec<arrow::record_batch::RecordBatch>,
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
                        eprintln!("error: no such table");
                    }
                    Ok(b) => println!("{}", arrow::util::pretty::pretty_format_batches(&b)?),
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
                    let rows: usize = batches
                        .iter()
                        .map(arrow::array::RecordBatch::num_rows)
                        .sum();
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
