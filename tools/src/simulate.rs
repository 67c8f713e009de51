//! `samos simulate`: virtual sensor nodes speaking the paper's protocol against Samos or any
//! MQTT broker. Each node joins with a configuration document, waits for the server's
//! `SET_CN_FUNCTIONAL_MODE`, then samples every 60 / 40 / 20 s by severity mode (divided by
//! `speed`), publishing temperature, humidity and flame readings that replay a real office
//! trace, and runs the paper's severity logic to report mode changes.
//!
//! A planted ramp (`ramp_node`) heats one node's room by 1 °C a sample while the node keeps
//! reporting normalMode — a node with broken preprocessing — which the server's own
//! cross-check must catch.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use mqttbytes::QoS;
use samos_schemas::fleet::{node_document, node_id, node_location};
use samos_schemas::payload::{self, Control, Severity, parse_control};
use samos_schemas::topic;

use crate::client::{Client, ClientError, ConnectOptions};
use samos_schemas::severity::{SensorKind, Window};

/// The office trace replayed by default (UCI occupancy detection, CC BY 4.0; see datasets/).
pub const DEFAULT_TRACE: &str = include_str!("../../datasets/uci-occupancy-detection/datatest.txt");

/// One row of a trace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TraceRow {
    pub temperature: f64,
    pub humidity: f64,
}

/// Reads the UCI occupancy CSV (a quoted row number, a date, then Temperature, Humidity, …).
pub fn parse_trace(text: &str) -> Result<Vec<TraceRow>, String> {
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() < 4 {
            continue;
        }
        let num = |s: &str| s.trim().trim_matches('"').parse::<f64>();
        match (num(f[2]), num(f[3])) {
            (Ok(temperature), Ok(humidity)) => rows.push(TraceRow {
                temperature,
                humidity,
            }),
            _ => return Err(format!("line {}: expected temperature and humidity", i + 1)),
        }
    }
    if rows.is_empty() {
        return Err("no rows".into());
    }
    Ok(rows)
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimulateSpec {
    pub connect: ConnectOptions,
    pub nodes: usize,
    pub network: String,
    pub server_id: String,
    pub qos: QoS,
    /// Time compression: 60 makes a 60 s sampling interval last 1 s.
    pub speed: f64,
    /// Samples per node; `None` runs until `duration` or forever.
    pub samples: Option<u64>,
    pub duration: Option<Duration>,
    pub trace: Vec<TraceRow>,
    /// Index of the node whose room heats up unreported.
    pub ramp_node: Option<usize>,
    /// How long a node waits for the server's answer to its join request.
    pub join_timeout: Duration,
    pub progress: bool,
}

/// Counts from a run.
#[derive(Debug, Default, serde::Serialize)]
pub struct SimulateReport {
    pub active: u64,
    pub blocked: u64,
    /// Nodes whose join got no answer (a plain broker): they publish anyway.
    pub unanswered: u64,
    pub readings: u64,
    pub mode_changes: u64,
    /// Configurations received over the air (`SET_CN_CONFIG_FILE`) and joined with.
    pub reconfigured: u64,
    pub alerts: u64,
    pub errors: u64,
}

#[derive(Default)]
struct Counters {
    active: AtomicU64,
    blocked: AtomicU64,
    unanswered: AtomicU64,
    readings: AtomicU64,
    mode_changes: AtomicU64,
    reconfigured: AtomicU64,
    alerts: AtomicU64,
    errors: AtomicU64,
    modes: [AtomicU64; 3],
}

impl Counters {
    fn report(&self) -> SimulateReport {
        SimulateReport {
            active: self.active.load(Relaxed),
            blocked: self.blocked.load(Relaxed),
            unanswered: self.unanswered.load(Relaxed),
            readings: self.readings.load(Relaxed),
            mode_changes: self.mode_changes.load(Relaxed),
            reconfigured: self.reconfigured.load(Relaxed),
            alerts: self.alerts.load(Relaxed),
            errors: self.errors.load(Relaxed),
        }
    }
}

