//! Criterion micro-benchmarks of the durable path, in rows per second: building the Arrow
//! batch, its WAL encoding, a WAL append + fsync, a Parquet write, and a PostgreSQL load
//! (binary COPY + idempotent insert + checkpoint, one transaction) into a throwaway cluster
//! started from the system binaries (skipped, with a message, where there are none).
//!
//! `cargo bench --bench micro`
// A benchmark harness: a panic is its failure report.
#![allow(clippy::unwrap_used)]

#[path = "../../samos/tests/e2e/common/pg.rs"]
mod pg;

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use samos_schemas::fleet::node_document;
use samos_schemas::node_config::validate;
use samos_schemas::payload::{Severity, Value};
use samos_server::ingest::{Reading, build_batch, encode_record, postgres, wal::Wal};

fn readings(n: usize) -> Vec<Reading> {
    let configs: Vec<_> = (0..100)
        .map(|i| Arc::new(validate(&node_document("bench", "SN", i)).expect("valid document")))
        .collect();
    (0..n)
        .map(|i| Reading {
            ingest_time_ms: 1_795_000_000_000 + i as i64,
            config: configs[i % configs.len()].clone(),
            sensor: i % 2,
            value: Value::Float(20.0 + (i % 100) as f64 / 10.0),
            severity: Severity::Normal,
            qos: 2,
            client_id: Arc::from("bench"),
            ack: None,
            qos2_pkid: None,
        })
        .collect()
}

fn durable_path(c: &mut Criterion) {
    const N: usize = 10_000;
    let rs = readings(N);
    let batch = build_batch(&rs, 1);
    let mut g = c.benchmark_group("durable_path");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("build_batch_10k", |b| {
        b.iter(|| build_batch(black_box(&rs), 1));
    });
    g.bench_function("wal_encode_10k", |b| {
        b.iter(|| encode_record(&[], Some(black_box(&batch))));
    });
    let one = &rs[..1];
    g.throughput(Throughput::Elements(1));
    g.bench_function("build_1", |b| b.iter(|| build_batch(black_box(one), 1)));
    g.bench_function("build_and_encode_1", |b| {
        b.iter(|| encode_record(&[], Some(&build_batch(black_box(one), 1))));
    });
    g.throughput(Throughput::Elements(N as u64));
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), 1 << 30, |_| {}).unwrap();
    let payload = encode_record(&[], Some(&batch));
    g.bench_function("wal_append_fsync_10k", |b| {
        b.iter(|| {
            wal.append(black_box(&payload)).unwrap();
            wal.commit().unwrap();
        });
    });
    g.bench_function("parquet_write_10k", |b| {
        b.iter(|| {
            let file = tempfile::tempfile().unwrap();
            let props = parquet::file::properties::WriterProperties::builder()
                .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
                .build();
            let mut w =
                parquet::arrow::ArrowWriter::try_new(file, batch.schema(), Some(props)).unwrap();
            w.write(&batch).unwrap();
            w.close().unwrap();
        });
    });
    g.finish();
}

fn postgres_copy(c: &mut Criterion) {
    const N: usize = 10_000;
    if !std::path::Path::new("/usr/lib/postgresql").exists() {
        eprintln!("postgres_copy skipped: no PostgreSQL server binaries (apt install postgresql)");
        return;
    }
    let db = pg::TempPostgres::start_durable();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (mut client, connection) = rt
        .block_on(tokio_postgres::connect(&db.url(), tokio_postgres::NoTls))
        .unwrap();
    rt.spawn(connection);
    let loader = postgres::Loader {
        instance: "bench".into(),
        store_id: "bench-store".into(),
    };
    rt.block_on(postgres::prepare(&mut client, &loader))
        .unwrap();
    let rs = readings(N);
    let mut seq = 0;
    let mut g = c.benchmark_group("durable_path");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(20);
    g.bench_function("postgres_copy_10k", |b| {
        b.iter_batched(
            || {
                // Fresh keys every time: a replayed key would be skipped, not stored.
                seq += 1;
                (build_batch(&rs, seq), seq)
            },
            |(batch, seq)| {
                rt.block_on(postgres::load(&mut client, &loader, &[batch], seq))
                    .unwrap()
            },
            BatchSize::LargeInput,
        );
    });
    g.finish();
}

criterion_group!(benches, durable_path, postgres_copy);
criterion_main!(benches);
