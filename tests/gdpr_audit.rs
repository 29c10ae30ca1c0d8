//! The admin audit log and the completeness of the export, end to end against the real binary
//! over real HTTP, on SQLite and on PostgreSQL (a fresh database per test).
//!
//! - Every `/admin` call, whatever its outcome (no token, a token without the scope, bad input,
//!   unknown subscriber, erased subscriber, unknown path or method, success), leaves exactly
//!   one audit entry with the right actor, action, subscriber and outcome, and no entry holds
//!   personal data or the request body.
//! - When the audit entry cannot be written (SQLite vault locked by another writer), the call
//!   answers 503 problem+json and returns no data.
//! - The export (schema version 2) holds every earlier value: the profile of a superseded
//!   request, and values replaced or cleared by a later confirmation or a rectification.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "gdpr_support.rs"]
mod gdpr_support;

use gdpr_support::*;
use serde_json::{Value, json};

/// A fresh address, name and company for one test.
fn someone(tag: &str) -> (String, String, String) {
    let id = uuid::Uuid::new_v4().simple().to_string();
    (
        format!("{tag}-{}@example.com", &id[..12]),
        format!("Auditta Vestergaard {}", &id[12..18]),
        format!("Revisionshuset {} ApS", &id[18..24]),
    )
}

async fn sign_up(svc: &Service, email: &str, name: &str, company: &str) {
    let (status, body) = svc
        .call(
            "POST",
            "/v1/subscriptions",
            None,
            Some(json!({"email": email, "name": name, "company": company,
                        "lists": ["newsletter"], "locale": "da"})),
        )
        .await;
    assert_eq!(status, 202, "signup: {body}");
}

/// Signs up and confirms; returns the subscriber id.
async fn confirmed_subscriber(svc: &Service, email: &str, name: &str, company: &str) -> String {
    sign_up(svc, email, name, company).await;
    eventually("the confirmation mail", || async {
        (!svc.outbox_mails(email).is_empty()).then_some(())
    })
    .await;
    assert_eq!(confirm_live_request(svc, email).await, 200, "confirm");
    let (status, body) = svc
        .call(
            "POST",
            "/admin/v1/subscribers/export",
            Some(ADMIN_TOKEN),
            Some(json!({"email": email})),
        )
        .await;
    assert_eq!(status, 200, "export by address: {body}");
    body["subscriber_id"].as_str().unwrap().to_owned()
}

/// The highest audit id so far (the read itself is the entry right after it).
async fn audit_cursor(svc: &Service) -> i64 {
    audit_entries_after(svc, 0)
        .await
        .iter()
        .filter_map(|e| e["id"].as_i64())
        .max()
        .unwrap_or(0)
}

/// One admin call and the audit entry it must leave.
struct Case {
    method: &'static str,
    path: String,
    token: Option<&'static str>,
    body: Body,
    status: u16,
    actor: &'static str,
    action: &'static str,
    subscriber: Option<String>,
    outcome: &'static str,
    detail: Option<&'static str>,
}

impl Case {
    fn detail(mut self, detail: &'static str) -> Self {
        self.detail = Some(detail);
        self
    }
}

enum Body {
    None,
    Json(Value),
    Raw(&'static str, &'static str),
}

#[allow(clippy::too_many_arguments)]
fn case(
    method: &'static str,
    path: String,
    token: Option<&'static str>,
    body: Body,
    status: u16,
    action: &'static str,
    subscriber: Option<&str>,
    outcome: &'static str,
) -> Case {
    let actor = match token {
        Some(ADMIN_TOKEN) => "dpo",
        Some(STATUS_TOKEN) => "reader",
        _ => "anonymous",
    };
    Case {
        method,
        path,
        token,
        body,
        status,
        actor,
        action,
        subscriber: subscriber.map(str::to_owned),
        outcome,
        detail: None,
    }
}

