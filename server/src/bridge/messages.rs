//! What a bridge sends: readings (a WAL record's Arrow batch) and event lines turned into
//! (topic, payload) messages by the bridge's forward rules.
//!
//! Invariant: the messages of one WAL record or one event line depend only on it and on the
//! forward rules, and come out in the same order every time, so a bridge that resumes inside
//! a record (its checkpoint counts the record's messages already acknowledged) skips exactly
//! those. Each message carries what a consumer needs to drop a duplicate of at-least-once
//! delivery: a reading its `instance` and `key` (as in the `readings` table), an event its
//! `instance` and `id`.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray, StringArray};
use arrow::datatypes::{Float64Type, Int32Type, TimestampMillisecondType, UInt8Type, UInt64Type};
use arrow::record_batch::RecordBatch;
use samos_mqtt::topic::{matches, valid_topic_name};
use samos_schemas::readings::LOCATION_COLUMNS;
use serde::Serialize;

use crate::config::{ForwardConfig, ForwardFormat, ForwardSource, TemplatePiece};

/// A message for the upstream broker.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// A sensor's declared range (`min`, `max`) by network, node and sensor, for the paper's text
/// payload; `None` when the node is no longer known.
pub type RangeLookup = Arc<dyn Fn(&str, &str, &str) -> Option<(String, String)> + Send + Sync>;

/// The fields a template may name, for one message.
struct Fields<'a> {
    topic: &'a str,
    network: &'a str,
    node_id: &'a str,
    sensor: &'a str,
    kind: &'a str,
    instance: &'a str,
}

#[derive(Debug, Clone)]
struct Rule {
    source: ForwardSource,
    filter: String,
    template: Vec<TemplatePiece>,
    format: ForwardFormat,
}

impl Rule {
    fn topic(&self, f: &Fields<'_>) -> String {
        let mut out = String::with_capacity(f.topic.len() + 16);
        for piece in &self.template {
            out.push_str(match piece {
                TemplatePiece::Text(t) => t,
                TemplatePiece::Topic => f.topic,
                TemplatePiece::Network => f.network,
                TemplatePiece::NodeId => f.node_id,
                TemplatePiece::Sensor => f.sensor,
                TemplatePiece::Kind => f.kind,
                TemplatePiece::Instance => f.instance,
            });
        }
        out
    }
}

/// The forward rules of one bridge.
#[derive(Clone)]
pub struct Forwarder {
    rules: Vec<Rule>,
    instance: String,
    ranges: RangeLookup,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

/// A reading as the JSON payload carries it: the `readings` columns.
#[derive(Serialize)]
struct ReadingJson<'a> {
    instance: &'a str,
    key: u64,
    ingest_time_ms: i64,
    network: &'a str,
    node_id: &'a str,
    country: &'a str,
    district_state: &'a str,
    city: &'a str,
    area_description: &'a str,
    area: &'a str,
    building: &'a str,
    room: &'a str,
    sensor: &'a str,
    data_type: &'a str,
    units: &'a str,
    value: Option<f64>,
    raw: Option<&'a str>,
    severity: &'a str,
    qos: u8,
    client_id: &'a str,
}

/// A dictionary column's keys and values.
struct Dict<'a> {
    keys: &'a [i32],
    values: &'a StringArray,
}

impl<'a> Dict<'a> {
    fn of(batch: &'a RecordBatch, name: &str) -> Option<Dict<'a>> {
        let d = batch
            .column_by_name(name)?
            .as_dictionary_opt::<Int32Type>()?;
        Some(Dict {
            keys: d.keys().values(),
            values: d.values().as_string_opt::<i32>()?,
        })
    }

    fn get(&self, row: usize) -> &'a str {
        self.values.value(self.keys[row] as usize)
    }
}

impl Forwarder {
    /// The rules of one bridge; `ranges` serves the text format. A topic template that does
    /// not parse is an error (the configuration check refuses it first).
    pub fn new(
        forwards: &[ForwardConfig],
        instance: &str,
        ranges: RangeLookup,
    ) -> Result<Forwarder, String> {
        Ok(Forwarder {
            rules: forwards
                .iter()
                .map(|f| {
                    Ok(Rule {
                        source: f.source,
                        filter: f.filter.clone(),
                        template: f.template()?,
                        format: f.format,
                    })
                })
                .collect::<Result<_, String>>()?,
            instance: instance.to_owned(),
            ranges,
        })
    }

