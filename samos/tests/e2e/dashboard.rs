//! The operator dashboard in a real browser: Debian's Chromium, headless, driven through
//! chromedriver (WebDriver, with fantoccini) against `samos serve` and `samos simulate` on
//! ephemeral ports. With `SAMOS_SCREENSHOTS=1` the screenshots go to `docs/` (the README shows
//! them); otherwise into the test's temporary directory.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test, with its message

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::TestServer;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const VIEWER: &str = "viewer-secret-1";
const ADMIN: &str = "admin-secret-1";
const WAIT: Duration = Duration::from_secs(60);

/// chromedriver and the browser session it drives; both end on drop.
struct Browser {
    driver: Child,
    client: Option<Client>,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        let driver_bin = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("chromedriver is not installed: run scripts/setup.sh (chromium-driver)");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let profile = tempfile::tempdir().unwrap();
        let caps: serde_json::Map<String, Value> = serde_json::from_value(json!({
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,800", "--hide-scrollbars",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }
        }))
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(c) => break c,
                Err(e) => {
                    assert!(Instant::now() < deadline, "no browser session: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        Browser {
            driver,
            client: Some(client),
            _profile: profile,
        }
    }

    fn c(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    /// The first element matching `css` once it exists.
    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.c()
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} on the page: {e}"))
    }

    /// Polls `check` (a script returning a value) until `done` holds for its result.
    async fn until(&self, what: &str, script: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let v = self
                .c()
                .execute(script, vec![])
                .await
                .unwrap_or(Value::Null);
            if done(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "{what}: last seen {v}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn screenshot(&self, dir: &Path, name: &str) {
        let png = self.c().screenshot().await.unwrap();
        std::fs::write(dir.join(format!("dashboard-{name}.png")), png).unwrap();
    }

    /// Follows an in-page link (the page's router, no reload).
    /// Clicks the element, scrolled to the middle of the window (clear of the sticky header).
    async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.c()
            .execute(
                "arguments[0].scrollIntoView({block: 'center'})",
                vec![serde_json::to_value(&e).unwrap()],
            )
            .await
            .unwrap();
        e.click().await.unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            // Ending the session stops Chromium; chromedriver is killed after it.
            let _ = futures_block(c.close());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn futures_block<F: Future>(f: F) -> Option<F::Output> {
    let handle = tokio::runtime::Handle::try_current().ok()?;
    Some(tokio::task::block_in_place(|| handle.block_on(f)))
}

fn screenshot_dir(server: &TestServer) -> PathBuf {
    if std::env::var_os("SAMOS_SCREENSHOTS").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
        std::fs::create_dir_all(&docs).unwrap();
        docs
    } else {
        server.data_dir()
    }
}