async fn every_admin_call_is_audited_once(pg: Option<PgDatabase>) {
    let svc = Service::start(pg, &[]).await;
    let (email, name, company) = someone("audited");
    let id = confirmed_subscriber(&svc, &email, &name, &company).await;
    let s = id.as_str();
    let unknown = uuid::Uuid::now_v7().to_string();
    let u = unknown.as_str();
    let nobody = "nobody-audit-7731@example.com";
    let admin = Some(ADMIN_TOKEN);
    let subscriber_path = |rest: &str| format!("/admin/v1/subscribers/{s}{rest}");
    let unknown_path = |rest: &str| format!("/admin/v1/subscribers/{u}{rest}");
    let export = "/admin/v1/subscribers/export".to_owned();
    let reason = || Body::Json(json!({"reason": "dispute"}));

    let mut cases = vec![
        // Refused before the handler: no token, an unknown secret, a token without the scope.
        case(
            "GET",
            "/admin/v1/stats".into(),
            None,
            Body::None,
            401,
            "stats.read",
            None,
            "unauthorized",
        ),
        case(
            "GET",
            "/admin/v1/stats".into(),
            Some("not-a-configured-secret-0000"),
            Body::None,
            401,
            "stats.read",
            None,
            "unauthorized",
        ),
        case(
            "GET",
            "/admin/v1/stats".into(),
            Some(STATUS_TOKEN),
            Body::None,
            403,
            "stats.read",
            None,
            "forbidden",
        ),
        case(
            "POST",
            subscriber_path("/restrict"),
            Some(STATUS_TOKEN),
            reason(),
            403,
            "subscriber.restrict",
            Some(s),
            "forbidden",
        ),
        case(
            "DELETE",
            subscriber_path(""),
            None,
            Body::None,
            401,
            "subscriber.erase",
            Some(s),
            "unauthorized",
        ),
        case(
            "POST",
            export.clone(),
            None,
            Body::Json(json!({"email": email})),
            401,
            "subscriber.export_by_email",
            None,
            "unauthorized",
        ),
        // Reads.
        case(
            "GET",
            "/admin/v1/stats".into(),
            admin,
            Body::None,
            200,
            "stats.read",
            None,
            "ok",
        ),
        case(
            "GET",
            "/admin/v1/audit?limit=0".into(),
            admin,
            Body::None,
            400,
            "audit.read",
            None,
            "invalid",
        ),
        case(
            "GET",
            "/admin/v1/audit?after=abc".into(),
            admin,
            Body::None,
            400,
            "audit.read",
            None,
            "invalid",
        ),
        case(
            "GET",
            subscriber_path("/export"),
            admin,
            Body::None,
            200,
            "subscriber.export",
            Some(s),
            "ok",
        ),
        case(
            "GET",
            unknown_path("/export"),
            admin,
            Body::None,
            404,
            "subscriber.export",
            Some(u),
            "not_found",
        ),
        case(
            "GET",
            "/admin/v1/subscribers/not-an-id/export".into(),
            admin,
            Body::None,
            404,
            "subscriber.export",
            None,
            "invalid",
        ),
        case(
            "POST",
            export.clone(),
            admin,
            Body::Json(json!({"email": email})),
            200,
            "subscriber.export_by_email",
            Some(s),
            "ok",
        ),
        case(
            "POST",
            export.clone(),
            admin,
            Body::Json(json!({"email": nobody})),
            404,
            "subscriber.export_by_email",
            None,
            "not_found",
        ),
        case(
            "POST",
            export.clone(),
            admin,
            Body::Json(json!({"email": "not an address"})),
            400,
            "subscriber.export_by_email",
            None,
            "invalid",
        ),
        case(
            "POST",
            export.clone(),
            admin,
            Body::Raw(
                "application/json",
                "{\"email\": \"half-a-body@example.com\"",
            ),
            400,
            "subscriber.export_by_email",
            None,
            "invalid",
        ),
        case(
            "POST",
            export.clone(),
            admin,
            Body::Raw("text/plain", "nobody-plain@example.com"),
            415,
            "subscriber.export_by_email",
            None,
            "invalid",
        ),
        // Changes.
        case(
            "PATCH",
            subscriber_path("/profile"),
            admin,
            Body::Json(json!({"phone": "+45 11 22 33 44"})),
            200,
            "subscriber.rectify",
            Some(s),
            "ok",
        ),
        case(
            "PATCH",
            subscriber_path("/profile"),
            admin,
            Body::Json(json!({"secret-member@example.com": "x"})),
            400,
            "subscriber.rectify",
            Some(s),
            "invalid",
        ),
        case(
            "PATCH",
            subscriber_path("/profile"),
            admin,
            Body::Json(json!({"name": 42})),
            400,
            "subscriber.rectify",
            Some(s),
            "invalid",
        ),
        case(
            "PATCH",
            unknown_path("/profile"),
            admin,
            Body::Json(json!({"name": "Ny Navnesen"})),
            404,
            "subscriber.rectify",
            Some(u),
            "not_found",
        ),
        case(
            "POST",
            subscriber_path("/restrict"),
            admin,
            reason(),
            200,
            "subscriber.restrict",
            Some(s),
            "ok",
        ),
        case(
            "POST",
            subscriber_path("/restrict"),
            admin,
            Body::Json(json!({})),
            400,
            "subscriber.restrict",
            Some(s),
            "invalid",
        ),
        case(
            "POST",
            subscriber_path("/lift-restriction"),
            admin,
            reason(),
            200,
            "subscriber.lift_restriction",
            Some(s),
            "ok",
        ),
        case(
            "POST",
            unknown_path("/lift-restriction"),
            admin,
            reason(),
            404,
            "subscriber.lift_restriction",
            Some(u),
            "not_found",
        ),
        case(
            "POST",
            subscriber_path("/object"),
            admin,
            Body::None,
            200,
            "subscriber.object",
            Some(s),
            "ok",
        ),
        case(
            "POST",
            unknown_path("/object"),
            admin,
            Body::None,
            404,
            "subscriber.object",
            Some(u),
            "not_found",
        ),
        case(
            "DELETE",
            format!("/admin/v1/subscribers/{u}?reference=DSR-AUDIT-1"),
            admin,
            Body::None,
            404,
            "subscriber.erase",
            Some(u),
            "not_found",
        )
        .detail("DSR-AUDIT-1"),
        case(
            "DELETE",
            format!("/admin/v1/subscribers/{s}?reference=not%20a%20reference"),
            admin,
            Body::None,
            400,
            "subscriber.erase",
            Some(s),
            "invalid",
        ),
        case(
            "DELETE",
            format!("/admin/v1/subscribers/{s}?reference=DSR-AUDIT-2"),
            admin,
            Body::None,
            200,
            "subscriber.erase",
            Some(s),
            "ok",
        )
        .detail("DSR-AUDIT-2"),
        // After the erasure.
        case(
            "GET",
            subscriber_path("/export"),
            admin,
            Body::None,
            404,
            "subscriber.export",
            Some(s),
            "erased",
        ),
        case(
            "PATCH",
            subscriber_path("/profile"),
            admin,
            Body::Json(json!({"name": "Ny Navnesen"})),
            404,
            "subscriber.rectify",
            Some(s),
            "erased",
        ),
        // Paths and methods that name no endpoint.
        case(
            "GET",
            "/admin/v1/nothing-here".into(),
            admin,
            Body::None,
            404,
            "admin.unknown",
            None,
            "not_found",
        ),
        case(
            "GET",
            "/admin/v1/nothing-here".into(),
            None,
            Body::None,
            401,
            "admin.unknown",
            None,
            "unauthorized",
        ),
    ];
    cases.push(Case {
        action: "GET /admin/v1/subscribers/{id}",
        ..case(
            "GET",
            subscriber_path(""),
            admin,
            Body::None,
            405,
            "",
            Some(s),
            "invalid",
        )
    });

    let cursor = audit_cursor(&svc).await;
    for c in &cases {
        let (status, answer) = match &c.body {
            Body::None => svc.call(c.method, &c.path, c.token, None).await,
            Body::Json(body) => {
                svc.call(c.method, &c.path, c.token, Some(body.clone()))
                    .await
            }
            Body::Raw(content_type, body) => {
                call_raw(&svc, c.method, &c.path, c.token, content_type, body).await
            }
        };
        assert_eq!(status, c.status, "{} {}: {answer}", c.method, c.path);
    }

    let entries = audit_entries_after(&svc, cursor).await;
    // The first entry is the read that found the cursor.
    assert_eq!(entries[0]["action"], "audit.read");
    let entries = &entries[1..];
    let seen: Vec<String> = entries
        .iter()
        .map(|e| {
            format!(
                "{} {} {} {}",
                e["actor"], e["action"], e["subscriber_id"], e["outcome"]
            )
        })
        .collect();
    assert_eq!(
        entries.len(),
        cases.len(),
        "exactly one entry per call; got:\n{}",
        seen.join("\n")
    );
    for (c, e) in cases.iter().zip(entries) {
        let what = format!("{} {} -> {e}", c.method, c.path);
        assert_eq!(e["actor"], c.actor, "{what}");
        assert_eq!(e["action"], c.action, "{what}");
        assert_eq!(e["outcome"], c.outcome, "{what}");
        assert_eq!(
            e["subscriber_id"].as_str(),
            c.subscriber.as_deref(),
            "{what}"
        );
        if let Some(detail) = c.detail {
            assert_eq!(e["detail"], detail, "{what}");
        }
    }
    let text = serde_json::to_string(entries).unwrap().to_ascii_lowercase();
    for secret in [
        email.as_str(),
        nobody,
        "half-a-body",
        "nobody-plain",
        "secret-member",
        "+45 11 22 33 44",
        "dispute",
        "not-a-configured-secret",
    ] {
        assert!(
            !text.contains(&secret.to_ascii_lowercase()),
            "the audit log holds {secret:?}"
        );
    }
}

