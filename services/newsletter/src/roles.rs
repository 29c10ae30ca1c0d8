//! The roles one binary runs: the API, the projector, the mailer, all of them together, and the
//! one-shot `rebuild-projections`.

use std::path::Path;
use std::sync::Arc;

use actix_web::{App, HttpServer, web};
use chrono::TimeDelta;
use newsletter_api::auth::ServiceTokens;
use newsletter_api::rate_limit::RateLimiter;
use newsletter_api::{ApiConfig, ApiState};
use newsletter_domain::{ListCatalog, PolicyVersion};
use newsletter_eventstore::{
    EventStore, PostgresConfig, PostgresEventStore, SqliteConfig, SqliteEventStore, SystemClock,
};
use newsletter_keyvault::{AuditLog, EncryptingEventStore, KeyVault, Stats};
use newsletter_mailer::{
    FileMailTransport, MailTransport, Mailer, MailerConfig, RetryPolicy, SmtpMailTransport,
};
use newsletter_projections::{
    EmailIndex, LiveStatus, LiveStatusOptions, ProjectionRunner, ReadModels,
};
use tokio::sync::watch;

use crate::adapters::MeteredStore;
use crate::adapters::{Checkpoints, Directory, LiveStatusReadiness, Queries, StorageReadiness};
use crate::lease::{Lease, LeaseStore};
use crate::privacy::Privacy;
use crate::secrets::Secrets;
use crate::settings::{RawSettings, SettingError, Settings};
use newsletter_api::metrics::Metrics;
use newsletter_api::ports::Readiness;

/// Which parts run in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// Serve HTTP.
    pub api: bool,
    /// Keep the read models up to date.
    pub projector: bool,
    /// Send confirmation mails.
    pub mailer: bool,
}

/// Storage opened for the configured database.
pub struct Storage {
    /// The event log, through the encrypting decorator: personal fields are sealed with the
    /// subscriber's data key on append and opened on read. Every role uses this one.
    pub store: Arc<dyn EventStore>,
    /// The event log as stored (sealed payloads): for the anonymous statistics only.
    pub sealed_store: Arc<dyn EventStore>,
    /// The key vault.
    pub vault: KeyVault,
    /// SQLite files whose write-ahead logs an erasure truncates (empty on PostgreSQL).
    pub sqlite_files: Vec<std::path::PathBuf>,
    /// The read models.
    pub models: ReadModels,
    /// The email index.
    pub index: EmailIndex,
}

fn sqlite_url(dir: &Path, file: &str) -> String {
    format!("sqlite://{}", dir.join(file).display())
}

/// Opens (and migrates) the event store, the read models and the email index.
pub async fn open_storage(settings: &Settings, secrets: &Secrets) -> Result<Storage, SettingError> {
    let storage = open_sql_storage(settings, secrets).await?;
    let Some(url) = settings.eventstore_url.as_deref() else {
        return Ok(storage);
    };
    // Events in KurrentDB; read models, key vault and email index stay in the SQL database.
    let sealed = newsletter_eventstore::connect(url).await.map_err(|e| {
        SettingError::new(
            "NEWSLETTER_EVENTSTORE_URL",
            format!("cannot open the event store: {e}"),
        )
    })?;
    Ok(Storage {
        store: Arc::new(EncryptingEventStore::new(
            Arc::clone(&sealed),
            storage.vault.clone(),
        )),
        sealed_store: sealed,
        ..storage
    })
}

