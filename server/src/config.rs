//! Configuration: one TOML file, every option documented in the repository's `samos.toml`.
//!
//! Unknown keys are errors, so a typo never silently falls back to a default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

mod alerts;
pub use alerts::{AlertRuleConfig, AlertsConfig, EmailConfig, MqttActionConfig, WebhookConfig};
mod stream;
pub use stream::StreamProfileConfig;
mod bridge;
pub use bridge::{
    BridgeConfig, ForwardConfig, ForwardFormat, ForwardSource, TemplatePiece, Upstream,
};

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration in {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where Samos keeps its state (WAL, Parquet, node registry).
    pub data_dir: PathBuf,
    /// This instance's name among several feeding one history (metrics, `$SYS`, logs).
    /// Unset: the first 12 characters of the data directory's store id (`wal/store-id`).
    pub instance_id: Option<String>,
    /// Let clients connect without credentials. Unset: allowed only on loopback listeners.
    pub allow_anonymous: Option<bool>,
    /// Password file (`samos passwd` or `mosquitto_passwd` format).
    pub password_file: Option<PathBuf>,
    /// MQTT protocol limits and session behaviour.
    pub mqtt: MqttConfig,
    /// Listeners; empty means one plain listener on `127.0.0.1:1883`.
    #[serde(rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    /// Access-control rules; empty means every client may publish and subscribe anywhere
    /// outside `$SYS`.
    #[serde(rename = "acl")]
    pub acl: Vec<AclRule>,
    /// The Prometheus metrics endpoint.
    pub metrics: MetricsConfig,
    /// The HTTP query API (SQL and open data over the stored history).
    pub api: ApiConfig,
    /// The PostgreSQL wire protocol over the same read-only tables (psql, Grafana, DBeaver).
    pub pgwire: SqlEndpointConfig,
    /// Arrow Flight SQL over the same read-only tables (ADBC, JDBC, pyarrow).
    pub flight: SqlEndpointConfig,
    /// Alert rules over the live readings and where their notifications go.
    pub alerts: AlertsConfig,
    /// Upstream MQTT brokers readings, events and alerts are forwarded to (store and forward).
    #[serde(rename = "bridge")]
    pub bridges: Vec<BridgeConfig>,
    /// The sensor-network protocol (node admission, readings, `$SYS`).
    pub protocol: ProtocolConfig,
    /// The durable path of readings: WAL and Parquet.
    pub storage: StorageConfig,
    /// Sensors whose left matrix profile is kept live, raising discords as they happen.
    pub stream_profile: Vec<StreamProfileConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("data"),
            instance_id: None,
            allow_anonymous: None,
            password_file: None,
            mqtt: MqttConfig::default(),
            listeners: Vec::new(),
            acl: Vec::new(),
            metrics: MetricsConfig::default(),
            api: ApiConfig::default(),
            pgwire: SqlEndpointConfig::default(),
            flight: SqlEndpointConfig::default(),
            alerts: AlertsConfig::default(),
            bridges: Vec::new(),
            protocol: ProtocolConfig::default(),
            storage: StorageConfig::default(),
            stream_profile: Vec::new(),
        }
    }
}

