//! Authentication (password file) and authorization (ACL rules).
//!
//! Password files use Mosquitto's format, `user:$7$iterations$salt$hash` (PBKDF2-SHA512,
//! base64), so a `mosquitto_passwd` file moves over unchanged and `samos passwd` writes files
//! Mosquitto reads. The older `$6$` (salted SHA-512) lines are read too. `samos passwd` uses
//! 210,000 iterations (OWASP's figure for PBKDF2-SHA512) instead of Mosquitto's 101.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha512};

use crate::config::AclRule;
use samos_mqtt::topic;

/// Iterations `samos passwd` uses for new hashes.
pub const DEFAULT_ITERATIONS: u32 = 210_000;

/// Why a password file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read password file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write password file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Format {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// A stored password hash.
#[derive(Clone)]
enum Hash {
    Pbkdf2Sha512 {
        iterations: u32,
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
    Sha512 {
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
}

impl std::fmt::Debug for Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hash(..)")
    }
}

impl Hash {
    fn parse(s: &str) -> Result<Hash, String> {
        let parts: Vec<&str> = s.split('$').collect();
        let b64 = |v: &str| B64.decode(v).map_err(|e| format!("bad base64: {e}"));
        match parts.as_slice() {
            ["", "7", iterations, salt, hash] => Ok(Hash::Pbkdf2Sha512 {
                iterations: iterations
                    .parse()
                    .map_err(|_| format!("bad iteration count {iterations:?}"))?,
                salt: b64(salt)?,
                hash: b64(hash)?,
            }),
            ["", "6", salt, hash] => Ok(Hash::Sha512 {
                salt: b64(salt)?,
                hash: b64(hash)?,
            }),
            _ => Err("unsupported hash format (expected $7$ or $6$)".into()),
        }
    }

    fn new(password: &str, iterations: u32) -> Hash {
        let salt: [u8; 12] = rand::random();
        let mut hash = vec![0u8; 64];
        pbkdf2::pbkdf2_hmac::<Sha512>(password.as_bytes(), &salt, iterations, &mut hash);
        Hash::Pbkdf2Sha512 {
            iterations,
            salt: salt.to_vec(),
            hash,
        }
    }

    fn verify(&self, password: &[u8]) -> bool {
        let computed = match self {
            Hash::Pbkdf2Sha512 {
                iterations,
                salt,
                hash,
            } => {
                let mut out = vec![0u8; hash.len()];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, *iterations, &mut out);
                out
            }
            Hash::Sha512 { salt, .. } => {
                let mut h = Sha512::new();
                h.update(password);
                h.update(salt);
                h.finalize().to_vec()
            }
        };
        let stored = match self {
            Hash::Pbkdf2Sha512 { hash, .. } | Hash::Sha512 { hash, .. } => hash,
        };
        constant_time_eq(&computed, stored)
    }

    fn encode(&self) -> String {
        match self {
            Hash::Pbkdf2Sha512 {
                iterations,
                salt,
                hash,
            } => format!("$7${iterations}${}${}", B64.encode(salt), B64.encode(hash)),
            Hash::Sha512 { salt, hash } => format!("$6${}${}", B64.encode(salt), B64.encode(hash)),
        }
    }
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Users and their password hashes, in file order.
#[derive(Debug, Default, Clone)]
pub struct PasswordFile {
    entries: Vec<(String, Hash)>,
}

