//! Node admission: a configuration document is parsed and validated against the
//! node-configuration XSD with libxml2 (the engine the paper used through lxml), then read
//! into a [`NodeConfig`]. What the XSD cannot state is checked while reading: every sensor's
//! `dataRange` must be one a reading can meet (the XSD types both ends as strings).
//!
//! Hostile input is refused before libxml2 sees it: documents over
//! [`MAX_CONFIG_BYTES`](crate::payload::MAX_CONFIG_BYTES), and any DTD or entity
//! declaration (no expansion, so no billion laughs; no external entities, so no file or network
//! access). The parser also runs with network access off. libxml2's types are neither `Send`
//! nor `Sync`: validation runs on a blocking thread with a thread-local compiled schema.

use std::cell::RefCell;

use crate::payload::{MAX_CONFIG_BYTES, SensorSpec};
use crate::topic::Location;
use libxml::parser::{Parser, ParserOptions, XmlParseFailure};
use libxml::schemas::{SchemaParserContext, SchemaValidationContext};
use libxml::tree::{Document, Node};
use serde::{Deserialize, Serialize};

/// One problem with a configuration document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationError {
    /// Line in the document, when libxml2 knows it.
    pub line: Option<i32>,
    pub message: String,
}

impl std::fmt::Display for ValidationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(l) => write!(f, "line {l}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// What Samos keeps of a valid configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeConfig {
    pub node_id: String,
    pub network: String,
    pub server_id: String,
    pub location: Location,
    pub sensors: Vec<SensorSpec>,
    pub ip_address: String,
    pub mac_address: String,
    pub platform: String,
    /// The whole document as JSON (element names as keys, repeated elements as arrays).
    pub document: serde_json::Value,
}

impl NodeConfig {
    pub fn sensor(&self, name: &str) -> Option<&SensorSpec> {
        self.sensors.iter().find(|s| s.name == name)
    }

    pub fn sensor_index(&self, name: &str) -> Option<usize> {
        self.sensors.iter().position(|s| s.name == name)
    }
}

thread_local! {
    static SCHEMA: RefCell<Option<SchemaValidationContext>> = const { RefCell::new(None) };
}

fn with_schema<T>(f: impl FnOnce(&mut SchemaValidationContext) -> T) -> T {
    SCHEMA.with(|cell| {
        let mut slot = cell.borrow_mut();
        let ctx = slot.get_or_insert_with(|| {
            let mut parser = SchemaParserContext::from_buffer(crate::NODE_CONFIG_XSD);
            SchemaValidationContext::from_parser(&mut parser)
                .expect("the embedded node-configuration XSD compiles")
        });
        f(ctx)
    })
}

fn lift(errors: Vec<libxml::error::StructuredError>) -> Vec<ValidationError> {
    errors
        .into_iter()
        .map(|e| ValidationError {
            line: e.line,
            message: e
                .message
                .unwrap_or_else(|| "unspecified error".into())
                .trim()
                .to_string(),
        })
        .collect()
}

fn refuse(message: impl Into<String>) -> Result<NodeConfig, Vec<ValidationError>> {
    Err(vec![ValidationError {
        line: None,
        message: message.into(),
    }])
}

/// Validates a configuration document. Blocking: call from a blocking thread.
pub fn validate(document: &str) -> Result<NodeConfig, Vec<ValidationError>> {
    if document.len() > MAX_CONFIG_BYTES {
        return refuse(format!(
            "document of {} bytes exceeds the limit of {MAX_CONFIG_BYTES} bytes",
            document.len()
        ));
    }
    if document.contains("<!DOCTYPE") || document.contains("<!ENTITY") {
        return refuse("DTDs and entity declarations are not accepted");
    }
    let options = ParserOptions {
        recover: false,
        no_def_dtd: true,
        no_error: true,
        no_warning: true,
        no_net: true,
        ..ParserOptions::default()
    };
    let doc = match Parser::default().parse_string_with_diagnostics(document, options) {
        Ok((doc, diagnostics)) => {
            let errors: Vec<_> = diagnostics
                .into_iter()
                .filter(|d| {
                    matches!(
                        d.level,
                        libxml::error::XmlErrorLevel::Error | libxml::error::XmlErrorLevel::Fatal
                    )
                })
                .collect();
            if !errors.is_empty() {
                return Err(lift(errors));
            }
            doc
        }
        Err(XmlParseFailure::ParseFailed(diagnostics)) => {
            let errors = lift(diagnostics);
            return if errors.is_empty() {
                refuse("not a well-formed XML document")
            } else {
                Err(errors)
            };
        }
        Err(other) => return refuse(format!("cannot parse the document: {other:?}")),
    };
    with_schema(|ctx| ctx.validate_document(&doc)).map_err(lift)?;
    read_config(&doc)
}