    /// Whether any rule forwards readings (else the WAL need not be read).
    pub fn wants_readings(&self) -> bool {
        self.rules
            .iter()
            .any(|r| r.source == ForwardSource::Readings)
    }

    /// Whether any rule forwards events or alerts.
    pub fn wants_events(&self) -> bool {
        self.rules
            .iter()
            .any(|r| r.source != ForwardSource::Readings)
    }

    /// The messages of one batch of `readings`, in row order then rule order. A batch that
    /// is not `readings` (which the WAL's checksum makes a bug) gives an error.
    pub fn readings(&self, batch: &RecordBatch, out: &mut Vec<Message>) -> Result<(), String> {
        let bad = || {
            format!(
                "a WAL batch without the readings columns: {}",
                batch.schema()
            )
        };
        let dict = |name| Dict::of(batch, name).ok_or_else(bad);
        let (network, node_id, sensor) = (dict("network")?, dict("node_id")?, dict("sensor")?);
        let location: Vec<Dict<'_>> = LOCATION_COLUMNS
            .iter()
            .map(|c| dict(c))
            .collect::<Result<_, _>>()?;
        let (data_type, units, severity, client) = (
            dict("data_type")?,
            dict("units")?,
            dict("severity")?,
            dict("client_id")?,
        );
        let column = |name| batch.column_by_name(name).ok_or_else(bad);
        let time = column("ingest_time")?
            .as_primitive_opt::<TimestampMillisecondType>()
            .ok_or_else(bad)?;
        let value = column("value")?
            .as_primitive_opt::<Float64Type>()
            .ok_or_else(bad)?;
        let raw = column("raw")?.as_string_opt::<i32>().ok_or_else(bad)?;
        let qos = column("qos")?
            .as_primitive_opt::<UInt8Type>()
            .ok_or_else(bad)?;
        let key = column("key")?
            .as_primitive_opt::<UInt64Type>()
            .ok_or_else(bad)?;
        let mut ranges: HashMap<(i32, i32, i32), Option<(String, String)>> = HashMap::new();
        let mut topic = String::new();
        for row in 0..batch.num_rows() {
            let levels: [&str; 7] = std::array::from_fn(|i| location[i].get(row));
            topic.clear();
            for part in [network.get(row), node_id.get(row)]
                .into_iter()
                .chain(levels)
                .chain([sensor.get(row)])
            {
                if !topic.is_empty() {
                    topic.push('/');
                }
                topic.push_str(part);
            }
            let fields = Fields {
                topic: &topic,
                network: network.get(row),
                node_id: node_id.get(row),
                sensor: sensor.get(row),
                kind: "",
                instance: &self.instance,
            };
            let raw_value = raw.is_valid(row).then(|| raw.value(row));
            let number = value.is_valid(row).then(|| value.value(row));
            for rule in &self.rules {
                if rule.source != ForwardSource::Readings || !matches(&rule.filter, &topic) {
                    continue;
                }
                let payload = match rule.format {
                    ForwardFormat::Json => serde_json::to_vec(&ReadingJson {
                        instance: &self.instance,
                        key: key.value(row),
                        ingest_time_ms: time.value(row),
                        network: fields.network,
                        node_id: fields.node_id,
                        country: levels[0],
                        district_state: levels[1],
                        city: levels[2],
                        area_description: levels[3],
                        area: levels[4],
                        building: levels[5],
                        room: levels[6],
                        sensor: fields.sensor,
                        data_type: data_type.get(row),
                        units: units.get(row),
                        value: number,
                        raw: raw_value,
                        severity: severity.get(row),
                        qos: qos.value(row),
                        client_id: client.get(row),
                    })
                    .expect("a reading serializes"),
                    ForwardFormat::Text => {
                        let range = ranges
                            .entry((network.keys[row], node_id.keys[row], sensor.keys[row]))
                            .or_insert_with(|| {
                                (self.ranges)(fields.network, fields.node_id, fields.sensor)
                            });
                        paper_text(data_type.get(row), range.as_ref(), number, raw_value)
                            .into_bytes()
                    }
                };
                push(out, rule.topic(&fields), payload);
            }
        }
        Ok(())
    }