#[tokio::test]
async fn every_admin_call_is_audited_once_on_sqlite() {
    every_admin_call_is_audited_once(None).await;
}

#[tokio::test]
#[cfg_attr(
    not(postgres_tests),
    ignore = "NEWSLETTER_TEST_DATABASE_URL is not set: PostgreSQL tests not run"
)]
async fn every_admin_call_is_audited_once_on_postgres() {
    every_admin_call_is_audited_once(Some(PgDatabase::create().await)).await;
}

/// With the audit log unwritable (another process holds the SQLite vault's write lock past
/// the busy timeout), an export answers 503 problem+json and returns no personal data; once
/// the lock is gone the same call succeeds and is recorded.
#[tokio::test]
async fn a_call_that_cannot_be_audited_returns_no_data() {
    use sqlx::Connection as _;
    let svc = Service::start(None, &[]).await;
    let (email, name, company) = someone("unaudited");
    let id = confirmed_subscriber(&svc, &email, &name, &company).await;
    let cursor = audit_cursor(&svc).await;

    let vault = svc.data_dir().join("keyvault.db");
    let mut blocker = sqlx::SqliteConnection::connect(&format!("sqlite://{}", vault.display()))
        .await
        .expect("open the vault file");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut blocker)
        .await
        .expect("take the write lock");
    let (status, answer) = svc
        .call(
            "GET",
            &format!("/admin/v1/subscribers/{id}/export"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    sqlx::query("ROLLBACK")
        .execute(&mut blocker)
        .await
        .expect("release the write lock");
    drop(blocker);
    assert_eq!(status, 503, "{answer}");
    assert_eq!(
        answer["type"],
        "https://newsletter.invalid/problems/audit-unavailable"
    );
    let text = answer.to_string();
    assert!(!text.contains(&email) && !text.contains(&name), "{text}");

    let (status, _) = svc
        .call(
            "GET",
            &format!("/admin/v1/subscribers/{id}/export"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let entries = audit_entries_after(&svc, cursor).await;
    let exports: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == "subscriber.export")
        .collect();
    assert_eq!(
        exports.len(),
        1,
        "only the answered export is recorded: {entries:?}"
    );
    assert_eq!(exports[0]["outcome"], "ok");
}

async fn the_export_holds_every_earlier_value(pg: Option<PgDatabase>) {
    let svc = Service::start(pg, &[]).await;
    let (email, first_name, first_company) = someone("earlier");
    let (_, second_name, second_company) = someone("earlier");
    // A first request, superseded by a second with another name and company.
    sign_up(&svc, &email, &first_name, &first_company).await;
    eventually("the first confirmation mail", || async {
        (!svc.outbox_mails(&email).is_empty()).then_some(())
    })
    .await;
    sign_up(&svc, &email, &second_name, &second_company).await;
    eventually("the second confirmation mail", || async {
        (svc.outbox_mails(&email).len() >= 2).then_some(())
    })
    .await;
    assert_eq!(confirm_live_request(&svc, &email).await, 200, "confirm");
    let (status, body) = svc
        .call(
            "POST",
            "/admin/v1/subscribers/export",
            Some(ADMIN_TOKEN),
            Some(json!({"email": email})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let id = body["subscriber_id"].as_str().unwrap().to_owned();
    // Rectification replaces the name and clears the company.
    let rectified_name = "Rettet Navnesen";
    let (status, body) = svc
        .call(
            "PATCH",
            &format!("/admin/v1/subscribers/{id}/profile"),
            Some(ADMIN_TOKEN),
            Some(json!({"name": rectified_name, "company": null})),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let (status, document) = svc
        .call(
            "GET",
            &format!("/admin/v1/subscribers/{id}/export"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 200, "{document}");
    assert_eq!(document["schema_version"], 2);
    assert_eq!(document["profile"]["name"], rectified_name);
    assert!(document["profile"].get("company").is_none(), "{document}");

    // The superseded request, as typed.
    let requests = document["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 2, "{document}");
    assert_eq!(requests[0]["outcome"], "superseded");
    assert_eq!(requests[0]["email"], email.as_str());
    assert_eq!(requests[0]["profile"]["name"], first_name.as_str());
    assert_eq!(requests[0]["profile"]["company"], first_company.as_str());
    assert!(requests[0]["ended_at"].is_string());
    assert_eq!(requests[1]["outcome"], "confirmed");
    assert_eq!(requests[1]["profile"]["name"], second_name.as_str());

    // The values the rectification replaced or cleared, with when and by what.
    let earlier = document["earlier_values"].as_array().unwrap();
    let name_value = earlier
        .iter()
        .find(|v| v["field"] == "name")
        .unwrap_or_else(|| panic!("the replaced name: {document}"));
    assert_eq!(name_value["value"], second_name.as_str());
    assert_eq!(name_value["replaced_by"], rectified_name);
    assert_eq!(name_value["change"], "rectification");
    assert!(name_value["held_from"].as_str() < name_value["held_until"].as_str());
    let company_value = earlier
        .iter()
        .find(|v| v["field"] == "company")
        .unwrap_or_else(|| panic!("the cleared company: {document}"));
    assert_eq!(company_value["value"], second_company.as_str());
    assert!(company_value["replaced_by"].is_null());

    // Every value ever given is somewhere in the document.
    let text = document.to_string();
    for value in [
        &email,
        &first_name,
        &first_company,
        &second_name,
        &second_company,
    ] {
        assert!(
            text.contains(value.as_str()),
            "{value} missing from {document}"
        );
    }
}

#[tokio::test]
async fn the_export_holds_every_earlier_value_on_sqlite() {
    the_export_holds_every_earlier_value(None).await;
}

#[tokio::test]
#[cfg_attr(
    not(postgres_tests),
    ignore = "NEWSLETTER_TEST_DATABASE_URL is not set: PostgreSQL tests not run"
)]
async fn the_export_holds_every_earlier_value_on_postgres() {
    the_export_holds_every_earlier_value(Some(PgDatabase::create().await)).await;
}