/// Opens everything in the SQL database `NEWSLETTER_DATABASE_URL` names (SQLite by default).
async fn open_sql_storage(settings: &Settings, secrets: &Secrets) -> Result<Storage, SettingError> {
    let unreachable = |e: &dyn std::fmt::Display| {
        SettingError::new(
            "NEWSLETTER_DATABASE_URL",
            format!("cannot open the database: {e}"),
        )
    };
    match settings.database_url.as_deref() {
        Some(url) if url.starts_with("postgres") => {
            let store = PostgresEventStore::connect(url, PostgresConfig::default())
                .await
                .map_err(|e| unreachable(&e))?;
            let models = ReadModels::from_postgres_pool(store.pool().clone())
                .await
                .map_err(|e| unreachable(&e))?;
            let index =
                EmailIndex::from_postgres_pool(store.pool().clone(), secrets.index_key.clone())
                    .await
                    .map_err(|e| unreachable(&e))?;
            let vault =
                KeyVault::from_postgres_pool(store.pool().clone(), secrets.master_keys.clone())
                    .await
                    .map_err(|e| unreachable(&e))?;
            let sealed: Arc<dyn EventStore> = Arc::new(store);
            Ok(Storage {
                store: Arc::new(EncryptingEventStore::new(
                    Arc::clone(&sealed),
                    vault.clone(),
                )),
                sealed_store: sealed,
                vault,
                sqlite_files: Vec::new(),
                models,
                index,
            })
        }
        url => {
            let dir = &settings.data_dir;
            let events_url = url.map_or_else(|| sqlite_url(dir, "events.db"), str::to_owned);
            let store = SqliteEventStore::open_url(&events_url, SqliteConfig::default())
                .await
                .map_err(|e| unreachable(&e))?;
            let models = ReadModels::open(&sqlite_url(dir, "readmodels.db"))
                .await
                .map_err(|e| unreachable(&e))?;
            let index = EmailIndex::open(
                &sqlite_url(dir, "email-index.db"),
                secrets.index_key.clone(),
            )
            .await
            .map_err(|e| unreachable(&e))?;
            let vault =
                KeyVault::open_sqlite(&dir.join("keyvault.db"), secrets.master_keys.clone())
                    .await
                    .map_err(|e| unreachable(&e))?;
            let mut sqlite_files = vec![
                dir.join("readmodels.db"),
                dir.join("email-index.db"),
                dir.join("keyvault.db"),
            ];
            if url.is_none() {
                sqlite_files.push(dir.join("events.db"));
            }
            let sealed: Arc<dyn EventStore> = Arc::new(store);
            Ok(Storage {
                store: Arc::new(EncryptingEventStore::new(
                    Arc::clone(&sealed),
                    vault.clone(),
                )),
                sealed_store: sealed,
                vault,
                sqlite_files,
                models,
                index,
            })
        }
    }
}

/// Checks settings and secrets and opens storage: everything a role needs before it starts.
pub async fn prepare(raw: &RawSettings) -> Result<(Settings, Secrets, Storage), SettingError> {
    let settings = Settings::from_raw(raw)?;
    std::fs::create_dir_all(&settings.data_dir).map_err(|e| {
        SettingError::new(
            "NEWSLETTER_DATA_DIR",
            format!("cannot create {}: {e}", settings.data_dir.display()),
        )
    })?;
    let secrets = Secrets::load(raw, settings.mode, &settings.data_dir)?;
    let storage = open_storage(&settings, &secrets).await?;
    Ok((settings, secrets, storage))
}

/// The GDPR operations on this storage.
pub fn privacy(settings: &Settings, storage: &Storage) -> Privacy {
    Privacy {
        store: Arc::clone(&storage.store),
        sealed_store: Arc::clone(&storage.sealed_store),
        vault: storage.vault.clone(),
        audit: AuditLog::new(&storage.vault),
        index: storage.index.clone(),
        models: storage.models.clone(),
        outbox: settings.data_dir.join("outbox"),
        sqlite_files: storage.sqlite_files.clone(),
        clock: Arc::new(SystemClock),
        policies: settings.policies.clone(),
        live: None,
    }
}

/// The configured lists.
pub fn list_catalog(settings: &Settings) -> Result<ListCatalog, SettingError> {
    ListCatalog::new(settings.lists.iter().map(String::as_str))
        .map_err(|e| SettingError::new("NEWSLETTER_LISTS", e.to_string()))
}

