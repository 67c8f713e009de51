//! Discords as they happen: for each sensor named in `[[stream_profile]]`, the left matrix
//! profile of its readings is kept up to date on the server (`samos_offload::stream`), and a
//! window far from every earlier one raises a `discord` event, an MQTT message on the node's
//! alert topic and, with `alerts.discord_actions`, the built-in `discord` alert.
//!
//! ```text
//! accepted reading ─▶ Node::profiles[sensor] (LeftProfile + episode) ─▶ score = distance / √m
//!     score ≥ threshold, warm, no episode open ─▶ episode opens: event + MQTT + metric
//!     `window` windows in a row under the threshold ─▶ episode closes
//! every second, when anything changed ─▶ data/mining/stream_profiles.jsonl (`stream_profiles`)
//! ```
//!
//! Design: the profile is updated on the reading's own connection task, after the reading was
//! accepted and before it is queued for storage, like the severity cross-check: O(history) per
//! reading, no queue that could drop or delay a reading. One discord is one *episode*: the
//! windows that cover an anomaly are all far from the past, so an episode stays open until
//! `window` consecutive windows (a whole window of ordinary shape) fall under the threshold, and
//! raises once.
//!
//! Invariants: a series' memory is fixed when its first reading arrives (48 bytes per window
//! of history, see `LeftProfile::memory_bytes`); nothing here can refuse or delay the storage
//! of a reading. The profiles live in memory: a graceful shutdown saves each series' latest
//! values (`data/mining/stream_state.json`) and the next start replays them, so the series go
//! on where they were; after a crash each series warms up again (`warmup` windows) before it
//! raises anything.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;

use mqttbytes::QoS;
use samos_offload::stream::LeftProfile;
use samos_schemas::topic;
use serde_json::json;
use tracing::{error, warn};

use super::Protocol;
use super::registry::Node;
use crate::clock::now_ms;
use crate::config::StreamProfileConfig;

/// What a node keeps for one of its declared sensors.
#[derive(Debug, Default)]
pub enum Slot {
    /// No reading of it seen yet.
    #[default]
    Unchecked,
    /// Not streamed (no `[[stream_profile]]` names it).
    Off,
    On(Box<SensorStream>),
}

/// The live profile of one sensor of one node and its discord episode.
#[derive(Debug)]
pub struct SensorStream {
    profile: LeftProfile,
    threshold: f64,
    warmup: u64,
    /// The latest window's distance per √window (None until a window has a neighbour).
    pub score: Option<f64>,
    pub max_score: f64,
    /// Discord episodes raised.
    pub discords: u64,
    /// An episode is open.
    pub in_discord: bool,
    /// When the latest episode opened.
    pub onset_ms: Option<i64>,
    /// Consecutive windows under the threshold in an open episode.
    below: usize,
    pub updated_ms: i64,
    /// Windows seen before the profile was rebuilt from saved values (a graceful restart).
    windows_before: u64,
}

/// What a graceful shutdown keeps of one series, restored at the next start.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SavedStream {
    pub network: String,
    pub node_id: String,
    pub sensor: String,
    /// The latest values, oldest first (`LeftProfile::recent`).
    pub values: Vec<f64>,
    pub windows: u64,
    pub discords: u64,
    pub max_score: f64,
    pub last_discord: Option<i64>,
}

/// A discord that opened an episode.
#[derive(Debug, Clone, PartialEq)]
pub struct Discord {
    pub distance: f64,
    pub score: f64,
    /// How many windows back its nearest earlier window starts.
    pub neighbour_windows_ago: Option<u64>,
}

impl SensorStream {
    pub fn new(config: &StreamProfileConfig) -> Option<SensorStream> {
        Some(SensorStream {
            profile: LeftProfile::new(config.window, config.history).ok()?,
            threshold: config.threshold,
            warmup: config.warmup.unwrap_or(config.history as u64),
            score: None,
            max_score: 0.0,
            discords: 0,
            in_discord: false,
            onset_ms: None,
            below: 0,
            updated_ms: 0,
            windows_before: 0,
        })
    }