/// Protocol limits and session behaviour shared by every listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Largest packet accepted from a client, in bytes (the whole frame).
    pub max_packet_size: usize,
    /// Seconds a new connection has to send CONNECT before it is closed.
    pub connect_timeout_secs: u64,
    /// Largest keep-alive granted; a client asking for more (or for 0) gets this value
    /// as the v5 Server Keep Alive. 0 leaves the client's value alone.
    pub max_keepalive: u16,
    /// Outgoing QoS 1/2 messages in flight per client (v5 clients' Receive Maximum caps it).
    pub max_inflight_messages: u16,
    /// Messages queued per client beyond the in-flight window, online or offline; overflow is
    /// dropped, counted (`samos_messages_dropped_total`) and logged.
    pub max_queued_messages: usize,
    /// Queue QoS 0 messages for offline persistent sessions too.
    pub queue_qos0_offline: bool,
    /// Receive Maximum announced to v5 clients: unacknowledged QoS 2 publishes a client may
    /// have outstanding; exceeding it ends the connection with reason 0x93.
    pub receive_maximum: u16,
    /// Topic aliases a v5 client may use towards the server (Topic Alias Maximum).
    pub topic_alias_maximum: u16,
    /// Upper bound for session expiry, in seconds; also the lifetime of 3.x persistent
    /// sessions. Unset: sessions live until their own expiry (3.x: forever).
    pub max_session_expiry_secs: Option<u32>,
    /// Interval of the `$SYS/broker/...` statistics, in seconds; 0 turns them off.
    pub sys_interval_secs: u64,
    /// Capacity of the router's inbound queue; a full queue pauses publishers' sockets.
    pub router_queue: usize,
    /// Open client sockets across all listeners; one more is closed at once. 0: no limit
    /// (the process's file-descriptor limit applies).
    pub max_connections: usize,
    /// New connections per second from one address (the client's, behind a PROXY-protocol
    /// balancer); more are closed at once. 0: no limit.
    pub max_connection_rate_per_ip: u32,
    /// Topic filters one session may hold; a SUBSCRIBE past it gets 0x97 Quota exceeded (3.x:
    /// 0x80) for each new filter. 0: no limit.
    pub max_subscriptions_per_client: usize,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            max_packet_size: 1024 * 1024,
            connect_timeout_secs: 10,
            max_keepalive: 65_535,
            max_inflight_messages: 100,
            max_queued_messages: 10_000,
            queue_qos0_offline: false,
            receive_maximum: 1024,
            topic_alias_maximum: 64,
            max_session_expiry_secs: None,
            sys_interval_secs: 10,
            router_queue: 8192,
            max_connections: 0,
            max_connection_rate_per_ip: 0,
            max_subscriptions_per_client: 10_000,
        }
    }
}

/// One listening socket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Address and port, e.g. `127.0.0.1:1883` or `0.0.0.0:8883`; port 0 picks a free port.
    pub bind: SocketAddr,
    /// TLS settings; absent means plain TCP.
    pub tls: Option<TlsConfig>,
    /// Overrides the top-level `allow_anonymous` for this listener.
    pub allow_anonymous: Option<bool>,
    /// Every connection starts with a PROXY protocol header (v1 or v2, e.g. HAProxy's
    /// `send-proxy-v2`) naming the real client; connections without one are refused. Only for
    /// a listener that nothing but the balancer can reach.
    #[serde(default)]
    pub proxy_protocol: bool,
}

/// TLS for one listener (rustls; TLS 1.2 and 1.3).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA bundle for verifying client certificates.
    pub client_ca: Option<PathBuf>,
    /// Refuse clients without a valid certificate (requires `client_ca`).
    #[serde(default)]
    pub require_client_cert: bool,
    /// Use the client certificate's Common Name as the user name; such clients need no password.
    #[serde(default)]
    pub use_identity_as_username: bool,
}

/// One access-control rule. A rule applies to a client when every selector it sets matches;
/// a rule with no selector applies to everyone. A deny of any applying rule wins over every
/// allow; once some rule allows anything (or a rule names nothing), whatever no rule allows is
/// denied; rules that only deny leave the rest open. See [`crate::auth::Acl`].
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AclRule {
    /// Applies to user names matching this pattern (`*` matches any run of characters).
    pub user: Option<String>,
    /// Applies to client ids matching this pattern (`*` matches any run of characters).
    pub client_id: Option<String>,
    /// Topic filters this client may publish to; `%u` and `%c` are substituted.
    pub publish: Vec<String>,
    /// Topic filters this client may subscribe to (a subscription must lie within one).
    pub subscribe: Vec<String>,
    /// Topic filters this client may not publish to, whatever allows them.
    pub deny_publish: Vec<String>,
    /// Topic filters this client may not receive: a subscription within one is refused, and a
    /// wider subscription is delivered nothing that matches one.
    pub deny_subscribe: Vec<String>,
}

/// Which identity a node's topics are bound to: a client may publish under
/// `{network}/{nodeId}/…` only when this identity equals `{nodeId}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum NodeIdentity {
    /// The authenticated identity (user name checked against the password file, or the
    /// client-certificate CN) when there is one, else the MQTT client id.
    #[default]
    Auto,
    /// The MQTT client id.
    ClientId,
    /// The authenticated user name (or client-certificate CN).
    Username,
    /// No binding: any client may publish for any node (the paper's shared credentials).
    None,
}

impl NodeIdentity {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeIdentity::Auto => "auto",
            NodeIdentity::ClientId => "client_id",
            NodeIdentity::Username => "username",
            NodeIdentity::None => "none",
        }
    }
}

