//! `GET /api/v1/live[?network=NET&node=ID]`: the dashboard's live stream (server-sent events).
//!
//! Events: `stats` every second (the counters of `/api/v1/overview` plus rates over the last
//! second); `event` (a line of `events.jsonl`: joins, blocks, alerts, acknowledgements) and
//! `refused` (a line of `rejected.jsonl`) as they happen; with `node=`, `readings` twice a
//! second with that node's accepted readings since the last; `lagged` when this stream fell
//! behind the feed and missed entries (the page then reloads what it shows); `mining` with a
//! dashboard mining run's progress.
//!
//! Invariants: a stream never slows ingest. It reads the protocol's bounded broadcast feeds
//! (`crate::live`: one for events, one per watched node for its readings), which drop the
//! oldest entries for a reader that falls behind instead of waiting; if the browser stops
//! reading, the HTTP body stops being polled and this stream lags likewise. Readings are
//! buffered per stream up to `MAX_READINGS` between flushes.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::broadcast::{self, error::RecvError};

use super::{Api, Params};
use crate::live::{LiveEvent, NodeWatch};

/// Most readings one stream holds between two flushes; older ones are thinned out.
const MAX_READINGS: usize = 1000;

/// Counts a stream in `Api::live_streams` while it lives.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

struct LiveStream {
    _slot: Slot,
    api: Arc<Api>,
    feed: Option<broadcast::Receiver<Arc<LiveEvent>>>,
    /// The node whose readings the page shows (network, node id), if any.
    wanted: Option<(String, String)>,
    /// Its readings, once it is in the registry (looked up again each second until then).
    node: Option<(broadcast::Receiver<Arc<Value>>, NodeWatch)>,
    stats_tick: tokio::time::Interval,
    readings_tick: tokio::time::Interval,
    readings: VecDeque<Value>,
    thinned: u64,
    /// The previous tick's counters and their time (ms).
    previous: Option<(i64, Value)>,
}

fn event(name: &str, data: &Value) -> Event {
    Event::default().event(name).data(data.to_string())
}

impl LiveStream {
    async fn next_event(&mut self) -> Event {
        loop {
            let feed = async {
                match &mut self.feed {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            let watching = self.wanted.is_some();
            let readings = async {
                match &mut self.node {
                    Some((rx, _)) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.stats_tick.tick() => {
                    if self.node.is_none() {
                        self.node = self.watch_wanted();
                    }
                    let stats = self.stats();
                    return event("stats", &stats);
                }
                _ = self.readings_tick.tick(), if watching => {
                    if !self.readings.is_empty() {
                        let data = json!({
                            "readings": self.readings.drain(..).collect::<Vec<_>>(),
                            "thinned": std::mem::take(&mut self.thinned),
                        });
                        return event("readings", &data);
                    }
                }
                received = feed => match received {
                    Ok(e) => return event(e.kind, &e.data),
                    Err(RecvError::Lagged(missed)) => {
                        return event("lagged", &json!({ "missed": missed }));
                    }
                    Err(RecvError::Closed) => self.feed = None,
                },
                received = readings => match received {
                    Ok(r) => {
                        if self.readings.len() >= MAX_READINGS {
                            self.readings.pop_front();
                            self.thinned += 1;
                        }
                        self.readings.push_back(Value::clone(&r));
                    }
                    Err(RecvError::Lagged(missed)) => self.thinned += missed,
                    Err(RecvError::Closed) => self.node = None,
                },
            }
        }
    }

    /// The wanted node's readings, if it has joined by now.
    fn watch_wanted(&self) -> Option<(broadcast::Receiver<Arc<Value>>, NodeWatch)> {
        let (network, node_id) = self.wanted.as_ref()?;
        let node = self.api.protocol.as_ref()?.registry.get(network, node_id)?;
        Some(node.live.watch())
    }

    /// The counters now, with per-second rates since the previous tick.
    fn stats(&mut self) -> Value {
        let mut now = Value::clone(&self.api.counters());
        let at = now["time_ms"].as_i64().unwrap_or(0);
        if let Some((then, before)) = &self.previous
            && at > *then
        {
            let secs = (at - then) as f64 / 1000.0;
            for (counter, rate) in [
                ("readings_committed", "readings_per_s"),
                ("refusals_total", "refusals_per_s"),
                ("messages_received", "messages_in_per_s"),
                ("messages_sent", "messages_out_per_s"),
            ] {
                let delta = now[counter]
                    .as_u64()
                    .unwrap_or(0)
                    .saturating_sub(before[counter].as_u64().unwrap_or(0));
                now[rate] = json!(delta as f64 / secs);
            }
        }
        self.previous = Some((at, now.clone()));
        now
    }
}

pub(super) async fn live(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    Query(p): Params,
) -> Response {
    if let Err(r) = api.authorize(&headers) {
        return api.refuse(r);
    }
    let open = api.live_streams.fetch_add(1, Ordering::Relaxed);
    let slot = Slot(api.live_streams.clone());
    if open >= api.config.max_live_streams {
        drop(slot);
        return api.refuse(super::Refused(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            crate::refusal::Refusal::ApiLiveStreamsFull,
            format!("{open} live streams are open (api.max_live_streams): close a dashboard tab"),
        ));
    }
    let feed = api.protocol.as_ref().map(|p| p.live.subscribe());
    let wanted = match (&api.protocol, p.get("node")) {
        (Some(protocol), Some(node_id)) => {
            let network = p
                .get("network")
                .cloned()
                .unwrap_or_else(|| protocol.identity.network.clone());
            Some((network, node_id.clone()))
        }
        _ => None,
    };
    let interval = |ms| {
        let mut i = tokio::time::interval(Duration::from_millis(ms));
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    };
    let stream = LiveStream {
        _slot: slot,
        api,
        feed,
        wanted,
        node: None,
        stats_tick: interval(1000),
        readings_tick: interval(500),
        readings: VecDeque::new(),
        thinned: 0,
        previous: None,
    };
    let events = futures_util::stream::unfold(stream, |mut s| async move {
        let e = s.next_event().await;
        Some((Ok::<_, Infallible>(e), s))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}
