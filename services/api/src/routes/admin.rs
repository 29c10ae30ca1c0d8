//! `/admin/v1/…`: the data protection officer's endpoints (bearer token, scope `admin`).
//!
//! Every call, whatever its outcome (refused for a missing token or scope, invalid, unknown
//! subscriber, failed, or done), is recorded in the audit log exactly once, with the token's
//! name (`anonymous` without a known token) and the time, by one wrapper around the whole
//! `/admin` scope ([`audited`], mounted by [`scope`]), before the answer leaves. Subscribers are named by their opaque id in paths; an
//! address travels only in a request body (`POST /admin/v1/subscribers/export`).

use std::cell::RefCell;
use std::rc::Rc;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, ResponseError, web};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use newsletter_domain::{
    ActorName, CompanyName, DomainError, EmailAddress, ErasureReference, FieldChange, PersonName,
    PhoneNumber, PostalAddress, ProfileChanges, ReasonText, Subscriber, SubscriberCommand,
    SubscriberId, SubscriberState, UnsubscribeChannel, UnsubscribeScope, ValueError,
};
use newsletter_eventstore::{CommandError, EventMetadata, StreamId, execute};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::body::{body_kind, read_body};
use crate::auth::{Access, Scope};
use crate::error::{ApiError, FieldError};
use crate::export::{AuditLine, ExportDocument, PolicyInfo, build_export};
use crate::ports::PortError;
use crate::state::ApiState;

/// What an erasure did: the receipt handed to the data protection officer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErasureReceipt {
    /// A fresh id of this receipt.
    pub receipt_id: String,
    /// The erased subscriber's opaque id.
    pub subscriber_id: String,
    /// The data-subject request (or retention rule) it fulfils.
    pub reference: String,
    /// Who asked.
    pub actor: String,
    /// When the erasure was recorded.
    pub erased_at: DateTime<Utc>,
    /// True when the subscriber had been erased before (nothing was left to erase).
    pub already_erased: bool,
    /// `destroyed`, `already_destroyed` or `none` (the vault held no key: none was ever made,
    /// or its row is missing, e.g. after restoring an older vault; a tombstone is written).
    pub data_key: String,
    /// Entries removed from the email index.
    pub email_index_entries_removed: u64,
    /// `deleted` when the read-model rows are gone, `pending` when the projector has not yet
    /// caught up (it deletes them when it does).
    pub read_model: String,
    /// Files of the development outbox that held the subscriber's mails, deleted.
    pub outbox_files_deleted: u64,
    /// SQLite: write-ahead logs truncated so that freed pages leave them.
    pub sqlite_wal_truncated: bool,
}

/// An entry of the admin audit log.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditItem {
    /// Increasing id (the paging cursor).
    pub id: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// The token's name.
    pub actor: String,
    /// What was done.
    pub action: String,
    /// Whom it concerned.
    pub subscriber_id: Option<String>,
    /// `ok`, `invalid`, `not_found`, `erased`, `refused`, `busy`, `unauthorized`,
    /// `forbidden`, `error`.
    pub outcome: String,
    /// A reference, if any.
    pub detail: Option<String>,
}

/// What the admin endpoints need beyond the event store: erasure (which reaches the key vault,
/// the email index, the read models and the outbox) and the audit log.
#[async_trait]
pub trait PrivacyOperations: Send + Sync {
    /// Erases the subscriber; `Ok(None)` when the id names no subscriber.
    async fn erase(
        &self,
        subscriber: SubscriberId,
        actor: &ActorName,
        reference: &ErasureReference,
    ) -> Result<Option<ErasureReceipt>, PortError>;

    /// Records an audit entry.
    async fn record_audit(
        &self,
        actor: &str,
        action: &str,
        subscriber: Option<SubscriberId>,
        outcome: &str,
        detail: Option<&str>,
    ) -> Result<(), PortError>;

    /// Audit entries with an id above `after`, oldest first.
    async fn audit_page(&self, after: i64, limit: usize) -> Result<Vec<AuditItem>, PortError>;

    /// Every audit entry about one subscriber.
    async fn audit_of(&self, subscriber: SubscriberId) -> Result<Vec<AuditItem>, PortError>;

    /// The anonymous counts per list and month.
    async fn stats(&self) -> Result<Vec<MonthlyStats>, PortError>;