/// The sensor-network protocol.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProtocolConfig {
    /// Run the protocol at all; off, Samos is a plain MQTT broker.
    pub enabled: bool,
    /// The server's own node configuration (like the paper's `sn_config.xml`): network name,
    /// server id and location are taken from it. Overrides the three keys below.
    pub server_config: Option<PathBuf>,
    /// Network name used in `$SYS/{network}/…` and required of joining nodes' documents.
    pub network: String,
    /// Server id; joining documents must name it as their `serverID`.
    pub server_id: String,
    /// The server's location levels for `$SYS` topics.
    pub location: samos_schemas::topic::Location,
    /// Which identity a node id is bound to.
    pub node_identity: NodeIdentity,
    /// Seconds between `$SYS/…/localDateTime` updates.
    pub local_time_interval_secs: u64,
}

impl Default for ProtocolConfig {
    fn default() -> Self {
        ProtocolConfig {
            enabled: true,
            server_config: None,
            network: "samos".into(),
            server_id: "SN".into(),
            location: samos_schemas::topic::Location {
                country: "unknown".into(),
                district_state: "unknown".into(),
                city: "unknown".into(),
                area_description: "unknown".into(),
                area: "indoor".into(),
                building: "unknown".into(),
                room: "unknown".into(),
            },
            node_identity: NodeIdentity::Auto,
            local_time_interval_secs: 60,
        }
    }
}

/// When a reading's PUBACK / PUBREC is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Durability {
    /// After the WAL batch holding it is fsync'd: an acknowledged reading survives a crash.
    #[default]
    AckAfterCommit,
    /// As soon as it is queued: lower latency, but a crash loses what was queued.
    AckOnReceive,
}

/// The durable path of readings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub durability: Durability,
    /// Readings queued for the batcher; when full, publishers' sockets pause.
    pub queue_capacity: usize,
    /// Largest WAL batch, in readings.
    pub max_batch_rows: usize,
    /// Committed batches waiting for the Parquet writer; when full, commits wait.
    pub sink_queue_batches: usize,
    /// WAL segment size before a new segment is started, bytes.
    pub wal_segment_bytes: u64,
    /// A Parquet file is closed after this many rows…
    pub parquet_max_rows: usize,
    /// …or this many bytes written (compressed)…
    pub parquet_max_bytes: u64,
    /// …or this many seconds, whichever comes first.
    pub parquet_rotate_secs: u64,
    /// Readings (Parquet date partitions, and PostgreSQL rows of `readings`, `events`,
    /// `rejected`) older than this many days are deleted, checked hourly; 0 keeps everything.
    pub retention_days: u32,
    /// Merge a date partition's small files (under a quarter of `parquet_max_rows`) once
    /// there are this many; 0 never merges.
    pub parquet_compact_files: usize,
    /// PostgreSQL connection string (e.g. `postgres://samos@localhost/samos`); unset: no
    /// PostgreSQL sink.
    pub postgres: Option<String>,
    /// WAL batches loaded per PostgreSQL transaction.
    pub postgres_batch_records: usize,
    /// How many committed WAL batches PostgreSQL or the object store may lag before commits
    /// wait (and publishers are paused): bounds the WAL on disk during an outage.
    pub max_wal_backlog_batches: u64,
    /// Where the history lives: unset, the local `readings/` directory; `s3://bucket/prefix`
    /// or `file:///dir`, a Delta Lake table at `{object_store}/readings`.
    pub object_store: Option<String>,
    /// How to reach the object store (`endpoint`, `region`, `allow_http`, credentials);
    /// the standard `AWS_*` environment variables fill in what is not given.
    pub object_store_options: BTreeMap<String, String>,
    /// A Delta checkpoint (the log summarised in Parquet) every this many commits; recorded in
    /// the table when Samos creates it.
    pub lake_checkpoint_interval: u64,
    /// Hours an object no longer referenced (merged, expired, or an upload a crash left
    /// uncommitted) stays on the store before vacuum deletes it.
    pub lake_vacuum_grace_hours: u64,
}

