//! Reason codes across packet types and versions: MQTT 5 gives PUBACK and PUBREC the same
//! failure codes under different types, and 3.x clients get none.

use mqttbytes::v5::{PubAckReason, PubRecReason};

/// The PUBACK reason with the same meaning as a PUBREC reason (the codes are shared, §3.4.2.1
/// and §3.5.2.1), so one verdict serves QoS 1 and QoS 2.
pub fn puback_reason(r: PubRecReason) -> PubAckReason {
    match r {
        PubRecReason::Success => PubAckReason::Success,
        PubRecReason::NoMatchingSubscribers => PubAckReason::NoMatchingSubscribers,
        PubRecReason::NotAuthorized => PubAckReason::NotAuthorized,
        PubRecReason::TopicNameInvalid => PubAckReason::TopicNameInvalid,
        PubRecReason::PacketIdentifierInUse => PubAckReason::PacketIdentifierInUse,
        PubRecReason::QuotaExceeded => PubAckReason::QuotaExceeded,
        PubRecReason::PayloadFormatInvalid => PubAckReason::PayloadFormatInvalid,
        PubRecReason::ImplementationSpecificError => PubAckReason::ImplementationSpecificError,
        PubRecReason::UnspecifiedError => PubAckReason::UnspecifiedError,
    }
}

/// Whether a reason code byte reports a failure (0x80 and above, every packet type).
pub fn is_failure(code: u8) -> bool {
    code >= 0x80
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn puback_keeps_the_pubrec_code() {
        let all = [
            PubRecReason::Success,
            PubRecReason::NoMatchingSubscribers,
            PubRecReason::NotAuthorized,
            PubRecReason::TopicNameInvalid,
            PubRecReason::PacketIdentifierInUse,
            PubRecReason::QuotaExceeded,
            PubRecReason::PayloadFormatInvalid,
            PubRecReason::ImplementationSpecificError,
            PubRecReason::UnspecifiedError,
        ];
        for r in all {
            assert_eq!(puback_reason(r) as u8, r as u8, "{r:?}");
        }
        assert!(is_failure(PubRecReason::NotAuthorized as u8));
        assert!(!is_failure(PubRecReason::NoMatchingSubscribers as u8));
    }
}