fn api_state(
    raw: &RawSettings,
    settings: &Settings,
    secrets: &Secrets,
    storage: &Storage,
    metrics: &Arc<Metrics>,
    live: &LiveStatus,
) -> Result<ApiState, SettingError> {
    let lists = ListCatalog::new(settings.lists.iter().map(String::as_str))
        .map_err(|e| SettingError::new("NEWSLETTER_LISTS", e.to_string()))?;
    let default_list = lists
        .iter()
        .next()
        .cloned()
        .ok_or_else(|| SettingError::new("NEWSLETTER_LISTS", "names no list"))?;
    let default_list = lists
        .parse(settings.lists.first().map_or("", String::as_str))
        .unwrap_or(default_list);
    let tokens = ServiceTokens::parse(raw.get("NEWSLETTER_TOKENS").unwrap_or_default())
        .map_err(|e| SettingError::new("NEWSLETTER_TOKENS", e.to_string()))?;
    if settings.mode == crate::settings::Mode::Production && tokens.is_empty() {
        return Err(SettingError::new(
            "NEWSLETTER_TOKENS",
            "is required in production mode",
        ));
    }
    let policy_version = PolicyVersion::parse(&settings.policy_version)
        .map_err(|e| SettingError::new("NEWSLETTER_POLICY_VERSION", e.to_string()))?;
    let confirm_ttl = TimeDelta::from_std(settings.confirm_ttl)
        .map_err(|_| SettingError::new("NEWSLETTER_CONFIRM_TTL", "is too long"))?;
    Ok(ApiState {
        store: Arc::clone(&storage.store),
        directory: Arc::new(Directory(storage.index.clone())),
        queries: Arc::new(Queries {
            models: storage.models.clone(),
            live: Some(live.clone()),
        }),
        readiness: Arc::new(AllReady(vec![
            Arc::new(StorageReadiness {
                store: Arc::clone(&storage.store),
                models: storage.models.clone(),
            }),
            Arc::new(LiveStatusReadiness(live.clone())),
        ])),
        keys: Arc::new(secrets.keys.clone()),
        tokens: Arc::new(tokens),
        config: Arc::new(ApiConfig {
            public_url: settings.public_url.clone(),
            lists,
            default_list,
            confirm_ttl,
            thank_you_url: settings.thank_you_url.clone(),
            policy_version,
            trusted_proxies: settings.trusted_proxies.clone(),
            signup_rate_limit: settings.signup_rate_limit,
            max_body_bytes: ApiConfig::DEFAULT_MAX_BODY_BYTES,
            max_lookup: 1000,
        }),
        clock: Arc::new(SystemClock),
        signup_limiter: Arc::new(RateLimiter::per_minute(settings.signup_rate_limit)),
        metrics: Arc::clone(metrics),
        privacy: Arc::new(Privacy {
            live: Some(live.clone()),
            ..privacy(settings, storage)
        }),
    })
}

fn mailer(
    settings: &Settings,
    secrets: &Secrets,
    storage: &Storage,
) -> Result<(Mailer, Arc<dyn MailTransport>), SettingError> {
    let public_url = url::Url::parse(&settings.public_url)
        .map_err(|e| SettingError::new("NEWSLETTER_PUBLIC_URL", e.to_string()))?;
    let from = settings.mail_from.parse().map_err(|_| {
        SettingError::new(
            "NEWSLETTER_MAIL_FROM",
            "is not a mailbox like Name <user@example.com>",
        )
    })?;
    let privacy_url = match &settings.privacy_url {
        Some(url) => url::Url::parse(url)
            .map_err(|e| SettingError::new("NEWSLETTER_PRIVACY_URL", e.to_string()))?,
        None => public_url.clone(),
    };
    let transport: Arc<dyn MailTransport> = match &settings.smtp_url {
        Some(url) => Arc::new(
            SmtpMailTransport::from_url(url)
                .map_err(|e| SettingError::new("NEWSLETTER_SMTP_URL", e.to_string()))?,
        ),
        None => {
            let outbox = settings.data_dir.join("outbox");
            Arc::new(FileMailTransport::new(&outbox).map_err(|e| {
                SettingError::new(
                    "NEWSLETTER_DATA_DIR",
                    format!("cannot use {}: {e}", outbox.display()),
                )
            })?)
        }
    };
    let mut config = MailerConfig::new(public_url, from, privacy_url);
    config.retry = RetryPolicy {
        base_delay: settings.mail_retry_base,
        max_delay: settings.mail_retry_max.max(settings.mail_retry_base),
        max_attempts: settings.mail_retry_attempts,
    };
    let mailer = Mailer::new(
        Arc::clone(&storage.store),
        Arc::new(Checkpoints(storage.models.clone())),
        Arc::clone(&transport),
        Arc::new(secrets.keys.clone()),
        config,
        Arc::new(SystemClock),
    );
    Ok((mailer, transport))
}

