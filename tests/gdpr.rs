//! GDPR duties end to end (issue 4), against the real binary over real HTTP, with the outbox as
//! the mail transport, on SQLite and on PostgreSQL (a fresh database per test).
//!
//! - After an erasure no byte of the data dir (every file, `-wal` included), of a `pg_dump`, or
//!   of the service's logs holds the address, name, company, IP addresses or user agent; the
//!   same address can then subscribe again, as a new subscriber.
//! - The export of a confirmed subscriber holds consent evidence of both steps with the policy
//!   version.
//! - A restricted subscriber is absent from the confirmed listing and is sent nothing.
//! - Retention erases an expired pending request and leaves a confirmed subscriber alone.
//! - Every admin endpoint answers 403 to a `status`-only token and 401 without one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "gdpr_support.rs"]
mod gdpr_support;

use std::time::Duration;

use gdpr_support::*;
use serde_json::{Value, json};

const SIGNUP_IP: &str = "203.0.113.77";
const CONFIRM_IP: &str = "198.51.100.23";
const USER_AGENT: &str = "GdprTestBrowser/9.1 (Quokka)";

struct Person {
    email: String,
    name: String,
    company: String,
}

fn person(tag: &str) -> Person {
    let id = uuid::Uuid::new_v4().simple().to_string();
    Person {
        email: format!("{tag}-{}@example.com", &id[..12]),
        name: format!("Ingrid Zylberstein {}", &id[12..20]),
        company: format!("Qwertyfabrik {} ApS", &id[20..28]),
    }
}

