//! The subscription table: a trie over topic levels, with shared-subscription groups.

use std::collections::HashMap;
use std::sync::Arc;

use mqttbytes::QoS;

use samos_mqtt::topic::parse_shared;

/// How a client subscribed (MQTT 5 subscription options; 3.x clients get the defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubOptions {
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    /// 0: send retained on subscribe, 1: only if new, 2: never.
    pub retain_handling: u8,
    pub subscription_id: Option<usize>,
}

/// One subscriber of a matched message, merged over all of its matching subscriptions.
#[derive(Debug, Clone)]
pub struct Match {
    pub client: Arc<str>,
    pub qos: QoS,
    pub retain_as_published: bool,
    pub subscription_ids: Vec<usize>,
}

#[derive(Debug, Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    plus: Option<Box<Node>>,
    hash: HashMap<Arc<str>, SubOptions>,
    /// Subscribers whose filter ends here (exactly).
    here: HashMap<Arc<str>, SubOptions>,
    /// Shared groups whose filter ends here or at `#` below (`shared_hash`).
    shared: HashMap<Box<str>, SharedGroup>,
    shared_hash: HashMap<Box<str>, SharedGroup>,
}

#[derive(Debug, Default)]
struct SharedGroup {
    members: Vec<(Arc<str>, SubOptions)>,
    next: usize,
}

impl SharedGroup {
    fn pick(&mut self) -> Option<&(Arc<str>, SubOptions)> {
        if self.members.is_empty() {
            return None;
        }
        let i = self.next % self.members.len();
        self.next = self.next.wrapping_add(1);
        self.members.get(i)
    }
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.plus.is_none()
            && self.hash.is_empty()
            && self.here.is_empty()
            && self.shared.is_empty()
            && self.shared_hash.is_empty()
    }
}

/// All subscriptions of all sessions.
#[derive(Debug, Default)]
pub struct SubscriptionTable {
    root: Node,
    count: usize,
}

impl SubscriptionTable {
    /// Number of subscriptions.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Adds or replaces `client`'s subscription to `filter` (which may be `$share/g/...`).
    /// Returns true when it replaced an existing one.
    pub fn insert(&mut self, client: &Arc<str>, filter: &str, options: SubOptions) -> bool {
        let Some(shared) = parse_shared(filter) else {
            return false;
        };
        let (node, last_is_hash) = Self::walk_mut(&mut self.root, shared.filter);
        let replaced = match shared.group {
            None => {
                let map = if last_is_hash {
                    &mut node.hash
                } else {
                    &mut node.here
                };
                map.insert(client.clone(), options).is_some()
            }
            Some(group) => {
                let groups = if last_is_hash {
                    &mut node.shared_hash
                } else {
                    &mut node.shared
                };
                let g = groups.entry(group.into()).or_default();
                match g.members.iter_mut().find(|(c, _)| c == client) {
                    Some(m) => {
                        m.1 = options;
                        true
                    }
                    None => {
                        g.members.push((client.clone(), options));
                        false
                    }
                }
            }
        };
        if !replaced {
            self.count += 1;
        }
        replaced
    }

    /// Removes `client`'s subscription to `filter`; false when there was none.
    pub fn remove(&mut self, client: &str, filter: &str) -> bool {
        let Some(shared) = parse_shared(filter) else {
            return false;
        };
        let levels: Vec<&str> = shared.filter.split('/').collect();
        let removed = Self::remove_at(&mut self.root, &levels, shared.group, client);
        if removed {
            self.count -= 1;
        }
        removed
    }