/// Whether `id` can name an instance: it goes into metric labels, `$SYS` payloads and logs.
pub fn valid_instance_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl StorageConfig {
    /// The object-store dataset the history lives in (`None`: the local Parquet store).
    pub fn lake_dataset(&self) -> Result<Option<samos_lake::Dataset>, samos_lake::LakeError> {
        self.object_store
            .as_deref()
            .map(|url| {
                samos_lake::Dataset::new(
                    url,
                    self.object_store_options
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                )
            })
            .transpose()
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            durability: Durability::AckAfterCommit,
            queue_capacity: 65_536,
            max_batch_rows: 65_536,
            sink_queue_batches: 64,
            wal_segment_bytes: 64 * 1024 * 1024,
            parquet_max_rows: 1_000_000,
            parquet_max_bytes: 256 * 1024 * 1024,
            parquet_rotate_secs: 10,
            retention_days: 0,
            parquet_compact_files: 16,
            postgres: None,
            postgres_batch_records: 64,
            max_wal_backlog_batches: 1_000_000,
            object_store: None,
            object_store_options: BTreeMap::new(),
            lake_checkpoint_interval: 100,
            lake_vacuum_grace_hours: 24,
        }
    }
}

/// The HTTP endpoint for Prometheus.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve `/metrics` at all.
    pub enabled: bool,
    /// Address of the HTTP endpoint.
    pub bind: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            bind: SocketAddr::from(([127, 0, 0, 1], 9883)),
        }
    }
}

/// The HTTP query API: `GET /api/v1/query`, `/api/v1/nodes`, `/api/v1/readings`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Serve the API at all.
    pub enabled: bool,
    /// Address of the HTTP endpoint.
    pub bind: SocketAddr,
    /// Bearer token every request must carry (`Authorization: Bearer …`). Required on a
    /// non-loopback address unless `allow_anonymous` is set.
    pub token: Option<String>,
    /// Serve without a token on a non-loopback address (the data becomes open data).
    pub allow_anonymous: bool,
    /// Bearer token of admins, who may also act (block nodes, acknowledge alerts) from the
    /// dashboard or the API. `token` gives viewers. With neither set, the loopback
    /// listener's local user is an admin; with `allow_anonymous`, anonymous callers are viewers.
    pub admin_token: Option<String>,
    /// How long a dashboard login lasts, in hours.
    pub session_hours: u64,
    /// The `samos` binary the dashboard's mining runs execute (`samos mine`); `samos serve`
    /// sets it to itself when absent. The server never links the mining backends.
    pub mine_command: Option<PathBuf>,
    /// Most live streams (open dashboard tabs) at once; more are refused with 429.
    pub max_live_streams: usize,
    /// Most rows one answer carries; longer results are cut and marked `truncated`.
    pub max_rows: usize,
    /// A query still running after this many milliseconds is cancelled (HTTP 408).
    pub query_timeout_ms: u64,
    /// Longest SQL text accepted, in bytes (HTTP 400 past it).
    pub max_query_bytes: usize,
    /// A Ballista scheduler (`df://host:port`, see `samos cluster`): `/api/v1/query` runs a
    /// query there when asked with `engine=cluster`. Unset: only in this process.
    pub cluster: Option<String>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            enabled: true,
            bind: SocketAddr::from(([127, 0, 0, 1], 9884)),
            token: None,
            allow_anonymous: false,
            admin_token: None,
            session_hours: 12,
            mine_command: None,
            max_live_streams: 64,
            max_rows: 10_000,
            query_timeout_ms: 30_000,
            max_query_bytes: 16 * 1024,
            cluster: None,
        }
    }
}

/// A SQL endpoint for other tools: `[pgwire]` (the PostgreSQL wire protocol) or `[flight]`
/// (Arrow Flight SQL). Both answer from the same read-only tables as `samos sql`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SqlEndpointConfig {
    /// Address to serve on (port 0: any free port). Unset: the endpoint is off.
    pub bind: Option<SocketAddr>,
    /// Serve over TLS with this certificate and key.
    pub tls: Option<TlsConfig>,
    /// Admit clients without credentials on a non-loopback address. Without it, a client logs
    /// in with `api.token` / `api.admin_token` or a password-file user; a loopback endpoint
    /// with none of those configured admits anyone, like the MQTT and HTTP defaults.
    pub allow_anonymous: bool,
    /// Most rows one result carries; a longer one ends in an error after this many rows
    /// (never a silently cut answer). 0: no cap.
    pub max_rows: u64,
    /// A query still running (planning and streaming) after this many milliseconds is
    /// cancelled with an error.
    pub query_timeout_ms: u64,
}

impl Default for SqlEndpointConfig {
    fn default() -> Self {
        SqlEndpointConfig {
            bind: None,
            tls: None,
            allow_anonymous: false,
            max_rows: 10_000_000,
            query_timeout_ms: 300_000,
        }
    }
}