    /// The configured privacy-policy versions (URL and effective date).
    fn policies(&self) -> Vec<PolicyInfo>;
}

/// Anonymous counts of one list in one month (UTC); they survive erasure.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MonthlyStats {
    /// The list.
    pub list: String,
    /// `YYYY-MM`.
    pub month: String,
    /// Signups naming the list.
    pub requested: i64,
    /// Confirmations.
    pub confirmed: i64,
    /// Unsubscribes.
    pub unsubscribed: i64,
    /// Erased subscribers who had asked for it.
    pub erased: i64,
}

/// The anonymous statistics.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatsDocument {
    /// Per list and month, ordered.
    pub counts: Vec<MonthlyStats>,
}

/// A subscriber's state after an admin change.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminSubscriberStatus {
    /// The subscriber.
    pub subscriber_id: String,
    /// Whether the change recorded anything (false: it changed nothing).
    pub changed: bool,
    /// Processing restricted.
    pub restricted: bool,
    /// Status per list.
    pub lists: Vec<AdminListStatus>,
}

/// One list's status.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminListStatus {
    /// The list.
    pub list: String,
    /// `pending`, `confirmed` or `unsubscribed` (a restricted subscriber keeps its statuses
    /// but is neither mailed nor listed).
    pub status: String,
    /// Since when.
    pub since: DateTime<Utc>,
}

/// A reason, for restriction and its lifting.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonRequest {
    /// Why (one line, up to 500 characters; kept encrypted with the subscriber's data).
    pub reason: String,
}

/// An address to export by.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportByEmailRequest {
    /// The address.
    pub email: String,
}

/// Erasure parameters.
#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct EraseQuery {
    /// The data-subject request's reference (`[A-Za-z0-9._-]`, up to 64); generated if absent.
    reference: Option<String>,
}

/// Audit paging.
#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct AuditQuery {
    /// Entries after this id (the `next` of the previous page); from the start if absent.
    after: Option<i64>,
    /// 1 to 500 (default 100).
    limit: Option<usize>,
}

/// One page of the audit log.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    /// Entries, oldest first.
    pub entries: Vec<AuditItem>,
    /// Pass as `after` for the next page; null when this page is not full.
    pub next: Option<i64>,
}

/// What one admin call did: the audit wrapper ([`audited`]) puts it in the request's
/// extensions (shared, so the wrapper reads it back after the handler), handlers add what only
/// they know, and the wrapper records it once.
#[derive(Debug, Clone)]
struct AuditNote {
    actor: String,
    action: String,
    subscriber: Option<SubscriberId>,
    outcome: Option<&'static str>,
    detail: Option<String>,
    recorded: bool,
}

#[derive(Clone)]
struct AuditSlot(Rc<RefCell<AuditNote>>);

fn slot_of(http: &HttpRequest) -> Option<AuditSlot> {
    http.extensions().get::<AuditSlot>().cloned()
}

/// The acting token's name, for handlers under the audit wrapper (which authorised it).
pub(crate) struct AdminActor(String);

impl actix_web::FromRequest for AdminActor {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        // Only the wrapper inserts the note, after authorising: a handler mounted outside it
        // answers 401 instead of acting unaudited.
        std::future::ready(
            slot_of(req)
                .map(|slot| Self(slot.0.borrow().actor.clone()))
                .ok_or(ApiError::Unauthorized),
        )
    }
}

/// Adds what the handler knows to the call's audit entry.
fn note(http: &HttpRequest, update: impl FnOnce(&mut AuditNote)) {
    if let Some(slot) = slot_of(http) {
        update(&mut slot.0.borrow_mut());
    }
}

/// Writes the call's audit entry now, with `outcome` (for reads: before the data is gathered
/// into the answer); the wrapper then writes nothing more. 503 when it cannot be written.
async fn record_now(
    http: &HttpRequest,
    state: &ApiState,
    outcome: &'static str,
) -> Result<(), ApiError> {
    let Some(slot) = slot_of(http) else {
        return Ok(());
    };
    let mut entry = slot.0.borrow().clone();
    entry.outcome = Some(outcome);
    write_entry(state, &entry).await?;
    entry.recorded = true;
    *slot.0.borrow_mut() = entry;
    Ok(())
}