    fn remove_at(node: &mut Node, levels: &[&str], group: Option<&str>, client: &str) -> bool {
        let (first, rest) = match levels {
            [] => unreachable!("a filter has at least one level"),
            [only] if *only == "#" => {
                return Self::remove_member(&mut node.hash, &mut node.shared_hash, group, client);
            }
            [first, rest @ ..] => (*first, rest),
        };
        let child = if first == "+" {
            node.plus.as_deref_mut()
        } else {
            node.children.get_mut(first)
        };
        let Some(child) = child else {
            return false;
        };
        let removed = if rest.is_empty() {
            Self::remove_member(&mut child.here, &mut child.shared, group, client)
        } else {
            Self::remove_at(child, rest, group, client)
        };
        if removed && child.is_empty() {
            if first == "+" {
                node.plus = None;
            } else {
                node.children.remove(first);
            }
        }
        removed
    }

    fn remove_member(
        plain: &mut HashMap<Arc<str>, SubOptions>,
        shared: &mut HashMap<Box<str>, SharedGroup>,
        group: Option<&str>,
        client: &str,
    ) -> bool {
        match group {
            None => plain.remove(client).is_some(),
            Some(g) => {
                let Some(sg) = shared.get_mut(g) else {
                    return false;
                };
                let before = sg.members.len();
                sg.members.retain(|(c, _)| &**c != client);
                let removed = sg.members.len() != before;
                if sg.members.is_empty() {
                    shared.remove(g);
                }
                removed
            }
        }
    }

    fn walk_mut<'a>(root: &'a mut Node, filter: &str) -> (&'a mut Node, bool) {
        let mut node = root;
        let mut levels = filter.split('/').peekable();
        while let Some(level) = levels.next() {
            if level == "#" && levels.peek().is_none() {
                return (node, true);
            }
            node = if level == "+" {
                node.plus.get_or_insert_with(Default::default)
            } else {
                node.children.entry(level.into()).or_default()
            };
        }
        (node, false)
    }

    /// Every client that should receive a message on `topic`, once each, at the highest QoS
    /// of its matching subscriptions. `publisher` is skipped where it subscribed with no-local.
    /// Shared groups deliver to one member each, round robin.
    pub fn matches(&mut self, topic: &str, publisher: Option<&str>) -> Vec<Match> {
        let mut out = Vec::new();
        self.matches_into(topic, publisher, &mut out);
        out
    }

    /// [`Self::matches`] into a caller's buffer (cleared first), allocation-free on the hot path.
    pub fn matches_into(&mut self, topic: &str, publisher: Option<&str>, out: &mut Vec<Match>) {
        out.clear();
        let levels: smallvec::SmallVec<[&str; 16]> = topic.split('/').collect();
        let dollar = topic.starts_with('$');
        Self::collect(&mut self.root, &levels, 0, dollar, publisher, out);
    }

    fn collect(
        node: &mut Node,
        levels: &[&str],
        depth: usize,
        dollar: bool,
        publisher: Option<&str>,
        out: &mut Vec<Match>,
    ) {
        // Wildcards at the first level never match `$` topics.
        let wild_ok = !(dollar && depth == 0);
        if wild_ok {
            for (c, o) in &node.hash {
                add(out, c, o, publisher);
            }
            for g in node.shared_hash.values_mut() {
                if let Some((c, o)) = g.pick() {
                    add(out, c, o, publisher);
                }
            }
        }
        let Some((level, rest)) = levels.split_first() else {
            for (c, o) in &node.here {
                add(out, c, o, publisher);
            }
            for g in node.shared.values_mut() {
                if let Some((c, o)) = g.pick() {
                    add(out, c, o, publisher);
                }
            }
            return;
        };
        if let Some(child) = node.children.get_mut(*level) {
            Self::collect(child, rest, depth + 1, dollar, publisher, out);
        }
        if wild_ok && let Some(plus) = node.plus.as_deref_mut() {
            Self::collect(plus, rest, depth + 1, dollar, publisher, out);
        }
    }
}

