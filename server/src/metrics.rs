//! Counters, gauges and histograms, exported in the Prometheus text format on `/metrics` and
//! as Mosquitto-style `$SYS/broker/...` topics.
//!
//! Updates are relaxed atomic adds, refusals included (one counter per `Refusal`); nothing
//! here takes a lock.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::refusal::Refusal;

/// Names of MQTT control packet types, indexed by type number.
pub const PACKET_NAMES: [&str; 16] = [
    "reserved",
    "connect",
    "connack",
    "publish",
    "puback",
    "pubrec",
    "pubrel",
    "pubcomp",
    "subscribe",
    "suback",
    "unsubscribe",
    "unsuback",
    "pingreq",
    "pingresp",
    "disconnect",
    "auth",
];

/// Upper bounds (seconds) of the latency histogram buckets.
const LATENCY_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];

/// A fixed-bucket histogram of durations.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add(d.as_nanos() as u64, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_nanos.load(Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// Every metric the engine keeps.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    /// This instance's id and version, once the server knows them (`samos_instance_info`).
    instance: std::sync::OnceLock<String>,
    pub connections_total: AtomicU64,
    pub connections_current: AtomicU64,
    /// Most connections at once since `memory.rs` last looked (it resets this).
    pub connections_peak: AtomicU64,
    pub packets_received: [AtomicU64; 16],
    pub packets_sent: [AtomicU64; 16],
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub messages_received: [AtomicU64; 3],
    pub messages_sent: [AtomicU64; 3],
    /// Messages not delivered to a subscriber because its queue was full or it expired.
    pub messages_dropped: AtomicU64,
    pub messages_expired: AtomicU64,
    pub retained_messages: AtomicU64,
    pub subscriptions: AtomicU64,
    pub sessions: AtomicU64,
    /// Messages waiting in subscriber queues (online and offline).
    pub queued_messages: AtomicU64,
    /// Depth of the router's inbound queue.
    pub router_queue_depth: AtomicU64,
    /// From a PUBLISH's arrival to its acknowledgement being written.
    pub publish_ack_latency: Histogram,
    /// Readings made durable in the WAL.
    pub readings_committed: AtomicU64,
    pub wal_batches: AtomicU64,
    /// WAL batches a connection committed on its own thread (a lone reading, the batcher idle).
    pub wal_inline_commits: AtomicU64,
    pub wal_bytes: AtomicU64,
    /// Append + fsync of one WAL batch.
    pub wal_commit_latency: Histogram,
    /// Times a connection waited because the ingest queue was full.
    pub ingest_backpressure: AtomicU64,
    pub parquet_files: AtomicU64,
    pub parquet_rows: AtomicU64,
    pub parquet_compactions: AtomicU64,
    pub parquet_partitions_expired: AtomicU64,
    /// Persistent sessions held in the WAL.
    pub durable_sessions: AtomicU64,
    /// Files committed to the object-store table, and what they held.
    pub lake_files: AtomicU64,
    pub lake_rows: AtomicU64,
    pub lake_bytes: AtomicU64,
    /// Failed uploads or commits (each retried with backoff).
    pub lake_errors: AtomicU64,
    pub lake_compactions: AtomicU64,
    pub lake_files_expired: AtomicU64,
    pub lake_files_vacuumed: AtomicU64,
    /// WAL batches committed but not yet in the object-store table.
    pub lake_lag: AtomicU64,
    /// Finished Parquet files waiting for upload.
    pub lake_pending_files: AtomicU64,
    /// WAL batches committed but not yet in PostgreSQL.
    pub postgres_lag: AtomicU64,
    pub postgres_rows: AtomicU64,
    /// Alerts raised by the severity cross-check (not refusals: the readings were stored).
    pub alerts_raised: AtomicU64,
    /// Discord episodes opened by the streamed matrix profiles.
    pub discords_raised: AtomicU64,
    /// Writers waiting for disk space.
    pub disk: crate::disk_space::DiskSpace,
    /// Slow password hashes computed (a verified password is cached; concurrent checks of
    /// one login share a hash).
    pub password_hashes: AtomicU64,
    /// Alert rule transitions: firing, acknowledged, resolved.
    alert_transitions: [AtomicU64; 3],
    /// Alert notifications: delivered, retried (attempts that failed for now), failed (for good).
    alert_notifications: [AtomicU64; 3],
    /// Indexed by `Refusal as usize`.
    refusals: Box<[AtomicU64]>,
    /// One entry per `[[bridge]]`.
    bridges: std::sync::Mutex<Vec<std::sync::Arc<BridgeMetrics>>>,
}