    /// The messages of one line of `events.jsonl` ending at byte offset `end`, in rule order.
    pub fn event(&self, line: &str, end: u64, out: &mut Vec<Message>) {
        let Ok(serde_json::Value::Object(mut event)) = serde_json::from_str(line) else {
            return;
        };
        let text = |key: &str| {
            event
                .get(key)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        let (kind, network, node_id) = (text("kind"), text("network"), text("node_id"));
        let is_alert = kind == "alert" || kind.starts_with("alert_") || kind == "discord";
        event.insert("instance".into(), self.instance.clone().into());
        event.insert(
            "id".into(),
            format!("{}:events:{end}", self.instance).into(),
        );
        let payload = serde_json::to_vec(&event).expect("an event serializes");
        let events_topic = format!("{network}/events/{node_id}/{kind}");
        let alerts_topic = samos_schemas::topic::alert_topic(&network, &node_id);
        for rule in &self.rules {
            let topic = match rule.source {
                ForwardSource::Readings => continue,
                ForwardSource::Events => &events_topic,
                ForwardSource::Alerts if is_alert => &alerts_topic,
                ForwardSource::Alerts => continue,
            };
            if !matches(&rule.filter, topic) {
                continue;
            }
            let fields = Fields {
                topic,
                network: &network,
                node_id: &node_id,
                sensor: "",
                kind: &kind,
                instance: &self.instance,
            };
            push(out, rule.topic(&fields), payload.clone());
        }
    }
}

/// A topic no broker accepts (empty, a wildcard from a node's name, longer than MQTT's 65,535
/// bytes) is logged and left out: the rules and names are checked, so this is a bug, not a
/// message to hold everything for.
fn push(out: &mut Vec<Message>, topic: String, payload: Vec<u8>) {
    if valid_topic_name(&topic) && topic.len() <= usize::from(u16::MAX) {
        out.push(Message { topic, payload });
    } else {
        tracing::error!(%topic, "bridge: not a valid topic name; the message is left out");
    }
}

/// The paper's `dataType,dataRange,value`.
fn paper_text(
    data_type: &str,
    range: Option<&(String, String)>,
    value: Option<f64>,
    raw: Option<&str>,
) -> String {
    let range = range.map_or(String::new(), |(min, max)| format!("{min}-{max}"));
    let value = match (raw, value) {
        (Some(raw), _) => raw.to_owned(),
        (None, Some(v)) if data_type.eq_ignore_ascii_case("bool") => (v != 0.0).to_string(),
        (None, Some(v)) => v.to_string(),
        (None, None) => String::new(),
    };
    format!("{data_type},{range},{value}")
}

#[cfg(test)]
mod tests {
    use samos_schemas::node_config::NodeConfig;
    use samos_schemas::payload::{Severity, Value};

    use super::*;
    use crate::ingest::{Reading, build_batch};

    fn forward(
        source: ForwardSource,
        filter: &str,
        topic: &str,
        format: ForwardFormat,
    ) -> ForwardConfig {
        ForwardConfig {
            source,
            filter: filter.into(),
            topic: topic.into(),
            format,
        }
    }

    fn config() -> Arc<NodeConfig> {
        crate::ingest::columns::test_config("n1")
    }

    fn batch() -> RecordBatch {
        let config = config();
        let reading = |sensor: usize, value: Value| Reading {
            ingest_time_ms: 1_700_000_000_000,
            config: config.clone(),
            sensor,
            value,
            severity: Severity::Normal,
            qos: 1,
            client_id: "c1".into(),
            ack: None,
            qos2_pkid: None,
        };
        build_batch(
            &[
                reading(0, Value::Float(23.4)),
                reading(1, Value::Text("on".into())),
                reading(2, Value::Bool(true)),
            ],
            7,
        )
    }