fn child(node: &Node, name: &str) -> Option<Node> {
    node.get_child_elements()
        .into_iter()
        .find(|c| c.get_name() == name)
}

fn text(node: &Node, path: &[&str]) -> String {
    let mut n = node.clone();
    for p in path {
        match child(&n, p) {
            Some(c) => n = c,
            None => return String::new(),
        }
    }
    n.get_content().trim().to_string()
}

/// What the XSD cannot say of a sensor's `dataRange`: a numeric sensor (float or int) declares
/// two numbers, and any range whose ends are both numbers has the lower first. An inverted or
/// NaN range would refuse every reading the node sends, so it is refused at admission.
fn check_range(sensor: &SensorSpec) -> Result<(), String> {
    let number = |end: &str, declared: &str| match declared.parse::<f64>() {
        Ok(v) if !v.is_nan() => Ok(v),
        _ => Err(format!(
            "sensor {}: dataRange {end} {declared:?} is not a number",
            sensor.name
        )),
    };
    let (min, max) = match (
        number("minValue", &sensor.min),
        number("maxValue", &sensor.max),
    ) {
        (Ok(min), Ok(max)) => (min, max),
        (Err(e), _) | (_, Err(e)) if sensor.is_numeric() => return Err(e),
        _ => return Ok(()),
    };
    if min > max {
        return Err(format!(
            "sensor {}: dataRange minValue {} is above maxValue {}",
            sensor.name, sensor.min, sensor.max
        ));
    }
    Ok(())
}

/// The line of `node` in its document, as libxml2 recorded it while parsing.
fn line_of(node: &Node) -> Option<i32> {
    // SAFETY: `node` wraps a live node of a parsed document; xmlGetLineNo only reads it.
    let line = unsafe { libxml::bindings::xmlGetLineNo(node.node_ptr()) };
    i32::try_from(line).ok().filter(|l| *l > 0)
}

fn to_json(node: &Node) -> serde_json::Value {
    let children = node.get_child_elements();
    if children.is_empty() {
        return serde_json::Value::String(node.get_content().trim().to_string());
    }
    let mut map = serde_json::Map::new();
    for c in children {
        let v = to_json(&c);
        match map.get_mut(&c.get_name()) {
            Some(serde_json::Value::Array(a)) => a.push(v),
            Some(existing) => {
                let first = existing.take();
                *existing = serde_json::Value::Array(vec![first, v]);
            }
            None => {
                map.insert(c.get_name(), v);
            }
        }
    }
    serde_json::Value::Object(map)
}