async fn write_entry(state: &ApiState, note: &AuditNote) -> Result<(), ApiError> {
    state
        .privacy
        .record_audit(
            &note.actor,
            &note.action,
            note.subscriber,
            note.outcome.unwrap_or("error"),
            note.detail.as_deref(),
        )
        .await
        .map_err(|e| {
            tracing::error!(action = %note.action, error = %e, "cannot record an admin audit entry");
            ApiError::AuditUnavailable
        })
}

/// The action an admin call names, from its method and route pattern. A route missing here is
/// still audited, under `METHOD pattern`; a path that matches no route is `admin.unknown`.
fn action_of(method: &Method, pattern: Option<&str>) -> String {
    let Some(pattern) = pattern.filter(|p| p.starts_with("/admin/") && !p.ends_with('*')) else {
        return "admin.unknown".to_owned();
    };
    let named = match (method.as_str(), pattern.trim_start_matches("/admin/v1")) {
        ("DELETE", "/subscribers/{id}") => "subscriber.erase",
        ("GET", "/subscribers/{id}/export") => "subscriber.export",
        ("POST", "/subscribers/export") => "subscriber.export_by_email",
        ("PATCH", "/subscribers/{id}/profile") => "subscriber.rectify",
        ("POST", "/subscribers/{id}/restrict") => "subscriber.restrict",
        ("POST", "/subscribers/{id}/lift-restriction") => "subscriber.lift_restriction",
        ("POST", "/subscribers/{id}/object") => "subscriber.object",
        ("GET", "/audit") => "audit.read",
        ("GET", "/stats") => "stats.read",
        _ => return format!("{method} {pattern}"),
    };
    named.to_owned()
}

/// The subscriber a `/admin/v1/subscribers/{id}…` path names, when `{id}` is an id.
fn subscriber_in_path(path: &str) -> Option<SubscriberId> {
    let rest = path.strip_prefix("/admin/v1/subscribers/")?;
    let segment = rest.split('/').next()?;
    Uuid::parse_str(segment).ok().map(SubscriberId::from_uuid)
}

/// The outcome word of an answer the handler did not name one for.
fn outcome_of(status: StatusCode, error: Option<&ApiError>) -> &'static str {
    match error {
        Some(ApiError::Busy) => "busy",
        Some(ApiError::AuditUnavailable | ApiError::Internal(_)) => "error",
        _ => match status.as_u16() {
            200..=299 => "ok",
            401 => "unauthorized",
            403 => "forbidden",
            404 => "not_found",
            400..=499 => "invalid",
            _ => "error",
        },
    }
}

/// What the audit entry says about a failed call: the problem's kind and the names of the
/// failing fields the API defines (never a value, a body, or a member name the caller chose).
fn failure_detail(error: &ApiError) -> String {
    let kind = error.kind();
    let ApiError::Validation(fields) = error else {
        return kind.to_owned();
    };
    let mut names: Vec<&str> = fields
        .iter()
        .map(|f| {
            if f.code == "unknown_field" {
                "(unknown field)"
            } else {
                f.field.as_str()
            }
        })
        .collect();
    names.dedup();
    format!("{kind}: {}", names.join(","))
}