/// Runs the simulation to its end (samples or duration) and reports.
pub async fn run(spec: SimulateSpec) -> Result<SimulateReport, ClientError> {
    let counters = Arc::new(Counters::default());
    let spec = Arc::new(spec);
    let started = Instant::now();

    // An observer counts the server's alerts (none arrive from a plain broker).
    let mut watcher =
        Client::connect(&spec.connect, &format!("sim-watch-{}", std::process::id())).await?;
    watcher
        .subscribe(&format!("{}/alerts/#", spec.network), QoS::AtLeastOnce)
        .await?;
    let watch_counters = counters.clone();
    let watch = tokio::spawn(async move {
        loop {
            match watcher.next_message(Duration::from_secs(30)).await {
                Ok(Some(_)) => {
                    watch_counters.alerts.fetch_add(1, Relaxed);
                }
                Ok(None) => {
                    let _ = watcher.ping().await;
                }
                Err(_) => break,
            }
        }
    });

    let progress = spec.progress.then(|| {
        let c = counters.clone();
        let nodes = spec.nodes;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                eprintln!(
                    "[{:>5.0}s] nodes {}/{} active ({} blocked, {} unanswered) · readings {} · modes normal/warning/danger {}/{}/{} · alerts {} · errors {}",
                    started.elapsed().as_secs_f64(),
                    c.active.load(Relaxed),
                    nodes,
                    c.blocked.load(Relaxed),
                    c.unanswered.load(Relaxed),
                    c.readings.load(Relaxed),
                    c.modes[0].load(Relaxed),
                    c.modes[1].load(Relaxed),
                    c.modes[2].load(Relaxed),
                    c.alerts.load(Relaxed),
                    c.errors.load(Relaxed),
                );
            }
        })
    });

    let mut tasks = Vec::new();
    for i in 0..spec.nodes {
        let spec = spec.clone();
        let counters = counters.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = node(i, &spec, &counters).await {
                counters.errors.fetch_add(1, Relaxed);
                tracing::warn!(node = %node_id(i), error = %e, "simulated node stopped");
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    // Let the last alerts arrive.
    tokio::time::sleep(Duration::from_millis(300)).await;
    watch.abort();
    if let Some(p) = progress {
        p.abort();
    }
    Ok(counters.report())
}

async fn node(i: usize, spec: &SimulateSpec, counters: &Counters) -> Result<(), ClientError> {
    let id = node_id(i);
    let location = node_location(i);
    let control = topic::control_topic(&spec.network, &id, &location);
    let mut client = Client::connect(&spec.connect, &id).await?;
    client.subscribe(&control, QoS::AtLeastOnce).await?;
    let document = node_document(&spec.network, &spec.server_id, i);
    client
        .publish(
            &control,
            payload::join_request(&document).as_bytes(),
            spec.qos,
        )
        .await?;

    let mut mode = Severity::Normal;
    let deadline = tokio::time::Instant::now() + spec.join_timeout;
    let mut answered = false;
    while let Some((t, payload)) = client
        .next_message(deadline.saturating_duration_since(tokio::time::Instant::now()))
        .await?
    {
        let text = String::from_utf8_lossy(&payload);
        if t != control || !text.starts_with("SET_CN_FUNCTIONAL_MODE") {
            continue;
        }
        if matches!(parse_control(&payload), Ok(Control::SetFunctionalMode)) {
            let fields: Vec<&str> = text.split(',').map(str::trim).collect();
            answered = true;
            if fields.get(1) == Some(&"blocked") {
                counters.blocked.fetch_add(1, Relaxed);
                tracing::warn!(node = %id, reply = %text, "simulated node blocked");
                return client.disconnect().await;
            }
            mode = fields
                .get(2)
                .and_then(|m| Severity::from_wire(m))
                .unwrap_or(Severity::Normal);
            break;
        }
    }
    if answered {
        counters.active.fetch_add(1, Relaxed);
    } else {
        counters.unanswered.fetch_add(1, Relaxed);
    }
    counters.modes[mode as usize].fetch_add(1, Relaxed);

    let topic_of = |sensor: &str| topic::data_topic(&spec.network, &id, &location, sensor);
    let (t_topic, h_topic, f_topic) = (
        topic_of("indoorTemperatureSensor"),
        topic_of("indoorHumiditySensor"),
        topic_of("flameDetectionSensor"),
    );
    let ramp = spec.ramp_node == Some(i);
    let offset = (i * 97) % spec.trace.len();
    let started = Instant::now();
    let mut window = Window::default();
    let mut minutes = 0.0;
    let mut k: u64 = 0;
    loop {
        if spec.samples.is_some_and(|n| k >= n)
            || spec.duration.is_some_and(|d| started.elapsed() >= d)
        {
            break;
        }
        let row = spec.trace[(offset + k as usize) % spec.trace.len()];
        let temperature = if ramp && k >= 2 {
            (row.temperature + (k - 1) as f64).min(69.0)
        } else {
            row.temperature
        };
        let flame = if temperature > 45.0 { 90 } else { 1000 };
        client
            .publish(
                &t_topic,
                format!("float,0-70,{temperature:.2}").as_bytes(),
                spec.qos,
            )
            .await?;
        client
            .publish(
                &h_topic,
                format!("float,0-100,{:.2}", row.humidity).as_bytes(),
                spec.qos,
            )
            .await?;
        client
            .publish(&f_topic, format!("int,0-1024,{flame}").as_bytes(), spec.qos)
            .await?;
        counters.readings.fetch_add(3, Relaxed);
        window.push(SensorKind::Temperature, minutes, temperature);
        window.push(SensorKind::Flame, minutes, f64::from(flame));
        // The paper's node-side logic; the planted-ramp node's is broken and never reports.
        let assessed = window.assess();
        if !ramp && assessed != mode {
            client
                .publish(
                    &control,
                    format!("PUB_CN_SEVERITY_MODE, {}", assessed.wire()).as_bytes(),
                    spec.qos,
                )
                .await?;
            counters.modes[mode as usize].fetch_sub(1, Relaxed);
            counters.modes[assessed as usize].fetch_add(1, Relaxed);
            counters.mode_changes.fetch_add(1, Relaxed);
            mode = assessed;
        }
        k += 1;
        let interval = mode.sampling_interval_secs() as f64;
        minutes += interval / 60.0;
        let pause = Duration::from_secs_f64(interval / spec.speed.max(1e-3));
        // Read server messages while waiting (answers to QoS exchanges are handled inside):
        // an over-the-air configuration is applied by joining again with it.
        let wake = tokio::time::Instant::now() + pause;
        while let Some((t, payload)) = client
            .next_message(wake.saturating_duration_since(tokio::time::Instant::now()))
            .await?
        {
            if t != control {
                continue;
            }
            if let Ok(Control::SetConfigFile { document }) = parse_control(&payload) {
                tracing::info!(node = %id, "applying a configuration sent over the air");
                client
                    .publish(
                        &control,
                        payload::join_request(document).as_bytes(),
                        spec.qos,
                    )
                    .await?;
                counters.reconfigured.fetch_add(1, Relaxed);
            }
        }
    }
    client.disconnect().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_trace_parses() {
        let rows = parse_trace(DEFAULT_TRACE).unwrap();
        assert_eq!(rows.len(), 2665);
        assert_eq!(
            rows[0],
            TraceRow {
                temperature: 23.7,
                humidity: 26.272
            }
        );
    }
}