fn read_config(doc: &Document) -> Result<NodeConfig, Vec<ValidationError>> {
    let Some(root) = doc.get_root_element() else {
        return refuse("document has no root element");
    };
    let info = child(&root, "nodeInfo").expect("schema-valid");
    let loc = child(&root, "nodeLocation").expect("schema-valid");
    let mut sensors = Vec::new();
    let mut errors = Vec::new();
    for s in child(&info, "hardwareSetup")
        .and_then(|h| child(&h, "sensors"))
        .map(|s| s.get_child_elements())
        .unwrap_or_default()
    {
        let sensor = SensorSpec {
            name: text(&s, &["dataName"]),
            part: text(&s, &["type"]),
            data_type: text(&s, &["dataType"]),
            units: text(&s, &["dataUnits"]),
            min: text(&s, &["dataRange", "minValue"]),
            max: text(&s, &["dataRange", "maxValue"]),
        };
        if let Err(message) = check_range(&sensor) {
            errors.push(ValidationError {
                line: child(&s, "dataRange").and_then(|r| line_of(&r)),
                message,
            });
        }
        sensors.push(sensor);
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(NodeConfig {
        node_id: text(&info, &["ID"]),
        network: text(&info, &["networkSetup", "networkName"]),
        server_id: text(&info, &["networkSetup", "serverID"]),
        location: Location {
            country: text(&loc, &["country"]),
            district_state: text(&loc, &["districtState"]),
            city: text(&loc, &["city"]),
            area_description: text(&loc, &["areaDescription"]),
            area: text(&loc, &["area"]),
            building: text(&loc, &["building"]),
            room: text(&loc, &["room"]),
        },
        sensors,
        ip_address: text(&info, &["networkSetup", "IPAddress"]),
        mac_address: text(&info, &["networkSetup", "MACAddress"]),
        platform: text(&info, &["hardwareSetup", "platform"]),
        document: to_json(&root),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paper(name: &str) -> String {
        std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../datasets/node-configs")
                .join(name),
        )
        .unwrap()
    }

    #[test]
    fn the_papers_valid_configurations_are_accepted() {
        for (file, id) in [
            ("cn1_config.xml", "CN1"),
            ("cn2_config.xml", "CN2"),
            ("sn_config.xml", "SN"),
        ] {
            let c = validate(&paper(file)).unwrap_or_else(|e| panic!("{file}: {e:?}"));
            assert_eq!(c.node_id, id);
            assert_eq!(c.network, "Karlovasi_IoT_network");
            assert_eq!(c.location.room, "A52");
            assert_eq!(c.sensors[0].name, "indoorTemperatureSensor");
            assert_eq!(c.sensors[0].max, "70");
            assert_eq!(c.document["nodeInfo"]["ID"], id);
        }
    }

    #[test]
    fn the_papers_invalid_configuration_is_refused_with_its_line() {
        let errors = validate(&paper("node_config.xml")).unwrap_err();
        assert_eq!(errors[0].line, Some(48), "{errors:?}");
        assert!(errors[0].message.contains("serverID"), "{errors:?}");
    }

    /// The paper's `sn_config.xml` with its sensor's type and range replaced.
    fn sn_with(data_type: &str, min: &str, max: &str) -> String {
        let doc = paper("sn_config.xml");
        let doc = doc.replacen(
            "<dataType>float</dataType>",
            &format!("<dataType>{data_type}</dataType>"),
            1,
        );
        let doc = doc.replacen(
            "<minValue>0</minValue>",
            &format!("<minValue>{min}</minValue>"),
            1,
        );
        doc.replacen(
            "<maxValue>70</maxValue>",
            &format!("<maxValue>{max}</maxValue>"),
            1,
        )
    }

    #[test]
    fn a_range_that_would_refuse_every_reading_is_refused_at_admission_with_its_line() {
        let inverted = validate(&sn_with("float", "80", "70")).unwrap_err();
        assert_eq!(
            inverted[0].message,
            "sensor indoorTemperatureSensor: dataRange minValue 80 is above maxValue 70"
        );
        let line = paper("sn_config.xml")
            .lines()
            .position(|l| l.contains("<dataRange>"))
            .map(|i| i32::try_from(i + 1).unwrap());
        assert_eq!(inverted[0].line, line);
        for (ty, min, max, end) in [
            ("float", "NaN", "70", "minValue \"NaN\""),
            ("int", "0", "lots", "maxValue \"lots\""),
            ("float", "", "70", "minValue \"\""),
        ] {
            let e = validate(&sn_with(ty, min, max)).unwrap_err();
            assert_eq!(
                e[0].message,
                format!("sensor indoorTemperatureSensor: dataRange {end} is not a number"),
            );
        }
        let inverted_text = validate(&sn_with("string", "9", "1")).unwrap_err();
        assert!(
            inverted_text[0].message.contains("above"),
            "{inverted_text:?}"
        );
    }

    #[test]
    fn ranges_the_readings_can_meet_are_admitted() {
        for (ty, min, max) in [
            ("float", "-40", "-40"),
            ("float", " -1e3 ", "inf"),
            ("int", "-5", "5"),
            ("string", "any", "text"),
            ("bool", "false", "true"),
        ] {
            let c = validate(&sn_with(ty, min, max))
                .unwrap_or_else(|e| panic!("{ty} {min}..{max}: {e:?}"));
            assert_eq!(
                (c.sensors[0].min.as_str(), c.sensors[0].max.as_str()),
                (min.trim(), max)
            );
        }
    }

    #[test]
    fn the_fuzzers_inverted_range_is_refused() {
        let found = include_str!("../../fuzz/regressions/node_config/inverted-range.xml");
        assert!(
            validate(found).unwrap_err()[0]
                .message
                .contains("is above maxValue 70")
        );
    }

    #[test]
    fn malformed_documents_report_lines() {
        let e = validate("<nodeConfiguration>\n<a>\n</b>").unwrap_err();
        assert!(
            e[0].line.is_some() && e[0].message.contains("mismatch"),
            "{e:?}"
        );
        assert!(!validate("not xml at all").unwrap_err().is_empty());
    }

    #[test]
    fn entity_expansion_and_external_entities_are_refused() {
        let laughs = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]><nodeConfiguration>&lol2;</nodeConfiguration>"#;
        let e = validate(laughs).unwrap_err();
        assert!(e[0].message.contains("DTD"), "{e:?}");
        let xxe = r#"<?xml version="1.0"?><!DOCTYPE x [<!ENTITY f SYSTEM "file:///etc/passwd">]><nodeConfiguration>&f;</nodeConfiguration>"#;
        assert!(validate(xxe).unwrap_err()[0].message.contains("DTD"));
        let big = format!("<a>{}</a>", "x".repeat(MAX_CONFIG_BYTES));
        assert!(validate(&big).unwrap_err()[0].message.contains("exceeds"));
    }
}