/// Resolves when the process is told to stop (SIGTERM or Ctrl-C).
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn when_stopped(
    rx: &watch::Receiver<bool>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let mut rx = rx.clone();
    async move {
        let _ = rx.wait_for(|stopped| *stopped).await;
    }
}

/// Runs the chosen roles until SIGTERM/Ctrl-C: the HTTP server stops accepting and finishes
/// requests in flight, the projector finishes its batch, the mailer stops between mails.
pub async fn run(raw: RawSettings, roles: Roles) -> Result<(), SettingError> {
    let (settings, secrets, mut storage) = prepare(&raw).await?;
    let metrics = Arc::new(Metrics::new().map_err(|e| {
        SettingError::new(
            "NEWSLETTER_LOG",
            format!("metrics could not be set up: {e}"),
        )
    })?);
    storage.store = Arc::new(MeteredStore::new(
        Arc::clone(&storage.store),
        Arc::clone(&metrics),
    ));
    if settings.mode == crate::settings::Mode::Development {
        tracing::warn!(
            data_dir = %settings.data_dir.display(),
            "development setup: generated keys and, without NEWSLETTER_SMTP_URL, mail written to the outbox; set NEWSLETTER_MODE=production for real use"
        );
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    // Set when a lease is lost: the process stops (non-zero) and its orchestrator restarts it.
    let (lost_tx, mut lost_rx) = watch::channel(false);
    let leases = match settings.database_url.as_deref() {
        Some(url) if url.starts_with("postgres") => LeaseStore::Postgres(url.to_owned()),
        _ => LeaseStore::Files(settings.data_dir.clone()),
    };
    let mut tasks = tokio::task::JoinSet::new();
    // What the projector and mailer roles add to their readiness (ops listener only: the API's
    // readiness never depends on them, so signups keep flowing while they catch up).
    let mut role_checks: Vec<Arc<dyn Readiness>> = Vec::new();
    if roles.projector {
        role_checks.push(Arc::new(LagReadiness {
            store: Arc::clone(&storage.sealed_store),
            models: storage.models.clone(),
            max_lag: settings.ready_max_lag,
        }));
        let store = Arc::clone(&storage.store);
        let models = storage.models.clone();
        let stats = Stats::new(&storage.vault);
        let sealed = Arc::clone(&storage.sealed_store);
        let retention = privacy(&settings, &storage);
        let lists: Vec<_> = list_catalog(&settings)?.iter().cloned().collect();
        let period = settings.retention_pending;
        let (leases, stop_rx, lost_tx) = (leases.clone(), stop_rx.clone(), lost_tx.clone());
        let sampler = Sampler {
            store: Arc::clone(&storage.sealed_store),
            models: storage.models.clone(),
            metrics: Arc::clone(&metrics),
        };
        let metrics = Arc::clone(&metrics);
        tasks.spawn(async move {
            metrics.lease_held.with_label_values(&["projector"]).set(0);
            let Some(lease) = acquire_or_stop(&leases, "projector", &stop_rx, &lost_tx).await
            else {
                return;
            };
            metrics.lease_held.with_label_values(&["projector"]).set(1);
            let shutdown = || stop_or_lost(&stop_rx, &lease);
            let runner = ProjectionRunner::default();
            tokio::join!(
                sampler.projector(shutdown()),
                runner.run(store, models, shutdown()),
                stats.run(sealed, shutdown()),
                retention.run_retention(lists, period, shutdown()),
                retention.run_erasure_sweep(shutdown()),
            );
            if lease_was_lost(&lease) {
                metrics.lease_lost.inc();
                let _ = lost_tx.send(true);
            }
        });
    }
    if roles.mailer {
        let (mailer, transport) = mailer(&settings, &secrets, &storage)?;
        role_checks.push(Arc::new(SmtpReadiness(transport)));
        let (leases, stop_rx, lost_tx) = (leases.clone(), stop_rx.clone(), lost_tx.clone());
        let sampler = Sampler {
            store: Arc::clone(&storage.sealed_store),
            models: storage.models.clone(),
            metrics: Arc::clone(&metrics),
        };
        let metrics = Arc::clone(&metrics);
        tasks.spawn(async move {
            metrics.lease_held.with_label_values(&["mailer"]).set(0);
            let Some(lease) = acquire_or_stop(&leases, "mailer", &stop_rx, &lost_tx).await else {
                return;
            };
            metrics.lease_held.with_label_values(&["mailer"]).set(1);
            let stats = mailer.stats();
            tokio::join!(
                mailer.run(stop_or_lost(&stop_rx, &lease)),
                sampler.mailer(stats, stop_or_lost(&stop_rx, &lease)),
            );
            if lease_was_lost(&lease) {
                metrics.lease_lost.inc();
                let _ = lost_tx.send(true);
            }
        });
    }
    let stopped = async move {
        tokio::select! {
            () = stop_signal() => false,
            _ = lost_rx.wait_for(|lost| *lost) => true,
        }
    };
    let lease_lost;
    if roles.api {
        // Status by id is answered from memory: load the read model once, then follow the log.
        let live = LiveStatus::new();
        let sampler = Sampler {
            store: Arc::clone(&storage.sealed_store),
            models: storage.models.clone(),
            metrics: Arc::clone(&metrics),
        };
        let (view, store, models) = (
            live.clone(),
            Arc::clone(&storage.store),
            storage.models.clone(),
        );
        let stop = stop_rx.clone();
        tasks.spawn(async move {
            tokio::join!(
                view.run(
                    store,
                    models,
                    LiveStatusOptions::default(),
                    when_stopped(&stop)
                ),
                sampler.live_status(&view, when_stopped(&stop)),
            );
        });
        let state = api_state(&raw, &settings, &secrets, &storage, &metrics, &live)?;
        let metrics_data = web::Data::new(Arc::clone(&metrics));
        let data = web::Data::new(state);
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(metrics_data.clone())
                .wrap(actix_web::middleware::from_fn(
                    crate::access_log::log_request,
                ))
                .configure(newsletter_api::configure)
        })
        .workers(settings.http_workers)
        .shutdown_timeout(30)
        .disable_signals()
        .bind(settings.listen)
        .map_err(|e| {
            SettingError::new(
                "NEWSLETTER_LISTEN",
                format!("cannot listen on {}: {e}", settings.listen),
            )
        })?
        .run();
        let handle = server.handle();
        tracing::info!(listen = %settings.listen, public_url = %settings.public_url, "serving HTTP");
        let server_task = tokio::spawn(server);
        lease_lost = stopped.await;
        tracing::info!("stopping: no new connections; finishing requests in flight");
        handle.stop(true).await;
        let _ = server_task.await;
    } else if let Some(ops_listen) = settings.ops_listen {
        let mut checks: Vec<Arc<dyn Readiness>> = vec![Arc::new(StorageReadiness {
            store: Arc::clone(&storage.store),
            models: storage.models.clone(),
        })];
        checks.extend(role_checks);
        let readiness: Arc<dyn Readiness> = Arc::new(AllReady(checks));
        let metrics_data = web::Data::new(Arc::clone(&metrics));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(Arc::clone(&readiness)))
                .app_data(metrics_data.clone())
                .wrap(actix_web::middleware::from_fn(
                    crate::access_log::log_request,
                ))
                .route("/health/live", web::get().to(ops_live))
                .route("/health/ready", web::get().to(ops_ready))
                .route(
                    "/metrics",
                    web::get().to(newsletter_api::metrics::metrics_endpoint),
                )
        })
        .workers(1)
        .disable_signals()
        .bind(ops_listen)
        .map_err(|e| {
            SettingError::new(
                "NEWSLETTER_OPS_LISTEN",
                format!("cannot listen on {ops_listen}: {e}"),
            )
        })?
        .run();
        let handle = server.handle();
        tracing::info!(listen = %ops_listen, "serving health probes");
        let server_task = tokio::spawn(server);
        lease_lost = stopped.await;
        handle.stop(true).await;
        let _ = server_task.await;
    } else {
        tracing::info!("running without HTTP; stop with SIGTERM");
        lease_lost = stopped.await;
    }
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    if lease_lost {
        return Err(SettingError::new(
            "NEWSLETTER_DATABASE_URL",
            "lost the lease of a single-active role (its database session ended); restart to stand by again",
        ));
    }
    tracing::info!("stopped");
    Ok(())
}