async fn sign_up(svc: &Service, who: &Person, lists: &[&str]) {
    let response = svc
        .client
        .post(svc.url("/v1/subscriptions"))
        .header("X-Forwarded-For", SIGNUP_IP)
        .header("User-Agent", USER_AGENT)
        .json(&json!({
            "email": who.email, "name": who.name, "company": who.company,
            "lists": lists, "locale": "da", "source": "gdpr-e2e"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202, "signup");
}

async fn subscriber_id(svc: &Service, email: &str) -> String {
    let (status, body) = svc
        .call(
            "POST",
            "/admin/v1/subscribers/export",
            Some(ADMIN_TOKEN),
            Some(json!({"email": email})),
        )
        .await;
    assert_eq!(status, 200, "export by email: {body}");
    body["subscriber_id"].as_str().unwrap().to_owned()
}

/// Signs up, confirms from the mail, waits until the status API says confirmed; returns the id.
async fn confirmed(svc: &Service, who: &Person) -> String {
    sign_up(svc, who, &["newsletter"]).await;
    let mail = eventually("the confirmation mail", || async {
        svc.outbox_mails(&who.email).into_iter().next()
    })
    .await;
    let token = confirm_token(&mail, &svc.base);
    let response = svc
        .client
        .post(svc.url("/v1/confirm"))
        .header("X-Forwarded-For", CONFIRM_IP)
        .header("User-Agent", USER_AGENT)
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200, "confirm");
    let id = subscriber_id(svc, &who.email).await;
    eventually("the confirmed status", || async {
        let (status, body) = svc
            .call(
                "GET",
                &format!("/internal/v1/subscribers/{id}"),
                Some(STATUS_TOKEN),
                None,
            )
            .await;
        (status == 200 && body["lists"][0]["status"] == "confirmed").then_some(())
    })
    .await;
    id
}

/// The phone number the erasure test sets by rectification.
const PHONE: &str = "+45 12 34 56 78";

fn needles(who: &Person) -> Vec<String> {
    vec![
        who.email.clone(),
        who.name.clone(),
        who.company.clone(),
        PHONE.to_owned(),
        SIGNUP_IP.to_owned(),
        CONFIRM_IP.to_owned(),
        USER_AGENT.to_owned(),
    ]
}

fn assert_absent(what: &str, bytes: &[u8], who: &Person) {
    for needle in needles(who) {
        assert!(
            !contains_ignore_case(bytes, &needle),
            "{what} still holds {needle:?} after the erasure"
        );
    }
}

async fn erasure_leaves_nothing(pg: Option<PgDatabase>) {
    let svc = Service::start(pg, &[]).await;
    let who = person("erase");
    let id = confirmed(&svc, &who).await;
    // Make the data travel everywhere first: an export, a rectification and a listing.
    let (status, _) = svc
        .call(
            "PATCH",
            &format!("/admin/v1/subscribers/{id}/profile"),
            Some(ADMIN_TOKEN),
            Some(json!({"phone": PHONE})),
        )
        .await;
    assert_eq!(status, 200);
    // Before: every profile field is in clear somewhere (the read models hold them, once the
    // projector has applied the rectification), so each absence check after the erasure can
    // fail. IPs and the user agent live only in sealed events: their absence is checked too,
    // but nothing shows them in clear before.
    let held = [
        who.email.clone(),
        who.name.clone(),
        who.company.clone(),
        PHONE.to_owned(),
    ];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let before: Vec<u8> = match &svc.pg {
            Some(db) => db.dump(),
            None => svc.data_files().into_iter().flat_map(|(_, b)| b).collect(),
        };
        let missing: Vec<&String> = held
            .iter()
            .filter(|h| !contains_ignore_case(&before, h))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the scan never sees {missing:?} in clear before erasure"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    // The sealed side: every personal field, IPs and user agent included, is in the stored
    // events, sealed (no needle in clear in a raw payload), and opens with the live key.
    let storage = svc.storage().await;
    assert!(matches!(
        storage.key_state(&id).await,
        Some(newsletter_keyvault::KeyState::Active(_))
    ));
    let sealed_before = storage.sealed_events(&id).await;
    let sealed_types: Vec<&str> = sealed_before
        .iter()
        .filter(|e| e.payload.contains(newsletter_keyvault::SEALED_MEMBER))
        .map(|e| e.event_type.as_str())
        .collect();
    for kind in [
        "SubscriptionRequested",
        "SubscriptionConfirmed",
        "ProfileRectified",
    ] {
        assert!(
            sealed_types.contains(&kind),
            "{kind} holds sealed data: {sealed_types:?}"
        );
    }
    for event in &sealed_before {
        assert_absent("a stored event payload", event.payload.as_bytes(), &who);
    }
    let opened: String = storage
        .opened_events(&id)
        .await
        .iter()
        .map(|e| e.payload.clone())
        .collect();
    for needle in needles(&who) {
        assert!(
            opened.contains(&needle),
            "{needle:?} opens from the sealed events before the erasure"
        );
    }
    drop(storage);

    let (status, receipt) = svc
        .call(
            "DELETE",
            &format!("/admin/v1/subscribers/{id}?reference=DSR-2026-0042"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(receipt["subscriber_id"], id.as_str());
    assert_eq!(receipt["reference"], "DSR-2026-0042");
    assert_eq!(receipt["actor"], "dpo");
    assert_eq!(receipt["data_key"], "destroyed");
    assert_eq!(receipt["read_model"], "deleted");
    assert_eq!(receipt["email_index_entries_removed"], 1);
    assert_eq!(receipt["already_erased"], false);
    if svc.pg.is_none() {
        assert_eq!(receipt["outbox_files_deleted"], 1);
        assert_eq!(receipt["sqlite_wal_truncated"], true);
    }
    // Erasing twice is fine.
    let (status, again) = svc
        .call(
            "DELETE",
            &format!("/admin/v1/subscribers/{id}"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(again["already_erased"], true);
    assert_eq!(again["data_key"], "already_destroyed");
    // Gone from the status API and from exports.
    let (status, _) = svc
        .call(
            "GET",
            &format!("/internal/v1/subscribers/{id}"),
            Some(STATUS_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = svc
        .call(
            "GET",
            &format!("/admin/v1/subscribers/{id}/export"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = svc
        .call(
            "POST",
            "/admin/v1/subscribers/export",
            Some(ADMIN_TOKEN),
            Some(json!({"email": who.email})),
        )
        .await;
    assert_eq!(status, 404, "the email index no longer maps the address");

    // The sealed events are all still stored, byte for byte, but the key is gone: they no
    // longer open and read as `PersonalDataErased`. That, not their deletion, is why the
    // personal data they hold is gone from every copy of the log.
    let storage = svc.storage().await;
    assert!(matches!(
        storage.key_state(&id).await,
        Some(newsletter_keyvault::KeyState::Shredded(_))
    ));
    let sealed_after = storage.sealed_events(&id).await;
    assert_eq!(
        sealed_after[..sealed_before.len()]
            .iter()
            .map(|e| (&e.event_id, &e.payload))
            .collect::<Vec<_>>(),
        sealed_before
            .iter()
            .map(|e| (&e.event_id, &e.payload))
            .collect::<Vec<_>>(),
        "the stored events are unchanged"
    );
    let opened_after = storage.opened_events(&id).await;
    for (before, after) in sealed_before.iter().zip(&opened_after) {
        if before.payload.contains(newsletter_keyvault::SEALED_MEMBER) {
            assert_eq!(after.event_type, newsletter_keyvault::ERASED_TYPE);
        }
    }
    assert_eq!(
        opened_after.last().map(|e| e.event_type.as_str()),
        Some("SubscriberErased")
    );
    drop(storage);

    // The byte scans.
    for (path, bytes) in svc.data_files() {
        assert_absent(&path.display().to_string(), &bytes, &who);
    }
    if let Some(db) = &svc.pg {
        assert_absent("pg_dump", &db.dump(), &who);
    }
    assert_absent("the service logs", &svc.logs_bytes(), &who);

    // The anonymous counts survive the erasure.
    eventually("the statistics to count the erasure", || async {
        let (status, stats) = svc
            .call("GET", "/admin/v1/stats", Some(ADMIN_TOKEN), None)
            .await;
        assert_eq!(status, 200);
        stats["counts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| {
                c["list"] == "newsletter"
                    && c["requested"] == 1
                    && c["confirmed"] == 1
                    && c["erased"] == 1
            })
            .map(|_| ())
    })
    .await;

    // The same address can subscribe again, as a new subscriber.
    sign_up(&svc, &who, &["newsletter"]).await;
    let new_id = eventually("the new subscriber", || async {
        let (status, body) = svc
            .call(
                "POST",
                "/admin/v1/subscribers/export",
                Some(ADMIN_TOKEN),
                Some(json!({"email": who.email})),
            )
            .await;
        (status == 200).then(|| body["subscriber_id"].as_str().unwrap().to_owned())
    })
    .await;
    assert_ne!(new_id, id);
    eventually("a confirmation mail for the new request", || async {
        (!svc.outbox_mails(&who.email).is_empty()).then_some(())
    })
    .await;

    // The audit log recorded the erasure with the token's name.
    let (status, page) = svc
        .call("GET", "/admin/v1/audit", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(status, 200);
    let entries = page["entries"].as_array().unwrap();
    assert!(entries.iter().any(|e| e["action"] == "subscriber.erase"
        && e["actor"] == "dpo"
        && e["subscriber_id"] == id.as_str()
        && e["detail"] == "DSR-2026-0042"));
    assert!(!contains_ignore_case(
        page.to_string().as_bytes(),
        &who.email
    ));
}

#[tokio::test]
async fn erasure_leaves_no_personal_data_on_sqlite() {
    erasure_leaves_nothing(None).await;
}

#[tokio::test]
#[cfg_attr(
    not(postgres_tests),
    ignore = "NEWSLETTER_TEST_DATABASE_URL is not set: PostgreSQL tests not run"
)]
async fn erasure_leaves_no_personal_data_on_postgres() {
    erasure_leaves_nothing(Some(PgDatabase::create().await)).await;
}

async fn export_has_consent_of_both_steps(pg: Option<PgDatabase>) {
    let svc = Service::start(pg, &[]).await;
    let who = person("export");
    let id = confirmed(&svc, &who).await;
    let (status, doc) = svc
        .call(
            "GET",
            &format!("/admin/v1/subscribers/{id}/export"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["schema"], "newsletter.subscriber-export");
    assert_eq!(doc["schema_version"], 2);
    assert_eq!(doc["subscriber_id"], id.as_str());
    assert_eq!(doc["profile"]["email"], who.email.as_str());
    assert_eq!(doc["profile"]["name"], who.name.as_str());
    assert_eq!(doc["profile"]["company"], who.company.as_str());
    let consent = doc["consent"].as_array().unwrap();
    assert_eq!(consent.len(), 2, "{doc}");
    let step = |name: &str| -> &Value { consent.iter().find(|c| c["step"] == name).unwrap() };
    for (name, ip) in [("signup", SIGNUP_IP), ("confirmation", CONFIRM_IP)] {
        let c = step(name);
        assert_eq!(c["policy_version"], "2026-11", "{c}");
        assert_eq!(c["ip"], ip, "{c}");
        assert_eq!(c["user_agent"], USER_AGENT, "{c}");
        assert_eq!(c["lists"], json!(["newsletter"]));
        assert!(c["at"].is_string());
    }
    assert_eq!(step("signup")["source"], "gdpr-e2e");
    assert_eq!(
        doc["policies"],
        json!([{"version": "2026-11", "url": "https://policy.example/privatliv/2026-11",
                "effective_from": "2026-11-01"}]),
        "the export names the policy version's URL and effective date"
    );
    let subscription = &doc["subscriptions"][0];
    assert_eq!(subscription["list"], "newsletter");
    assert_eq!(subscription["status"], "confirmed");
    let history: Vec<&str> = subscription["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["pending", "confirmed"]);
    let mails = doc["mails"].as_array().unwrap();
    assert!(
        mails
            .iter()
            .any(|m| m["outcome"] == "sent" && m["kind"] == "confirmation"),
        "{doc}"
    );
    assert!(
        doc["admin_actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["action"] == "data_exported" && a["actor"] == "dpo")
    );
    // The CLI exports the same document by address, and records it too.
    let (ok, stdout, stderr) = svc.cli(&["export", &who.email, "--actor", "dpo-cli"]);
    assert!(ok, "{stderr}");
    let cli_doc: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(cli_doc["subscriber_id"], id.as_str());
    assert_eq!(cli_doc["consent"].as_array().unwrap().len(), 2);
    assert!(
        cli_doc["admin_actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["action"] == "data_exported" && a["actor"] == "dpo-cli")
    );
}

#[tokio::test]
async fn export_holds_consent_evidence_of_both_steps_on_sqlite() {
    export_has_consent_of_both_steps(None).await;
}

#[tokio::test]
#[cfg_attr(
    not(postgres_tests),
    ignore = "NEWSLETTER_TEST_DATABASE_URL is not set: PostgreSQL tests not run"
)]
async fn export_holds_consent_evidence_of_both_steps_on_postgres() {
    export_has_consent_of_both_steps(Some(PgDatabase::create().await)).await;
}

async fn listed(svc: &Service, id: &str, status: &str) -> bool {
    let (code, page) = svc
        .call(
            "GET",
            &format!("/internal/v1/lists/newsletter/subscribers?status={status}&limit=1000"),
            Some(STATUS_TOKEN),
            None,
        )
        .await;
    assert_eq!(code, 200);
    page["subscribers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["id"] == id)
}

async fn restricted_is_not_listed_nor_mailed(pg: Option<PgDatabase>) {
    let svc = Service::start(pg, &[]).await;
    let who = person("restrict");
    let id = confirmed(&svc, &who).await;
    eventually("the member listing", || async {
        listed(&svc, &id, "confirmed").await.then_some(())
    })
    .await;
    let (status, body) = svc
        .call(
            "POST",
            &format!("/admin/v1/subscribers/{id}/restrict"),
            Some(ADMIN_TOKEN),
            Some(json!({"reason": "contests accuracy (ticket DSR-7)"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["restricted"], true);
    eventually("the restricted listing", || async {
        (listed(&svc, &id, "restricted").await && !listed(&svc, &id, "confirmed").await)
            .then_some(())
    })
    .await;
    let mails_before = svc.outbox_mails(&who.email).len();
    // A new signup while restricted is answered like any other, and mails nothing.
    sign_up(&svc, &who, &["offers"]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        svc.outbox_mails(&who.email).len(),
        mails_before,
        "a restricted subscriber was mailed"
    );
    assert!(!listed(&svc, &id, "confirmed").await);
    // Lifting puts them back; objection then unsubscribes every list.
    let (status, _) = svc
        .call(
            "POST",
            &format!("/admin/v1/subscribers/{id}/lift-restriction"),
            Some(ADMIN_TOKEN),
            Some(json!({"reason": "resolved"})),
        )
        .await;
    assert_eq!(status, 200);
    eventually("listed again", || async {
        listed(&svc, &id, "confirmed").await.then_some(())
    })
    .await;
    let (status, body) = svc
        .call(
            "POST",
            &format!("/admin/v1/subscribers/{id}/object"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["lists"][0]["status"], "unsubscribed", "{body}");
    eventually("unlisted after objection", || async {
        (!listed(&svc, &id, "confirmed").await).then_some(())
    })
    .await;
}

#[tokio::test]
async fn restricted_subscriber_is_neither_listed_nor_mailed_on_sqlite() {
    restricted_is_not_listed_nor_mailed(None).await;
}

#[tokio::test]
#[cfg_attr(
    not(postgres_tests),
    ignore = "NEWSLETTER_TEST_DATABASE_URL is not set: PostgreSQL tests not run"
)]
async fn restricted_subscriber_is_neither_listed_nor_mailed_on_postgres() {
    restricted_is_not_listed_nor_mailed(Some(PgDatabase::create().await)).await;
}

async fn status_of(svc: &Service, id: &str) -> (u16, Value) {
    svc.call(
        "GET",
        &format!("/internal/v1/subscribers/{id}"),
        Some(STATUS_TOKEN),
        None,
    )
    .await
}

async fn retention_erases_expired_pending(pg: Option<PgDatabase>) {
    let mut svc = Service::start(pg, &[]).await;
    // The keeper is a retention candidate too: confirmed on one list, with a request for a
    // second list that is pending past the cutoff (and past its confirm-by time: requests made
    // while the confirm TTL is one second).
    let keeper = person("keep");
    let keeper_id = confirmed(&svc, &keeper).await;
    svc.stop();
    svc.set("NEWSLETTER_CONFIRM_TTL", "1s");
    svc.start_again().await;
    sign_up(&svc, &keeper, &["offers"]).await;
    let lapsed = person("lapse");
    sign_up(&svc, &lapsed, &["newsletter"]).await;
    let lapsed_id = subscriber_id(&svc, &lapsed.email).await;
    eventually("the pending statuses", || async {
        let (status, _) = status_of(&svc, &lapsed_id).await;
        let (_, keeper) = status_of(&svc, &keeper_id).await;
        let offers_pending = keeper["lists"].as_array().is_some_and(|l| {
            l.iter()
                .any(|m| m["list"] == "offers" && m["status"] == "pending")
        });
        (status == 200 && offers_pending).then_some(())
    })
    .await;
    // Restart with a retention of two seconds.
    svc.stop();
    svc.set("NEWSLETTER_RETENTION_PENDING", "2s");
    svc.start_again().await;
    eventually("retention to erase the unconfirmed request", || async {
        let (status, _) = status_of(&svc, &lapsed_id).await;
        (status == 404).then_some(())
    })
    .await;
    eventually("retention to expire the keeper's stale request", || async {
        let (_, body) = status_of(&svc, &keeper_id).await;
        let lists = body["lists"].as_array()?;
        (!lists.iter().any(|m| m["list"] == "offers")).then_some(())
    })
    .await;
    // Several more passes: the confirmed subscriber stays, confirmed.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (status, body) = status_of(&svc, &keeper_id).await;
    assert_eq!(status, 200);
    assert_eq!(body["lists"][0]["list"], "newsletter");
    assert_eq!(body["lists"][0]["status"], "confirmed");
    let (status, doc) = svc
        .call(
            "GET",
            &format!("/admin/v1/subscribers/{keeper_id}/export"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["profile"]["email"], keeper.email.as_str());
    assert!(doc["pending_request"].is_null(), "{doc}");
    let offers = doc["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["list"] == "offers")
        .expect("the offers request is in the export");
    assert!(
        offers["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["status"] == "expired"),
        "{offers}"
    );
    let (status, _) = svc
        .call(
            "POST",
            "/admin/v1/subscribers/export",
            Some(ADMIN_TOKEN),
            Some(json!({"email": lapsed.email})),
        )
        .await;
    assert_eq!(status, 404, "the lapsed address is unknown again");
    let (_, page) = svc
        .call("GET", "/admin/v1/audit?limit=500", Some(ADMIN_TOKEN), None)
        .await;
    let entries = page["entries"].as_array().unwrap();
    assert!(entries.iter().any(|e| e["actor"] == "retention"
        && e["action"] == "subscriber.erase"
        && e["subscriber_id"] == lapsed_id.as_str()
        && e["detail"] == "retention-unconfirmed"));
    assert!(
        !entries
            .iter()
            .any(|e| e["actor"] == "retention" && e["subscriber_id"] == keeper_id.as_str())
    );
    if svc.pg.is_none() {
        for (path, bytes) in svc.data_files() {
            assert!(
                !contains_ignore_case(&bytes, &lapsed.email),
                "{} still holds the lapsed address",
                path.display()
            );
        }
    }
}

#[tokio::test]
async fn retention_erases_an_expired_pending_request_on_sqlite() {
    retention_erases_expired_pending(None).await;
}

#[tokio::test]
#[cfg_attr(
    not(postgres_tests),
    ignore = "NEWSLETTER_TEST_DATABASE_URL is not set: PostgreSQL tests not run"
)]
async fn retention_erases_an_expired_pending_request_on_postgres() {
    retention_erases_expired_pending(Some(PgDatabase::create().await)).await;
}

#[tokio::test]
async fn every_admin_endpoint_needs_the_admin_scope() {
    let svc = Service::start(None, &[]).await;
    let id = uuid::Uuid::now_v7();
    let endpoints: Vec<(&str, String, Option<Value>)> = vec![
        ("DELETE", format!("/admin/v1/subscribers/{id}"), None),
        ("GET", format!("/admin/v1/subscribers/{id}/export"), None),
        (
            "POST",
            "/admin/v1/subscribers/export".to_owned(),
            Some(json!({"email": "a@example.com"})),
        ),
        (
            "PATCH",
            format!("/admin/v1/subscribers/{id}/profile"),
            Some(json!({"name": "X"})),
        ),
        (
            "POST",
            format!("/admin/v1/subscribers/{id}/restrict"),
            Some(json!({"reason": "x"})),
        ),
        (
            "POST",
            format!("/admin/v1/subscribers/{id}/lift-restriction"),
            Some(json!({"reason": "x"})),
        ),
        ("POST", format!("/admin/v1/subscribers/{id}/object"), None),
        ("GET", "/admin/v1/audit?after=0".to_owned(), None),
        ("GET", "/admin/v1/stats".to_owned(), None),
    ];
    for (method, path, body) in &endpoints {
        let (status, problem) = svc.call(method, path, None, body.clone()).await;
        assert_eq!(status, 401, "{method} {path} without a token: {problem}");
        let (status, problem) = svc
            .call(method, path, Some(STATUS_TOKEN), body.clone())
            .await;
        assert_eq!(
            status, 403,
            "{method} {path} with a status token: {problem}"
        );
        assert_eq!(problem["status"], 403);
        let (status, _) = svc
            .call(method, path, Some(ADMIN_TOKEN), body.clone())
            .await;
        assert!(
            status == 200 || status == 404,
            "{method} {path} with the admin token: {status}"
        );
    }
    // The OpenAPI document lists them.
    let (_, doc) = svc.call("GET", "/openapi.json", None, None).await;
    for path in [
        "/admin/v1/subscribers/{id}",
        "/admin/v1/subscribers/export",
        "/admin/v1/audit",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
}

#[tokio::test]
async fn cli_erases_and_rotates_the_master_key() {
    let mut svc = Service::start(None, &[]).await;
    let who = person("cli");
    let id = confirmed(&svc, &who).await;
    let (ok, stdout, stderr) = svc.cli(&["rotate-master-key", "--generate"]);
    assert!(ok, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["rewrapped"], 1, "{report}");
    // A backup of the key vault taken before the erasure (service stopped: a consistent copy;
    // the restart also loads the new master key).
    svc.stop();
    let backup = tempfile::tempdir().unwrap();
    let vault_files = ["keyvault.db", "keyvault.db-wal"];
    for file in vault_files {
        if svc.data_dir().join(file).exists() {
            std::fs::copy(svc.data_dir().join(file), backup.path().join(file)).unwrap();
        }
    }
    svc.start_again().await;
    let (ok, stdout, stderr) =
        svc.cli(&["erase", &id, "--reference", "DSR-9", "--actor", "dpo-cli"]);
    assert!(ok, "{stderr}");
    let receipt: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(receipt["data_key"], "destroyed");
    let (status, _) = svc
        .call(
            "GET",
            &format!("/admin/v1/subscribers/{id}/export"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (ok, _, _) = svc.cli(&["erase", &uuid::Uuid::now_v7().to_string()]);
    assert!(!ok, "erasing an unknown id fails");
    // Restoring the old vault brings the destroyed key back; reapply-erasures shreds it again.
    svc.stop();
    let _ = std::fs::remove_file(svc.data_dir().join("keyvault.db-shm"));
    let _ = std::fs::remove_file(svc.data_dir().join("keyvault.db-wal"));
    for file in vault_files {
        if backup.path().join(file).exists() {
            std::fs::copy(backup.path().join(file), svc.data_dir().join(file)).unwrap();
        }
    }
    let live_keys = |svc: &Service| {
        let (ok, stdout, stderr) = svc.cli(&["rotate-master-key"]);
        assert!(ok, "{stderr}");
        let report: Value = serde_json::from_str(&stdout).unwrap();
        report["data_keys_per_master_key"]
            .as_object()
            .unwrap()
            .values()
            .map(|n| n.as_i64().unwrap())
            .sum::<i64>()
    };
    assert_eq!(
        live_keys(&svc),
        1,
        "the restored vault holds the destroyed key again"
    );
    let (ok, stdout, stderr) = svc.cli(&["reapply-erasures"]);
    assert!(ok, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["erased_subscribers"], 1, "{report}");
    assert_eq!(report["keys_destroyed_now"], 1, "{report}");
    let (ok, stdout, _) = svc.cli(&["reapply-erasures"]);
    assert!(ok);
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["keys_destroyed_now"], 0, "idempotent: {report}");
    assert_eq!(live_keys(&svc), 0);
    for (path, bytes) in svc.data_files() {
        assert!(
            !contains_ignore_case(&bytes, &who.email),
            "{} still holds the address",
            path.display()
        );
    }
}

/// Is any byte of the stored data (every data-dir file; the `pg_dump` on PostgreSQL) `needle`?
fn stored_anywhere(svc: &Service, needle: &str) -> Option<String> {
    if let Some(db) = &svc.pg
        && contains_ignore_case(&db.dump(), needle)
    {
        return Some("pg_dump".to_owned());
    }
    svc.data_files()
        .into_iter()
        .find(|(_, bytes)| contains_ignore_case(bytes, needle))
        .map(|(path, _)| path.display().to_string())
}

/// Signs up again with the address and returns the new subscriber's id.
async fn signs_up_as_new(svc: &Service, who: &Person, old_id: &str) {
    sign_up(svc, who, &["newsletter"]).await;
    let new_id = eventually("the new subscriber", || async {
        let (status, body) = svc
            .call(
                "POST",
                "/admin/v1/subscribers/export",
                Some(ADMIN_TOKEN),
                Some(json!({"email": who.email})),
            )
            .await;
        (status == 200).then(|| body["subscriber_id"].as_str().unwrap().to_owned())
    })
    .await;
    assert_ne!(new_id, old_id, "the address signs up as a new subscriber");
}

/// A process killed right after appending `SubscriberErased` (the test appends it exactly as
/// `erase` does, through the same library, with the service down) leaves the key live, the
/// index entry and the outbox mail; the projector's erasure sweep completes it on start.
async fn interrupted_erasure_is_completed(pg: Option<PgDatabase>) {
    let mut svc = Service::start(pg, &[]).await;
    let who = person("crash");
    let id = confirmed(&svc, &who).await;
    assert!(!svc.outbox_mails(&who.email).is_empty());
    svc.stop();
    let storage = svc.storage().await;
    storage.append_erasure_only(&id, "DSR-CRASH-1").await;
    assert!(
        matches!(
            storage.key_state(&id).await,
            Some(newsletter_keyvault::KeyState::Active(_))
        ),
        "the interrupted erasure left the key live"
    );
    drop(storage);
    svc.start_again().await;
    eventually("the sweep to complete the erasure", || async {
        stored_anywhere(&svc, &who.email).is_none().then_some(())
    })
    .await;
    let storage = svc.storage().await;
    assert!(matches!(
        storage.key_state(&id).await,
        Some(newsletter_keyvault::KeyState::Shredded(_))
    ));
    drop(storage);
    assert!(svc.outbox_mails(&who.email).is_empty());
    for needle in needles(&who) {
        assert_eq!(stored_anywhere(&svc, &needle), None, "{needle:?}");
    }
    let (status, _) = status_of(&svc, &id).await;
    assert_eq!(status, 404);
    signs_up_as_new(&svc, &who, &id).await;
}

#[tokio::test]
async fn an_interrupted_erasure_is_completed_on_sqlite() {
    interrupted_erasure_is_completed(None).await;
}

#[tokio::test]
#[cfg_attr(
    not(postgres_tests),
    ignore = "NEWSLETTER_TEST_DATABASE_URL is not set: PostgreSQL tests not run"
)]
async fn an_interrupted_erasure_is_completed_on_postgres() {
    interrupted_erasure_is_completed(Some(PgDatabase::create().await)).await;
}

/// A vault row missing (not tombstoned), as after restoring an old vault: the events read as
/// erased, yet erasure appends `SubscriberErased`, writes a tombstone and completes the rest.
async fn erasure_without_a_vault_row(pg: Option<PgDatabase>) {
    let svc = Service::start(pg, &[]).await;
    let who = person("nokey");
    let id = confirmed(&svc, &who).await;
    svc.delete_vault_row(&id).await;
    let (status, receipt) = svc
        .call(
            "DELETE",
            &format!("/admin/v1/subscribers/{id}?reference=DSR-NOKEY-1"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(receipt["already_erased"], false, "{receipt}");
    assert_eq!(receipt["data_key"], "none", "{receipt}");
    assert_eq!(receipt["email_index_entries_removed"], 1, "{receipt}");
    assert_eq!(receipt["read_model"], "deleted", "{receipt}");
    if svc.pg.is_none() {
        // The address came from the read model: the stream no longer opens.
        assert_eq!(receipt["outbox_files_deleted"], 1, "{receipt}");
    }
    let storage = svc.storage().await;
    let last = storage.sealed_events(&id).await.pop().unwrap();
    assert_eq!(last.event_type, "SubscriberErased");
    let payload: Value = serde_json::from_str(&last.payload).unwrap();
    assert_eq!(payload["reference"], "DSR-NOKEY-1", "{payload}");
    assert!(
        matches!(
            storage.key_state(&id).await,
            Some(newsletter_keyvault::KeyState::Shredded(_))
        ),
        "a tombstone keeps a fresh key from being made for the erased subscriber"
    );
    drop(storage);
    assert_eq!(stored_anywhere(&svc, &who.email), None);
    let (status, again) = svc
        .call(
            "DELETE",
            &format!("/admin/v1/subscribers/{id}"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(again["already_erased"], true);
    signs_up_as_new(&svc, &who, &id).await;
}

#[tokio::test]
async fn erasure_works_without_a_vault_row_on_sqlite() {
    erasure_without_a_vault_row(None).await;
}

#[tokio::test]
#[cfg_attr(
    not(postgres_tests),
    ignore = "NEWSLETTER_TEST_DATABASE_URL is not set: PostgreSQL tests not run"
)]
async fn erasure_works_without_a_vault_row_on_postgres() {
    erasure_without_a_vault_row(Some(PgDatabase::create().await)).await;
}

/// Retention erases every subscriber without consent in force for longer than the period —
/// a request cancelled with "this wasn't me", consent withdrawn from every list — and keeps
/// a restricted subscriber (even one who never confirmed) and a confirmed one.
async fn retention_without_consent(pg: Option<PgDatabase>) {
    let mut svc = Service::start(pg, &[]).await;
    let cancelled = person("cancel");
    sign_up(&svc, &cancelled, &["newsletter"]).await;
    let mail = eventually("the confirmation mail", || async {
        svc.outbox_mails(&cancelled.email).into_iter().next()
    })
    .await;
    let token = link_token(&mail, &svc.base, "/v1/cancel");
    let response = svc
        .client
        .post(svc.url("/v1/cancel"))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200, "cancel");
    let cancelled_id = subscriber_id(&svc, &cancelled.email).await;
    let withdrawn = person("withdraw");
    let withdrawn_id = confirmed(&svc, &withdrawn).await;
    let (status, _) = svc
        .call(
            "POST",
            &format!("/admin/v1/subscribers/{withdrawn_id}/object"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let restricted = person("restricted");
    sign_up(&svc, &restricted, &["newsletter"]).await;
    let restricted_id = subscriber_id(&svc, &restricted.email).await;
    let (status, _) = svc
        .call(
            "POST",
            &format!("/admin/v1/subscribers/{restricted_id}/restrict"),
            Some(ADMIN_TOKEN),
            Some(json!({"reason": "legal claim (ticket DSR-8)"})),
        )
        .await;
    assert_eq!(status, 200);
    let keeper = person("keeper");
    let keeper_id = confirmed(&svc, &keeper).await;
    eventually("the statuses", || async {
        let (_, c) = status_of(&svc, &cancelled_id).await;
        let (_, w) = status_of(&svc, &withdrawn_id).await;
        let (_, r) = status_of(&svc, &restricted_id).await;
        // A cancelled first request leaves no list at all.
        (c["lists"].as_array().is_some_and(Vec::is_empty)
            && w["lists"][0]["status"] == "unsubscribed"
            && r["lists"][0]["status"] == "restricted")
            .then_some(())
    })
    .await;
    svc.stop();
    svc.set("NEWSLETTER_RETENTION_PENDING", "2s");
    svc.start_again().await;
    for (what, id) in [("cancelled", &cancelled_id), ("withdrawn", &withdrawn_id)] {
        eventually(
            &format!("retention to erase the {what} subscriber"),
            || async { (status_of(&svc, id).await.0 == 404).then_some(()) },
        )
        .await;
    }
    // Several more passes: the restricted and the confirmed subscriber stay.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (status, body) = status_of(&svc, &restricted_id).await;
    assert_eq!(status, 200, "the restricted subscriber is kept");
    assert_eq!(body["lists"][0]["status"], "restricted");
    let (status, body) = status_of(&svc, &keeper_id).await;
    assert_eq!(status, 200);
    assert_eq!(body["lists"][0]["status"], "confirmed");
    let (_, page) = svc
        .call("GET", "/admin/v1/audit?limit=500", Some(ADMIN_TOKEN), None)
        .await;
    let entries = page["entries"].as_array().unwrap();
    for id in [&cancelled_id, &withdrawn_id] {
        assert!(entries.iter().any(|e| e["actor"] == "retention"
            && e["action"] == "subscriber.erase"
            && e["subscriber_id"] == id.as_str()
            && e["detail"] == "retention-no-consent"));
    }
    for who in [&cancelled, &withdrawn] {
        assert_eq!(stored_anywhere(&svc, &who.email), None, "{}", who.email);
    }
    assert!(stored_anywhere(&svc, &restricted.email).is_some());
}

#[tokio::test]
async fn retention_erases_subscribers_without_consent_on_sqlite() {
    retention_without_consent(None).await;
}

#[tokio::test]
#[cfg_attr(
    not(postgres_tests),
    ignore = "NEWSLETTER_TEST_DATABASE_URL is not set: PostgreSQL tests not run"
)]
async fn retention_erases_subscribers_without_consent_on_postgres() {
    retention_without_consent(Some(PgDatabase::create().await)).await;
}