/// What one bridge to an upstream broker reports.
#[derive(Debug, Default)]
pub struct BridgeMetrics {
    pub name: String,
    /// 1 while connected upstream.
    pub connected: AtomicU64,
    /// Messages the upstream broker acknowledged.
    pub forwarded: AtomicU64,
    /// Committed WAL batches not yet wholly acknowledged upstream.
    pub lag_batches: AtomicU64,
    /// Messages sent and not yet acknowledged.
    pub in_flight: AtomicU64,
    /// Connections that failed or broke (each retried with backoff).
    pub connection_errors: AtomicU64,
}

const ALERT_CHANGES: [&str; 3] = ["firing", "acknowledged", "resolved"];
const NOTIFICATION_RESULTS: [&str; 3] = ["delivered", "retried", "failed"];

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: Instant::now(),
            instance: std::sync::OnceLock::new(),
            connections_total: AtomicU64::new(0),
            connections_current: AtomicU64::new(0),
            connections_peak: AtomicU64::new(0),
            packets_received: Default::default(),
            packets_sent: Default::default(),
            bytes_received: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            messages_received: Default::default(),
            messages_sent: Default::default(),
            messages_dropped: AtomicU64::new(0),
            messages_expired: AtomicU64::new(0),
            retained_messages: AtomicU64::new(0),
            subscriptions: AtomicU64::new(0),
            sessions: AtomicU64::new(0),
            queued_messages: AtomicU64::new(0),
            router_queue_depth: AtomicU64::new(0),
            publish_ack_latency: Histogram::default(),
            readings_committed: AtomicU64::new(0),
            wal_batches: AtomicU64::new(0),
            wal_inline_commits: AtomicU64::new(0),
            wal_bytes: AtomicU64::new(0),
            wal_commit_latency: Histogram::default(),
            ingest_backpressure: AtomicU64::new(0),
            parquet_files: AtomicU64::new(0),
            parquet_rows: AtomicU64::new(0),
            parquet_compactions: AtomicU64::new(0),
            durable_sessions: AtomicU64::new(0),
            parquet_partitions_expired: AtomicU64::new(0),
            lake_files: AtomicU64::new(0),
            lake_rows: AtomicU64::new(0),
            lake_bytes: AtomicU64::new(0),
            lake_errors: AtomicU64::new(0),
            lake_compactions: AtomicU64::new(0),
            lake_files_expired: AtomicU64::new(0),
            lake_files_vacuumed: AtomicU64::new(0),
            lake_lag: AtomicU64::new(0),
            lake_pending_files: AtomicU64::new(0),
            postgres_lag: AtomicU64::new(0),
            postgres_rows: AtomicU64::new(0),
            alerts_raised: AtomicU64::new(0),
            discords_raised: AtomicU64::new(0),
            disk: Default::default(),
            password_hashes: AtomicU64::new(0),
            alert_transitions: Default::default(),
            alert_notifications: Default::default(),
            refusals: Refusal::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            bridges: Default::default(),
        }
    }
}

impl Metrics {
    /// Counts one refusal; every refusal is also logged where it happens.
    pub fn refuse(&self, reason: Refusal) {
        self.refuse_n(reason, 1);
    }

    /// Counts an alert's change (`firing`, `acknowledged`, `resolved`).
    pub fn alert_transition(&self, change: &str) {
        if let Some(i) = ALERT_CHANGES.iter().position(|c| *c == change) {
            self.alert_transitions[i].fetch_add(1, Relaxed);
        }
    }

    /// Counts a notification attempt's outcome (`delivered`, `retried`, `failed`).
    pub fn alert_notification(&self, result: &str) {
        if let Some(i) = NOTIFICATION_RESULTS.iter().position(|c| *c == result) {
            self.alert_notifications[i].fetch_add(1, Relaxed);
        }
    }

    /// Counts `n` refusals of one kind.
    pub fn refuse_n(&self, reason: Refusal, n: u64) {
        self.refusals[reason as usize].fetch_add(n, Relaxed);
    }

