//! Payload grammar of the sensor network, and the check of a reading against the sensor
//! contract a node declared in its configuration.
//!
//! ```text
//! data:    {dataType},{dataRange},{value}          e.g.  float,0-70,23.4
//! control: {COMMAND}[, {p1}[, {p2}[, {p3}]]]       e.g.  PUB_CN_SEVERITY_MODE, warningMode
//!          PUB_CONFIG_FILE, <nodeConfiguration …>…</nodeConfiguration>
//! reply:   SET_CN_FUNCTIONAL_MODE, active, {normalMode|warningMode|dangerMode}
//!          SET_CN_FUNCTIONAL_MODE, blocked, {reason}
//! ```
//! Fields are separated by commas; spaces around them are ignored.

use serde::{Deserialize, Serialize};

/// Largest node-configuration document accepted, in bytes.
pub const MAX_CONFIG_BYTES: usize = 64 * 1024;

/// A node's severity mode; it samples every 60 / 40 / 20 s in these modes.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    #[default]
    Normal,
    Warning,
    Danger,
}

impl Severity {
    /// The word used on the wire (`normalMode`, …).
    pub fn wire(self) -> &'static str {
        match self {
            Severity::Normal => "normalMode",
            Severity::Warning => "warningMode",
            Severity::Danger => "dangerMode",
        }
    }

    pub fn from_wire(s: &str) -> Option<Severity> {
        match s.trim() {
            "normalMode" => Some(Severity::Normal),
            "warningMode" => Some(Severity::Warning),
            "dangerMode" => Some(Severity::Danger),
            _ => None,
        }
    }

    /// The paper's sampling interval in this mode.
    pub fn sampling_interval_secs(self) -> u64 {
        match self {
            Severity::Normal => 60,
            Severity::Warning => 40,
            Severity::Danger => 20,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Normal => "normal",
            Severity::Warning => "warning",
            Severity::Danger => "danger",
        }
    }
}

/// A node's functional mode (the paper's INIT → ACTIVE | BLOCKED).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FunctionalMode {
    #[default]
    Init,
    Active,
    Blocked,
}

impl FunctionalMode {
    pub fn as_str(self) -> &'static str {
        match self {
            FunctionalMode::Init => "init",
            FunctionalMode::Active => "active",
            FunctionalMode::Blocked => "blocked",
        }
    }
}

/// A message on a control topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control<'a> {
    /// Join request carrying the node's configuration document.
    PubConfigFile {
        document: &'a str,
    },
    PubSeverityMode {
        mode: Severity,
    },
    /// The server's reply; refused when a client sends it.
    SetFunctionalMode,
    /// The server's over-the-air configuration; refused when a client sends it.
    SetConfigFile {
        document: &'a str,
    },
    Unknown {
        command: &'a str,
    },
}

/// Why a payload could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadError {
    NotUtf8,
    Empty,
    MissingDocument,
    DocumentTooLarge(usize),
    UnknownSeverity(String),
    Malformed(String),
}

impl std::fmt::Display for PayloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PayloadError::NotUtf8 => f.write_str("payload is not UTF-8"),
            PayloadError::Empty => f.write_str("empty payload"),
            PayloadError::MissingDocument => f.write_str("PUB_CONFIG_FILE carries no XML document"),
            PayloadError::DocumentTooLarge(n) => write!(
                f,
                "configuration document of {n} bytes exceeds {MAX_CONFIG_BYTES} bytes"
            ),
            PayloadError::UnknownSeverity(s) => write!(f, "unknown severity mode {s:?}"),
            PayloadError::Malformed(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for PayloadError {}

/// Parses a control message.
pub fn parse_control(payload: &[u8]) -> Result<Control<'_>, PayloadError> {
    let text = std::str::from_utf8(payload).map_err(|_| PayloadError::NotUtf8)?;
    let text = text.trim();
    if text.is_empty() {
        return Err(PayloadError::Empty);
    }
    let (command, rest) = match text.split_once(',') {
        Some((c, r)) => (c.trim(), r),
        None => (text, ""),
    };
    // A document runs from its first '<' to its last '>': it contains commas itself.
    let document = || {
        let (Some(start), Some(end)) = (rest.find('<'), rest.rfind('>')) else {
            return Err(PayloadError::MissingDocument);
        };
        if end < start {
            return Err(PayloadError::MissingDocument);
        }
        let document = &rest[start..=end];
        if document.len() > MAX_CONFIG_BYTES {
            return Err(PayloadError::DocumentTooLarge(document.len()));
        }
        Ok(document)
    };
    match command {
        "PUB_CONFIG_FILE" => Ok(Control::PubConfigFile {
            document: document()?,
        }),
        "SET_CN_CONFIG_FILE" => Ok(Control::SetConfigFile {
            document: document()?,
        }),
        "PUB_CN_SEVERITY_MODE" => {
            let mode = rest.split(',').next().unwrap_or("").trim();
            Severity::from_wire(mode)
                .map(|mode| Control::PubSeverityMode { mode })
                .ok_or_else(|| PayloadError::UnknownSeverity(mode.to_string()))
        }
        "SET_CN_FUNCTIONAL_MODE" => Ok(Control::SetFunctionalMode),
        other => Ok(Control::Unknown { command: other }),
    }
}