/// The audit wrapper around every `/admin` handler: authorises the caller (scope `admin`),
/// runs the handler, and records exactly one audit entry per call before the answer leaves,
/// whatever the outcome (refused, invalid, unknown, failed, or done). When the entry cannot be
/// written the answer is replaced by 503 `audit-unavailable`: a read returns no data, and a
/// change (already made; the event log holds it with the actor) is not reported as done.
pub(crate) async fn audited(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<ApiState>>().cloned() else {
        let error = ApiError::internal("audit an admin call", "no application state");
        return Ok(req.into_response(error.error_response()));
    };
    let action = action_of(req.method(), req.match_pattern().as_deref());
    let subscriber = subscriber_in_path(req.path());
    let (actor, refusal) = match state.tokens.check(req.request(), Scope::Admin) {
        Access::Granted(name) => (name.to_owned(), None),
        Access::Forbidden(name) => (name.to_owned(), Some(ApiError::Forbidden)),
        Access::Unauthorized => ("anonymous".to_owned(), Some(ApiError::Unauthorized)),
    };
    let mut entry = AuditNote {
        actor,
        action,
        subscriber,
        outcome: None,
        detail: None,
        recorded: false,
    };
    if let Some(refusal) = refusal {
        entry.outcome = Some(outcome_of(refusal.status_code(), Some(&refusal)));
        let response = match write_entry(&state, &entry).await {
            Ok(()) => refusal.error_response(),
            Err(unrecorded) => unrecorded.error_response(),
        };
        return Ok(req.into_response(response));
    }
    let slot = AuditSlot(Rc::new(RefCell::new(entry)));
    req.extensions_mut().insert(slot.clone());
    // The request is not held here: routing inside the scope needs it unshared.
    let result = next
        .call(req)
        .await
        .map(ServiceResponse::map_into_boxed_body);
    let mut entry = slot.0.borrow().clone();
    if entry.recorded {
        return result;
    }
    let (status, error) = match &result {
        Ok(response) => (
            response.status(),
            response
                .response()
                .error()
                .and_then(|e| e.as_error::<ApiError>()),
        ),
        Err(error) => (error.as_response_error().status_code(), error.as_error()),
    };
    if entry.outcome.is_none() {
        entry.outcome = Some(outcome_of(status, error));
    }
    if entry.detail.is_none() && !status.is_success() {
        entry.detail = error.map(failure_detail);
    }
    match (write_entry(&state, &entry).await, result) {
        (Ok(()), result) => result,
        (Err(unrecorded), Ok(response)) => {
            let (http, _) = response.into_parts();
            Ok(ServiceResponse::new(http, unrecorded.error_response()))
        }
        (Err(unrecorded), Err(_)) => Err(unrecorded.into()),
    }
}

/// Mounts every `/admin` endpoint inside the audit wrapper ([`audited`]); an unknown path or
/// method under `/admin` is audited too.
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    let resource =
        |path: &str| web::resource(path).default_service(web::to(super::method_not_allowed));
    cfg.service(
        web::scope("/admin")
            .wrap(actix_web::middleware::from_fn(audited))
            .service(resource("/v1/subscribers/export").route(web::post().to(export_by_email)))
            .service(resource("/v1/subscribers/{id}").route(web::delete().to(erase)))
            .service(resource("/v1/subscribers/{id}/export").route(web::get().to(export_by_id)))
            .service(resource("/v1/subscribers/{id}/profile").route(web::patch().to(rectify)))
            .service(resource("/v1/subscribers/{id}/restrict").route(web::post().to(restrict)))
            .service(
                resource("/v1/subscribers/{id}/lift-restriction")
                    .route(web::post().to(lift_restriction)),
            )
            .service(resource("/v1/subscribers/{id}/object").route(web::post().to(object)))
            .service(resource("/v1/stats").route(web::get().to(stats)))
            .service(resource("/v1/audit").route(web::get().to(audit_log)))
            .default_service(web::to(super::not_found)),
    );
}

fn parse_id(http: &HttpRequest, raw: &str) -> Result<SubscriberId, ApiError> {
    let id = Uuid::parse_str(raw).map(SubscriberId::from_uuid);
    if id.is_err() {
        note(http, |n| n.outcome = Some("invalid"));
    }
    id.map_err(|_| ApiError::NotFound("subscriber"))
}

fn actor_of(name: &str) -> Result<ActorName, ApiError> {
    ActorName::parse(name).map_err(|e| ApiError::internal("name the acting token", e))
}

fn metadata(actor: &str) -> EventMetadata {
    EventMetadata {
        correlation_id: Some(Uuid::now_v7()),
        causation_id: None,
        actor: Some(actor.to_owned()),
    }
}

fn status_of(
    subscriber: SubscriberId,
    state: &SubscriberState,
    changed: bool,
) -> AdminSubscriberStatus {
    AdminSubscriberStatus {
        subscriber_id: subscriber.to_string(),
        changed,
        restricted: state.is_restricted(),
        lists: state
            .lists()
            .map(|(list, m)| AdminListStatus {
                list: list.as_str().to_owned(),
                status: serde_json::to_value(m.status())
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                since: m.since(),
            })
            .collect(),
    }
}

