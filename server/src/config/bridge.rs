//! `[[bridge]]`: upstream MQTT brokers that readings, events and alerts are forwarded to
//! (see `crate::bridge`).

use std::path::PathBuf;

use serde::Deserialize;

/// One upstream broker and what is forwarded to it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    /// Unique; names the bridge's checkpoint file (`bridges/{name}.json`) and its metrics.
    pub name: String,
    /// `mqtts://host:port` (TLS; port 8883 when left out) or `mqtt://host:port` (1883).
    pub url: String,
    /// The client id upstream. Unset: `samos-{instance_id}-{name}`.
    pub client_id: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// A PEM CA to trust instead of the built-in public roots (a private broker).
    pub ca_file: Option<PathBuf>,
    /// A client certificate and its key (PEM), for brokers that authenticate devices by
    /// certificate (AWS IoT Core, Azure IoT Hub).
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// The name the broker's certificate is checked against. Unset: the URL's host.
    pub server_name: Option<String>,
    /// The TLS ALPN protocol to offer (AWS IoT Core on port 443: `x-amzn-mqtt-ca`).
    pub alpn: Option<String>,
    /// `mqtt://` to a host that is not loopback sends readings and the password in the
    /// clear: refused unless this is set.
    #[serde(default)]
    pub allow_plaintext: bool,
    /// MQTT keep-alive, in seconds.
    #[serde(default = "default_keep_alive")]
    pub keep_alive_secs: u16,
    /// QoS 1 messages sent and not yet acknowledged by the broker (AWS IoT Core allows 100).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: u16,
    /// Time limit for TCP, TLS and CONNACK together.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// `[[bridge.forward]]`: what goes upstream, and under which topics.
    #[serde(rename = "forward")]
    pub forwards: Vec<ForwardConfig>,
}

fn default_keep_alive() -> u16 {
    30
}

fn default_max_in_flight() -> u16 {
    100
}

fn default_connect_timeout() -> u64 {
    10_000
}

/// What a forward rule reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardSource {
    /// Every durable reading (from the WAL), local topic
    /// `{network}/{node_id}/{location…}/{sensor}`.
    Readings,
    /// Every line of `events.jsonl` (joins, blocks, mode changes, alerts, operator actions),
    /// local topic `{network}/events/{node_id}/{kind}`.
    Events,
    /// The alert events alone (`alert`, `alert_firing`, `alert_acknowledged`,
    /// `alert_resolved`), local topic `{network}/alerts/{node_id}`.
    Alerts,
}

/// A message's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardFormat {
    /// A JSON object: a reading's `readings` columns, or the event line with `instance` and
    /// `id` added.
    #[default]
    Json,
    /// The paper's `dataType,dataRange,value` (readings only).
    Text,
}

/// One `[[bridge.forward]]` rule.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardConfig {
    pub source: ForwardSource,
    /// An MQTT topic filter over the local topic (`+` and `#` allowed).
    #[serde(default = "default_filter")]
    pub filter: String,
    /// The topic upstream, with `{topic}` (the local topic), `{network}`, `{node_id}`,
    /// `{sensor}` (readings), `{kind}` (events, alerts) and `{instance}` replaced.
    #[serde(default = "default_topic")]
    pub topic: String,
    #[serde(default)]
    pub format: ForwardFormat,
}

fn default_filter() -> String {
    "#".into()
}

fn default_topic() -> String {
    "{topic}".into()
}

/// The placeholders a source's topic template may use.
pub fn placeholders(source: ForwardSource) -> &'static [&'static str] {
    match source {
        ForwardSource::Readings => &["topic", "network", "node_id", "sensor", "instance"],
        ForwardSource::Events | ForwardSource::Alerts => {
            &["topic", "network", "node_id", "kind", "instance"]
        }
    }
}