/// A node's join request: `PUB_CONFIG_FILE, <document>`.
pub fn join_request(document: &str) -> String {
    format!("PUB_CONFIG_FILE, {document}")
}

/// The server's over-the-air configuration: `SET_CN_CONFIG_FILE, <document>`.
pub fn config_file_command(document: &str) -> String {
    format!("SET_CN_CONFIG_FILE, {document}")
}

/// The server's answer to a join: `SET_CN_FUNCTIONAL_MODE, active, warningMode`.
pub fn functional_mode_reply(mode: FunctionalMode, detail: &str) -> String {
    format!("SET_CN_FUNCTIONAL_MODE, {}, {detail}", mode.as_str())
}

/// A sensor as a node declares it in its configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensorSpec {
    /// `dataName`: the last level of the sensor's data topic.
    pub name: String,
    /// `type`: the part, e.g. DHT22.
    pub part: String,
    /// `dataType`: float, int, bool or string.
    pub data_type: String,
    /// `dataUnits`.
    pub units: String,
    /// `dataRange`, as declared.
    pub min: String,
    pub max: String,
}

impl SensorSpec {
    /// The declared range as numbers, when both ends are numeric.
    pub fn numeric_range(&self) -> Option<(f64, f64)> {
        Some((self.min.trim().parse().ok()?, self.max.trim().parse().ok()?))
    }

    /// Whether readings are numbers checked against the range: a float or int sensor.
    pub fn is_numeric(&self) -> bool {
        matches!(self.kind(), Ok(Kind::Float | Kind::Int))
    }

    /// The declared `dataType` as one of the kinds a reading can have, or the lower-cased
    /// name that is none of them.
    fn kind(&self) -> Result<Kind, String> {
        match self.data_type.trim().to_ascii_lowercase().as_str() {
            "float" | "double" | "real" => Ok(Kind::Float),
            "int" | "integer" => Ok(Kind::Int),
            "bool" | "boolean" => Ok(Kind::Bool),
            "string" | "str" | "text" => Ok(Kind::Text),
            other => Err(other.to_string()),
        }
    }
}

/// What a sensor's readings are, by the names its `dataType` may take.
#[derive(Clone, Copy)]
enum Kind {
    Float,
    Int,
    Bool,
    Text,
}

/// A reading's value, typed by the sensor's declared data type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    Float(f64),
    Int(i64),
    Bool(bool),
    Text(String),
}

impl Value {
    /// The numeric value stored in the `value` column (booleans as 0/1).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(v) => Some(*v),
            Value::Int(v) => Some(*v as f64),
            Value::Bool(b) => Some(f64::from(u8::from(*b))),
            Value::Text(_) => None,
        }
    }
}

/// Why a reading was refused. Each has a stable label for counters and the quarantine.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadingError {
    NotUtf8,
    Malformed(String),
    TypeMismatch { declared: String, sent: String },
    RangeMismatch { declared: String, sent: String },
    InvalidValue { data_type: String, value: String },
    OutOfRange { value: f64, min: f64, max: f64 },
    UnsupportedType(String),
}

impl ReadingError {
    pub fn reason(&self) -> &'static str {
        match self {
            ReadingError::NotUtf8 => "payload_not_utf8",
            ReadingError::Malformed(_) => "payload_malformed",
            ReadingError::TypeMismatch { .. } => "type_mismatch",
            ReadingError::RangeMismatch { .. } => "range_mismatch",
            ReadingError::InvalidValue { .. } => "invalid_value",
            ReadingError::OutOfRange { .. } => "out_of_range",
            ReadingError::UnsupportedType(_) => "unsupported_type",
        }
    }
}

