//! What a caller does through the API listener: log in and out of the dashboard, and — as an
//! admin — block or unblock a node and acknowledge an alert. Every action is an event naming
//! who took it (`events.jsonl`), and every refused one is counted and logged.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use samos_schemas::payload::FunctionalMode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::access::Caller;
use super::{Api, Refused, respond};
use crate::protocol::operator::OperatorError;
use crate::refusal::Refusal;

fn session_answer(api: &Api, caller: Option<&Caller>) -> Value {
    json!({
        "role": caller.map(|c| c.role),
        "name": caller.map(|c| c.name.clone()),
        "csrf": caller.and_then(|c| c.csrf.clone()),
        "login_required": api.access.login_required(),
        "network": api.protocol.as_ref().map(|p| p.identity.network.clone()),
    })
}

/// `GET /api/v1/session`: who the caller is and the CSRF token its actions carry; answers
/// (without a role) when nobody is logged in, so the page can offer the login form.
pub(super) async fn session(State(api): State<Arc<Api>>, headers: HeaderMap) -> Response {
    let caller = api.access.caller(&headers).ok();
    (StatusCode::OK, Json(session_answer(&api, caller.as_ref()))).into_response()
}

#[derive(Deserialize)]
pub(super) struct Login {
    token: String,
    #[serde(default)]
    name: String,
}

/// `POST /api/v1/login {"token", "name"}`: a browser session for a viewer or admin token.
pub(super) async fn login(
    State(api): State<Arc<Api>>,
    body: Result<Json<Login>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let result = body
        .map_err(|e| bad_request(&e.body_text()))
        .and_then(|Json(l)| api.access.login(&l.token, &l.name));
    match result {
        Ok((id, caller)) => {
            tracing::info!(name = %caller.name, role = ?caller.role, "dashboard login");
            (
                [(header::SET_COOKIE, api.access.cookie_header(&id))],
                Json(session_answer(&api, Some(&caller))),
            )
                .into_response()
        }
        Err(r) => api.refuse(r),
    }
}

/// `POST /api/v1/logout`.
pub(super) async fn logout(State(api): State<Arc<Api>>, headers: HeaderMap) -> Response {
    api.access.logout(&headers);
    (
        [(header::SET_COOKIE, api.access.cookie_header(""))],
        Json(json!({"ok": true})),
    )
        .into_response()
}

fn bad_request(why: &str) -> Refused {
    Refused(
        StatusCode::BAD_REQUEST,
        Refusal::ApiBadRequest,
        why.to_string(),
    )
}

fn operator_refusal(e: &OperatorError) -> Refused {
    match e {
        OperatorError::UnknownNode { .. } => {
            Refused(StatusCode::NOT_FOUND, Refusal::ApiNotFound, e.to_string())
        }
        OperatorError::NoConfiguration(_) => {
            Refused(StatusCode::CONFLICT, Refusal::ApiBadRequest, e.to_string())
        }
        OperatorError::Mode(_) | OperatorError::InvalidConfiguration(_) => {
            bad_request(&e.to_string())
        }
        OperatorError::NotActive(_) => {
            Refused(StatusCode::CONFLICT, Refusal::ApiBadRequest, e.to_string())
        }
    }
}

#[derive(Deserialize)]
pub(super) struct SetMode {
    mode: String,
}

/// `POST /api/v1/network/{network}/{node}/mode {"mode": "blocked" | "active"}` (admins).
pub(super) async fn set_mode(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath((network, node_id)): UrlPath<(String, String)>,
    body: Result<Json<SetMode>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let result = (|| {
        let caller = api.access.admin(&headers)?;
        let Json(body) = body.map_err(|e| bad_request(&e.body_text()))?;
        let mode = match body.mode.as_str() {
            "blocked" => FunctionalMode::Blocked,
            "active" => FunctionalMode::Active,
            other => return Err(bad_request(&format!("mode {other:?}: blocked or active"))),
        };
        let p = api.protocol()?;
        p.set_functional_mode(&network, &node_id, mode, &caller.name)
            .map_err(|e| operator_refusal(&e))?;
        Ok(
            json!({"network": network, "node_id": node_id, "mode": mode.as_str(), "by": caller.name}),
        )
    })();
    respond(&api, result)
}