fn add(out: &mut Vec<Match>, client: &Arc<str>, o: &SubOptions, publisher: Option<&str>) {
    if o.no_local && publisher == Some(&**client) {
        return;
    }
    match out
        .iter_mut()
        .find(|m| Arc::ptr_eq(&m.client, client) || m.client == *client)
    {
        Some(m) => {
            if o.qos > m.qos {
                m.qos = o.qos;
            }
            m.retain_as_published |= o.retain_as_published;
            m.subscription_ids.extend(o.subscription_id);
        }
        None => out.push(Match {
            client: client.clone(),
            qos: o.qos,
            retain_as_published: o.retain_as_published,
            subscription_ids: o.subscription_id.into_iter().collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use samos_mqtt::topic;

    fn opts(qos: QoS, id: Option<usize>) -> SubOptions {
        SubOptions {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: 0,
            subscription_id: id,
        }
    }

    #[test]
    fn overlapping_subscriptions_deliver_once_at_highest_qos() {
        let mut t = SubscriptionTable::default();
        let a: Arc<str> = "a".into();
        t.insert(&a, "x/+", opts(QoS::AtMostOnce, Some(1)));
        t.insert(&a, "x/#", opts(QoS::ExactlyOnce, Some(2)));
        t.insert(&a, "x/y", opts(QoS::AtLeastOnce, None));
        let m = t.matches("x/y", None);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].qos, QoS::ExactlyOnce);
        let mut ids = m[0].subscription_ids.clone();
        ids.sort();
        assert_eq!(ids, [1, 2]);
    }

    #[test]
    fn no_local_and_dollar_topics() {
        let mut t = SubscriptionTable::default();
        let a: Arc<str> = "a".into();
        t.insert(
            &a,
            "#",
            SubOptions {
                no_local: true,
                ..opts(QoS::AtMostOnce, None)
            },
        );
        assert!(t.matches("x", Some("a")).is_empty());
        assert_eq!(t.matches("x", Some("b")).len(), 1);
        assert!(t.matches("$SYS/x", None).is_empty());
    }

    #[test]
    fn shared_groups_round_robin() {
        let mut t = SubscriptionTable::default();
        for c in ["a", "b"] {
            let c: Arc<str> = c.into();
            t.insert(&c, "$share/g/s/#", opts(QoS::AtLeastOnce, None));
        }
        let got: Vec<String> = (0..4)
            .map(|_| t.matches("s/1", None)[0].client.to_string())
            .collect();
        assert_eq!(got, ["a", "b", "a", "b"]);
        assert!(t.remove("a", "$share/g/s/#"));
        assert_eq!(&*t.matches("s/1", None)[0].client, "b");
    }

    #[test]
    fn remove_prunes() {
        let mut t = SubscriptionTable::default();
        let a: Arc<str> = "a".into();
        t.insert(&a, "a/+/c", opts(QoS::AtMostOnce, None));
        assert!(!t.remove("a", "a/+/d"));
        assert!(t.remove("a", "a/+/c"));
        assert!(t.root.is_empty());
        assert_eq!(t.len(), 0);
    }

    proptest! {
        /// The trie agrees with matching every filter by hand.
        #[test]
        fn trie_agrees_with_linear_scan(
            filters in proptest::collection::vec(
                proptest::collection::vec(prop_oneof!["a", "b", "\\+", "#", "\\$s"], 1..4), 1..8),
            topic in proptest::collection::vec(prop_oneof!["a", "b", "\\$s", ""], 1..4),
        ) {
            let mut t = SubscriptionTable::default();
            let mut valid = Vec::new();
            for (i, f) in filters.iter().enumerate() {
                let f = f.join("/");
                if !topic::valid_topic_filter(&f) { continue; }
                let client: Arc<str> = format!("c{i}").into();
                t.insert(&client, &f, opts(QoS::AtMostOnce, None));
                valid.push((client, f));
            }
            let topic = topic.join("/");
            let mut got: Vec<String> = t.matches(&topic, None).iter().map(|m| m.client.to_string()).collect();
            got.sort();
            let mut want: Vec<String> = valid.iter().filter(|(_, f)| topic::matches(f, &topic)).map(|(c, _)| c.to_string()).collect();
            want.sort();
            prop_assert_eq!(got, want);
        }
    }
}
