//! Nothing acknowledged is lost when the process stops under load: after SIGTERM (a clean
//! shutdown: in-flight requests finish, no 5xx) and after SIGKILL (no shutdown at all: every
//! signup answered 202 before the kill must be there after a restart, so every 202 was durable
//! when it was sent). Against the real binary over real HTTP, on SQLite and on PostgreSQL.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use support::{Backend, STATUS_TOKEN, Service, unique_email};

/// Signups driven by concurrent clients until `stop_at`, and what they were answered.
struct Load {
    acknowledged: Arc<Mutex<Vec<String>>>,
    server_errors: Arc<AtomicUsize>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts `workers` clients posting unique addresses to `/v1/subscriptions` until `stop_at`.
    /// Connection errors (the process is gone or shutting down) are not answers: the client
    /// waits a little and tries a new address.
    fn start(service: &Service, workers: usize, stop_at: Instant) -> Self {
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let server_errors = Arc::new(AtomicUsize::new(0));
        let workers = (0..workers)
            .map(|worker| {
                let client = service.client.clone();
                let url = service.url("/v1/subscriptions");
                let acknowledged = Arc::clone(&acknowledged);
                let server_errors = Arc::clone(&server_errors);
                tokio::spawn(async move {
                    let mut n = 0;
                    while Instant::now() < stop_at {
                        n += 1;
                        let email = unique_email(&format!("stop{worker}-{n}"));
                        match client
                            .post(&url)
                            .json(&json!({ "email": email }))
                            .send()
                            .await
                        {
                            Ok(r) if r.status().as_u16() == 202 => {
                                acknowledged.lock().expect("lock").push(email);
                            }
                            Ok(r) if r.status().is_server_error() => {
                                server_errors.fetch_add(1, Ordering::Relaxed);
                            }
                            _ => tokio::time::sleep(Duration::from_millis(20)).await,
                        }
                    }
                })
            })
            .collect();
        Self {
            acknowledged,
            server_errors,
            workers,
        }
    }

    /// Waits for every client; returns the acknowledged addresses and the count of 5xx answers.
    async fn finish(self) -> (Vec<String>, usize) {
        for worker in self.workers {
            worker.await.expect("load task");
        }
        let acknowledged = self.acknowledged.lock().expect("lock").clone();
        (acknowledged, self.server_errors.load(Ordering::Relaxed))
    }
}

/// Fails unless every address is known to the email index and the read models (the lookup
/// needs both) within 60 s of the restart.
async fn assert_all_present(service: &Service, acknowledged: &[String]) {
    assert!(
        acknowledged.len() >= 10,
        "too little load to test anything: {}",
        acknowledged.len()
    );
    for chunk in acknowledged.chunks(500) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = service
                .internal_post(
                    "/internal/v1/subscribers/lookup",
                    Some(STATUS_TOKEN),
                    &json!({ "emails": chunk }),
                )
                .await;
            let found = r.json_or_fail()["subscribers"]
                .as_array()
                .map_or(0, Vec::len);
            if found == chunk.len() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "only {found} of {} acknowledged signups are there after the restart",
                chunk.len()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

/// SIGTERM under load: requests in flight finish, the process exits cleanly, and every signup
/// that was acknowledged is there after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_nothing_acknowledged() {
    let service = Service::builder()
        .env("NEWSLETTER_SIGNUP_RATE_LIMIT", "0")
        .start()
        .await;
    let load = Load::start(&service, 16, Instant::now() + Duration::from_secs(4));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (clean, mut service) = tokio::task::spawn_blocking(move || {
        let mut service = service;
        let clean = service.terminate(Duration::from_secs(40));
        (clean, service)
    })
    .await
    .expect("terminate");
    let (acknowledged, server_errors) = load.finish().await;
    assert!(clean, "the service exited with an error after SIGTERM");
    assert_eq!(server_errors, 0, "5xx answers during shutdown");
    service.start_again().await;
    assert_all_present(&service, &acknowledged).await;
}

/// SIGKILL under load, in the middle of a stream of signups: every 202 sent before the kill is
/// there after a restart (the email-index claim, the data key and the event were all committed
/// durably before the answer).
async fn sigkill_under_load_loses_nothing_acknowledged(backend: Backend) {
    let mut service = Service::builder()
        .backend(backend)
        .env("NEWSLETTER_SIGNUP_RATE_LIMIT", "0")
        .start()
        .await;
    let load = Load::start(&service, 32, Instant::now() + Duration::from_secs(4));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let acknowledged_before_kill = load.acknowledged.lock().expect("lock").len();
    service.kill();
    let (acknowledged, server_errors) = load.finish().await;
    assert!(
        acknowledged_before_kill > 0,
        "the kill came before any signup was answered"
    );
    assert_eq!(server_errors, 0, "5xx answers before the kill");
    service.start_again().await;
    assert_all_present(&service, &acknowledged).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_nothing_acknowledged_sqlite() {
    sigkill_under_load_loses_nothing_acknowledged(Backend::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(postgres_tests),
    ignore = "NEWSLETTER_TEST_DATABASE_URL is not set: PostgreSQL tests not run"
)]
async fn sigkill_under_load_loses_nothing_acknowledged_postgres() {
    sigkill_under_load_loses_nothing_acknowledged(Backend::postgres().await).await;
}