    /// A stream rebuilt from what a graceful shutdown saved: the values replayed (no discord
    /// raised for them), the counters carried over.
    pub fn restored(
        config: &StreamProfileConfig,
        saved: &SavedStream,
        now_ms: i64,
    ) -> Option<SensorStream> {
        let mut s = SensorStream::new(config)?;
        for v in &saved.values {
            if let Some(step) = s.profile.push(*v)
                && step.distance.is_finite()
            {
                s.score = Some(s.score_of(step.distance));
            }
        }
        s.windows_before = saved.windows.saturating_sub(s.windows());
        s.discords = saved.discords;
        s.max_score = saved.max_score;
        s.onset_ms = saved.last_discord;
        s.updated_ms = now_ms;
        Some(s)
    }

    fn saved(&self, network: &str, node_id: &str, sensor: &str) -> SavedStream {
        SavedStream {
            network: network.to_owned(),
            node_id: node_id.to_owned(),
            sensor: sensor.to_owned(),
            values: self.profile.recent(),
            windows: self.windows(),
            discords: self.discords,
            max_score: self.max_score,
            last_discord: self.onset_ms,
        }
    }

    pub fn window(&self) -> usize {
        self.profile.window()
    }

    pub fn history(&self) -> usize {
        self.profile.history()
    }

    /// Windows completed so far (across a graceful restart).
    pub fn windows(&self) -> u64 {
        self.windows_before + (self.profile.seen() + 1).saturating_sub(self.profile.window() as u64)
    }

    pub fn memory_bytes(&self) -> usize {
        self.profile.memory_bytes() + size_of::<SensorStream>()
    }

    /// A distance as a score: per √window, so thresholds do not depend on the window.
    fn score_of(&self, distance: f64) -> f64 {
        distance / (self.profile.window() as f64).sqrt()
    }

    /// Takes a reading; the discord, when it opens an episode.
    pub fn step(&mut self, value: f64, now_ms: i64) -> Option<Discord> {
        let step = self.profile.push(value)?;
        self.updated_ms = now_ms;
        if step.distance.is_infinite() {
            return None;
        }
        let score = self.score_of(step.distance);
        self.score = Some(score);
        self.max_score = self.max_score.max(score);
        if self.windows_before + step.window < self.warmup {
            return None;
        }
        if score < self.threshold {
            if self.in_discord {
                self.below += 1;
                if self.below >= self.profile.window() {
                    self.in_discord = false;
                }
            }
            return None;
        }
        self.below = 0;
        if self.in_discord {
            return None;
        }
        self.in_discord = true;
        self.onset_ms = Some(now_ms);
        self.discords += 1;
        Some(Discord {
            distance: step.distance,
            score,
            neighbour_windows_ago: step.neighbour.map(|i| step.window - i),
        })
    }

    /// One line of `stream_profiles`.
    fn row(&self, network: &str, node_id: &str, sensor: &str) -> serde_json::Value {
        json!({
            "network": network, "node_id": node_id, "sensor": sensor,
            "window": self.window(), "history": self.history(), "windows": self.windows(),
            "score": self.score, "max_score": self.max_score, "threshold": self.threshold,
            "discords": self.discords, "in_discord": self.in_discord,
            "last_discord": self.onset_ms, "updated": self.updated_ms,
            "memory_bytes": self.memory_bytes(),
        })
    }
}

/// The configured streams and the snapshot file.
#[derive(Debug, Default)]
pub struct Streams {
    rules: Vec<StreamProfileConfig>,
    /// A profile moved since the last snapshot.
    dirty: AtomicBool,
    file: std::path::PathBuf,
    /// What a graceful shutdown keeps.
    state_file: std::path::PathBuf,
}