/// Runs an admin command on a subscriber's stream and answers with the state (the wrapper
/// records the outcome).
async fn change(
    http: &HttpRequest,
    state: &ApiState,
    actor: &str,
    action: &str,
    subscriber: SubscriberId,
    command: SubscriberCommand,
) -> Result<HttpResponse, ApiError> {
    let stream = StreamId::new(subscriber.stream_name())
        .map_err(|e| ApiError::internal("name the subscriber stream", e))?;
    let result = execute::<Subscriber>(
        state.store.as_ref(),
        state.clock.as_ref(),
        &stream,
        &command,
        &metadata(actor),
    )
    .await;
    match result {
        Ok(outcome) => {
            tracing::info!(%subscriber, action, events = outcome.events.len(), "admin change");
            Ok(HttpResponse::Ok().json(status_of(
                subscriber,
                &outcome.state,
                !outcome.events.is_empty(),
            )))
        }
        Err(CommandError::Refused(DomainError::UnknownSubscriber)) => {
            Err(ApiError::NotFound("subscriber"))
        }
        Err(CommandError::Refused(DomainError::Erased)) => {
            note(http, |n| n.outcome = Some("erased"));
            Err(ApiError::NotFound("subscriber (erased)"))
        }
        Err(CommandError::Refused(reason)) => {
            note(http, |n| n.outcome = Some("refused"));
            Err(ApiError::BadRequest(format!("refused: {reason}")))
        }
        Err(CommandError::Contention { .. }) => Err(ApiError::Busy),
        Err(e) => Err(ApiError::internal("change a subscriber", e)),
    }
}

async fn json_body<T: serde::de::DeserializeOwned>(
    http: &HttpRequest,
    payload: web::Payload,
    state: &ApiState,
) -> Result<T, ApiError> {
    body_kind(http, "application/json")?;
    let body = read_body(http, payload, state.config.max_body_bytes).await?;
    serde_json::from_slice(&body).map_err(|e| ApiError::MalformedBody(e.to_string()))
}

/// Erase a subscriber (GDPR art. 17): destroys the data key, deletes read-model rows, the email
/// index entry and outbox mails, records `SubscriberErased`, and returns a receipt.
#[utoipa::path(
    delete,
    path = "/admin/v1/subscribers/{id}",
    tag = "admin",
    params(("id" = Uuid, Path, description = "The subscriber id"), EraseQuery),
    security(("service_token" = [])),
    responses(
        (status = 200, body = ErasureReceipt),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(name = "admin_erase", skip_all)]
pub(crate) async fn erase(
    http: HttpRequest,
    AdminActor(actor): AdminActor,
    path: web::Path<String>,
    query: web::Query<EraseQuery>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let subscriber = parse_id(&http, &path)?;
    let reference = match query.reference.as_deref().filter(|r| !r.trim().is_empty()) {
        Some(raw) => ErasureReference::parse(raw).map_err(|e| {
            ApiError::Validation(vec![FieldError::from_value_error("reference", &e)])
        })?,
        None => ErasureReference::parse(&format!("erasure-{}", Uuid::now_v7().simple()))
            .map_err(|e| ApiError::internal("make an erasure reference", e))?,
    };
    note(&http, |n| n.detail = Some(reference.as_str().to_owned()));
    let actor_name = actor_of(&actor)?;
    match state
        .privacy
        .erase(subscriber, &actor_name, &reference)
        .await
    {
        Ok(Some(receipt)) => Ok(HttpResponse::Ok().json(receipt)),
        Ok(None) => Err(ApiError::NotFound("subscriber")),
        Err(e) => Err(ApiError::internal("erase a subscriber", e)),
    }
}

