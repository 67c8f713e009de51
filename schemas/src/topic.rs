//! Topic grammar of the sensor network (DESIGN.md, "Sensor-network protocol").
//!
//! ```text
//! data:    {network}/{nodeId}/{country}/{districtState}/{city}/{areaDescription}/{area}/{building}/{room}/{sensorName}
//! control: {network}/{nodeId}/{country}/{districtState}/{city}/{areaDescription}/{area}/{building}/{room}/control
//! system:  $SYS/{network}/{serverId}/{location…}/{name}  and  $SYS/{network}/{serverId}/{location…}/{nodeId}/{status|ipAddress}
//! alerts:  {network}/alerts/{nodeId}
//! ```
//!
//! A leading `/` (as in the paper) is accepted and removed. Every level is non-empty and free
//! of MQTT wildcards; the last level of a data topic is never `control`.

use serde::{Deserialize, Serialize};

/// Number of location levels between the node id and the last level.
pub const LOCATION_LEVELS: usize = 7;

/// Last level of a control topic.
pub const CONTROL: &str = "control";

/// Where a node is, in topic order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Location {
    pub country: String,
    pub district_state: String,
    pub city: String,
    pub area_description: String,
    pub area: String,
    pub building: String,
    pub room: String,
}

impl Location {
    /// The seven levels in topic order.
    pub fn levels(&self) -> [&str; LOCATION_LEVELS] {
        [
            &self.country,
            &self.district_state,
            &self.city,
            &self.area_description,
            &self.area,
            &self.building,
            &self.room,
        ]
    }

    pub fn from_levels(l: [&str; LOCATION_LEVELS]) -> Location {
        Location {
            country: l[0].into(),
            district_state: l[1].into(),
            city: l[2].into(),
            area_description: l[3].into(),
            area: l[4].into(),
            building: l[5].into(),
            room: l[6].into(),
        }
    }

    /// `country/districtState/…/room`.
    pub fn path(&self) -> String {
        self.levels().join("/")
    }
}

/// A topic of the sensor-network scheme, borrowed from the topic string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeTopic<'a> {
    pub network: &'a str,
    pub node_id: &'a str,
    pub location: [&'a str; LOCATION_LEVELS],
    pub kind: TopicKind<'a>,
}

/// Data from one sensor, or the node's control channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind<'a> {
    Data { sensor: &'a str },
    Control,
}

/// Removes one leading `/`, the paper's form.
pub fn normalize(topic: &str) -> &str {
    topic.strip_prefix('/').unwrap_or(topic)
}

fn valid_level(l: &str) -> bool {
    !l.is_empty() && !l.contains(['+', '#', '\0'])
}

/// Parses a data or control topic; `None` for anything else (other MQTT traffic, `$SYS`).
pub fn parse(topic: &str) -> Option<NodeTopic<'_>> {
    let topic = normalize(topic);
    if topic.starts_with('$') {
        return None;
    }
    let mut it = topic.split('/');
    let network = it.next()?;
    let node_id = it.next()?;
    let mut location = [""; LOCATION_LEVELS];
    for slot in &mut location {
        *slot = it.next()?;
    }
    let last = it.next()?;
    if it.next().is_some() {
        return None;
    }
    if !valid_level(network)
        || !valid_level(node_id)
        || !valid_level(last)
        || !location.iter().all(|l| valid_level(l))
    {
        return None;
    }
    let kind = if last == CONTROL {
        TopicKind::Control
    } else {
        TopicKind::Data { sensor: last }
    };
    Some(NodeTopic {
        network,
        node_id,
        location,
        kind,
    })
}

/// Whether `topic` lies in the subtree of `{network}/{nodeId}` (after normalization).
pub fn in_node_subtree(topic: &str, network: &str, node_id: &str) -> bool {
    let topic = normalize(topic);
    let mut it = topic.splitn(3, '/');
    it.next() == Some(network) && it.next() == Some(node_id)
}

/// `{network}/{nodeId}/{location…}/{sensor}`.
pub fn data_topic(network: &str, node_id: &str, location: &Location, sensor: &str) -> String {
    format!("{network}/{node_id}/{}/{sensor}", location.path())
}