    #[test]
    fn readings_become_json_and_the_papers_text_under_their_templates() {
        let ranges: RangeLookup =
            Arc::new(|_, node, _| (node == "n1").then(|| ("0".into(), "100".into())));
        let f = Forwarder::new(
            &[
                forward(
                    ForwardSource::Readings,
                    "#",
                    "site1/{topic}",
                    ForwardFormat::Json,
                ),
                forward(
                    ForwardSource::Readings,
                    "#",
                    "{network}/{node_id}/{sensor}",
                    ForwardFormat::Text,
                ),
                forward(
                    ForwardSource::Readings,
                    "+/+/+/+/+/+/+/+/+/t",
                    "only-t/{instance}",
                    ForwardFormat::Json,
                ),
                forward(ForwardSource::Alerts, "#", "{topic}", ForwardFormat::Json),
            ],
            "east",
            ranges,
        )
        .unwrap();
        let mut out = Vec::new();
        f.readings(&batch(), &mut out).unwrap();
        let topics: Vec<&str> = out.iter().map(|m| m.topic.as_str()).collect();
        assert_eq!(
            topics,
            [
                "site1/net/n1/c/d/ci/a/indoor/b/r/t",
                "net/n1/t",
                "only-t/east",
                "site1/net/n1/c/d/ci/a/indoor/b/r/s",
                "net/n1/s",
                "site1/net/n1/c/d/ci/a/indoor/b/r/b",
                "net/n1/b",
            ],
            "row by row, rule by rule"
        );
        let json =
            |i: usize| -> serde_json::Value { serde_json::from_slice(&out[i].payload).unwrap() };
        assert_eq!(json(0)["instance"], "east");
        assert_eq!(json(0)["key"], 7 * samos_schemas::readings::ROWS_PER_BATCH);
        assert_eq!(json(0)["value"], 23.4);
        assert_eq!(json(0)["sensor"], "t");
        assert_eq!(json(0)["room"], "r");
        assert!(json(0)["raw"].is_null());
        assert_eq!(json(3)["raw"], "on");
        assert!(json(3)["value"].is_null());
        assert_eq!(json(5)["value"], 1.0);
        let text = |i: usize| String::from_utf8(out[i].payload.clone()).unwrap();
        assert_eq!(text(1), "float,0-100,23.4");
        assert_eq!(text(4), "string,0-100,on");
        assert_eq!(text(6), "bool,0-100,true");
        let mut again = Vec::new();
        f.readings(&batch(), &mut again).unwrap();
        assert_eq!(out, again, "the same record gives the same messages");
    }

    #[test]
    fn events_and_alerts_go_to_their_own_topics_with_an_id() {
        let f = Forwarder::new(
            &[
                forward(
                    ForwardSource::Events,
                    "net/events/#",
                    "{topic}",
                    ForwardFormat::Json,
                ),
                forward(
                    ForwardSource::Alerts,
                    "#",
                    "a/{kind}/{node_id}",
                    ForwardFormat::Json,
                ),
            ],
            "east",
            Arc::new(|_, _, _| None),
        )
        .unwrap();
        let mut out = Vec::new();
        f.event(
            r#"{"time_ms":1,"kind":"alert_firing","network":"net","node_id":"n1","detail":{}}"#,
            120,
            &mut out,
        );
        f.event(
            r#"{"time_ms":2,"kind":"joined","network":"net","node_id":"n2"}"#,
            200,
            &mut out,
        );
        f.event(
            r#"{"time_ms":3,"kind":"discord","network":"net","node_id":"n3","detail":{}}"#,
            205,
            &mut out,
        );
        f.event("not json", 210, &mut out);
        let topics: Vec<_> = out.iter().map(|m| m.topic.as_str()).collect();
        assert_eq!(
            topics,
            [
                "net/events/n1/alert_firing",
                "a/alert_firing/n1",
                "net/events/n2/joined",
                "net/events/n3/discord",
                "a/discord/n3"
            ]
        );
        let first: serde_json::Value = serde_json::from_slice(&out[0].payload).unwrap();
        assert_eq!(first["id"], "east:events:120");
        assert_eq!(first["instance"], "east");
        assert_eq!(first["kind"], "alert_firing");
    }

    #[test]
    fn the_papers_text_spells_booleans_and_text_as_sent() {
        let r = ("0".to_owned(), "1".to_owned());
        assert_eq!(
            paper_text("bool", Some(&r), Some(1.0), None),
            "bool,0-1,true"
        );
        assert_eq!(paper_text("int", None, Some(5.0), None), "int,,5");
        assert_eq!(paper_text("string", None, None, Some("on")), "string,,on");
    }
}