async fn export_of(
    http: &HttpRequest,
    state: &ApiState,
    actor: &str,
    subscriber: SubscriberId,
) -> Result<ExportDocument, ApiError> {
    note(http, |n| n.subscriber = Some(subscriber));
    let stream = StreamId::new(subscriber.stream_name())
        .map_err(|e| ApiError::internal("name the subscriber stream", e))?;
    let events = state
        .store
        .read_stream(&stream, 0)
        .await
        .map_err(|e| ApiError::internal("read the subscriber's events", e))?;
    if events.is_empty() {
        return Err(ApiError::NotFound("subscriber"));
    }
    // Record the export first (art. 30 accountability); erased subscribers have nothing to export.
    let recorded = execute::<Subscriber>(
        state.store.as_ref(),
        state.clock.as_ref(),
        &stream,
        &SubscriberCommand::RecordExport {
            actor: actor_of(actor)?,
        },
        &metadata(actor),
    )
    .await;
    match recorded {
        Ok(_) => {}
        Err(CommandError::Refused(DomainError::Erased)) => {
            note(http, |n| n.outcome = Some("erased"));
            return Err(ApiError::NotFound("subscriber (erased: nothing is held)"));
        }
        Err(CommandError::Contention { .. }) => return Err(ApiError::Busy),
        Err(e) => return Err(ApiError::internal("record the export", e)),
    }
    // The audit entry is written before any personal data is gathered into the answer (and
    // the document lists it among the admin actions).
    record_now(http, state, "ok").await?;
    let events = state
        .store
        .read_stream(&stream, 0)
        .await
        .map_err(|e| ApiError::internal("read the subscriber's events", e))?;
    let audit_lines = state
        .privacy
        .audit_of(subscriber)
        .await
        .map_err(|e| ApiError::internal("read the audit log", e))?
        .into_iter()
        .map(|a| AuditLine {
            action: a.action,
            actor: a.actor,
            at: a.at,
            outcome: a.outcome,
            detail: a.detail,
        })
        .collect();
    let (mut document, _) = build_export(
        &subscriber.to_string(),
        &events,
        audit_lines,
        state.clock.now(),
    )
    .map_err(|e| ApiError::internal("decode the subscriber's events", e))?;
    document.attach_policies(&state.privacy.policies());
    Ok(document)
}

/// Export everything held about a subscriber (GDPR art. 15 and 20), as one JSON document
/// (schema `newsletter.subscriber-export` version 1, described in the README).
#[utoipa::path(
    get,
    path = "/admin/v1/subscribers/{id}/export",
    tag = "admin",
    params(("id" = Uuid, Path, description = "The subscriber id")),
    security(("service_token" = [])),
    responses(
        (status = 200, body = ExportDocument),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(name = "admin_export", skip_all)]
pub(crate) async fn export_by_id(
    http: HttpRequest,
    AdminActor(actor): AdminActor,
    path: web::Path<String>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let subscriber = parse_id(&http, &path)?;
    let document = export_of(&http, &state, &actor, subscriber).await?;
    Ok(HttpResponse::Ok().json(document))
}

/// Export by address (the address travels in the body, never in a URL).
#[utoipa::path(
    post,
    path = "/admin/v1/subscribers/export",
    tag = "admin",
    request_body = ExportByEmailRequest,
    security(("service_token" = [])),
    responses(
        (status = 200, body = ExportDocument),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 415, body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(name = "admin_export_by_email", skip_all)]
pub(crate) async fn export_by_email(
    http: HttpRequest,
    AdminActor(actor): AdminActor,
    payload: web::Payload,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let request: ExportByEmailRequest = json_body(&http, payload, &state).await?;
    let email = EmailAddress::parse(&request.email)
        .map_err(|e| ApiError::Validation(vec![FieldError::from_value_error("email", &e)]))?;
    let found = state
        .directory
        .find_many(std::slice::from_ref(&email))
        .await
        .map_err(|e| ApiError::internal("look up the address", e))?;
    let Some((_, subscriber)) = found.into_iter().next() else {
        return Err(ApiError::NotFound("subscriber"));
    };
    let document = export_of(&http, &state, &actor, subscriber).await?;
    Ok(HttpResponse::Ok().json(document))
}

fn field_change<T>(
    object: &serde_json::Map<String, Value>,
    name: &str,
    parse: impl FnOnce(&str) -> Result<T, ValueError>,
    errors: &mut Vec<FieldError>,
) -> FieldChange<T> {
    match object.get(name) {
        None => FieldChange::Keep,
        Some(Value::Null) => FieldChange::Clear,
        Some(Value::String(s)) if s.trim().is_empty() => FieldChange::Clear,
        Some(Value::String(s)) => match parse(s) {
            Ok(v) => FieldChange::Set(v),
            Err(e) => {
                errors.push(FieldError::from_value_error(name, &e));
                FieldChange::Keep
            }
        },
        Some(_) => {
            errors.push(FieldError::new(
                name,
                "malformed",
                "must be a string or null",
            ));
            FieldChange::Keep
        }
    }
}