#[derive(Deserialize)]
pub(super) struct PushConfig {
    document: String,
}

/// `POST /api/v1/network/{network}/{node}/config {"document": "<xml>"}` (admins): the paper's
/// over-the-air configuration update, checked like a join before it is sent.
pub(super) async fn push_config(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath((network, node_id)): UrlPath<(String, String)>,
    body: Result<Json<PushConfig>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let result = async {
        let caller = api.access.admin(&headers)?;
        let Json(body) = body.map_err(|e| bad_request(&e.body_text()))?;
        let p = api.protocol()?.clone();
        let by = caller.name.clone();
        let (net, node) = (network.clone(), node_id.clone());
        tokio::task::spawn_blocking(move || p.push_configuration(&net, &node, &body.document, &by))
            .await
            .map_err(|e| {
                Refused(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Refusal::ApiBadRequest,
                    e.to_string(),
                )
            })?
            .map_err(|e| operator_refusal(&e))?;
        Ok(json!({"network": network, "node_id": node_id, "pushed": true, "by": caller.name}))
    }
    .await;
    respond(&api, result)
}

/// Which alert: a rule's by its id, or the severity cross-check's by node and time.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum Acknowledge {
    Rule {
        id: String,
    },
    CrossCheck {
        network: String,
        node_id: String,
        alert_time_ms: i64,
    },
}

/// `POST /api/v1/alerts/ack` (admins): `{"id"}` for a firing rule alert (its state becomes
/// acknowledged, notified to the rule's actions), or `{"network", "node_id", "alert_time_ms"}`
/// for an alert of the severity cross-check.
pub(super) async fn acknowledge(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    body: Result<Json<Acknowledge>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let result = (|| {
        let caller = api.access.admin(&headers)?;
        let Json(a) = body.map_err(|e| bad_request(&e.body_text()))?;
        match a {
            Acknowledge::Rule { id } => {
                let found = api
                    .alerts
                    .as_ref()
                    .is_some_and(|alerts| alerts.acknowledge(&id, &caller.name));
                if !found {
                    return Err(Refused(
                        StatusCode::NOT_FOUND,
                        Refusal::ApiNotFound,
                        format!("no firing alert has the id {id:?}"),
                    ));
                }
                Ok(json!({"acknowledged": id, "by": caller.name}))
            }
            Acknowledge::CrossCheck {
                network,
                node_id,
                alert_time_ms,
            } => {
                let p = api.protocol()?;
                p.acknowledge_alert(&network, &node_id, alert_time_ms, &caller.name)
                    .map_err(|e| operator_refusal(&e))?;
                Ok(json!({"acknowledged": alert_time_ms, "by": caller.name}))
            }
        }
    })();
    respond(&api, result)
}

/// `POST /api/v1/clients/{client}/disconnect` (admins): closes the client's connection (MQTT 5
/// clients read DISCONNECT 0x98, administrative action); its session stays as MQTT defines.
pub(super) async fn disconnect(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(client): UrlPath<String>,
) -> Response {
    let result = async {
        let caller = api.access.admin(&headers)?;
        let nodes = api
            .protocol
            .as_ref()
            .map(|p| p.nodes_spoken_for(&client))
            .unwrap_or_default();
        let (reply, answer) = tokio::sync::oneshot::channel();
        let sent = api
            .router
            .tx
            .send(crate::broker::Request::Kick {
                client_id: Arc::from(client.as_str()),
                reply,
            })
            .await;
        let online = sent.is_ok() && answer.await.unwrap_or(false);
        if !online {
            return Err(Refused(
                StatusCode::NOT_FOUND,
                Refusal::ApiNotFound,
                format!("client {client} is not connected"),
            ));
        }
        tracing::info!(client = %client, by = %caller.name, "client disconnected by an admin");
        if let Some(p) = &api.protocol {
            p.record_client_disconnect(&client, &nodes, &caller.name);
        }
        Ok(json!({"client_id": client, "disconnected": true, "by": caller.name}))
    }
    .await;
    respond(&api, result)
}
