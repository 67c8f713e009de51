//! Criterion micro-benchmarks of the durable path, in rows per second: building the Arrow
//! batch, its WAL encoding, a WAL append + fsync, and a Parquet write.
//!
//! `cargo bench --bench micro`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use samos_engine::ingest::{Reading, build_batch, encode_record, wal::Wal};
use samos_engine::protocol::validate::validate;
use samos_engine::simulate::node_document;
use samos_schemas::payload::{Severity, Value};

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
        b.iter(|| build_batch(black_box(&rs), 1))
    });
    g.bench_function("wal_encode_10k", |b| {
        b.iter(|| encode_record(&[], Some(black_box(&batch))))
    });
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), 1 << 30, |_| {}).unwrap();
    let payload = encode_record(&[], Some(&batch));
    g.bench_function("wal_append_fsync_10k", |b| {
        b.iter(|| {
            wal.append(black_box(&payload)).unwrap();
            wal.commit().unwrap();
        })
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
        })
    });
    g.finish();
}

criterion_group!(benches, durable_path);
criterion_main!(benches);