impl PasswordFile {
    /// Reads a password file; blank lines and `#` comments are skipped.
    pub fn load(path: &Path) -> Result<PasswordFile, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let format_err = |message: String| AuthError::Format {
                path: path.to_path_buf(),
                line: i + 1,
                message,
            };
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| format_err("expected user:hash".into()))?;
            entries.push((user.to_string(), Hash::parse(hash).map_err(format_err)?));
        }
        Ok(PasswordFile { entries })
    }

    /// Writes the file atomically (temporary file, then rename), readable by its owner only.
    pub fn save(&self, path: &Path) -> Result<(), AuthError> {
        let werr = |source| AuthError::Write {
            path: path.to_path_buf(),
            source,
        };
        let mut text = String::new();
        for (user, hash) in &self.entries {
            text.push_str(user);
            text.push(':');
            text.push_str(&hash.encode());
            text.push('\n');
        }
        let tmp = path.with_extension("tmp");
        {
            use std::io::Write;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(&tmp).map_err(werr)?;
            f.write_all(text.as_bytes()).map_err(werr)?;
            f.sync_all().map_err(werr)?;
        }
        std::fs::rename(&tmp, path).map_err(werr)
    }

    /// Adds or replaces a user's password.
    pub fn set(&mut self, user: &str, password: &str, iterations: u32) {
        let hash = Hash::new(password, iterations);
        match self.entries.iter_mut().find(|(u, _)| u == user) {
            Some(entry) => entry.1 = hash,
            None => self.entries.push((user.to_string(), hash)),
        }
    }

    /// Removes a user; false when there was none.
    pub fn remove(&mut self, user: &str) -> bool {
        let before = self.entries.len();
        self.entries.retain(|(u, _)| u != user);
        before != self.entries.len()
    }

    /// The users in the file.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(u, _)| u.as_str())
    }

    fn get(&self, user: &str) -> Option<&Hash> {
        self.entries.iter().find(|(u, _)| u == user).map(|(_, h)| h)
    }
}

/// A user name and the salted digest of the password it was given with.
type Login = (String, Vec<u8>);

/// Checks credentials against the password file. Successful checks are remembered (keyed by a
/// per-process salted digest of the password) so reconnect storms do not pay the slow hash
/// again, and concurrent checks of the same user and password share one hash (single flight):
/// a thousand nodes sharing a login that reconnect at once cost one PBKDF2, not a thousand.
/// Failed checks are not remembered (a wrong password pays the hash every time; the
/// per-address connection rate bounds how often).
#[derive(Debug)]
pub struct Authenticator {
    passwords: Option<PasswordFile>,
    cache_salt: [u8; 16],
    verified: Mutex<HashMap<String, Vec<u8>>>,
    /// Checks under way, by user and salted digest: later askers await the first one's result.
    in_flight: Mutex<HashMap<Login, Arc<tokio::sync::OnceCell<bool>>>>,
    /// Counts the slow hashes computed (`samos_password_hashes_total`).
    metrics: Arc<crate::metrics::Metrics>,
}

impl Authenticator {
    pub fn new(
        passwords: Option<PasswordFile>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Authenticator {
        Authenticator {
            passwords,
            cache_salt: rand::random(),
            verified: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// Whether a password file is configured at all.
    pub fn has_passwords(&self) -> bool {
        self.passwords.is_some()
    }

    /// Whether the password file names `user`.
    pub fn has_user(&self, user: &str) -> bool {
        self.passwords
            .as_ref()
            .is_some_and(|p| p.get(user).is_some())
    }

    /// Verifies `user`/`password`; runs the slow hash off the async runtime.
    pub async fn verify(self: &Arc<Self>, user: &str, password: &[u8]) -> bool {
        let Some(hash) = self.passwords.as_ref().and_then(|p| p.get(user)).cloned() else {
            return false;
        };
        let mut digest = Sha512::new();
        digest.update(self.cache_salt);
        digest.update(password);
        let key = digest.finalize().to_vec();
        if self.verified.lock().expect("auth cache").get(user) == Some(&key) {
            return true;
        }
        let flight = (user.to_string(), key);
        let cell = self
            .in_flight
            .lock()
            .expect("auth flights")
            .entry(flight.clone())
            .or_default()
            .clone();
        let password = password.to_vec();
        let ok = *cell
            .get_or_init(|| async {
                self.metrics
                    .password_hashes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let ok = tokio::task::spawn_blocking(move || hash.verify(&password))
                    .await
                    .unwrap_or(false);
                if ok {
                    self.verified
                        .lock()
                        .expect("auth cache")
                        .insert(flight.0.clone(), flight.1.clone());
                }
                ok
            })
            .await;
        let mut flights = self.in_flight.lock().expect("auth flights");
        if flights.get(&flight).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            flights.remove(&flight);
        }
        ok
    }
}

/// What a client asks to do with a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Publish,
    Subscribe,
}

/// The configured ACL rules.
///
/// Precedence: `$SYS` (any `$` topic) is published by the server alone; then a deny wins over
/// any allow (among the rules that apply to the client, whatever their order); then a topic is
/// allowed when some applying rule allows it. Without rules, or when every rule only denies,
/// what is not denied is allowed; once a rule allows something (or names nothing at all), what
/// no rule allows is denied.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    rules: Vec<AclRule>,
    /// What no rule allows is denied.
    closed: bool,
}