/// Samples what `/metrics` reports from the databases, every [`SAMPLE_EVERY`].
struct Sampler {
    store: Arc<dyn EventStore>,
    models: ReadModels,
    metrics: Arc<Metrics>,
}

/// How often the sampler reads positions, lag and counts.
const SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
/// The most events the sampler counts behind a checkpoint.
const LAG_CAP: usize = 10_000;
/// The `projection` label of the API's in-memory status view.
const LIVE_STATUS: &str = "live_status";

impl Sampler {
    /// How many events follow `checkpoint` (capped), and the age of the first one in seconds.
    async fn behind(
        &self,
        checkpoint: Option<newsletter_eventstore::Position>,
    ) -> Option<(i64, i64)> {
        let pending = self.store.read_all(checkpoint, LAG_CAP).await.ok()?;
        let age = pending.first().map_or(0, |event| {
            (chrono::Utc::now() - event.recorded_at)
                .num_seconds()
                .max(0)
        });
        Some((i64::try_from(pending.len()).unwrap_or(i64::MAX), age))
    }

    /// Projection position and lag, and subscribers by list and status.
    async fn projector(&self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            if let Ok(checkpoint) = self.models.projection_checkpoint().await {
                self.report_position("subscribers", checkpoint).await;
            }
            if let Ok(counts) = self.models.counts().await {
                self.metrics.subscribers.reset();
                for count in counts {
                    self.metrics
                        .subscribers
                        .with_label_values(&[count.list.as_str(), count.status.as_str()])
                        .set(i64::try_from(count.count).unwrap_or(i64::MAX));
                }
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(SAMPLE_EVERY) => {}
            }
        }
    }

    /// Position and lag of the API's in-memory status view.
    async fn live_status(
        &self,
        live: &LiveStatus,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        loop {
            if live.is_loaded() {
                let position = live.position();
                self.report_position(LIVE_STATUS, position).await;
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(SAMPLE_EVERY) => {}
            }
        }
    }

    /// Sets a projection's position and lag gauges.
    async fn report_position(
        &self,
        projection: &str,
        checkpoint: Option<newsletter_eventstore::Position>,
    ) {
        let position = checkpoint.map_or(0, |p| i64::try_from(p.prepare).unwrap_or(i64::MAX));
        self.metrics
            .projection_position
            .with_label_values(&[projection])
            .set(position);
        if let Some((events, seconds)) = self.behind(checkpoint).await {
            self.metrics
                .projection_lag_events
                .with_label_values(&[projection])
                .set(events);
            self.metrics
                .projection_lag_seconds
                .with_label_values(&[projection])
                .set(seconds);
        }
    }

    /// Mail outcomes (from the mailer's counters) and its backlog.
    async fn mailer(
        &self,
        stats: Arc<newsletter_mailer::MailerStats>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut seen = stats.snapshot();
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(SAMPLE_EVERY) => {}
            }
            let now = stats.snapshot();
            for (outcome, before, after) in [
                ("sent", seen.sent, now.sent),
                ("failed", seen.failed, now.failed),
                ("retried", seen.retried, now.retried),
                ("skipped", seen.skipped, now.skipped),
            ] {
                self.metrics
                    .mails
                    .with_label_values(&[outcome])
                    .inc_by(after.saturating_sub(before));
            }
            seen = now;
            if let Ok(checkpoint) = self
                .models
                .load_checkpoint(newsletter_mailer::CHECKPOINT_NAME)
                .await
                && let Some((events, _)) = self.behind(checkpoint).await
            {
                self.metrics.mailer_backlog.set(events);
            }
        }
    }
}