    /// The refusals counted so far, by label (reasons never seen are left out).
    pub fn refusals(&self) -> BTreeMap<&'static str, u64> {
        Refusal::ALL
            .iter()
            .map(|r| (r.label(), self.refusals[*r as usize].load(Relaxed)))
            .filter(|&(_, n)| n > 0)
            .collect()
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The metrics of the bridge `name` (registered on first use).
    pub fn bridge(&self, name: &str) -> std::sync::Arc<BridgeMetrics> {
        let mut bridges = self.bridges.lock().expect("bridge metrics");
        if let Some(b) = bridges.iter().find(|b| b.name == name) {
            return b.clone();
        }
        let b = std::sync::Arc::new(BridgeMetrics {
            name: name.to_owned(),
            ..BridgeMetrics::default()
        });
        bridges.push(b.clone());
        b
    }

    /// Every bridge's metrics, in configuration order.
    pub fn bridges(&self) -> Vec<std::sync::Arc<BridgeMetrics>> {
        self.bridges.lock().expect("bridge metrics").clone()
    }

    /// Names this instance in the metrics (`samos_instance_info{instance_id, version}`); the
    /// first call wins.
    pub fn set_instance(&self, instance_id: &str) {
        let _ = self.instance.set(instance_id.to_owned());
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut o = String::with_capacity(8192);
        if let Some(id) = self.instance.get() {
            let _ = writeln!(
                o,
                "# HELP samos_instance_info This instance's id and version.\n\
                 # TYPE samos_instance_info gauge\n\
                 samos_instance_info{{instance_id=\"{id}\",version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            );
        }
        let mut single = |name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        };
        single(
            "samos_uptime_seconds",
            "gauge",
            "Seconds since start.",
            self.uptime().as_secs(),
        );
        single(
            "samos_connections_total",
            "counter",
            "Accepted MQTT sessions.",
            self.connections_total.load(Relaxed),
        );
        single(
            "samos_connections",
            "gauge",
            "Currently connected MQTT clients.",
            self.connections_current.load(Relaxed),
        );
        single(
            "samos_bytes_received_total",
            "counter",
            "Bytes read from clients.",
            self.bytes_received.load(Relaxed),
        );
        single(
            "samos_bytes_sent_total",
            "counter",
            "Bytes written to clients.",
            self.bytes_sent.load(Relaxed),
        );
        single(
            "samos_messages_dropped_total",
            "counter",
            "Messages not delivered because a subscriber queue was full.",
            self.messages_dropped.load(Relaxed),
        );
        single(
            "samos_messages_expired_total",
            "counter",
            "Messages whose expiry interval ran out before delivery.",
            self.messages_expired.load(Relaxed),
        );
        single(
            "samos_retained_messages",
            "gauge",
            "Retained messages stored.",
            self.retained_messages.load(Relaxed),
        );
        single(
            "samos_subscriptions",
            "gauge",
            "Active subscriptions.",
            self.subscriptions.load(Relaxed),
        );
        single(
            "samos_sessions",
            "gauge",
            "Sessions, connected or kept for a returning client.",
            self.sessions.load(Relaxed),
        );
        single(
            "samos_queued_messages",
            "gauge",
            "Messages waiting in subscriber queues.",
            self.queued_messages.load(Relaxed),
        );
        single(
            "samos_readings_committed_total",
            "counter",
            "Readings made durable in the WAL (acknowledged after this).",
            self.readings_committed.load(Relaxed),
        );
        single(
            "samos_wal_batches_total",
            "counter",
            "WAL batches committed (one fsync each).",
            self.wal_batches.load(Relaxed),
        );
        single(
            "samos_wal_inline_commits_total",
            "counter",
            "WAL batches committed on the publishing connection's own thread (a lone reading while the batcher was idle; included in samos_wal_batches_total).",
            self.wal_inline_commits.load(Relaxed),
        );
        single(
            "samos_wal_bytes_total",
            "counter",
            "Bytes appended to the WAL.",
            self.wal_bytes.load(Relaxed),
        );
        single(
            "samos_alerts_total",
            "counter",
            "Alerts raised: a node's readings more severe than the mode it reports.",
            self.alerts_raised.load(Relaxed),
        );
        single(
            "samos_discords_total",
            "counter",
            "Discords raised by the streamed matrix profiles: a window far from every earlier one.",
            self.discords_raised.load(Relaxed),
        );
        single(
            "samos_password_hashes_total",
            "counter",
            "Slow password hashes computed (the rest answered by the verified-password cache).",
            self.password_hashes.load(Relaxed),
        );
        single(
            "samos_ingest_backpressure_total",
            "counter",
            "Times a connection paused because the ingest queue was full.",
            self.ingest_backpressure.load(Relaxed),
        );
        single(
            "samos_parquet_files_total",
            "counter",
            "Parquet files written.",
            self.parquet_files.load(Relaxed),
        );
        single(
            "samos_parquet_rows_total",
            "counter",
            "Rows written to Parquet.",
            self.parquet_rows.load(Relaxed),
        );
        single(
            "samos_parquet_compactions_total",
            "counter",
            "Merges of small Parquet files into one.",
            self.parquet_compactions.load(Relaxed),
        );
        single(
            "samos_parquet_partitions_expired_total",
            "counter",
            "Date partitions deleted past storage.retention_days.",
            self.parquet_partitions_expired.load(Relaxed),
        );
        single(
            "samos_durable_sessions",
            "gauge",
            "Persistent sessions (subscriptions, QoS 2 packet ids) kept in the WAL.",
            self.durable_sessions.load(Relaxed),
        );
        for (name, kind, help, value) in [
            (
                "samos_lake_files_total",
                "counter",
                "Parquet files committed to the object-store Delta table.",
                &self.lake_files,
            ),
            (
                "samos_lake_rows_total",
                "counter",
                "Rows committed to the object-store Delta table.",
                &self.lake_rows,
            ),
            (
                "samos_lake_bytes_total",
                "counter",
                "Bytes uploaded to the object store (data files).",
                &self.lake_bytes,
            ),
            (
                "samos_lake_errors_total",
                "counter",
                "Failed uploads or commits to the object store (each retried with backoff).",
                &self.lake_errors,
            ),
            (
                "samos_lake_compactions_total",
                "counter",
                "Delta transactions that merged small files into one.",
                &self.lake_compactions,
            ),
            (
                "samos_lake_files_expired_total",
                "counter",
                "Files removed from the table past storage.retention_days.",
                &self.lake_files_expired,
            ),
            (
                "samos_lake_files_vacuumed_total",
                "counter",
                "Unreferenced objects deleted from the store after the vacuum grace period.",
                &self.lake_files_vacuumed,
            ),
            (
                "samos_lake_lag_batches",
                "gauge",
                "WAL batches committed but not yet in the object-store table.",
                &self.lake_lag,
            ),
            (
                "samos_lake_pending_files",
                "gauge",
                "Finished Parquet files waiting for upload to the object store.",
                &self.lake_pending_files,
            ),
        ] {
            single(name, kind, help, value.load(Relaxed));
        }
        single(
            "samos_postgres_lag_batches",
            "gauge",
            "WAL batches committed but not yet loaded into PostgreSQL.",
            self.postgres_lag.load(Relaxed),
        );
        single(
            "samos_postgres_rows_total",
            "counter",
            "Rows loaded into PostgreSQL.",
            self.postgres_rows.load(Relaxed),
        );
        single(
            "samos_router_queue_depth",
            "gauge",
            "Messages waiting for the router.",
            self.router_queue_depth.load(Relaxed),
        );
        for (name, help, arr) in [
            (
                "samos_packets_received_total",
                "MQTT packets received, by type.",
                &self.packets_received,
            ),
            (
                "samos_packets_sent_total",
                "MQTT packets sent, by type.",
                &self.packets_sent,
            ),
        ] {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
            for (i, c) in arr.iter().enumerate().skip(1) {
                let _ = writeln!(
                    o,
                    "{name}{{type=\"{}\"}} {}",
                    PACKET_NAMES[i],
                    c.load(Relaxed)
                );
            }
        }
        for (name, help, arr) in [
            (
                "samos_messages_received_total",
                "PUBLISH messages received, by QoS.",
                &self.messages_received,
            ),
            (
                "samos_messages_sent_total",
                "PUBLISH messages sent, by QoS.",
                &self.messages_sent,
            ),
        ] {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
            for (qos, c) in arr.iter().enumerate() {
                let _ = writeln!(o, "{name}{{qos=\"{qos}\"}} {}", c.load(Relaxed));
            }
        }
        for (name, help, label, names, counters) in [
            (
                "samos_alert_transitions_total",
                "Alert rule transitions, by change.",
                "change",
                &ALERT_CHANGES,
                &self.alert_transitions,
            ),
            (
                "samos_alert_notifications_total",
                "Alert notification attempts, by result (retried: failed for now).",
                "result",
                &NOTIFICATION_RESULTS,
                &self.alert_notifications,
            ),
        ] {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
            for (value, c) in names.iter().zip(counters.iter()) {
                let _ = writeln!(o, "{name}{{{label}=\"{value}\"}} {}", c.load(Relaxed));
            }
        }
        let bridges = self.bridges();
        if !bridges.is_empty() {
            type Field = fn(&BridgeMetrics) -> &AtomicU64;
            let families: [(&str, &str, &str, Field); 5] = [
                (
                    "samos_bridge_connected",
                    "gauge",
                    "1 while the bridge is connected to its upstream broker.",
                    |b| &b.connected,
                ),
                (
                    "samos_bridge_messages_total",
                    "counter",
                    "Messages the upstream broker acknowledged (QoS 1).",
                    |b| &b.forwarded,
                ),
                (
                    "samos_bridge_lag_batches",
                    "gauge",
                    "Committed WAL batches not yet wholly acknowledged upstream.",
                    |b| &b.lag_batches,
                ),
                (
                    "samos_bridge_in_flight",
                    "gauge",
                    "Messages sent upstream and not yet acknowledged.",
                    |b| &b.in_flight,
                ),
                (
                    "samos_bridge_connection_errors_total",
                    "counter",
                    "Upstream connections that failed or broke (each retried with backoff).",
                    |b| &b.connection_errors,
                ),
            ];
            for (name, kind, help, field) in families {
                let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
                for b in &bridges {
                    let _ = writeln!(
                        o,
                        "{name}{{bridge=\"{}\"}} {}",
                        b.name,
                        field(b).load(Relaxed)
                    );
                }
            }
        }
        let _ = writeln!(
            o,
            "# HELP samos_refusals_total Refused packets, connections and messages, by reason.\n# TYPE samos_refusals_total counter"
        );
        for (reason, n) in self.refusals() {
            let _ = writeln!(o, "samos_refusals_total{{reason=\"{reason}\"}} {n}");
        }
        self.publish_ack_latency.render(
            &mut o,
            "samos_publish_ack_latency_seconds",
            "Time from a QoS 1/2 PUBLISH's arrival to its acknowledgement being queued.",
        );
        self.wal_commit_latency.render(
            &mut o,
            "samos_wal_commit_seconds",
            "Append and fsync of one WAL batch.",
        );
        self.disk.render(&mut o);
        o
    }
}

/// Serves `GET /metrics` until the listener fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: std::sync::Arc<Metrics>,
) -> std::io::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let m = metrics.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    m.render(),
                )
            }
        }),
    );
    axum::serve(listener, app).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.refuse(Refusal::MalformedPacket);
        m.packets_received[3].fetch_add(2, Relaxed);
        m.publish_ack_latency.observe(Duration::from_micros(300));
        let text = m.render();
        assert!(text.contains("samos_refusals_total{reason=\"malformed_packet\"} 1"));
        assert!(text.contains("samos_packets_received_total{type=\"publish\"} 2"));
        assert!(text.contains("samos_publish_ack_latency_seconds_bucket{le=\"0.0005\"} 1"));
        assert!(text.contains("samos_publish_ack_latency_seconds_count 1"));
        assert!(
            !text.contains("samos_bridge_"),
            "no bridge, no bridge metrics"
        );
        m.bridge("cloud").lag_batches.store(4, Relaxed);
        m.bridge("cloud").forwarded.fetch_add(2, Relaxed);
        let text = m.render();
        assert!(text.contains("samos_bridge_lag_batches{bridge=\"cloud\"} 4"));
        assert!(text.contains("samos_bridge_messages_total{bridge=\"cloud\"} 2"));
    }
}