impl Streams {
    pub fn new(rules: Vec<StreamProfileConfig>, data_dir: &std::path::Path) -> Streams {
        let dir = data_dir.join(samos_store::layout::MINING_DIR);
        Streams {
            rules,
            dirty: AtomicBool::new(false),
            file: dir.join(samos_store::layout::STREAM_PROFILES_FILE),
            state_file: dir.join(samos_store::layout::STREAM_STATE_FILE),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rule for a sensor: the first naming it, or `*`.
    fn rule(&self, sensor: &str) -> Option<&StreamProfileConfig> {
        self.rules
            .iter()
            .find(|r| r.sensor == sensor || r.sensor == "*")
    }
}

impl Protocol {
    /// Moves the profile of sensor `index` of `node` on by `value`; raises a discord that
    /// opens an episode.
    pub(super) fn stream_profile(&self, node: &Arc<Node>, index: usize, sensor: &str, value: f64) {
        let now = now_ms();
        let discord = {
            let mut slots = node.profiles.lock().expect("stream profiles");
            if slots.len() <= index {
                slots.resize_with(index + 1, Slot::default);
            }
            if matches!(slots[index], Slot::Unchecked) {
                slots[index] = match self.streams.rule(sensor).and_then(SensorStream::new) {
                    Some(s) => Slot::On(Box::new(s)),
                    None => Slot::Off,
                };
            }
            let Slot::On(stream) = &mut slots[index] else {
                return;
            };
            // Read first: every connection storing into one shared line would bounce it
            // between cores on every reading.
            if !self.streams.dirty.load(Relaxed) {
                self.streams.dirty.store(true, Relaxed);
            }
            let Some(d) = stream.step(value, now) else {
                return;
            };
            (d, stream.window())
        };
        let (d, window) = discord;
        let (network, node_id) = {
            let r = node.record.lock().expect("node record");
            (r.network.clone(), r.node_id.clone())
        };
        warn!(node = %node_id, sensor, score = d.score, "discord: a window far from every earlier one");
        let detail = json!({
            "sensor": sensor, "value": value, "distance": d.distance, "score": d.score,
            "window": window, "neighbour_windows_ago": d.neighbour_windows_ago,
        });
        self.event("discord", &network, &node_id, detail.clone());
        let mut message = detail;
        message["kind"] = json!("discord");
        self.publish(
            topic::alert_topic(&network, &node_id),
            message.to_string(),
            QoS::AtLeastOnce,
            false,
        );
        self.metrics.discords_raised.fetch_add(1, Relaxed);
    }

    /// Keeps each streamed series' latest values for the next start (a graceful shutdown).
    pub(super) fn save_stream_state(&self) -> std::io::Result<usize> {
        if self.streams.is_empty() {
            return Ok(0);
        }
        let mut saved = Vec::new();
        self.registry.each(|node| {
            let slots = node.profiles.lock().expect("stream profiles");
            let r = node.record.lock().expect("node record");
            let Some(config) = &r.config else { return };
            for (slot, sensor) in slots.iter().zip(&config.sensors) {
                if let Slot::On(s) = slot {
                    saved.push(s.saved(&r.network, &r.node_id, &sensor.name));
                }
            }
        });
        if let Some(dir) = self.streams.state_file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let text = serde_json::to_vec(&saved).map_err(std::io::Error::other)?;
        samos_store::file::write_atomically(&self.streams.state_file, &text)?;
        Ok(saved.len())
    }

    /// Rebuilds the profiles a graceful shutdown saved (of nodes and sensors still declared and
    /// still streamed), then removes the file: after a crash, series warm up again rather than
    /// resume from an older shutdown with a gap.
    pub(super) fn restore_stream_state(&self) -> std::io::Result<usize> {
        let text = match std::fs::read(&self.streams.state_file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let saved: Vec<SavedStream> =
            serde_json::from_slice(&text).map_err(std::io::Error::other)?;
        let now = now_ms();
        let mut restored = 0;
        for s in &saved {
            let Some(node) = self.registry.get(&s.network, &s.node_id) else {
                continue;
            };
            let index = {
                let r = node.record.lock().expect("node record");
                r.config
                    .as_ref()
                    .and_then(|c| c.sensors.iter().position(|x| x.name == s.sensor))
            };
            let (Some(index), Some(rule)) = (index, self.streams.rule(&s.sensor)) else {
                continue;
            };
            let Some(stream) = SensorStream::restored(rule, s, now) else {
                continue;
            };
            let mut slots = node.profiles.lock().expect("stream profiles");
            if slots.len() <= index {
                slots.resize_with(index + 1, Slot::default);
            }
            slots[index] = Slot::On(Box::new(stream));
            restored += 1;
        }
        std::fs::remove_file(&self.streams.state_file)?;
        self.streams.dirty.store(true, Relaxed);
        Ok(restored)
    }

    /// Writes `stream_profiles.jsonl` when a profile moved since the last time.
    pub(super) fn save_stream_profiles(&self) -> std::io::Result<()> {
        if !self.streams.dirty.swap(false, Relaxed) {
            return Ok(());
        }
        let mut text = String::new();
        self.registry.each(|node| {
            let slots = node.profiles.lock().expect("stream profiles");
            if !slots.iter().any(|s| matches!(s, Slot::On(_))) {
                return;
            }
            let r = node.record.lock().expect("node record");
            let Some(config) = &r.config else { return };
            for (slot, sensor) in slots.iter().zip(&config.sensors) {
                if let Slot::On(s) = slot {
                    text.push_str(&s.row(&r.network, &r.node_id, &sensor.name).to_string());
                    text.push('\n');
                }
            }
        });
        if let Some(dir) = self.streams.file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        samos_store::file::replace_file(&self.streams.file, text.as_bytes()).inspect_err(|e| {
            // Tried again at the next tick.
            self.streams.dirty.store(true, Relaxed);
            // A full disk is reported once per episode by the writers that matter (WAL,
            // Parquet, registry); this snapshot only waits for space, quietly.
            if !samos_store::file::is_no_space(e) {
                error!(error = %e, path = %self.streams.file.display(), "cannot save the stream profiles");
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(window: usize, history: usize, threshold: f64) -> StreamProfileConfig {
        StreamProfileConfig {
            sensor: "t".into(),
            window,
            history,
            threshold,
            warmup: None,
        }
    }

    /// A sine of period 50 with a little deterministic noise.
    fn ordinary(i: usize) -> f64 {
        let noise = ((i * 7919) % 101) as f64 / 101.0 - 0.5;
        (i as f64 * std::f64::consts::TAU / 50.0).sin() * 10.0 + noise * 0.2
    }

    #[test]
    fn a_planted_discord_opens_one_episode() {
        let mut s = SensorStream::new(&config(20, 400, 0.8)).unwrap();
        let mut raised = Vec::new();
        for i in 0..2_000usize {
            // 30 readings of a square wave where a sine belongs.
            let v = if (1_500..1_530).contains(&i) {
                if (i / 5).is_multiple_of(2) {
                    10.0
                } else {
                    -10.0
                }
            } else {
                ordinary(i)
            };
            if let Some(d) = s.step(v, i as i64) {
                raised.push((i, d));
            }
        }
        assert_eq!(raised.len(), 1, "{raised:?}");
        let (at, d) = &raised[0];
        assert!((1_500..1_550).contains(at), "raised at {at}");
        assert!(d.score >= 0.8);
        assert!(!s.in_discord, "the episode closed once the sine came back");
        assert_eq!(s.discords, 1);
        assert!(s.max_score < 2.0);
    }

    #[test]
    fn nothing_is_raised_while_warming_up() {
        let mut s = SensorStream::new(&config(8, 100, 0.1)).unwrap();
        let raised = (0..107)
            .filter_map(|i| s.step(((i * i) % 17) as f64, i))
            .count();
        assert_eq!(raised, 0);
        assert_eq!(s.windows(), 100);
    }
}