impl Acl {
    pub fn new(rules: Vec<AclRule>) -> Acl {
        let closed = rules.iter().any(|r| {
            let denies = !r.deny_publish.is_empty() || !r.deny_subscribe.is_empty();
            let allows = !r.publish.is_empty() || !r.subscribe.is_empty();
            allows || !denies
        });
        Acl { rules, closed }
    }

    /// The rules whose selectors match this client.
    fn applying<'a>(
        &'a self,
        username: Option<&'a str>,
        client_id: &'a str,
    ) -> impl Iterator<Item = &'a AclRule> + 'a {
        self.rules.iter().filter(move |r| {
            r.user
                .as_deref()
                .is_none_or(|u| username.is_some_and(|name| glob(u, name)))
                && r.client_id.as_deref().is_none_or(|c| glob(c, client_id))
        })
    }

    /// May this client publish to `topic` / subscribe to `filter`? A subscription is refused
    /// when it lies within a denied filter; one that only overlaps a denied filter is accepted,
    /// and the denied topics are filtered out at delivery ([`Self::read_denied`]).
    pub fn allowed(
        &self,
        access: Access,
        username: Option<&str>,
        client_id: &str,
        topic_or_filter: &str,
    ) -> bool {
        if access == Access::Publish && topic_or_filter.starts_with('$') {
            return false;
        }
        let denied = self
            .applying(username, client_id)
            .flat_map(|r| match access {
                Access::Publish => r.deny_publish.iter(),
                Access::Subscribe => r.deny_subscribe.iter(),
            })
            .any(|pattern| match deny_pattern(pattern, username, client_id) {
                Deny::Never => false,
                Deny::Everything => true,
                Deny::Filter(denied) => match access {
                    Access::Publish => topic::matches(&denied, topic_or_filter),
                    Access::Subscribe => filter_within(&denied, topic_or_filter),
                },
            });
        if denied {
            return false;
        }
        if !self.closed {
            return true;
        }
        self.applying(username, client_id)
            .flat_map(|r| match access {
                Access::Publish => r.publish.iter(),
                Access::Subscribe => r.subscribe.iter(),
            })
            .filter_map(|pattern| topic::substitute(pattern, username, client_id))
            .any(|allowed| match access {
                Access::Publish => topic::matches(&allowed, topic_or_filter),
                Access::Subscribe => filter_within(&allowed, topic_or_filter),
            })
    }

    /// The topics this client may not receive, whatever it subscribed to: its `deny_subscribe`
    /// filters with `%u` / `%c` substituted (empty for almost every client). A connection
    /// checks each delivery against them.
    pub fn read_denied(&self, username: Option<&str>, client_id: &str) -> ReadDenied {
        let mut filters = Vec::new();
        for pattern in self
            .applying(username, client_id)
            .flat_map(|r| r.deny_subscribe.iter())
        {
            match deny_pattern(pattern, username, client_id) {
                Deny::Never => {}
                Deny::Everything => {
                    filters.push("#".to_string());
                    filters.push("$SYS/#".to_string());
                }
                Deny::Filter(f) => filters.push(f),
            }
        }
        ReadDenied(filters)
    }
}

/// Topic filters a client may not receive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadDenied(Vec<String>);