/// Rectify the profile (GDPR art. 16). Members: `name`, `company`, `address`, `phone`; a
/// string sets, `null` (or an empty string) clears, an absent member is kept.
#[utoipa::path(
    patch,
    path = "/admin/v1/subscribers/{id}/profile",
    tag = "admin",
    params(("id" = Uuid, Path, description = "The subscriber id")),
    request_body(content = Object, description = "name, company, address, phone: string sets, null clears, absent keeps"),
    security(("service_token" = [])),
    responses(
        (status = 200, body = AdminSubscriberStatus),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(name = "admin_rectify", skip_all)]
pub(crate) async fn rectify(
    http: HttpRequest,
    AdminActor(actor): AdminActor,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let subscriber = parse_id(&http, &path)?;
    let body: Value = json_body(&http, payload, &state).await?;
    let Value::Object(object) = body else {
        return Err(ApiError::MalformedBody("expected a JSON object".to_owned()));
    };
    let mut errors = Vec::new();
    for key in object.keys() {
        if !matches!(key.as_str(), "name" | "company" | "address" | "phone") {
            errors.push(FieldError::new(
                key,
                "unknown_field",
                "not a profile field (name, company, address, phone)",
            ));
        }
    }
    let changes = ProfileChanges {
        name: field_change(&object, "name", PersonName::parse, &mut errors),
        company: field_change(&object, "company", CompanyName::parse, &mut errors),
        address: field_change(&object, "address", PostalAddress::parse, &mut errors),
        phone: field_change(&object, "phone", PhoneNumber::parse, &mut errors),
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let command = SubscriberCommand::RectifyProfile {
        changes,
        actor: actor_of(&actor)?,
    };
    change(
        &http,
        &state,
        &actor,
        "subscriber.rectify",
        subscriber,
        command,
    )
    .await
}

async fn reason_of(
    http: &HttpRequest,
    payload: web::Payload,
    state: &ApiState,
) -> Result<ReasonText, ApiError> {
    let request: ReasonRequest = json_body(http, payload, state).await?;
    ReasonText::parse(&request.reason)
        .map_err(|e| ApiError::Validation(vec![FieldError::from_value_error("reason", &e)]))
}

/// Restrict processing (GDPR art. 18): kept, never mailed, absent from member listings.
#[utoipa::path(
    post,
    path = "/admin/v1/subscribers/{id}/restrict",
    tag = "admin",
    params(("id" = Uuid, Path, description = "The subscriber id")),
    request_body = ReasonRequest,
    security(("service_token" = [])),
    responses(
        (status = 200, body = AdminSubscriberStatus),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(name = "admin_restrict", skip_all)]
pub(crate) async fn restrict(
    http: HttpRequest,
    AdminActor(actor): AdminActor,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let subscriber = parse_id(&http, &path)?;
    let reason = reason_of(&http, payload, &state).await?;
    let command = SubscriberCommand::Restrict {
        actor: actor_of(&actor)?,
        reason,
    };
    change(
        &http,
        &state,
        &actor,
        "subscriber.restrict",
        subscriber,
        command,
    )
    .await
}

/// Lift a restriction.
#[utoipa::path(
    post,
    path = "/admin/v1/subscribers/{id}/lift-restriction",
    tag = "admin",
    params(("id" = Uuid, Path, description = "The subscriber id")),
    request_body = ReasonRequest,
    security(("service_token" = [])),
    responses(
        (status = 200, body = AdminSubscriberStatus),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(name = "admin_lift_restriction", skip_all)]
pub(crate) async fn lift_restriction(
    http: HttpRequest,
    AdminActor(actor): AdminActor,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let subscriber = parse_id(&http, &path)?;
    let reason = reason_of(&http, payload, &state).await?;
    let command = SubscriberCommand::LiftRestriction {
        actor: actor_of(&actor)?,
        reason,
    };
    change(
        &http,
        &state,
        &actor,
        "subscriber.lift_restriction",
        subscriber,
        command,
    )
    .await
}

/// Objection (GDPR art. 21): unsubscribe from every list, channel `admin`.
#[utoipa::path(
    post,
    path = "/admin/v1/subscribers/{id}/object",
    tag = "admin",
    params(("id" = Uuid, Path, description = "The subscriber id")),
    security(("service_token" = [])),
    responses(
        (status = 200, body = AdminSubscriberStatus),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(name = "admin_object", skip_all)]
pub(crate) async fn object(
    http: HttpRequest,
    AdminActor(actor): AdminActor,
    path: web::Path<String>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let subscriber = parse_id(&http, &path)?;
    let stream = StreamId::new(subscriber.stream_name())
        .map_err(|e| ApiError::internal("name the subscriber stream", e))?;
    // Unsubscribe is a no-op on an unknown stream: tell the caller instead.
    let known = !state
        .store
        .read_stream(&stream, 0)
        .await
        .map_err(|e| ApiError::internal("read the subscriber's events", e))?
        .is_empty();
    if !known {
        return Err(ApiError::NotFound("subscriber"));
    }
    let command = SubscriberCommand::Unsubscribe {
        scope: UnsubscribeScope::All,
        channel: UnsubscribeChannel::Admin,
    };
    change(
        &http,
        &state,
        &actor,
        "subscriber.object",
        subscriber,
        command,
    )
    .await
}

/// Page through the admin audit log.
#[utoipa::path(
    get,
    path = "/admin/v1/audit",
    tag = "admin",
    params(AuditQuery),
    security(("service_token" = [])),
    responses(
        (status = 200, body = AuditPage),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(name = "admin_audit", skip_all)]
pub(crate) async fn audit_log(
    _: AdminActor,
    query: web::Query<AuditQuery>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::BadRequest("limit must be 1 to 500".to_owned()));
    }
    let after = query.after.unwrap_or(0).max(0);
    let entries = state
        .privacy
        .audit_page(after, limit)
        .await
        .map_err(|e| ApiError::internal("read the audit log", e))?;
    let next = (entries.len() == limit)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    Ok(HttpResponse::Ok().json(AuditPage { entries, next }))
}