/// Ready when every check is.
struct AllReady(Vec<Arc<dyn Readiness>>);

#[async_trait::async_trait]
impl Readiness for AllReady {
    async fn check(&self) -> Result<(), newsletter_api::ports::PortError> {
        for check in &self.0 {
            check.check().await?;
        }
        Ok(())
    }
}

/// The mailer's relay (or outbox) can take mail.
struct SmtpReadiness(Arc<dyn MailTransport>);

#[async_trait::async_trait]
impl Readiness for SmtpReadiness {
    async fn check(&self) -> Result<(), newsletter_api::ports::PortError> {
        Ok(self.0.check().await?)
    }
}

/// The projection is no further behind than `max_lag`.
struct LagReadiness {
    store: Arc<dyn EventStore>,
    models: ReadModels,
    max_lag: std::time::Duration,
}

#[async_trait::async_trait]
impl Readiness for LagReadiness {
    async fn check(&self) -> Result<(), newsletter_api::ports::PortError> {
        let checkpoint = self.models.projection_checkpoint().await?;
        let next = self.store.read_all(checkpoint, 1).await?;
        if let Some(event) = next.first() {
            let behind = (chrono::Utc::now() - event.recorded_at)
                .to_std()
                .unwrap_or_default();
            if behind > self.max_lag {
                return Err(format!(
                    "the projection is {} s behind (limit {} s)",
                    behind.as_secs(),
                    self.max_lag.as_secs()
                )
                .into());
            }
        }
        Ok(())
    }
}

