//! Who may read and who may act, on the API listener (the JSON API and the dashboard).
//!
//! Roles: a *viewer* reads everything; an *admin* also acts (blocks and unblocks nodes,
//! acknowledges alerts). A request is one of:
//! - a bearer token: `api.admin_token` gives an admin, `api.token` a viewer (scripts, curl);
//! - a browser session: `POST /api/v1/login` with one of those tokens (and the operator's name,
//!   recorded with each action) sets an `HttpOnly; SameSite=Strict` cookie for
//!   `api.session_hours`;
//! - anonymous: when no token is configured the listener is loopback-only (or explicitly
//!   opened with `allow_anonymous`); a loopback listener with no token treats its local user as
//!   an admin (like the CLI on the same machine), an opened one gives viewers only.
//!
//! The loopback listener's anonymous admin is only for requests addressed to a loopback name
//! (`Host: 127.0.0.1…`, `localhost…`, `[::1]…`): a page on another site whose name an attacker
//! points at 127.0.0.1 (DNS rebinding) is refused.
//!
//! Cross-site requests cannot act: every POST authenticated by a cookie or anonymously must
//! carry `X-Samos-CSRF` equal to its session's token (read from `GET /api/v1/session`, which
//! a foreign page cannot read), and an `Origin` header, when sent, must name this host. Bearer
//! requests carry no ambient credential and need neither.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode, header};

use super::Refused;
use crate::auth::constant_time_eq;
use crate::config::ApiConfig;
use crate::refusal::Refusal;

/// The cookie holding a browser session's id.
pub const SESSION_COOKIE: &str = "samos_session";
/// The header an action carries its CSRF token in.
pub const CSRF_HEADER: &str = "x-samos-csrf";
/// Most browser sessions held at once; the oldest is forgotten past it.
const MAX_SESSIONS: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Admin,
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub role: Role,
    /// Who, as recorded with an action: the name given at login, or how they came in.
    pub name: String,
    /// The CSRF token an action must carry; `None` for bearer requests.
    pub csrf: Option<String>,
}

#[derive(Debug)]
struct Session {
    role: Role,
    name: String,
    csrf: String,
    expires: Instant,
}

pub struct Access {
    admin_token: Option<String>,
    viewer_token: Option<String>,
    /// Role of a request that brings no credential; `None`: refused.
    anonymous: Option<Role>,
    /// The CSRF token of anonymous callers (per server start).
    anonymous_csrf: String,
    session_length: Duration,
    sessions: Mutex<HashMap<String, Session>>,
}