impl Config {
    /// Whether any credential (API token or password file) is configured: a SQL endpoint
    /// then asks every client for one.
    pub fn has_credentials(&self) -> bool {
        self.api.token.is_some() || self.api.admin_token.is_some() || self.password_file.is_some()
    }

    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(config)
    }

    /// Fills in the default listener and checks cross-field rules.
    pub fn finish(mut self) -> Result<Config, ConfigError> {
        if self.listeners.is_empty() {
            self.listeners.push(ListenerConfig {
                bind: SocketAddr::from(([127, 0, 0, 1], 1883)),
                tls: None,
                allow_anonymous: None,
                proxy_protocol: false,
            });
        }
        if let Some(id) = &self.instance_id
            && !valid_instance_id(id)
        {
            return Err(ConfigError::Invalid(format!(
                "instance_id {id:?}: 1 to 64 letters, digits, '-', '_' or '.'"
            )));
        }
        if self.mqtt.max_packet_size < 64 || self.mqtt.max_packet_size > 268_435_460 {
            return Err(ConfigError::Invalid(format!(
                "mqtt.max_packet_size must be between 64 and 268435460, not {}",
                self.mqtt.max_packet_size
            )));
        }
        if self.mqtt.max_inflight_messages == 0 || self.mqtt.receive_maximum == 0 {
            return Err(ConfigError::Invalid(
                "mqtt.max_inflight_messages and mqtt.receive_maximum must be at least 1".into(),
            ));
        }
        if self.mqtt.router_queue == 0 || self.mqtt.max_queued_messages == 0 {
            return Err(ConfigError::Invalid(
                "mqtt.router_queue and mqtt.max_queued_messages must be at least 1".into(),
            ));
        }
        for l in &self.listeners {
            if let Some(tls) = &l.tls
                && (tls.require_client_cert || tls.use_identity_as_username)
                && tls.client_ca.is_none()
            {
                return Err(ConfigError::Invalid(format!(
                    "listener {}: require_client_cert and use_identity_as_username need client_ca",
                    l.bind
                )));
            }
        }
        if self.api.enabled
            && !self.api.bind.ip().is_loopback()
            && self.api.token.is_none()
            && self.api.admin_token.is_none()
            && !self.api.allow_anonymous
        {
            return Err(ConfigError::Invalid(format!(
                "api.bind {} is not a loopback address: set api.token, or api.allow_anonymous = true to serve the data openly",
                self.api.bind
            )));
        }
        if self.api.token.as_deref() == Some("") || self.api.admin_token.as_deref() == Some("") {
            return Err(ConfigError::Invalid(
                "api.token and api.admin_token must not be empty".into(),
            ));
        }
        if self.api.token.is_some() && self.api.token == self.api.admin_token {
            return Err(ConfigError::Invalid(
                "api.token (viewers) and api.admin_token (admins) must differ".into(),
            ));
        }
        self.alerts.check().map_err(ConfigError::Invalid)?;
        bridge::check(&self.bridges).map_err(ConfigError::Invalid)?;
        stream::check(&self.stream_profile).map_err(ConfigError::Invalid)?;
        if !self.stream_profile.is_empty() && !self.protocol.enabled {
            return Err(ConfigError::Invalid(
                "[[stream_profile]] follows sensors of joined nodes: it needs protocol.enabled"
                    .into(),
            ));
        }
        if !self.alerts.discord_actions.is_empty() && self.stream_profile.is_empty() {
            return Err(ConfigError::Invalid(
                "alerts.discord_actions: no [[stream_profile]] streams a sensor, so no discord could be raised"
                    .into(),
            ));
        }
        for (name, e) in [("pgwire", &self.pgwire), ("flight", &self.flight)] {
            if let Some(bind) = e.bind
                && !bind.ip().is_loopback()
                && !self.has_credentials()
                && !e.allow_anonymous
            {
                return Err(ConfigError::Invalid(format!(
                    "{name}.bind {bind} is not a loopback address: set api.token or a password_file, or {name}.allow_anonymous = true to serve the data openly"
                )));
            }
            if e.tls.as_ref().is_some_and(|t| t.use_identity_as_username) {
                return Err(ConfigError::Invalid(format!(
                    "{name}.tls.use_identity_as_username is for MQTT listeners: SQL clients log in with a password"
                )));
            }
            if e.query_timeout_ms == 0 {
                return Err(ConfigError::Invalid(format!(
                    "{name}.query_timeout_ms must be at least 1"
                )));
            }
        }
        if self.api.max_rows == 0 || self.api.max_query_bytes == 0 || self.api.query_timeout_ms == 0
        {
            return Err(ConfigError::Invalid(
                "api.max_rows, api.max_query_bytes and api.query_timeout_ms must be at least 1"
                    .into(),
            ));
        }
        Ok(self)
    }

    /// Whether anonymous clients may connect on `listener`: explicit settings win; otherwise
    /// only loopback listeners admit them (secure by default).
    pub fn anonymous_allowed(&self, listener: &ListenerConfig) -> bool {
        listener
            .allow_anonymous
            .or(self.allow_anonymous)
            .unwrap_or_else(|| listener.bind.ip().is_loopback())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_file_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samos.toml");
        let c = Config::load(&path).unwrap().finish().unwrap();
        assert!(!c.listeners.is_empty());
    }

    #[test]
    fn instance_ids_are_names_fit_for_labels() {
        for ok in ["edge-1", "a", "site_3.b", &"x".repeat(64)] {
            assert!(valid_instance_id(ok), "{ok}");
        }
        for bad in ["", "a b", "a\"b", "ü", &"x".repeat(65)] {
            assert!(!valid_instance_id(bad), "{bad}");
        }
        let c: Config = toml::from_str("instance_id = \"a b\"").unwrap();
        assert!(c.finish().is_err());
    }

    #[test]
    fn stream_profiles_need_the_protocol_and_discord_actions_a_stream() {
        let off: Config =
            toml::from_str("[protocol]\nenabled = false\n[[stream_profile]]\nsensor = \"t\"\n")
                .unwrap();
        let err = off.finish().unwrap_err().to_string();
        assert!(err.contains("protocol.enabled"), "{err}");
        let idle: Config = toml::from_str(
            "[alerts]\ndiscord_actions = [\"ops\"]\n[[alerts.webhook]]\nname = \"ops\"\nurl = \"http://127.0.0.1:9/\"\n",
        )
        .unwrap();
        let err = idle.finish().unwrap_err().to_string();
        assert!(err.contains("no [[stream_profile]]"), "{err}");
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = toml::from_str::<Config>("max_packet_sise = 3").unwrap_err();
        assert!(err.to_string().contains("max_packet_sise"), "{err}");
    }

    #[test]
    fn anonymous_defaults_follow_the_address() {
        let c = Config::default().finish().unwrap();
        assert!(c.anonymous_allowed(&c.listeners[0]));
        let public = ListenerConfig {
            bind: "0.0.0.0:1883".parse().unwrap(),
            tls: None,
            allow_anonymous: None,
            proxy_protocol: false,
        };
        assert!(!c.anonymous_allowed(&public));
        let open = Config {
            allow_anonymous: Some(true),
            ..Config::default()
        };
        assert!(open.anonymous_allowed(&public));
    }

    #[test]
    fn a_public_sql_endpoint_needs_credentials_or_an_explicit_opening() {
        let public = |password_file: Option<&str>, open: bool| Config {
            password_file: password_file.map(PathBuf::from),
            pgwire: SqlEndpointConfig {
                bind: Some("0.0.0.0:5433".parse().unwrap()),
                allow_anonymous: open,
                ..SqlEndpointConfig::default()
            },
            ..Config::default()
        };
        let err = public(None, false).finish().unwrap_err().to_string();
        assert!(err.contains("pgwire.bind"), "{err}");
        public(Some("passwords"), false).finish().unwrap();
        public(None, true).finish().unwrap();
        let loopback = Config {
            flight: SqlEndpointConfig {
                bind: Some("127.0.0.1:0".parse().unwrap()),
                ..SqlEndpointConfig::default()
            },
            ..Config::default()
        };
        loopback.finish().unwrap();
    }

    #[test]
    fn a_public_api_needs_a_token_or_an_explicit_opening() {
        let public = |token: Option<&str>, open: bool| Config {
            api: ApiConfig {
                bind: "0.0.0.0:9884".parse().unwrap(),
                token: token.map(str::to_string),
                allow_anonymous: open,
                ..ApiConfig::default()
            },
            ..Config::default()
        };
        let err = public(None, false).finish().unwrap_err().to_string();
        assert!(err.contains("api.token"), "{err}");
        public(Some("s3cret"), false).finish().unwrap();
        public(None, true).finish().unwrap();
        assert!(public(Some(""), false).finish().is_err());
    }
}