/// `/health/live` of a role without the API: the process is up.
async fn ops_live() -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// `/health/ready` of a role without the API: its databases answer.
async fn ops_ready(readiness: web::Data<Arc<dyn Readiness>>) -> actix_web::HttpResponse {
    match readiness.check().await {
        Ok(()) => actix_web::HttpResponse::Ok().json(serde_json::json!({ "status": "ok" })),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            actix_web::HttpResponse::ServiceUnavailable()
                .content_type("application/problem+json")
                .json(serde_json::json!({
                    "type": "https://newsletter.invalid/problems/busy",
                    "title": "Service Unavailable",
                    "status": 503,
                    "detail": "not ready: a database is not reachable",
                }))
        }
    }
}

/// Waits for the role's lease; `None` when the process is stopping (or the lease store fails,
/// which also stops the process).
async fn acquire_or_stop(
    leases: &LeaseStore,
    name: &str,
    stop_rx: &watch::Receiver<bool>,
    lost_tx: &watch::Sender<bool>,
) -> Option<Lease> {
    match leases.acquire(name, when_stopped(stop_rx)).await {
        Ok(lease) => lease,
        Err(e) => {
            tracing::error!(lease = name, error = %e, "cannot take the lease");
            let _ = lost_tx.send(true);
            None
        }
    }
}

/// Completes on SIGTERM or when the lease is lost.
fn stop_or_lost(
    stop_rx: &watch::Receiver<bool>,
    lease: &Lease,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let stopped = when_stopped(stop_rx);
    let lost = lease.lost();
    async move {
        tokio::select! {
            () = stopped => {}
            () = lost => {}
        }
    }
}

fn lease_was_lost(lease: &Lease) -> bool {
    lease.is_lost()
}

/// Empties the read models and replays the whole log into them.
pub async fn rebuild_projections(raw: RawSettings) -> Result<(), SettingError> {
    let (_, _, storage) = prepare(&raw).await?;
    let started = std::time::Instant::now();
    let report = ProjectionRunner::default()
        .rebuild(&storage.store, &storage.models)
        .await
        .map_err(|e| {
            SettingError::new("NEWSLETTER_DATABASE_URL", format!("rebuild failed: {e}"))
        })?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "rebuilt read models: {} events in {:.2} s ({:.0} events/s), {} subscribers, {} list memberships",
        report.events,
        seconds,
        report.events as f64 / seconds.max(f64::EPSILON),
        report.subscribers,
        report.memberships
    );
    Ok(())
}