/// `{network}/{nodeId}/{location…}/control`.
pub fn control_topic(network: &str, node_id: &str, location: &Location) -> String {
    format!("{network}/{node_id}/{}/{CONTROL}", location.path())
}

/// `$SYS/{network}/{serverId}/{location…}/{name}`.
pub fn sys_topic(network: &str, server_id: &str, location: &Location, name: &str) -> String {
    format!("$SYS/{network}/{server_id}/{}/{name}", location.path())
}

/// `{network}/alerts/{nodeId}`: where the server publishes its own severity assessments.
pub fn alert_topic(network: &str, node_id: &str) -> String {
    format!("{network}/alerts/{node_id}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CN1: &str = "/Karlovasi_IoT_network/CN1/Greece/Samos/Karlovasi/AegeanUniversityCampus/indoor/A/A52/indoorTemperatureSensor";

    #[test]
    fn paper_topics_parse() {
        let t = parse(CN1).unwrap();
        assert_eq!(t.network, "Karlovasi_IoT_network");
        assert_eq!(t.node_id, "CN1");
        assert_eq!(t.location[6], "A52");
        assert_eq!(
            t.kind,
            TopicKind::Data {
                sensor: "indoorTemperatureSensor"
            }
        );
        let c = CN1.replace("indoorTemperatureSensor", "control");
        assert_eq!(parse(&c).unwrap().kind, TopicKind::Control);
    }

    #[test]
    fn other_topics_do_not() {
        for t in [
            "a/b",
            "",
            "$SYS/x/SN/a/b/c/d/e/f/g/h",
            "a/b/c/d/e/f/g/h/i",
            "a/b/c/d/e/f/g/h/i/j/k",
            "a//c/d/e/f/g/h/i/j",
            "a/+/c/d/e/f/g/h/i/j",
        ] {
            assert!(parse(t).is_none(), "{t}");
        }
    }

    #[test]
    fn builders_round_trip() {
        let loc = Location::from_levels([
            "Greece",
            "Samos",
            "Karlovasi",
            "Campus",
            "indoor",
            "A",
            "A52",
        ]);
        let d = data_topic("net", "CN1", &loc, "flameDetectionSensor");
        let p = parse(&d).unwrap();
        assert_eq!(
            (p.network, p.node_id, Location::from_levels(p.location)),
            ("net", "CN1", loc.clone())
        );
        assert!(in_node_subtree(&d, "net", "CN1"));
        assert!(!in_node_subtree(&d, "net", "CN11"));
        assert!(in_node_subtree(&format!("/{d}"), "net", "CN1"));
        assert_eq!(
            sys_topic("net", "SN", &loc, "localDateTime"),
            "$SYS/net/SN/Greece/Samos/Karlovasi/Campus/indoor/A/A52/localDateTime"
        );
    }

    fn level() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_.-]{1,12}"
    }

    proptest! {
        /// Any topic built from valid levels parses back to those levels, with or without '/'.
        #[test]
        fn grammar_round_trip(net in level(), node in level(), loc in proptest::collection::vec(level(), 7), sensor in level(), slash in any::<bool>()) {
            prop_assume!(sensor != CONTROL);
            let l: [&str; 7] = std::array::from_fn(|i| loc[i].as_str());
            let location = Location::from_levels(l);
            let mut t = data_topic(&net, &node, &location, &sensor);
            if slash { t.insert(0, '/'); }
            let p = parse(&t).unwrap();
            prop_assert_eq!(p.network, net.as_str());
            prop_assert_eq!(p.node_id, node.as_str());
            prop_assert_eq!(Location::from_levels(p.location), location.clone());
            prop_assert_eq!(p.kind, TopicKind::Data { sensor: &sensor });
            let c = control_topic(&net, &node, &location);
            prop_assert_eq!(parse(&c).unwrap().kind, TopicKind::Control);
        }

        /// Arbitrary strings never panic, and whatever parses has exactly ten levels.
        #[test]
        fn arbitrary_topics(t in "[a-z/+#$]{0,40}") {
            if let Some(p) = parse(&t) {
                prop_assert_eq!(normalize(&t).split('/').count(), 10);
                prop_assert!(!p.node_id.is_empty());
            }
        }
    }
}