fn simulate(server: &TestServer, nodes: usize) -> Child {
    Command::new(common::samos_bin())
        .args([
            "simulate",
            "--server",
            &server.mqtt[0].to_string(),
            "--nodes",
            &nodes.to_string(),
            "--ramp",
            "1",
            "--speed",
            "600",
            "--quiet",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start samos simulate")
}

/// A script's `fetch` of `path` from the page (with its session cookie): status and body.
fn fetch_script(path: &str, method: &str, body: Option<&Value>) -> String {
    let init = match body {
        Some(b) => format!(
            "{{method: {method:?}, headers: {{'Content-Type': 'application/json', \
             'X-Samos-CSRF': window.__csrf || ''}}, body: JSON.stringify({b})}}"
        ),
        None => format!("{{method: {method:?}}}"),
    };
    format!(
        "const done = arguments[arguments.length - 1];\
         fetch({path:?}, {init}).then(async r => done([r.status, await r.text()]))\
         .catch(e => done([0, String(e)]));"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_and_steers_the_network_in_a_real_browser() {
    let server = TestServer::with_config(&format!(
        "[api]\ntoken = {VIEWER:?}\nadmin_token = {ADMIN:?}\n[storage]\nparquet_rotate_secs = 2\n\
         [alerts]\neval_interval_ms = 500\n\
         [[alerts.rule]]\nname = \"watch\"\nseverity = \"info\"\n\
         when = \"node_id = 'SIM004' AND sensor = 'indoorTemperatureSensor'\"\n"
    ));
    let api = server.api.unwrap();
    let base = format!("http://{api}");
    let shots = screenshot_dir(&server);
    let mut sim = simulate(&server, 5);
    let b = Browser::start().await;

    // Without a login nothing is shown; the admin logs in with a name.
    b.c().goto(&format!("{base}/")).await.unwrap();
    b.find("#login-token").await.send_keys(ADMIN).await.unwrap();
    b.find("#login-name")
        .await
        .send_keys("alice")
        .await
        .unwrap();
    b.click("#login-submit").await;
    b.find("#card-readings").await;

    // Overview: the counters move without a reload.
    let readings = "return document.querySelector('#card-readings .value').textContent";
    let first = b
        .until("readings counted", readings, |v| {
            v.as_str().is_some_and(|s| s != "0")
        })
        .await;
    b.until("the readings counter moves", readings, |v| *v != first)
        .await;
    b.until(
        "the rate chart draws live points",
        "const c = document.querySelector('.chart[data-points]'); return c && document.querySelector('.uplot') ? Number(c.getAttribute('data-points')) : 0",
        |v| v.as_u64() >= Some(5),
    )
    .await;
    b.screenshot(&shots, "overview").await;

    // Nodes: the five simulated nodes, active, grouped by location.
    b.click("nav a[href='/nodes']").await;
    b.until(
        "five active nodes",
        "return [...document.querySelectorAll('#nodes tr[data-node] .mode-active')].length",
        |v| v.as_u64() == Some(5),
    )
    .await;
    assert_eq!(
        b.c().current_url().await.unwrap().path(),
        "/nodes",
        "every page has a URL"
    );
    b.screenshot(&shots, "nodes").await;

    // Dark theme, and a phone-width window: the page never scrolls sideways (wide tables
    // scroll inside their panel).
    b.click("#theme").await;
    let theme = b
        .c()
        .execute("return document.documentElement.dataset.theme", vec![])
        .await
        .unwrap();
    assert!(theme == "dark" || theme == "light", "{theme}");
    if theme == "light" {
        b.click("#theme").await;
    }
    b.c().set_window_size(390, 844).await.unwrap();
    b.until(
        "no sideways scrolling at phone width",
        "return document.documentElement.scrollWidth <= window.innerWidth",
        |v| *v == Value::Bool(true),
    )
    .await;
    b.screenshot(&shots, "nodes-phone-dark").await;
    b.c().set_window_size(1280, 800).await.unwrap();
    b.click("#theme").await;

    // Alerts: the ramped node's alert appears and is acknowledged, by name.
    b.click("nav a[href='/alerts']").await;
    b.find("#alerts tr[data-node='SIM001'] button.ack").await;
    b.screenshot(&shots, "alerts").await;
    b.click("#alerts tr[data-node='SIM001'] button.ack").await;
    b.until(
        "the alert is acknowledged by alice",
        "const r = document.querySelector(\"#alerts tr[data-node='SIM001'].acked\"); return r ? r.textContent : null",
        |v| v.as_str().is_some_and(|t| t.contains("alice")),
    )
    .await;
    // A rule's alert, firing, acknowledged by name: its state follows.
    b.click("#rule-alerts tr[data-node='SIM004'] button.ack")
        .await;
    b.until(
        "the rule alert is acknowledged by alice",
        "const r = document.querySelector(\"#rule-alerts tr[data-node='SIM004'].state-acknowledged\"); return r ? r.textContent : null",
        |v| v.as_str().is_some_and(|t| t.contains("alice")),
    )
    .await;

    // The back button returns to the nodes page.
    b.c().back().await.unwrap();
    b.find("#nodes").await;

    // A node's page: charts backfilled from the store, then blocked by the admin.
    b.click("#nodes a[href='/nodes/samos/SIM002']").await;
    let points = "return [...document.querySelectorAll('[data-sensor]')].map(e => Number(e.getAttribute('data-points') || 0))";
    let history = b
        .until("the charts open with history", points, |v| {
            v.as_array()
                .is_some_and(|a| a.len() == 3 && a.iter().all(|n| n.as_u64() > Some(0)))
        })
        .await;
    // Then live readings are appended without a reload.
    b.until("live points reach the charts", points, |v| {
        v.as_array().is_some_and(|a| {
            a.iter()
                .zip(history.as_array().unwrap())
                .all(|(now, then)| now.as_u64() >= then.as_u64().map(|n| n + 10))
        })
    })
    .await;
    b.screenshot(&shots, "node").await;
    b.click("#mode-action").await;
    b.until(
        "the node shows as blocked",
        "return document.querySelector('h1 .badge').textContent",
        |v| v == "blocked",
    )
    .await;

    // Its next reading lands in the quarantine, live.
    b.click("nav a[href='/quarantine']").await;
    b.until(
        "SIM002's refused reading is quarantined",
        "return [...document.querySelectorAll('#quarantine tbody tr')].some(r => r.textContent.includes('node_not_active') && r.textContent.includes('SIM002'))",
        |v| *v == Value::Bool(true),
    )
    .await;
    b.screenshot(&shots, "quarantine").await;

    // Over the air: the admin edits SIM003's configuration and sends it; the node joins with
    // it and the page reports it applied. Then the admin disconnects the node's client.
    b.c()
        .goto(&format!("{base}/nodes/samos/SIM003"))
        .await
        .unwrap();
    b.find("#config-editor").await;
    let edited = b
        .c()
        .execute(
            "const e = document.querySelector('#config-editor'); \
             e.value = e.value.replace('<platform>ESP8266</platform>', '<platform>ESP32</platform>'); \
             return e.value.includes('<platform>ESP32</platform>');",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(edited, true);
    b.click("#config-send").await;
    b.until(
        "the node reports the new configuration",
        "const s = document.querySelector('#config-status'); return s ? s.getAttribute('data-state') : null",
        |v| v == "config_applied",
    )
    .await;
    b.until(
        "the stored configuration is the new one",
        "return document.querySelector('#config').textContent.includes('ESP32')",
        |v| *v == Value::Bool(true),
    )
    .await;
    b.click("#disconnect").await;
    b.until(
        "the node's client is gone",
        "return document.querySelector('main p.muted').textContent",
        |v| v.as_str().is_some_and(|t| t.contains("last seen")),
    )
    .await;
    let events = b
        .c()
        .execute_async(
            &fetch_script("/api/v1/events?node=SIM003", "GET", None),
            vec![],
        )
        .await
        .unwrap();
    let events: Value = serde_json::from_str(events[1].as_str().unwrap()).unwrap();
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["detail"]["by"] == "alice")
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for kind in ["config_pushed", "config_applied", "client_disconnected"] {
        assert!(kinds.contains(&kind), "{kind} by alice in {kinds:?}");
    }

    // SQL: the result on the page, and its CSV download equals `samos sql --format csv`.
    let cutoff = chrono::Utc::now() - chrono::Duration::seconds(3);
    let sql = format!(
        "SELECT node_id, sensor, count(*) AS n FROM readings WHERE ingest_time < TIMESTAMP '{}' \
         GROUP BY node_id, sensor ORDER BY node_id, sensor",
        cutoff.format("%Y-%m-%dT%H:%M:%S%.3fZ")
    );
    b.c()
        .goto(&format!(
            "{base}/sql?range=1h&q={}",
            common::percent_encode(&sql)
        ))
        .await
        .unwrap();
    b.until(
        "the query ran",
        "const e = document.querySelector('#row-count'); return e ? e.textContent : null",
        |v| v.as_str().is_some_and(|t| t.starts_with("15 rows")),
    )
    .await;
    b.screenshot(&shots, "sql").await;
    let href = b
        .find("#csv")
        .await
        .attr("href")
        .await
        .unwrap()
        .expect("a CSV link");
    let got = b
        .c()
        .execute_async(&fetch_script(&href, "GET", None), vec![])
        .await
        .unwrap();
    assert_eq!(got[0], 200, "{got}");
    let cli = Command::new(common::samos_bin())
        .args(["sql", "--format", "csv", "--data-dir"])
        .arg(server.data_dir())
        .arg(&sql)
        .output()
        .unwrap();
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    assert_eq!(
        got[1].as_str().unwrap(),
        String::from_utf8(cli.stdout).unwrap()
    );

    // Patterns: the admin mines a node's temperature from the page; the run's progress is
    // pushed, and its motifs and discords are drawn on the series.
    b.click("nav a[href='/patterns']").await;
    b.find("#mine-node")
        .await
        .send_keys("SIM000")
        .await
        .unwrap();
    b.until(
        "the node's sensors are offered",
        "const s = document.querySelector('#mine-sensor'); s.dispatchEvent(new Event('input')); \
         document.querySelector('#mine-node').dispatchEvent(new Event('change')); \
         return [...s.options].map(o => o.value)",
        |v| {
            v.as_array()
                .is_some_and(|a| a.iter().any(|s| s == "indoorTemperatureSensor"))
        },
    )
    .await;
    b.c()
        .execute(
            "document.querySelector('#mine-sensor').value = 'indoorTemperatureSensor'; \
             document.querySelector('#mine-window').value = '8'; \
             document.querySelector('#mine-backend').value = 'cpu';",
            vec![],
        )
        .await
        .unwrap();
    b.click("#mine-start").await;
    b.until(
        "the mining run finishes",
        "const r = document.querySelector('#mining-jobs tr[data-job]'); return r ? r.getAttribute('data-state') : null",
        |v| v == "done" || v == "failed",
    )
    .await;
    let state = b
        .c()
        .execute(
            "return document.querySelector('#mining-jobs tr[data-job]').getAttribute('data-state')",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(state, "done");
    b.click("#mining-jobs tr[data-job] a").await;
    b.until(
        "motifs and discords drawn on the series",
        "const c = document.querySelector('#pattern-chart'); return c ? Number(c.getAttribute('data-marks') || 0) : 0",
        |v| v.as_u64() >= Some(2),
    )
    .await;
    b.c()
        .execute(
            "document.querySelector('#mining-run').scrollIntoView()",
            vec![],
        )
        .await
        .unwrap();
    b.screenshot(&shots, "patterns").await;

    // A viewer sees the same pages but may not act: no button, and the request is refused.
    b.c()
        .execute_async(&fetch_script("/api/v1/logout", "POST", None), vec![])
        .await
        .unwrap();
    b.c()
        .goto(&format!("{base}/nodes/samos/SIM003"))
        .await
        .unwrap();
    b.find("#login-token")
        .await
        .send_keys(VIEWER)
        .await
        .unwrap();
    b.find("#login-name")
        .await
        .send_keys("victor")
        .await
        .unwrap();
    b.click("#login-submit").await;
    b.find("[data-sensor]").await;
    assert!(
        b.c().find(Locator::Css("#mode-action")).await.is_err(),
        "a viewer is offered no admin action"
    );
    let csrf = b
        .c()
        .execute_async(
            "const done = arguments[0]; fetch('/api/v1/session').then(r => r.json()).then(s => { window.__csrf = s.csrf; done(s.role); });",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(csrf, "viewer");
    let refused = b
        .c()
        .execute_async(
            &fetch_script(
                "/api/v1/network/samos/SIM003/mode",
                "POST",
                Some(&json!({"mode": "blocked"})),
            ),
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(refused[0], 403, "{refused}");
    assert!(server.metric("samos_refusals_total{reason=\"api_forbidden\"}") >= 1);

    drop(b);
    let _ = sim.kill();
    let _ = sim.wait();
}

/// A thousand nodes publishing while the Nodes page is open: the page keeps up and stays
/// usable. Prints the page's event-handling time per second (handlers and the renders they
/// cause, from the page's own accounting) and the browser's long tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nodes_page_stays_responsive_with_a_thousand_nodes_publishing() {
    let server = TestServer::start();
    let base = format!("http://{}", server.api.unwrap());
    let mut sim = Command::new(common::samos_bin())
        .args([
            "simulate",
            "--server",
            &server.mqtt[0].to_string(),
            "--nodes",
            "1000",
            "--speed",
            "60",
            "--join-timeout",
            "60",
            "--quiet",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start samos simulate");
    let b = Browser::start().await;
    b.c().goto(&format!("{base}/nodes")).await.unwrap();
    b.until(
        "a thousand active nodes listed",
        "return [...document.querySelectorAll('#nodes tr[data-node] .mode-active')].length",
        |v| v.as_u64() == Some(1000),
    )
    .await;
    // Measure ten seconds of the page under a steady stream of readings and refreshes.
    b.c()
        .execute(
            "Object.assign(window.__samosPerf, {busyMs: 0, events: 0, longTasks: 0, longTasksMs: 0, since: performance.now()})",
            vec![],
        )
        .await
        .unwrap();
    let stored_before = server.metric("samos_readings_committed_total");
    tokio::time::sleep(Duration::from_secs(10)).await;
    let perf = b
        .c()
        .execute(
            "const p = window.__samosPerf; return {seconds: (performance.now() - p.since) / 1000, busyMs: p.busyMs, events: p.events, longTasks: p.longTasks, longTasksMs: p.longTasksMs}",
            vec![],
        )
        .await
        .unwrap();
    let stored = server.metric("samos_readings_committed_total") - stored_before;
    let seconds = perf["seconds"].as_f64().unwrap();
    let busy_per_second = perf["busyMs"].as_f64().unwrap() / seconds;
    // The page still answers a click: the time from the click to the next page on screen.
    let navigation_ms = b
        .c()
        .execute_async(
            "const done = arguments[0]; const t0 = performance.now(); \
             document.querySelector(\"nav a[href='/alerts']\").click(); \
             const wait = () => document.querySelector('main h1').textContent === 'Alerts' \
               && !document.querySelector('main .panel p.muted')?.textContent.includes('Loading') \
               ? done(performance.now() - t0) : requestAnimationFrame(wait); wait();",
            vec![],
        )
        .await
        .unwrap();
    println!(
        "1000 nodes, {stored} readings stored in {seconds:.1} s: the Nodes page spent {busy_per_second:.1} ms/s \
         handling {} live events (long tasks: {} totalling {:.0} ms); a click to the Alerts page took {:.0} ms",
        perf["events"],
        perf["longTasks"],
        perf["longTasksMs"].as_f64().unwrap_or(0.0),
        navigation_ms.as_f64().unwrap_or(-1.0)
    );
    assert!(stored > 1000, "the nodes kept publishing ({stored})");
    assert!(
        perf["events"].as_u64() >= Some(5),
        "live events kept arriving: {perf}"
    );
    assert!(
        busy_per_second < 500.0,
        "the page spent over half its time on live updates: {perf}"
    );
    drop(b);
    let _ = sim.kill();
    let _ = sim.wait();
}