/// Anonymous counts per list and month (requested, confirmed, unsubscribed, erased); kept
/// after erasure. Maintained by the projector role.
#[utoipa::path(
    get,
    path = "/admin/v1/stats",
    tag = "admin",
    security(("service_token" = [])),
    responses(
        (status = 200, body = StatsDocument),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(name = "admin_stats", skip_all)]
pub(crate) async fn stats(
    _: AdminActor,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let counts = state
        .privacy
        .stats()
        .await
        .map_err(|e| ApiError::internal("read the statistics", e))?;
    Ok(HttpResponse::Ok().json(StatsDocument { counts }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::OpenApi as _;

    #[test]
    fn every_documented_admin_endpoint_has_an_action_name() {
        let doc = crate::openapi::ApiDoc::openapi();
        let mut checked = 0;
        for (path, item) in &doc.paths.paths {
            if !path.starts_with("/admin/") {
                continue;
            }
            for (method, operation) in [
                (Method::GET, &item.get),
                (Method::POST, &item.post),
                (Method::PUT, &item.put),
                (Method::PATCH, &item.patch),
                (Method::DELETE, &item.delete),
            ] {
                if operation.is_some() {
                    let action = action_of(&method, Some(path));
                    assert!(
                        !action.contains('/'),
                        "{method} {path} is audited as {action}"
                    );
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 9);
        assert_eq!(action_of(&Method::GET, Some("/admin")), "admin.unknown");
        assert_eq!(action_of(&Method::GET, None), "admin.unknown");
    }

    #[test]
    fn the_subscriber_is_read_from_the_path_only_when_it_is_an_id() {
        let id = Uuid::now_v7();
        assert_eq!(
            subscriber_in_path(&format!("/admin/v1/subscribers/{id}/export")),
            Some(SubscriberId::from_uuid(id))
        );
        assert_eq!(subscriber_in_path("/admin/v1/subscribers/export"), None);
        assert_eq!(subscriber_in_path("/admin/v1/audit"), None);
    }

    #[test]
    fn a_failure_detail_names_no_member_the_caller_chose() {
        let error = ApiError::Validation(vec![
            FieldError::new("jane@example.com", "unknown_field", "not a profile field"),
            FieldError::new("name", "too_long", "too long"),
        ]);
        assert_eq!(failure_detail(&error), "validation: (unknown field),name");
        assert_eq!(
            failure_detail(&ApiError::MalformedBody("jane@example.com".to_owned())),
            "malformed-body"
        );
    }
}
