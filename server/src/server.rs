//! Starting and running a whole server from a [`Config`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use crate::auth::{Acl, AuthError, Authenticator, PasswordFile};
use crate::broker::Router;
use crate::broker::router::RouterConfig;
use crate::config::Config;
use crate::link::{ListenError, Listener, Shared};
use crate::metrics::{self, Metrics};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot serve the HTTP API on {addr}: {source}")]
    Api {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot serve {name} on {addr}: {source}")]
    Sql {
        name: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    SqlEndpoint(#[from] crate::sql::EndpointError),
    #[error(transparent)]
    Alerts(#[from] crate::alerts::AlertError),
    #[error(transparent)]
    Bridge(#[from] crate::bridge::BridgeError),
    #[error("cannot open the history for the HTTP API: {0}")]
    History(#[from] samos_analytics::QueryError),
    #[error(transparent)]
    Protocol(#[from] crate::protocol::ProtocolError),
    #[error(transparent)]
    Ingest(#[from] crate::ingest::IngestError),
    #[error("storage.object_store: {0}")]
    Lake(#[from] samos_lake::LakeError),
    #[error(
        "instance_id {new:?} differs from {old:?}, the id this data directory last ran as, and \
         {files} finished Parquet files wait in its outbox: they may be in {old:?}'s table \
         already. Start once more as {old:?} to upload them, then rename"
    )]
    Renamed {
        old: String,
        new: String,
        files: usize,
    },
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
}

/// Addresses a running server is reachable on (port 0 in the configuration resolved).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Endpoints {
    pub mqtt: Vec<SocketAddr>,
    pub mqtts: Vec<SocketAddr>,
    pub metrics: Option<SocketAddr>,
    pub api: Option<SocketAddr>,
    /// The PostgreSQL wire protocol endpoint.
    pub pg: Option<SocketAddr>,
    /// The Arrow Flight SQL endpoint.
    pub flight: Option<SocketAddr>,
}

/// A started server; dropping it does not stop the tasks (they belong to the runtime).
pub struct Server {
    pub endpoints: Endpoints,
    pub metrics: Arc<Metrics>,
    pub protocol: Option<Arc<crate::protocol::Protocol>>,
    pub ingest: Option<Arc<crate::ingest::Ingest>>,
    pub alerts: Option<Arc<crate::alerts::Alerts>>,
}

impl Server {
    /// Binds every listener and starts the router; returns once all sockets are bound.
    pub async fn start(config: Config) -> Result<Server, StartError> {
        crate::clock::follow_offset_file();
        std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        })?;
        let passwords = config
            .password_file
            .as_deref()
            .map(PasswordFile::load)
            .transpose()?;
        if let Some(p) = &passwords {
            info!(users = p.users().count(), "password file loaded");
        }
        let instance_id = match &config.instance_id {
            Some(id) => id.clone(),
            None => samos_store::layout::default_instance_id(
                &samos_store::wal::store_id(&config.data_dir.join(samos_store::layout::WAL_DIR))
                    .map_err(|e| StartError::DataDir {
                        path: config.data_dir.display().to_string(),
                        source: std::io::Error::other(e),
                    })?,
            ),
        };
        info!(%instance_id, "instance");
        if let Some(old) = samos_store::layout::recorded_instance(&config.data_dir)
            && old != instance_id
            && config.storage.object_store.is_some()
        {
            let outbox = config.data_dir.join(samos_store::layout::OUTBOX_DIR);
            let files: usize = samos_store::layout::date_partitions(&outbox)
                .iter()
                .map(|(_, dir)| samos_store::layout::partition_files(dir).len())
                .sum();
            if files > 0 {
                return Err(StartError::Renamed {
                    old,
                    new: instance_id,
                    files,
                });
            }
            warn!(%old, new = %instance_id, "instance renamed: readings go to a new table from now on; the old one stays readable");
        }
        let recorded = config.data_dir.join(samos_store::layout::INSTANCE_FILE);
        samos_store::file::write_atomically(&recorded, format!("{instance_id}\n").as_bytes())
            .map_err(|source| StartError::DataDir {
                path: recorded.display().to_string(),
                source,
            })?;
        let metrics = Arc::new(Metrics::default());
        metrics.set_instance(&instance_id);
        let (mut router, handle) = Router::new(
            RouterConfig {
                max_queued_messages: config.mqtt.max_queued_messages,
                queue_qos0_offline: config.mqtt.queue_qos0_offline,
                max_session_expiry: config.mqtt.max_session_expiry_secs,
                sys_interval: (config.mqtt.sys_interval_secs > 0)
                    .then(|| Duration::from_secs(config.mqtt.sys_interval_secs)),
                queue_capacity: config.mqtt.router_queue,
                version: env!("CARGO_PKG_VERSION").to_string(),
                instance_id: instance_id.clone(),
                max_subscriptions: config.mqtt.max_subscriptions_per_client,
            },
            metrics.clone(),
        );

        let mut listeners = Vec::new();
        for l in &config.listeners {
            listeners.push(Listener::bind(l, &config).await?);
        }
        let metrics_listener = if config.metrics.enabled {
            let addr = config.metrics.bind;
            Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartError::Metrics { addr, source })?,
            )
        } else {
            None
        };
        let api_listener = if config.api.enabled {
            let addr = config.api.bind;
            Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartError::Api { addr, source })?,
            )
        } else {
            None
        };
        let bind_sql = |name: &'static str, bind: Option<SocketAddr>| async move {
            match bind {
                Some(addr) => tokio::net::TcpListener::bind(addr)
                    .await
                    .map(Some)
                    .map_err(|source| StartError::Sql { name, addr, source }),
                None => Ok(None),
            }
        };
        let pg_listener = bind_sql("pgwire", config.pgwire.bind).await?;
        let flight_listener = bind_sql("flight", config.flight.bind).await?;
        let endpoints = Endpoints {
            mqtt: listeners
                .iter()
                .filter(|l| !l.tls)
                .map(|l| l.local_addr)
                .collect(),
            mqtts: listeners
                .iter()
                .filter(|l| l.tls)
                .map(|l| l.local_addr)
                .collect(),
            metrics: metrics_listener.as_ref().and_then(|l| l.local_addr().ok()),
            api: api_listener.as_ref().and_then(|l| l.local_addr().ok()),
            pg: pg_listener.as_ref().and_then(|l| l.local_addr().ok()),
            flight: flight_listener.as_ref().and_then(|l| l.local_addr().ok()),
        };

        let protocol = if config.protocol.enabled {
            let p = Arc::new(
                crate::protocol::Protocol::open(
                    &config.protocol,
                    &config.data_dir,
                    metrics.clone(),
                    handle.clone(),
                )?
                .with_stream_profiles(&config.stream_profile, &config.data_dir),
            );
            info!(
                network = %p.identity.network,
                server_id = %p.identity.server_id,
                nodes = p.registry.all().len(),
                "sensor-network protocol on"
            );
            Some(p)
        } else {
            None
        };
        if protocol.is_none() && !config.bridges.is_empty() {
            return Err(crate::bridge::BridgeError::NoProtocol.into());
        }
        let bridges = crate::bridge::Saved::load(&config)?;
        let ingest = match &protocol {
            Some(_) => Some(crate::ingest::Ingest::start(
                &config.storage,
                &config.data_dir,
                &instance_id,
                &bridges.wal_followers(&config),
                metrics.clone(),
            )?),
            None => None,
        };
        if let (Some(p), Some(i)) = (&protocol, &ingest) {
            crate::bridge::start(
                &config,
                &bridges,
                i,
                crate::bridge::registry_ranges(p.clone()),
                &instance_id,
                &metrics,
            )?;
        }
        if let (Some(p), Some(peers)) =
            (&protocol, ingest.as_ref().and_then(|i| i.peer_registries()))
        {
            p.follow_peers(peers);
        }
        if let Some(i) = &ingest {
            let restored = i.take_restored_sessions();
            if !restored.is_empty() {
                info!(sessions = restored.len(), "persistent sessions restored");
            }
            router.restore(restored, crate::clock::now_ms());
        }
        let shared = Arc::new(Shared {
            ingest: ingest.clone(),
            protocol: protocol.clone(),
            acl: Acl::new(config.acl.clone()),
            auth: Arc::new(Authenticator::new(passwords, metrics.clone())),
            limits: crate::link::limits::ConnectionLimits::new(
                config.mqtt.max_connections,
                config.mqtt.max_connection_rate_per_ip,
            ),
            config: Arc::new(config),
            metrics: metrics.clone(),
            router: handle,
        });
        tokio::spawn(router.run());
        crate::memory::give_back_after_crowds(metrics.clone());
        if let Some(p) = &protocol {
            let interval =
                Duration::from_secs(shared.config.protocol.local_time_interval_secs.max(1));
            let addrs = endpoints
                .mqtt
                .iter()
                .chain(&endpoints.mqtts)
                .copied()
                .collect();
            p.start(interval, addrs);
        }
        for l in listeners {
            tokio::spawn(l.run(shared.clone()));
        }
        if let Some(l) = metrics_listener {
            info!(addr = ?endpoints.metrics, "metrics on /metrics");
            let m = metrics.clone();
            tokio::spawn(async move {
                if let Err(e) = metrics::serve(l, m).await {
                    tracing::error!(error = %e, "metrics endpoint stopped");
                }
            });
        }
        let alerts = match &protocol {
            Some(p)
                if !shared.config.alerts.rules.is_empty()
                    || !shared.config.alerts.cross_check_actions.is_empty()
                    || !shared.config.alerts.discord_actions.is_empty() =>
            {
                let publisher = p.clone();
                Some(
                    crate::alerts::Alerts::start(
                        &shared.config.alerts,
                        p.clone(),
                        Arc::new(move |topic, payload| publisher.publish_message(topic, payload)),
                        &shared.config.data_dir,
                        &instance_id,
                        metrics.clone(),
                    )
                    .await?,
                )
            }
            _ => None,
        };
        if let Some(l) = api_listener {
            let lake = shared.config.storage.lake_dataset()?;
            let child_env = lake
                .as_ref()
                .map(samos_lake::Dataset::environment)
                .unwrap_or_default();
            let history = samos_analytics::History::open_with_lake(
                &shared.config.data_dir,
                samos_analytics::Access::Query,
                lake.clone(),
            )
            .await?;
            let api = Arc::new(
                crate::api::Api::new(
                    history,
                    shared.config.api.clone(),
                    metrics.clone(),
                    protocol.clone(),
                    shared.router.clone(),
                    shared.config.data_dir.clone(),
                )
                .with_child_env(child_env)
                .with_dataset(lake)
                .with_alerts(alerts.clone()),
            );
            info!(addr = ?endpoints.api, "dashboard on / and HTTP API on /api/v1/");
            tokio::spawn(async move {
                if let Err(e) = crate::api::serve(l, api).await {
                    tracing::error!(error = %e, "HTTP API stopped");
                }
            });
        }
        if let Some(l) = pg_listener {
            crate::sql::start_pg(l, &shared.config, shared.auth.clone(), metrics.clone()).await?;
        }
        if let Some(l) = flight_listener {
            crate::sql::start_flight(l, &shared.config, shared.auth.clone(), metrics.clone())
                .await?;
        }
        Ok(Server {
            endpoints,
            metrics,
            protocol,
            ingest,
            alerts,
        })
    }

    /// Persists what must survive a restart.
    pub async fn shutdown(&self) {
        if let Some(p) = self.protocol.clone() {
            let _ = tokio::task::spawn_blocking(move || p.shutdown()).await;
        }
        if let Some(i) = self.ingest.clone() {
            let _ = tokio::task::spawn_blocking(move || i.flush_parquet()).await;
        }
    }
}
