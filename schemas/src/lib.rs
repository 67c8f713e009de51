//! The one source of truth for Samos's data model: the sensor-network topic and payload
//! grammar ([`topic`], [`payload`]), the node-configuration XSD, the Arrow schemas of the
//! tables ([`readings`], [`tables`]: `nodes`, `events`, `rejected`) and their PostgreSQL DDL,
//! the paper's severity rules ([`severity`]), the synthetic fleet's identities and documents
//! ([`fleet`]: simulator, load generator, tests, benches), the HTTP API's query-parameter
//! grammar ([`http_params`]) and, with the `node-config` feature,
//! node admission: a configuration document validated against the XSD with libxml2 and read
//! into a `NodeConfig` (`node_config`).
//!
//! This crate sits at the bottom of the workspace: it must never import another Samos crate,
//! an async runtime or anything that does I/O. The server and the tools depend on it.

pub mod fleet;
pub mod http_params;
#[cfg(feature = "node-config")]
pub mod node_config;
pub mod payload;
pub mod readings;
pub mod severity;
pub mod tables;
pub mod topic;

/// The node-configuration schema (version 1.0), as published in `schemas/xsd/`.
pub const NODE_CONFIG_XSD: &str = include_str!("../xsd/node-configuration-1.0.xsd");

/// Version of [`NODE_CONFIG_XSD`].
pub const NODE_CONFIG_XSD_VERSION: &str = "1.0";

/// The topic and payload specification as an AsyncAPI 3.0 document (`schemas/asyncapi.json`).
pub const ASYNCAPI: &str = include_str!("../asyncapi.json");

/// PostgreSQL DDL of the `readings`, `nodes`, `events` and `rejected` tables.
pub const POSTGRES_DDL: &str = include_str!("../sql/postgres.sql");

/// Target namespace of node configurations (the paper's, kept so its nodes join unchanged).
pub const NODE_CONFIG_NAMESPACE: &str = "https://www.w3schools.com";

#[cfg(test)]
mod tests {
    use super::topic::{self, Location};

    /// The AsyncAPI channel addresses are the topics the code builds.
    #[test]
    fn asyncapi_agrees_with_the_topic_builders() {
        let doc: serde_json::Value = serde_json::from_str(super::ASYNCAPI).unwrap();
        assert_eq!(doc["asyncapi"], "3.0.0");
        let loc =
            Location::from_levels(["GR", "Samos", "Karlovasi", "Campus", "indoor", "A", "A52"]);
        let fill = |channel: &str, extra: &[(&str, &str)]| {
            let mut a = doc["channels"][channel]["address"]
                .as_str()
                .unwrap()
                .to_string();
            for (k, v) in [
                ("network", "net"),
                ("nodeId", "CN1"),
                ("serverId", "SN"),
                ("country", "GR"),
                ("districtState", "Samos"),
                ("city", "Karlovasi"),
                ("areaDescription", "Campus"),
                ("area", "indoor"),
                ("building", "A"),
                ("room", "A52"),
            ]
            .iter()
            .chain(extra)
            {
                a = a.replace(&format!("{{{k}}}"), v);
            }
            a
        };
        assert_eq!(
            fill("nodeData", &[("sensorName", "t")]),
            topic::data_topic("net", "CN1", &loc, "t")
        );
        assert_eq!(
            fill("nodeControl", &[]),
            topic::control_topic("net", "CN1", &loc)
        );
        assert_eq!(
            fill("serverSys", &[("name", "x")]),
            topic::sys_topic("net", "SN", &loc, "x")
        );
        assert_eq!(
            fill("nodeSys", &[("name", "status")]),
            topic::sys_topic("net", "SN", &loc, "CN1/status")
        );
        assert_eq!(fill("alerts", &[]), topic::alert_topic("net", "CN1"));
    }

    /// Every PostgreSQL table has its Arrow schema's columns.
    #[test]
    fn postgres_ddl_matches_the_arrow_schemas() {
        let ddl = super::POSTGRES_DDL;
        for (table, schema) in [
            ("readings", super::readings::readings_schema()),
            ("nodes", super::tables::nodes_schema()),
            ("events", super::tables::events_schema()),
            ("rejected", super::tables::rejected_schema()),
        ] {
            let start = ddl
                .find(&format!("CREATE TABLE IF NOT EXISTS {table} ("))
                .unwrap();
            let body = &ddl[start..start + ddl[start..].find(");").unwrap()];
            let mut columns: Vec<&str> = body
                .lines()
                .skip(1)
                .filter_map(|l| l.split_whitespace().next())
                .filter(|c| *c != "PRIMARY" && !c.starts_with("--"))
                .collect();
            columns.sort();
            let mut want: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            // Which instance accepted the row: a column of the tables several instances share.
            want.push("instance");
            want.sort();
            assert_eq!(columns, want, "{table}");
        }
    }

    #[test]
    fn the_xsd_keeps_the_papers_namespace() {
        assert!(super::NODE_CONFIG_XSD.contains(&format!(
            "targetNamespace=\"{}\"",
            super::NODE_CONFIG_NAMESPACE
        )));
        assert!(super::NODE_CONFIG_XSD.contains("version=\"1.0\""));
    }
}