impl ReadDenied {
    /// True when a message on `topic` must not be delivered to this client.
    pub fn denies(&self, topic_name: &str) -> bool {
        self.0.iter().any(|f| topic::matches(f, topic_name))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What a deny pattern means for one client.
enum Deny {
    /// It names an identity the client does not have (`%u` without a user name).
    Never,
    /// The client's identity contains `+`, `#` or `/`: it cannot be substituted safely, so
    /// the rule denies everything (fail closed).
    Everything,
    Filter(String),
}

fn deny_pattern(pattern: &str, username: Option<&str>, client_id: &str) -> Deny {
    if let Some(f) = topic::substitute(pattern, username, client_id) {
        return Deny::Filter(f);
    }
    if pattern.contains("%u") && username.is_none() {
        Deny::Never
    } else {
        Deny::Everything
    }
}

/// Matches `s` against a pattern in which `*` stands for any run of characters.
pub fn glob(pattern: &str, s: &str) -> bool {
    let Some((first, rest)) = pattern.split_once('*') else {
        return pattern == s;
    };
    let Some(mut tail) = s.strip_prefix(first) else {
        return false;
    };
    let mut parts: Vec<&str> = rest.split('*').collect();
    let last = parts.pop().unwrap_or("");
    for part in parts {
        match tail.find(part) {
            Some(i) => tail = &tail[i + part.len()..],
            None => return false,
        }
    }
    tail.len() >= last.len() && tail.ends_with(last)
}

/// True when every topic matched by `requested` is also matched by `allowed`.
pub fn filter_within(allowed: &str, requested: &str) -> bool {
    // A filter starting with a wildcard never reaches `$` topics.
    if requested.starts_with('$') && allowed.starts_with(['+', '#']) {
        return false;
    }
    let mut a = allowed.split('/');
    let mut r = requested.split('/');
    loop {
        match (a.next(), r.next()) {
            (Some("#"), _) => return true,
            (Some(_), Some("#")) => return false,
            (Some("+"), Some(_)) => {}
            (Some(x), Some(y)) if x == y && y != "+" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_checks_of_one_login_share_one_hash_and_later_ones_hit_the_cache() {
        let mut file = PasswordFile::default();
        file.set("node", "secret", 1000);
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let auth = Arc::new(Authenticator::new(Some(file), metrics.clone()));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let results = runtime.block_on(async {
            let checks: Vec<_> = (0..64)
                .map(|_| {
                    let auth = auth.clone();
                    tokio::spawn(async move { auth.verify("node", b"secret").await })
                })
                .collect();
            let mut all = Vec::new();
            for c in checks {
                all.push(c.await.unwrap());
            }
            all
        });
        assert!(results.iter().all(|ok| *ok));
        assert_eq!(
            metrics
                .password_hashes
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        assert!(runtime.block_on(auth.verify("node", b"secret")));
        assert!(!runtime.block_on(auth.verify("node", b"wrong")));
        assert!(!runtime.block_on(auth.verify("nobody", b"secret")));
        assert_eq!(
            metrics
                .password_hashes
                .load(std::sync::atomic::Ordering::Relaxed),
            2
        );
    }

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn mosquitto_pbkdf2_hash_verifies() {
        // `mosquitto_passwd -b f user secret` with mosquitto 2.0 (101 iterations).
        let h = Hash::new("secret", 101);
        let encoded = h.encode();
        assert!(encoded.starts_with("$7$101$"));
        let parsed = Hash::parse(&encoded).unwrap();
        assert!(parsed.verify(b"secret"));
        assert!(!parsed.verify(b"Secret"));
    }

    #[test]
    fn sha512_legacy_hash_verifies() {
        let salt = b"0123456789ab".to_vec();
        let mut d = Sha512::new();
        d.update(b"pw");
        d.update(&salt);
        let line = format!("$6${}${}", B64.encode(&salt), B64.encode(d.finalize()));
        assert!(Hash::parse(&line).unwrap().verify(b"pw"));
    }

    #[test]
    fn file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        let mut f = PasswordFile::default();
        f.set("a", "1", 1000);
        f.set("b", "2", 1000);
        f.set("a", "3", 1000);
        f.save(&path).unwrap();
        let g = PasswordFile::load(&path).unwrap();
        assert_eq!(g.users().collect::<Vec<_>>(), ["a", "b"]);
        assert!(g.get("a").unwrap().verify(b"3"));
        assert!(!g.get("a").unwrap().verify(b"1"));
    }

    #[test]
    fn bad_line_reports_its_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "# c\nuser:$1$x$y\n").unwrap();
        let e = PasswordFile::load(&path).unwrap_err().to_string();
        assert!(e.contains(":2:"), "{e}");
    }

    #[test]
    fn acl_rules() {
        let acl = Acl::new(vec![
            AclRule {
                user: Some("node1".into()),
                publish: vec!["net/%u/#".into()],
                subscribe: vec!["net/%u/+/control".into()],
                ..AclRule::default()
            },
            AclRule {
                subscribe: vec!["public/#".into()],
                ..AclRule::default()
            },
        ]);
        let a = |acc, u: Option<&str>, t| acl.allowed(acc, u, "c", t);
        assert!(a(Access::Publish, Some("node1"), "net/node1/x"));
        assert!(!a(Access::Publish, Some("node1"), "net/node2/x"));
        assert!(!a(Access::Publish, Some("node2"), "net/node2/x"));
        assert!(a(Access::Subscribe, Some("node1"), "net/node1/a/control"));
        assert!(!a(Access::Subscribe, Some("node1"), "net/node1/#"));
        assert!(a(Access::Subscribe, None, "public/a/+"));
        assert!(!a(Access::Subscribe, None, "#"));
        assert!(!Acl::default().allowed(Access::Publish, None, "c", "$SYS/x"));
    }

    #[test]
    fn deny_rules_win_over_allows() {
        let acl = Acl::new(vec![
            AclRule {
                publish: vec!["#".into()],
                subscribe: vec!["#".into()],
                deny_subscribe: vec!["test/nosubscribe".into(), "private/%u/#".into()],
                deny_publish: vec!["readonly/#".into()],
                ..AclRule::default()
            },
            AclRule {
                user: Some("admin".into()),
                publish: vec!["readonly/#".into()],
                ..AclRule::default()
            },
        ]);
        let sub = |u: Option<&str>, f| acl.allowed(Access::Subscribe, u, "c", f);
        let publ = |u: Option<&str>, t| acl.allowed(Access::Publish, u, "c", t);
        assert!(!sub(None, "test/nosubscribe"));
        assert!(sub(None, "test/subscribe"));
        // Overlapping a denied filter is allowed; delivery leaves the denied topics out.
        assert!(sub(None, "#") && sub(None, "test/+"));
        assert!(!sub(Some("ann"), "private/ann/x") && !sub(Some("ann"), "private/ann/#"));
        assert!(sub(Some("ann"), "private/bob/x") && sub(None, "private/ann/x"));
        // A deny wins whatever the order: admin's allow does not lift the general deny.
        assert!(!publ(None, "readonly/a") && !publ(Some("admin"), "readonly/a"));
        assert!(publ(None, "other/a"));
        let read = acl.read_denied(Some("ann"), "c");
        assert!(read.denies("test/nosubscribe") && read.denies("private/ann/x/y"));
        assert!(!read.denies("test/other") && !read.denies("private/bob/x"));
        assert!(acl.read_denied(None, "c").denies("test/nosubscribe"));
        // An identity that would widen the pattern denies everything that rule covers.
        assert!(!sub(Some("a/#"), "anything") && acl.read_denied(Some("a+"), "c").denies("x"));
    }

    #[test]
    fn deny_only_rules_leave_the_rest_open() {
        let acl = Acl::new(vec![AclRule {
            client_id: Some("guest-*".into()),
            deny_publish: vec!["#".into()],
            ..AclRule::default()
        }]);
        assert!(!acl.allowed(Access::Publish, None, "guest-1", "a/b"));
        assert!(acl.allowed(Access::Publish, None, "node-1", "a/b"));
        assert!(acl.allowed(Access::Subscribe, None, "guest-1", "a/#"));
        // A rule that names nothing still closes the list (what no rule allows is denied).
        let closed = Acl::new(vec![AclRule::default()]);
        assert!(!closed.allowed(Access::Publish, None, "c", "a"));
    }

    #[test]
    fn selector_globs() {
        assert!(glob("node-*", "node-7"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "a-x-b-y-c"));
        assert!(!glob("a*b*c", "a-x-c"));
        assert!(!glob("node-*", "gateway"));
        assert!(glob("exact", "exact") && !glob("exact", "exactly"));
        assert!(glob("*-sensor", "lab-sensor") && !glob("ab*ba", "aba"));
    }

    #[test]
    fn within() {
        assert!(filter_within("a/#", "a/+/b"));
        assert!(filter_within("a/+", "a/b"));
        assert!(!filter_within("a/+", "a/#"));
        assert!(!filter_within("a/b", "a/+"));
        assert!(!filter_within("#", "$SYS/#"));
        assert!(filter_within("$SYS/#", "$SYS/broker/+"));
    }
}
