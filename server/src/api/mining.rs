//! Mining runs started from the dashboard: `samos mine` as a child process of the server.
//!
//! The server does not link the mining backends (they bring wgpu and the FPGA driver): it runs
//! the binary named by `api.mine_command` (`samos serve` sets it to itself) with the store's
//! data directory, and follows its output. Each line it prints is the job's progress, pushed
//! to the live stream (`mining` events) and kept (the last `KEPT_LINES`); the results are
//! stored by `samos mine` itself in the `motifs`, `discords` and `window_stats` tables. At most
//! `MAX_RUNNING` runs go at once; more are refused, not queued without bound.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::{Api, Refused, respond};
use crate::clock::now_ms;
use crate::refusal::Refusal;

/// Runs at once.
const MAX_RUNNING: usize = 2;
/// Jobs remembered (finished ones are forgotten oldest first).
const MAX_JOBS: usize = 50;
/// Output lines kept per job.
const KEPT_LINES: usize = 40;

#[derive(Debug, Clone, Serialize)]
pub struct Job {
    pub id: u64,
    pub by: String,
    pub node: String,
    pub sensor: String,
    pub window: u32,
    pub backend: String,
    /// `running`, `done` or `failed`.
    pub state: &'static str,
    pub started_ms: i64,
    pub finished_ms: Option<i64>,
    /// The run id `samos mine` gave its results, once printed.
    pub run: Option<String>,
    pub output: VecDeque<String>,
}

#[derive(Default)]
pub struct MiningJobs {
    jobs: Mutex<VecDeque<Job>>,
    next_id: AtomicU64,
}

impl MiningJobs {
    /// Records a new running job with the next id, unless `MAX_RUNNING` are going; forgets
    /// the oldest finished jobs past `MAX_JOBS`.
    fn admit(&self, mut job: Job) -> Option<Job> {
        let mut jobs = self.jobs.lock().expect("mining jobs");
        if jobs.iter().filter(|j| j.state == "running").count() >= MAX_RUNNING {
            return None;
        }
        job.id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        while jobs.len() >= MAX_JOBS {
            let Some(i) = jobs.iter().position(|j| j.state != "running") else {
                break;
            };
            jobs.remove(i);
        }
        jobs.push_back(job.clone());
        Some(job)
    }

    fn update(&self, id: u64, f: impl FnOnce(&mut Job)) -> Option<Job> {
        let mut jobs = self.jobs.lock().expect("mining jobs");
        let job = jobs.iter_mut().find(|j| j.id == id)?;
        f(job);
        Some(job.clone())
    }
}

#[derive(Deserialize)]
pub(super) struct StartRun {
    node: String,
    sensor: String,
    window: u32,
    #[serde(default)]
    backend: Option<String>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
}

fn bad(why: String) -> Refused {
    Refused(StatusCode::BAD_REQUEST, Refusal::ApiBadRequest, why)
}

/// `POST /api/v1/mining/runs {"node", "sensor", "window", "backend"?, "from"?, "to"?}` (admins).
pub(super) async fn start(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    body: Result<Json<StartRun>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let result = (|| {
        let caller = api.access.admin(&headers)?;
        let Json(run) = body.map_err(|e| bad(e.body_text()))?;
        let command = api.config.mine_command.clone().ok_or_else(|| {
            Refused(
                StatusCode::NOT_FOUND,
                Refusal::ApiNotFound,
                "mining from the dashboard needs api.mine_command (samos serve sets it)".into(),
            )
        })?;
        let backend = run.backend.clone().unwrap_or_else(|| "auto".into());
        if !["auto", "cpu", "gpu", "fpga-sim"].contains(&backend.as_str()) {
            return Err(bad(format!(
                "backend {backend:?}: auto, cpu, gpu or fpga-sim"
            )));
        }
        if run.window < 3 || run.node.is_empty() || run.sensor.is_empty() {
            return Err(bad("give node, sensor and a window of at least 3".into()));
        }
        let job = api
            .mining
            .admit(Job {
                id: 0,
                by: caller.name.clone(),
                node: run.node.clone(),
                sensor: run.sensor.clone(),
                window: run.window,
                backend: backend.clone(),
                state: "running",
                started_ms: now_ms(),
                finished_ms: None,
                run: None,
                output: VecDeque::new(),
            })
            .ok_or_else(|| {
                Refused(
                    StatusCode::TOO_MANY_REQUESTS,
                    Refusal::ApiMiningBusy,
                    format!("{MAX_RUNNING} mining runs are going: wait for one to finish"),
                )
            })?;
        spawn_run(&api, command, &run, &backend, job.id);
        Ok(json!({ "job": job }))
    })();
    respond(&api, result)
}