impl std::fmt::Display for ReadingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadingError::NotUtf8 => f.write_str("payload is not UTF-8"),
            ReadingError::Malformed(s) => write!(f, "malformed reading: {s}"),
            ReadingError::TypeMismatch { declared, sent } => {
                write!(
                    f,
                    "data type {sent:?} does not match the declared {declared:?}"
                )
            }
            ReadingError::RangeMismatch { declared, sent } => {
                write!(f, "range {sent:?} does not match the declared {declared:?}")
            }
            ReadingError::InvalidValue { data_type, value } => {
                write!(f, "{value:?} is not a valid {data_type}")
            }
            ReadingError::OutOfRange { value, min, max } => {
                write!(f, "{value} is outside the declared range {min}..{max}")
            }
            ReadingError::UnsupportedType(t) => {
                write!(f, "declared data type {t:?} is not supported")
            }
        }
    }
}

impl std::error::Error for ReadingError {}

/// Splits `min-max` where either end may be negative: `-10-50`, `0-70`, `-5--1`.
pub fn split_range(s: &str) -> Option<(&str, &str)> {
    let s = s.trim();
    let from = usize::from(s.starts_with('-'));
    let i = s[from..].find('-')? + from;
    let (a, b) = (s[..i].trim(), s[i + 1..].trim());
    (!a.is_empty() && !b.is_empty()).then_some((a, b))
}

