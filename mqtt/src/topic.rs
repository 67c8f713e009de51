//! Topic names and topic filters (MQTT 3.1.1 §4.7, MQTT 5 §4.7 and §4.8.2).

/// True when `topic` may be published to: non-empty, no wildcards, no NUL, at most 65,535 bytes.
pub fn valid_topic_name(topic: &str) -> bool {
    !topic.is_empty() && topic.len() <= 65_535 && !topic.contains(['+', '#', '\0'])
}

/// True when `filter` is a well-formed topic filter: `+` fills a whole level, `#` fills the
/// last level alone.
pub fn valid_topic_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.len() > 65_535 || filter.contains('\0') {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return false;
        }
        if level.contains('+') && level != "+" {
            return false;
        }
    }
    true
}

/// A subscription filter, split into its share group (for `$share/{group}/{filter}`) and the
/// filter proper.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SharedFilter<'a> {
    pub group: Option<&'a str>,
    pub filter: &'a str,
}

/// Splits `$share/{group}/{filter}`; `None` when a share is malformed.
pub fn parse_shared(filter: &str) -> Option<SharedFilter<'_>> {
    match filter.strip_prefix("$share/") {
        None => Some(SharedFilter {
            group: None,
            filter,
        }),
        Some(rest) => {
            let (group, inner) = rest.split_once('/')?;
            if group.is_empty() || group.contains(['+', '#']) || inner.is_empty() {
                return None;
            }
            Some(SharedFilter {
                group: Some(group),
                filter: inner,
            })
        }
    }
}

/// Does `filter` match `topic`? Filters starting with a wildcard never match `$` topics.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Substitutes `%u` (user name) and `%c` (client id) in an ACL pattern. An identity containing
/// a wildcard or a level separator cannot widen the pattern: such a substitution never matches.
pub fn substitute(pattern: &str, username: Option<&str>, client_id: &str) -> Option<String> {
    let safe = |s: &str| !s.contains(['+', '#', '/']);
    let mut out = pattern.to_string();
    if out.contains("%u") {
        let u = username.filter(|u| safe(u))?;
        out = out.replace("%u", u);
    }
    if out.contains("%c") {
        if !safe(client_id) {
            return None;
        }
        out = out.replace("%c", client_id);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn filters() {
        for ok in ["#", "+", "a/+/b", "a/#", "+/+", "/", "a//b", "$SYS/#"] {
            assert!(valid_topic_filter(ok), "{ok}");
        }
        for bad in ["", "a/#/b", "a#", "a/b+", "#/a", "a\0"] {
            assert!(!valid_topic_filter(bad), "{bad}");
        }
    }

    #[test]
    fn matching() {
        assert!(matches("a/+/c", "a/b/c"));
        assert!(matches("a/#", "a"));
        assert!(matches("a/#", "a/b/c"));
        assert!(matches("#", "a/b"));
        assert!(!matches("#", "$SYS/x"));
        assert!(!matches("+/x", "$SYS/x"));
        assert!(matches("$SYS/#", "$SYS/x"));
        assert!(!matches("a/+", "a/b/c"));
        assert!(matches("+", ""));
        assert!(matches("/+", "/a"));
        assert!(!matches("a/b", "a/b/c"));
    }

    #[test]
    fn shares() {
        assert_eq!(
            parse_shared("$share/g/a/+"),
            Some(SharedFilter {
                group: Some("g"),
                filter: "a/+"
            })
        );
        assert_eq!(parse_shared("$share/g"), None);
        assert_eq!(parse_shared("$share//a"), None);
        assert_eq!(parse_shared("a").unwrap().group, None);
    }

    #[test]
    fn substitution_cannot_widen() {
        assert_eq!(
            substitute("net/%u/%c/#", Some("n1"), "c1").as_deref(),
            Some("net/n1/c1/#")
        );
        assert_eq!(substitute("net/%u/#", Some("a/#"), "c"), None);
        assert_eq!(substitute("net/%u/#", None, "c"), None);
    }

    /// Reference matcher written from the specification's prose, level by level.
    fn reference(filter: &str, topic: &str) -> bool {
        if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
            return false;
        }
        let f: Vec<&str> = filter.split('/').collect();
        let t: Vec<&str> = topic.split('/').collect();
        for (i, level) in f.iter().enumerate() {
            if *level == "#" {
                return true;
            }
            match t.get(i) {
                None => return false,
                Some(tl) if *level != "+" && level != tl => return false,
                _ => {}
            }
        }
        f.len() == t.len()
    }

    proptest! {
        #[test]
        fn matcher_agrees_with_reference(
            f in proptest::collection::vec(prop_oneof!["a", "b", "\\+", "", "\\$x"], 1..5),
            hash in any::<bool>(),
            t in proptest::collection::vec(prop_oneof!["a", "b", "", "\\$x"], 1..6),
        ) {
            let mut filter = f.join("/");
            if hash { filter.push_str("/#"); }
            let topic = t.join("/");
            prop_assert_eq!(matches(&filter, &topic), reference(&filter, &topic));
        }
    }
}