/// Where a bridge connects, from its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl Upstream {
    /// Parses `mqtt[s]://host[:port]` (an IPv6 host in brackets).
    pub fn parse(url: &str) -> Result<Upstream, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("mqtt://") {
            (false, r)
        } else {
            return Err(format!(
                "{url:?} is not mqtt://host:port or mqtts://host:port"
            ));
        };
        let rest = rest.trim_end_matches('/');
        let default_port = if tls { 8883 } else { 1883 };
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{url:?}: unclosed '['"))?;
            match after.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None if after.is_empty() => (host, None),
                None => return Err(format!("{url:?}: unexpected {after:?} after the host")),
            }
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        if host.is_empty() || host.contains(['/', '@', '?']) {
            return Err(format!("{url:?}: no host, or a path, user or query in it"));
        }
        let port = match port {
            Some(p) => p
                .parse()
                .map_err(|_| format!("{url:?}: {p:?} is not a port"))?,
            None => default_port,
        };
        Ok(Upstream {
            tls,
            host: host.to_owned(),
            port,
        })
    }

    /// Whether the host is this machine.
    pub fn is_loopback(&self) -> bool {
        self.host == "localhost"
            || self
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

/// Names unique and usable as file names; URLs, forwards and templates valid.
pub(super) fn check(bridges: &[BridgeConfig]) -> Result<(), String> {
    let mut names = std::collections::BTreeSet::new();
    for b in bridges {
        let owner = format!("bridge {:?}", b.name);
        if b.name.is_empty()
            || !b
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!("{owner}: a name is letters, digits, '-' and '_'"));
        }
        if !names.insert(b.name.as_str()) {
            return Err(format!("{owner}: two bridges have this name"));
        }
        let upstream = Upstream::parse(&b.url).map_err(|e| format!("{owner}: url {e}"))?;
        if !upstream.tls && !upstream.is_loopback() && !b.allow_plaintext {
            return Err(format!(
                "{owner}: {} is plain MQTT to another machine (readings and password in the \
                 clear): use mqtts://, or set allow_plaintext = true",
                b.url
            ));
        }
        if !upstream.tls
            && (b.ca_file.is_some() || b.cert_file.is_some() || b.server_name.is_some())
        {
            return Err(format!(
                "{owner}: ca_file, cert_file and server_name need an mqtts:// url"
            ));
        }
        if b.cert_file.is_some() != b.key_file.is_some() {
            return Err(format!("{owner}: cert_file and key_file go together"));
        }
        if b.password.is_some() && b.username.is_none() {
            return Err(format!("{owner}: a password needs a username"));
        }
        if b.max_in_flight == 0 || b.connect_timeout_ms == 0 {
            return Err(format!(
                "{owner}: max_in_flight and connect_timeout_ms must be at least 1"
            ));
        }
        if b.forwards.is_empty() {
            return Err(format!("{owner}: no [[bridge.forward]]: nothing to send"));
        }
        for f in &b.forwards {
            if !samos_mqtt::topic::valid_topic_filter(&f.filter) {
                return Err(format!("{owner}: {:?} is not a topic filter", f.filter));
            }
            if f.format == ForwardFormat::Text && f.source != ForwardSource::Readings {
                return Err(format!(
                    "{owner}: format = \"text\" (the paper's payload) is for readings only"
                ));
            }
            f.template()
                .map_err(|e| format!("{owner}: topic {:?}: {e}", f.topic))?;
        }
    }
    Ok(())
}

/// A piece of a parsed topic template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePiece {
    Text(String),
    Topic,
    Network,
    NodeId,
    Sensor,
    Kind,
    Instance,
}

impl TemplatePiece {
    fn placeholder(name: &str) -> Option<TemplatePiece> {
        Some(match name {
            "topic" => TemplatePiece::Topic,
            "network" => TemplatePiece::Network,
            "node_id" => TemplatePiece::NodeId,
            "sensor" => TemplatePiece::Sensor,
            "kind" => TemplatePiece::Kind,
            "instance" => TemplatePiece::Instance,
            _ => return None,
        })
    }
}

impl ForwardConfig {
    /// The rule's topic template, parsed (the configuration check refused a bad one).
    pub fn template(&self) -> Result<Vec<TemplatePiece>, String> {
        parse_template(&self.topic, placeholders(self.source))
    }
}

/// Fixed text and `allowed` placeholders, braces balanced; no wildcard in the fixed text.
fn parse_template(template: &str, allowed: &[&str]) -> Result<Vec<TemplatePiece>, String> {
    let mut pieces = Vec::new();
    let mut rest = template;
    let mut fixed = String::new();
    while let Some(open) = rest.find('{') {
        fixed.push_str(&rest[..open]);
        if open > 0 {
            pieces.push(TemplatePiece::Text(rest[..open].to_owned()));
        }
        let close = rest[open..].find('}').ok_or("an unclosed '{'")? + open;
        let name = &rest[open + 1..close];
        match TemplatePiece::placeholder(name).filter(|_| allowed.contains(&name)) {
            Some(piece) => pieces.push(piece),
            None => {
                return Err(format!(
                    "{{{name}}} is not one of {}",
                    allowed
                        .iter()
                        .map(|a| format!("{{{a}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        rest = &rest[close + 1..];
    }
    fixed.push_str(rest);
    if !rest.is_empty() {
        pieces.push(TemplatePiece::Text(rest.to_owned()));
    }
    if fixed.contains(['}', '+', '#']) || template.is_empty() {
        return Err("empty, or '+', '#' or '}' outside a placeholder".into());
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_default_ports_and_brackets() {
        assert_eq!(
            Upstream::parse("mqtts://broker.example.com").unwrap(),
            Upstream {
                tls: true,
                host: "broker.example.com".into(),
                port: 8883
            }
        );
        let u = Upstream::parse("mqtt://127.0.0.1:1884/").unwrap();
        assert_eq!((u.tls, u.port, u.is_loopback()), (false, 1884, true));
        let u = Upstream::parse("mqtts://[::1]:9000").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.is_loopback()),
            ("::1", 9000, true)
        );
        for bad in [
            "http://x",
            "mqtt://",
            "mqtt://h:port",
            "mqtt://u@h",
            "mqtts://[::1",
        ] {
            assert!(Upstream::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn templates_name_known_placeholders_only() {
        let r = placeholders(ForwardSource::Readings);
        assert_eq!(
            parse_template("site1/{topic}/x", r),
            Ok(vec![
                TemplatePiece::Text("site1/".into()),
                TemplatePiece::Topic,
                TemplatePiece::Text("/x".into())
            ])
        );
        assert!(parse_template("devices/n1/messages/events/", r).is_ok());
        assert!(parse_template("{kind}", r).is_err());
        assert!(parse_template("a/{topic", r).is_err());
        assert!(parse_template("a/#", r).is_err());
        assert!(parse_template("", r).is_err());
        assert!(parse_template("{kind}/x", placeholders(ForwardSource::Events)).is_ok());
    }
}
