//! Every reason the server refuses something, in one type.
//!
//! A refusal is input Samos would not take — a connection, a packet, a subscription, a
//! reading, an API request — or a message it could not pass on (a full subscriber queue, a
//! batch a sink could not write). Each is counted in `samos_refusals_total{reason="<label>"}`,
//! logged, and where a reading was refused, quarantined in `rejected.jsonl` under the same
//! label. Alerts are not refusals: the reading that raised one was stored, and it is counted
//! in `samos_alerts_total`.
//!
//! Invariants: labels are stable (dashboards, alert rules and tests match them), unique and
//! `snake_case`; the labels of codec and reading errors are the ones their crates give
//! (`CodecError::reason`, `ReadingError::reason`), so a refusal is named the same wherever it
//! is seen. Adding a variant is the only way to add a label: `Metrics::refuse` takes this
//! type, never a string.

use samos_mqtt::codec::CodecError;
use samos_schemas::payload::ReadingError;

macro_rules! refusals {
    ($( $(#[$doc:meta])* $variant:ident => $label:literal, )*) => {
        /// Why something was refused; see the module documentation.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Refusal {
            $( $(#[$doc])* $variant, )*
        }

        impl Refusal {
            /// Every refusal, in declaration order (`self as usize` indexes this).
            pub const ALL: &'static [Refusal] = &[$(Refusal::$variant),*];

            /// The stable label of `samos_refusals_total{reason}` and of the quarantine.
            pub const fn label(self) -> &'static str {
                match self {
                    $( Refusal::$variant => $label, )*
                }
            }
        }
    };
}

refusals! {
    // Connections.
    /// A socket accepted while `mqtt.max_connections` were open: closed at once.
    MaxConnections => "max_connections",
    /// A socket from an address past `mqtt.max_connection_rate_per_ip`: closed at once.
    ConnectionRate => "connection_rate",
    /// No CONNECT within `mqtt.connect_timeout_secs`.
    ConnectTimeout => "connect_timeout",
    /// The TLS handshake failed (bad certificate, protocol, cipher).
    TlsHandshakeFailed => "tls_handshake_failed",
    /// The TLS handshake did not finish in time.
    TlsHandshakeTimeout => "tls_handshake_timeout",
    /// A `proxy_protocol` listener's connection did not start with a valid PROXY header.
    ProxyHeaderInvalid => "proxy_header_invalid",
    /// A `proxy_protocol` listener's connection sent no complete PROXY header in time.
    ProxyHeaderTimeout => "proxy_header_timeout",
    /// CONNECT with a wrong user name or password (or an unknown certificate).
    BadCredentials => "bad_credentials",
    /// CONNECT from a client the listener does not admit (anonymous where it is closed).
    NotAuthorized => "not_authorized",
    /// CONNECT with a client id the server cannot accept.
    ClientIdInvalid => "client_id_invalid",
    /// CONNECT whose will topic is not a valid topic name or is not allowed.
    WillTopicInvalid => "will_topic_invalid",
    /// CONNECT refused for another reason (the server is unavailable).
    ConnectRefused => "connect_refused",

    // Bytes that are not MQTT, or MQTT out of order (the codec's labels).
    /// A packet over `mqtt.max_packet_bytes`.
    PacketTooLarge => "packet_too_large",
    /// A remaining-length field that is not a valid variable byte integer.
    MalformedLength => "malformed_length",
    /// Fixed-header flags the packet type does not allow.
    InvalidFlags => "invalid_flags",
    /// A packet type a client may not send.
    UnexpectedPacketType => "unexpected_packet_type",
    /// The first packet was not CONNECT.
    FirstPacketNotConnect => "first_packet_not_connect",
    /// A second CONNECT on one connection.
    SecondConnect => "second_connect",
    /// A protocol name or level other than MQTT 3.1, 3.1.1 or 5.
    UnsupportedProtocol => "unsupported_protocol",
    /// A CONNECT the codec could not read.
    MalformedConnect => "malformed_connect",
    /// A topic or string that is not valid UTF-8.
    InvalidUtf8 => "invalid_utf8",
    /// Any other packet the codec could not read.
    MalformedPacket => "malformed_packet",
    /// A packet the server could not encode.
    EncodeError => "encode_error",

    // A session's packets.
    /// MQTT 5: more unacknowledged QoS 1/2 PUBLISH than the server's Receive Maximum.
    ReceiveMaximumExceeded => "receive_maximum_exceeded",
    /// MQTT 5: a topic alias of 0 or above the server's Topic Alias Maximum.
    TopicAliasInvalid => "topic_alias_invalid",
    /// MQTT 5: an alias used before a PUBLISH defined it.
    TopicAliasUnknown => "topic_alias_unknown",
    /// A PUBLISH topic that is not a valid topic name.
    TopicInvalid => "topic_invalid",
    /// A PUBLISH the client's ACL does not allow.
    PublishNotAuthorized => "publish_not_authorized",
    /// MQTT 5: a PUBLISH claiming UTF-8 (payload format 1) whose payload is not.
    PayloadFormatInvalid => "payload_format_invalid",
    /// A SUBSCRIBE filter that is not a valid topic filter.
    TopicFilterInvalid => "topic_filter_invalid",
    /// A SUBSCRIBE filter the client's ACL does not allow.
    SubscribeNotAuthorized => "subscribe_not_authorized",
    /// A new SUBSCRIBE filter past `mqtt.max_subscriptions_per_client`.
    SubscriptionQuota => "subscription_quota",
    /// A message a wider subscription matched but the ACL hides from this client.
    DeliveryNotAuthorized => "delivery_not_authorized",
    /// A message over the client's MQTT 5 Maximum Packet Size, not delivered to it.
    ExceedsClientMaximumPacketSize => "exceeds_client_maximum_packet_size",
    /// MQTT 5: DISCONNECT raising a session expiry of 0 (§3.14.2.2.2).
    SessionExpiryRaisedFromZero => "session_expiry_raised_from_zero",
    /// A subscriber's queue was full: the message was not delivered to it.
    SubscriberQueueFull => "subscriber_queue_full",
    /// MQTT 5: a QoS 1/2 reading while the WAL waits for disk space (0x97 Quota exceeded).
    DiskFull => "disk_full",

    // The sensor-network protocol.
    /// A client wrote an alert topic, which the server alone writes.
    ServerTopic => "server_topic",
    /// The sender may not speak for the node (another user, client or session).
    ForeignNode => "foreign_node",
    /// A reading for a node that never joined.
    UnknownNode => "unknown_node",
    /// A message for a node that is not active (blocked, or not joined).
    NodeNotActive => "node_not_active",
    /// A reading whose topic location differs from the node's configuration.
    LocationMismatch => "location_mismatch",
    /// A reading for a sensor the node did not declare.
    UndeclaredSensor => "undeclared_sensor",
    /// A control message that cannot be parsed.
    ControlMalformed => "control_malformed",
    /// A node sent a command only the server sends (`SET_CN_FUNCTIONAL_MODE`).
    ServerCommand => "server_command",
    /// A control command the protocol does not know.
    UnknownCommand => "unknown_command",
    /// A node's configuration failed validation: the node is blocked.
    NodeBlocked => "node_blocked",

    // A reading against its sensor's declaration (the payload checker's labels).
    /// A reading that is not UTF-8.
    PayloadNotUtf8 => "payload_not_utf8",
    /// A reading that is not `type,range,value`.
    PayloadMalformed => "payload_malformed",
    /// A reading whose data type differs from the declared one.
    TypeMismatch => "type_mismatch",
    /// A reading whose range differs from the declared one.
    RangeMismatch => "range_mismatch",
    /// A value that does not parse as its data type.
    InvalidValue => "invalid_value",
    /// A value outside the declared range.
    OutOfRange => "out_of_range",
    /// A data type the protocol does not support.
    UnsupportedType => "unsupported_type",

    // The HTTP API.
    /// A request without a valid token where one is required.
    ApiUnauthorized => "api_unauthorized",
    /// A statement that is not one read-only query.
    ApiNotReadOnly => "api_not_read_only",
    /// A query that does not parse or plan, or a bad parameter.
    ApiBadQuery => "api_bad_query",
    /// A query that ran past `api.query_timeout_ms`.
    ApiQueryTimeout => "api_query_timeout",
    /// A result that could not be encoded.
    ApiEncode => "api_encode",
    /// A query over `api.max_query_bytes`.
    ApiQueryTooLong => "api_query_too_long",
    /// `engine=cluster` without `api.cluster`, or the Ballista scheduler unreachable.
    ApiClusterUnavailable => "api_cluster_unavailable",
    /// A viewer asked for an admin's action.
    ApiForbidden => "api_forbidden",
    /// An action without its session's CSRF token, or from another site.
    ApiCsrf => "api_csrf",
    /// An action on a node, alert or page that does not exist.
    ApiNotFound => "api_not_found",
    /// An action with a malformed body or parameter.
    ApiBadRequest => "api_bad_request",
    /// A live stream past `api.max_live_streams`.
    ApiLiveStreamsFull => "api_live_streams_full",
    /// A mining run while the most allowed at once are going.
    ApiMiningBusy => "api_mining_busy",

    // The SQL endpoints for other tools: PostgreSQL wire protocol and Flight SQL.
    /// A login without valid credentials where they are required (or a password on a
    /// connection that would carry it in clear).
    SqlUnauthorized => "sql_unauthorized",
    /// A statement that would change something: these endpoints only read.
    SqlNotReadOnly => "sql_not_read_only",
    /// A query that ran past the endpoint's `query_timeout_ms`, or was cancelled.
    SqlQueryTimeout => "sql_query_timeout",
    /// A result longer than the endpoint's `max_rows`.
    SqlTooManyRows => "sql_too_many_rows",
    /// A statement that does not parse or plan.
    SqlBadQuery => "sql_bad_query",

    // The PostgreSQL sink (nothing is lost: the WAL keeps the readings).
    /// The database holds another store's readings.
    PostgresForeignStore => "postgres_foreign_store",
    /// A batch the sink could not write (it retries).
    PostgresSinkError => "postgres_sink_error",
    /// A WAL record the sink could not decode.
    PostgresUndecodableBatch => "postgres_undecodable_batch",
    /// A line of the sink's log that could not be read.
    PostgresUnreadableLogLine => "postgres_unreadable_log_line",
}

impl From<&CodecError> for Refusal {
    fn from(e: &CodecError) -> Self {
        match e {
            CodecError::PacketTooLarge { .. } => Refusal::PacketTooLarge,
            CodecError::MalformedLength => Refusal::MalformedLength,
            CodecError::InvalidFlags { .. } => Refusal::InvalidFlags,
            CodecError::UnexpectedPacketType(_) => Refusal::UnexpectedPacketType,
            CodecError::NotConnect(_) => Refusal::FirstPacketNotConnect,
            CodecError::SecondConnect => Refusal::SecondConnect,
            CodecError::UnsupportedProtocol { .. } => Refusal::UnsupportedProtocol,
            CodecError::MalformedConnect(_) => Refusal::MalformedConnect,
            CodecError::InvalidUtf8 => Refusal::InvalidUtf8,
            CodecError::Malformed(_) => Refusal::MalformedPacket,
            CodecError::Encode(_) => Refusal::EncodeError,
        }
    }
}

impl From<&ReadingError> for Refusal {
    fn from(e: &ReadingError) -> Self {
        match e {
            ReadingError::NotUtf8 => Refusal::PayloadNotUtf8,
            ReadingError::Malformed(_) => Refusal::PayloadMalformed,
            ReadingError::TypeMismatch { .. } => Refusal::TypeMismatch,
            ReadingError::RangeMismatch { .. } => Refusal::RangeMismatch,
            ReadingError::InvalidValue { .. } => Refusal::InvalidValue,
            ReadingError::OutOfRange { .. } => Refusal::OutOfRange,
            ReadingError::UnsupportedType(_) => Refusal::UnsupportedType,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn labels_are_unique_snake_case_and_indexed_by_discriminant() {
        let labels: BTreeSet<_> = Refusal::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), Refusal::ALL.len(), "a label is used twice");
        for (i, r) in Refusal::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
            let l = r.label();
            assert!(
                l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                    && l.starts_with(|c: char| c.is_ascii_lowercase()),
                "{l:?} is not snake_case"
            );
        }
    }

    #[test]
    fn codec_errors_keep_the_codecs_labels() {
        let errors = [
            CodecError::PacketTooLarge { size: 2, max: 1 },
            CodecError::MalformedLength,
            CodecError::InvalidFlags {
                packet_type: 3,
                flags: 6,
            },
            CodecError::UnexpectedPacketType(2),
            CodecError::NotConnect(3),
            CodecError::SecondConnect,
            CodecError::UnsupportedProtocol {
                name: "MQIsdp".into(),
                level: 9,
            },
            CodecError::MalformedConnect("empty"),
            CodecError::InvalidUtf8,
            CodecError::Malformed("short".into()),
            CodecError::Encode("long".into()),
        ];
        for e in &errors {
            assert_eq!(Refusal::from(e).label(), e.reason(), "{e}");
        }
    }

    #[test]
    fn reading_errors_keep_the_checkers_labels() {
        let text = || String::from("x");
        let errors = [
            ReadingError::NotUtf8,
            ReadingError::Malformed(text()),
            ReadingError::TypeMismatch {
                declared: text(),
                sent: text(),
            },
            ReadingError::RangeMismatch {
                declared: text(),
                sent: text(),
            },
            ReadingError::InvalidValue {
                data_type: text(),
                value: text(),
            },
            ReadingError::OutOfRange {
                value: 2.0,
                min: 0.0,
                max: 1.0,
            },
            ReadingError::UnsupportedType(text()),
        ];
        for e in &errors {
            assert_eq!(Refusal::from(e).label(), e.reason(), "{e}");
        }
    }
}