fn random_token() -> String {
    let bytes: [u8; 24] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Access {
    pub fn new(config: &ApiConfig) -> Access {
        let configured = config.token.is_some() || config.admin_token.is_some();
        let anonymous = match (config.allow_anonymous, configured) {
            (true, _) => Some(Role::Viewer),
            (false, false) if config.bind.ip().is_loopback() => Some(Role::Admin),
            (false, _) => None,
        };
        Access {
            admin_token: config.admin_token.clone(),
            viewer_token: config.token.clone(),
            anonymous,
            anonymous_csrf: random_token(),
            session_length: Duration::from_secs(config.session_hours.max(1) * 3600),
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a browser must log in before it sees anything.
    pub fn login_required(&self) -> bool {
        self.anonymous.is_none()
    }

    /// The role a token grants.
    fn token_role(&self, given: &str) -> Option<Role> {
        let matches = |t: &Option<String>| {
            t.as_ref()
                .is_some_and(|t| constant_time_eq(given.as_bytes(), t.as_bytes()))
        };
        if matches(&self.admin_token) {
            Some(Role::Admin)
        } else if matches(&self.viewer_token) {
            Some(Role::Viewer)
        } else {
            None
        }
    }

    /// Who sent this request, or why it is refused (401).
    pub fn caller(&self, headers: &HeaderMap) -> Result<Caller, Refused> {
        let unauthorized = |why: &str| {
            Refused(
                StatusCode::UNAUTHORIZED,
                Refusal::ApiUnauthorized,
                why.to_string(),
            )
        };
        if let Some(auth) = headers.get(header::AUTHORIZATION) {
            let given = auth
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            return match self.token_role(given) {
                Some(role) => Ok(Caller {
                    role,
                    name: format!("{} token", role_name(role)),
                    csrf: None,
                }),
                None => Err(unauthorized("missing or wrong bearer token")),
            };
        }
        if let Some(id) = cookie(headers, SESSION_COOKIE) {
            let sessions = self.sessions.lock().expect("sessions");
            if let Some(s) = sessions.get(id).filter(|s| s.expires > Instant::now()) {
                return Ok(Caller {
                    role: s.role,
                    name: s.name.clone(),
                    csrf: Some(s.csrf.clone()),
                });
            }
        }
        match self.anonymous {
            Some(Role::Admin) if !addressed_to_loopback(headers) => Err(unauthorized(
                "the local operator's access is for requests to a loopback address \
                 (127.0.0.1, localhost, [::1]); configure api.token for other names",
            )),
            Some(role) => Ok(Caller {
                role,
                name: "local operator".into(),
                csrf: Some(self.anonymous_csrf.clone()),
            }),
            None => Err(unauthorized(
                "missing or wrong bearer token (or log in: POST /api/v1/login)",
            )),
        }
    }

    /// The caller, when it may act: an admin, and for cookie or anonymous callers a matching
    /// CSRF token and a same-origin request.
    pub fn admin(&self, headers: &HeaderMap) -> Result<Caller, Refused> {
        let caller = self.caller(headers)?;
        if caller.role != Role::Admin {
            return Err(Refused(
                StatusCode::FORBIDDEN,
                Refusal::ApiForbidden,
                format!("{} may read but not act: an admin is needed", caller.name),
            ));
        }
        if let Some(expected) = &caller.csrf {
            let given = headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !constant_time_eq(given.as_bytes(), expected.as_bytes()) || !same_origin(headers) {
                return Err(Refused(
                    StatusCode::FORBIDDEN,
                    Refusal::ApiCsrf,
                    "an action needs the X-Samos-CSRF token of GET /api/v1/session and a \
                     same-origin request"
                        .into(),
                ));
            }
        }
        Ok(caller)
    }

    /// Opens a browser session for a valid token; returns the cookie's value and the caller.
    pub fn login(&self, token: &str, name: &str) -> Result<(String, Caller), Refused> {
        let role = self.token_role(token).ok_or_else(|| {
            Refused(
                StatusCode::UNAUTHORIZED,
                Refusal::ApiUnauthorized,
                "wrong token".into(),
            )
        })?;
        let name = match name.trim() {
            "" => format!("{} token", role_name(role)),
            n => n.chars().take(64).collect(),
        };
        let (id, csrf) = (random_token(), random_token());
        let mut sessions = self.sessions.lock().expect("sessions");
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(
            id.clone(),
            Session {
                role,
                name: name.clone(),
                csrf: csrf.clone(),
                expires: now + self.session_length,
            },
        );
        Ok((
            id,
            Caller {
                role,
                name,
                csrf: Some(csrf),
            },
        ))
    }

    /// Ends the browser session this request carries, if any.
    pub fn logout(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers, SESSION_COOKIE) {
            self.sessions.lock().expect("sessions").remove(id);
        }
    }

    /// The `Set-Cookie` value for a session id (an empty id clears the cookie).
    pub fn cookie_header(&self, id: &str) -> String {
        let max_age = if id.is_empty() {
            0
        } else {
            self.session_length.as_secs()
        };
        format!("{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}")
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Viewer => "viewer",
        Role::Admin => "admin",
    }
}

/// The value of cookie `name` in the request.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether the request names a loopback host (or none: HTTP/1.0 clients).
fn addressed_to_loopback(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _port)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// No `Origin`, or one whose host is the `Host` the request was sent to.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("");
    !host.is_empty() && origin_host == host
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn config(token: Option<&str>, admin: Option<&str>) -> ApiConfig {
        ApiConfig {
            token: token.map(Into::into),
            admin_token: admin.map(Into::into),
            ..ApiConfig::default()
        }
    }

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn tokens_give_roles_and_nothing_else_gets_in() {
        let a = Access::new(&config(Some("v"), Some("a")));
        assert!(a.login_required());
        let bearer = |t: &str| headers(&[(header::AUTHORIZATION, &format!("Bearer {t}"))]);
        assert_eq!(a.caller(&bearer("v")).unwrap().role, Role::Viewer);
        assert_eq!(a.caller(&bearer("a")).unwrap().role, Role::Admin);
        assert!(a.caller(&bearer("x")).is_err());
        assert!(a.caller(&HeaderMap::new()).is_err());
        assert_eq!(a.admin(&bearer("v")).unwrap_err().1, Refusal::ApiForbidden);
        assert!(
            a.admin(&bearer("a")).is_ok(),
            "bearer requests need no CSRF token"
        );
    }

    #[test]
    fn a_loopback_listener_without_tokens_trusts_its_local_user_but_not_other_sites() {
        let a = Access::new(&config(None, None));
        assert!(!a.login_required());
        let me = a.caller(&HeaderMap::new()).unwrap();
        assert_eq!(me.role, Role::Admin);
        let csrf = me.csrf.unwrap();
        assert_eq!(
            a.admin(&HeaderMap::new()).unwrap_err().1,
            Refusal::ApiCsrf,
            "no CSRF token"
        );
        let same = headers(&[
            (header::HOST, "127.0.0.1:9884"),
            (header::ORIGIN, "http://127.0.0.1:9884"),
            (header::HeaderName::from_static(CSRF_HEADER), &csrf),
        ]);
        assert!(a.admin(&same).is_ok());
        let foreign = headers(&[
            (header::HOST, "127.0.0.1:9884"),
            (header::ORIGIN, "http://evil.example"),
            (header::HeaderName::from_static(CSRF_HEADER), &csrf),
        ]);
        assert_eq!(a.admin(&foreign).unwrap_err().1, Refusal::ApiCsrf);
        let opened = Access::new(&ApiConfig {
            allow_anonymous: true,
            ..config(None, None)
        });
        assert_eq!(opened.caller(&HeaderMap::new()).unwrap().role, Role::Viewer);
    }

    #[test]
    fn the_local_operator_is_only_for_loopback_names() {
        let a = Access::new(&config(None, None));
        for host in [
            "127.0.0.1:9884",
            "localhost:9884",
            "[::1]:9884",
            "127.0.0.2",
            "LOCALHOST",
        ] {
            let h = headers(&[(header::HOST, host)]);
            assert_eq!(a.caller(&h).unwrap().role, Role::Admin, "{host}");
        }
        for host in ["evil.example:9884", "10.0.0.5:9884", "[2001:db8::1]:9884"] {
            let h = headers(&[(header::HOST, host)]);
            assert!(
                a.caller(&h).is_err(),
                "{host} must not be the local operator"
            );
        }
    }

    #[test]
    fn a_login_session_lives_in_a_cookie_and_ends_at_logout() {
        let a = Access::new(&config(Some("v"), Some("a")));
        assert!(a.login("nope", "eve").is_err());
        let (id, caller) = a.login("a", "alice").unwrap();
        assert_eq!((caller.role, caller.name.as_str()), (Role::Admin, "alice"));
        let with_cookie = headers(&[(header::COOKIE, &format!("x=1; {SESSION_COOKIE}={id}"))]);
        let c = a.caller(&with_cookie).unwrap();
        assert_eq!(c.name, "alice");
        let mut acting = with_cookie.clone();
        acting.insert(
            header::HeaderName::from_static(CSRF_HEADER),
            HeaderValue::from_str(&c.csrf.unwrap()).unwrap(),
        );
        assert!(a.admin(&acting).is_ok());
        a.logout(&with_cookie);
        assert!(a.caller(&with_cookie).is_err());
        assert!(a.cookie_header(&id).contains("HttpOnly; SameSite=Strict"));
    }
}