fn spawn_run(api: &Arc<Api>, command: PathBuf, run: &StartRun, backend: &str, id: u64) {
    let mut cmd = tokio::process::Command::new(command);
    cmd.arg("mine")
        .args(["--node", &run.node, "--sensor", &run.sensor])
        .args(["--window", &run.window.to_string(), "--backend", backend])
        .arg("--data-dir")
        .arg(&api.data_dir)
        .envs(api.child_env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (flag, value) in [("--from", &run.from), ("--to", &run.to)] {
        if let Some(v) = value {
            cmd.args([flag, v]);
        }
    }
    let api = api.clone();
    tokio::spawn(async move {
        let publish = |job: Option<Job>| {
            if let (Some(job), Some(p)) = (job, &api.protocol) {
                p.live.publish("mining", None, json!({ "job": job }));
            }
        };
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                publish(api.mining.update(id, |j| {
                    j.state = "failed";
                    j.finished_ms = Some(now_ms());
                    j.output.push_back(format!("cannot start samos mine: {e}"));
                }));
                return;
            }
        };
        let (tx, mut lines) = tokio::sync::mpsc::channel::<String>(64);
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    if tx.send(line).await.is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        while let Some(line) = lines.recv().await {
            publish(api.mining.update(id, |j| {
                if let Some(rest) = line.strip_prefix("run ") {
                    j.run = rest.split_whitespace().next().map(str::to_string);
                }
                if j.output.len() >= KEPT_LINES {
                    j.output.pop_front();
                }
                j.output.push_back(line);
            }));
        }
        let ok = child.wait().await.is_ok_and(|s| s.success());
        publish(api.mining.update(id, |j| {
            j.state = if ok && j.run.is_some() {
                "done"
            } else {
                "failed"
            };
            j.finished_ms = Some(now_ms());
        }));
    });
}

/// `GET /api/v1/mining/runs`: the dashboard's mining jobs, newest first.
pub(super) async fn jobs(State(api): State<Arc<Api>>, headers: HeaderMap) -> Response {
    let result = api.authorize(&headers).map(|_| {
        let jobs: Vec<Value> = api
            .mining
            .jobs
            .lock()
            .expect("mining jobs")
            .iter()
            .rev()
            .map(|j| json!(j))
            .collect();
        json!({ "jobs": jobs })
    });
    respond(&api, result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        Job {
            id: 0,
            by: "alice".into(),
            node: "N".into(),
            sensor: "t".into(),
            window: 8,
            backend: "cpu".into(),
            state: "running",
            started_ms: 0,
            finished_ms: None,
            run: None,
            output: VecDeque::new(),
        }
    }

    #[test]
    fn at_most_two_run_at_once_and_finished_jobs_are_forgotten_oldest_first() {
        let jobs = MiningJobs::default();
        let a = jobs.admit(job()).unwrap();
        let b = jobs.admit(job()).unwrap();
        assert_eq!((a.id, b.id), (1, 2));
        assert!(jobs.admit(job()).is_none(), "a third while two run");
        jobs.update(a.id, |j| j.state = "done");
        let c = jobs.admit(job()).unwrap();
        assert_eq!(c.id, 3);
        for id in [b.id, c.id] {
            jobs.update(id, |j| j.state = "failed");
        }
        for _ in 0..MAX_JOBS {
            let j = jobs.admit(job()).unwrap();
            jobs.update(j.id, |j| j.state = "done");
        }
        let kept = jobs.jobs.lock().unwrap();
        assert_eq!(kept.len(), MAX_JOBS);
        assert!(kept.iter().all(|j| j.id > 3), "the oldest were forgotten");
    }
}