/// Parses a data payload and checks it against the sensor's declared contract.
pub fn check_reading(spec: &SensorSpec, payload: &[u8]) -> Result<Value, ReadingError> {
    let text = std::str::from_utf8(payload).map_err(|_| ReadingError::NotUtf8)?;
    let mut fields = text.splitn(3, ',');
    let (Some(data_type), Some(range), Some(value)) = (fields.next(), fields.next(), fields.next())
    else {
        return Err(ReadingError::Malformed(format!(
            "expected dataType,dataRange,value, got {:?}",
            truncate(text)
        )));
    };
    let (data_type, range, value) = (data_type.trim(), range.trim(), value.trim());
    if !data_type.eq_ignore_ascii_case(spec.data_type.trim()) {
        return Err(ReadingError::TypeMismatch {
            declared: spec.data_type.clone(),
            sent: data_type.to_string(),
        });
    }
    let declared_range = format!("{}-{}", spec.min.trim(), spec.max.trim());
    let same_range = match (split_range(range), spec.numeric_range()) {
        (Some((a, b)), Some((min, max))) => {
            a.parse::<f64>().ok() == Some(min) && b.parse::<f64>().ok() == Some(max)
        }
        _ => range == declared_range,
    };
    if !same_range {
        return Err(ReadingError::RangeMismatch {
            declared: declared_range,
            sent: range.to_string(),
        });
    }
    let invalid = || ReadingError::InvalidValue {
        data_type: data_type.to_string(),
        value: truncate(value).to_string(),
    };
    let parsed = match spec.kind().map_err(ReadingError::UnsupportedType)? {
        Kind::Float => {
            let v: f64 = value.parse().map_err(|_| invalid())?;
            if !v.is_finite() {
                return Err(invalid());
            }
            Value::Float(v)
        }
        Kind::Int => Value::Int(value.parse().map_err(|_| invalid())?),
        Kind::Bool => Value::Bool(match value.to_ascii_lowercase().as_str() {
            "true" | "1" | "on" => true,
            "false" | "0" | "off" => false,
            _ => return Err(invalid()),
        }),
        Kind::Text => Value::Text(value.to_string()),
    };
    if let (Some(v), Some((min, max)), Value::Float(_) | Value::Int(_)) =
        (parsed.as_f64(), spec.numeric_range(), &parsed)
        && !(min..=max).contains(&v)
    {
        return Err(ReadingError::OutOfRange { value: v, min, max });
    }
    Ok(parsed)
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn temp() -> SensorSpec {
        SensorSpec {
            name: "indoorTemperatureSensor".into(),
            part: "DHT22".into(),
            data_type: "float".into(),
            units: "celsius".into(),
            min: "0".into(),
            max: "70".into(),
        }
    }

    #[test]
    fn readings_are_checked_against_the_contract() {
        assert_eq!(
            check_reading(&temp(), b"float,0-70,23.4"),
            Ok(Value::Float(23.4))
        );
        assert_eq!(
            check_reading(&temp(), b" float , 0-70 , 70 "),
            Ok(Value::Float(70.0))
        );
        assert_eq!(
            check_reading(&temp(), b"float,0-70,70.1")
                .unwrap_err()
                .reason(),
            "out_of_range"
        );
        assert_eq!(
            check_reading(&temp(), b"int,0-70,23").unwrap_err().reason(),
            "type_mismatch"
        );
        assert_eq!(
            check_reading(&temp(), b"float,0-100,23")
                .unwrap_err()
                .reason(),
            "range_mismatch"
        );
        assert_eq!(
            check_reading(&temp(), b"float,0-70,hot")
                .unwrap_err()
                .reason(),
            "invalid_value"
        );
        assert_eq!(
            check_reading(&temp(), b"float,0-70,NaN")
                .unwrap_err()
                .reason(),
            "invalid_value"
        );
        assert_eq!(
            check_reading(&temp(), b"23.4").unwrap_err().reason(),
            "payload_malformed"
        );
        assert_eq!(
            check_reading(&temp(), b"\xff").unwrap_err().reason(),
            "payload_not_utf8"
        );
        let flame = SensorSpec {
            data_type: "int".into(),
            min: "0".into(),
            max: "1024".into(),
            ..temp()
        };
        assert_eq!(
            check_reading(&flame, b"int,0-1024,140"),
            Ok(Value::Int(140))
        );
        let neg = SensorSpec {
            min: "-40".into(),
            max: "85".into(),
            ..temp()
        };
        assert_eq!(
            check_reading(&neg, b"float,-40-85,-12.5"),
            Ok(Value::Float(-12.5))
        );
    }

    #[test]
    fn ranges_split_with_negative_ends() {
        assert_eq!(split_range("0-70"), Some(("0", "70")));
        assert_eq!(split_range("-10-50"), Some(("-10", "50")));
        assert_eq!(split_range("-5--1"), Some(("-5", "-1")));
        assert_eq!(split_range("70"), None);
    }

    #[test]
    fn control_messages() {
        let doc = "<nodeConfiguration a=\"1,2\"><x>y, z</x></nodeConfiguration>";
        assert_eq!(
            parse_control(format!("PUB_CONFIG_FILE, {doc}, , ").as_bytes()),
            Ok(Control::PubConfigFile { document: doc })
        );
        assert_eq!(
            parse_control(b"PUB_CN_SEVERITY_MODE, dangerMode, ,"),
            Ok(Control::PubSeverityMode {
                mode: Severity::Danger
            })
        );
        assert_eq!(
            parse_control(b"PUB_CN_SEVERITY_MODE, panicMode"),
            Err(PayloadError::UnknownSeverity("panicMode".into()))
        );
        assert_eq!(
            parse_control(b"REBOOT"),
            Ok(Control::Unknown { command: "REBOOT" })
        );
        assert_eq!(
            parse_control(b"PUB_CONFIG_FILE, none"),
            Err(PayloadError::MissingDocument)
        );
        assert_eq!(
            functional_mode_reply(FunctionalMode::Active, Severity::Warning.wire()),
            "SET_CN_FUNCTIONAL_MODE, active, warningMode"
        );
        assert_eq!(
            parse_control(join_request(doc).as_bytes()),
            Ok(Control::PubConfigFile { document: doc })
        );
        assert_eq!(
            parse_control(config_file_command(doc).as_bytes()),
            Ok(Control::SetConfigFile { document: doc })
        );
        assert_eq!(
            parse_control(b"SET_CN_CONFIG_FILE, "),
            Err(PayloadError::MissingDocument)
        );
    }

    proptest! {
        /// A value inside the declared range is accepted exactly; outside it is refused.
        #[test]
        fn float_readings_agree_with_the_range(min in -1000i32..1000, span in 0i32..1000, v in -3000.0f64..3000.0) {
            let max = min + span;
            let spec = SensorSpec { min: min.to_string(), max: max.to_string(), ..temp() };
            let payload = format!("float,{min}-{max},{v}");
            let got = check_reading(&spec, payload.as_bytes());
            if (f64::from(min)..=f64::from(max)).contains(&v) {
                prop_assert_eq!(got, Ok(Value::Float(v)));
            } else {
                prop_assert_eq!(got.unwrap_err().reason(), "out_of_range");
            }
        }

        /// Arbitrary payloads never panic either parser.
        #[test]
        fn arbitrary_payloads(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = check_reading(&temp(), &bytes);
            let _ = parse_control(&bytes);
        }
    }
}
