//! MQTT 5 topic aliases (§3.3.2.3.4), both ways: the aliases a client defines on its
//! PUBLISHes ([`IncomingAliases`], bounded by the Topic Alias Maximum the server announced),
//! and the ones this server gives a client ([`OutgoingAliases`], bounded by the client's).

use std::collections::HashMap;

/// Why an incoming alias cannot be used; each ends the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AliasError {
    /// 0, or above the maximum the server announced (DISCONNECT 0x94).
    #[error("topic alias {0} out of range")]
    OutOfRange(u16),
    /// An empty topic with an alias the client never defined (DISCONNECT 0x82).
    #[error("unknown topic alias {0}")]
    Unknown(u16),
}

/// The aliases a client has defined on this connection.
#[derive(Debug, Default)]
pub struct IncomingAliases {
    defined: HashMap<u16, String>,
    maximum: u16,
}

impl IncomingAliases {
    pub fn new(maximum: u16) -> IncomingAliases {
        IncomingAliases {
            defined: HashMap::new(),
            maximum,
        }
    }

    /// Applies `alias` to a PUBLISH's `topic`: an empty topic takes the alias's topic, a
    /// non-empty one (re)defines the alias.
    pub fn resolve(&mut self, alias: u16, topic: &mut String) -> Result<(), AliasError> {
        if alias == 0 || alias > self.maximum {
            return Err(AliasError::OutOfRange(alias));
        }
        if topic.is_empty() {
            topic.clone_from(self.defined.get(&alias).ok_or(AliasError::Unknown(alias))?);
        } else {
            self.defined.insert(alias, topic.clone());
        }
        Ok(())
    }
}

/// The topic aliases this server has given a v5 client (§3.3.2.3.4): the first
/// `maximum` distinct topics get 1, 2, …; later topics go out in full.
#[derive(Debug, Default)]
pub struct OutgoingAliases {
    given: HashMap<String, u16>,
    maximum: u16,
}

impl OutgoingAliases {
    pub fn new(maximum: u16) -> OutgoingAliases {
        OutgoingAliases {
            given: HashMap::new(),
            maximum,
        }
    }

    /// The alias to send `topic` with, and whether it is new: a new alias is defined by
    /// sending it with the topic, and counts as given only once [`OutgoingAliases::define`]
    /// records it (after the PUBLISH that defines it was actually written).
    pub fn lookup(&self, topic: &str) -> Option<(u16, bool)> {
        if let Some(a) = self.given.get(topic) {
            return Some((*a, false));
        }
        if self.given.len() >= usize::from(self.maximum) {
            return None;
        }
        Some((u16::try_from(self.given.len() + 1).ok()?, true))
    }

    /// Records a new alias sent to the client.
    pub fn define(&mut self, topic: &str, alias: u16) {
        self.given.insert(topic.to_owned(), alias);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incoming_aliases_are_defined_then_used_and_checked() {
        let mut aliases = IncomingAliases::new(10);
        let mut unknown = String::new();
        assert_eq!(
            aliases.resolve(3, &mut unknown),
            Err(AliasError::Unknown(3))
        );
        let mut first = String::from("net/a/b");
        aliases.resolve(3, &mut first).unwrap();
        let mut later = String::new();
        aliases.resolve(3, &mut later).unwrap();
        assert_eq!(later, "net/a/b");
        let mut redefined = String::from("net/c");
        aliases.resolve(3, &mut redefined).unwrap();
        let mut again = String::new();
        aliases.resolve(3, &mut again).unwrap();
        assert_eq!(again, "net/c");
        assert_eq!(
            aliases.resolve(0, &mut String::from("x")),
            Err(AliasError::OutOfRange(0))
        );
        assert_eq!(
            aliases.resolve(11, &mut String::from("x")),
            Err(AliasError::OutOfRange(11))
        );
        assert_eq!(
            IncomingAliases::new(0).resolve(1, &mut String::from("x")),
            Err(AliasError::OutOfRange(1)),
            "no aliases when the server announced none"
        );
    }

    #[test]
    fn aliases_define_once_then_stand_in_and_run_out() {
        let mut aliases = OutgoingAliases::new(2);
        assert_eq!(aliases.lookup("a/1"), Some((1, true)));
        assert_eq!(
            aliases.lookup("a/1"),
            Some((1, true)),
            "not given until the defining PUBLISH is written"
        );
        aliases.define("a/1", 1);
        assert_eq!(aliases.lookup("a/1"), Some((1, false)));
        assert_eq!(aliases.lookup("a/2"), Some((2, true)));
        aliases.define("a/2", 2);
        assert_eq!(aliases.lookup("a/3"), None, "only two aliases were allowed");
        assert_eq!(aliases.lookup("a/2"), Some((2, false)));
        assert_eq!(OutgoingAliases::new(0).lookup("a"), None);
    }
}
