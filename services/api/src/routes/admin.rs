//! `/admin/v1/…`: the data protection officer's endpoints (bearer token, scope `admin`).
//!
//! Every call (read or change, successful or not once authorised) is recorded in the audit log
//! with the token's name and the time. Subscribers are named by their opaque id in paths; an
//! address travels only in a request body (`POST /admin/v1/subscribers/export`).

use actix_web::{HttpRequest, HttpResponse, web};
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
use crate::auth::Scope;
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
    /// `destroyed`, `already_destroyed` or `none` (no personal data was ever stored).
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
    /// `ok`, `not_found`, `refused`, `erased`, `failed`.
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

fn parse_id(raw: &str) -> Result<SubscriberId, ApiError> {
    Uuid::parse_str(raw)
        .map(SubscriberId::from_uuid)
        .map_err(|_| ApiError::NotFound("subscriber"))
}

fn actor_of(name: &str) -> Result<ActorName, ApiError> {
    ActorName::parse(name).map_err(|e| ApiError::internal("name the acting token", e))
}

async fn audit(
    state: &ApiState,
    actor: &str,
    action: &str,
    subscriber: Option<SubscriberId>,
    outcome: &str,
    detail: Option<&str>,
) -> Result<(), ApiError> {
    state
        .privacy
        .record_audit(actor, action, subscriber, outcome, detail)
        .await
        .map_err(|e| ApiError::internal("record the audit entry", e))
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

/// Runs an admin command on a subscriber's stream, audits it, and answers with the state.
async fn change(
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
            audit(state, actor, action, Some(subscriber), "ok", None).await?;
            tracing::info!(%subscriber, action, events = outcome.events.len(), "admin change");
            Ok(HttpResponse::Ok().json(status_of(
                subscriber,
                &outcome.state,
                !outcome.events.is_empty(),
            )))
        }
        Err(CommandError::Refused(DomainError::UnknownSubscriber)) => {
            audit(state, actor, action, Some(subscriber), "not_found", None).await?;
            Err(ApiError::NotFound("subscriber"))
        }
        Err(CommandError::Refused(DomainError::Erased)) => {
            audit(state, actor, action, Some(subscriber), "erased", None).await?;
            Err(ApiError::NotFound("subscriber (erased)"))
        }
        Err(CommandError::Refused(reason)) => {
            audit(state, actor, action, Some(subscriber), "refused", None).await?;
            Err(ApiError::BadRequest(format!("refused: {reason}")))
        }
        Err(CommandError::Contention { .. }) => Err(ApiError::Busy),
        Err(e) => {
            let _ = audit(state, actor, action, Some(subscriber), "failed", None).await;
            Err(ApiError::internal("change a subscriber", e))
        }
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
    path: web::Path<String>,
    query: web::Query<EraseQuery>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let actor = state.tokens.authorize(&http, Scope::Admin)?.to_owned();
    let subscriber = parse_id(&path)?;
    let reference = match query.reference.as_deref().filter(|r| !r.trim().is_empty()) {
        Some(raw) => ErasureReference::parse(raw).map_err(|e| {
            ApiError::Validation(vec![FieldError::from_value_error("reference", &e)])
        })?,
        None => ErasureReference::parse(&format!("erasure-{}", Uuid::now_v7().simple()))
            .map_err(|e| ApiError::internal("make an erasure reference", e))?,
    };
    let actor_name = actor_of(&actor)?;
    match state
        .privacy
        .erase(subscriber, &actor_name, &reference)
        .await
    {
        Ok(Some(receipt)) => {
            audit(
                &state,
                &actor,
                "subscriber.erase",
                Some(subscriber),
                "ok",
                Some(reference.as_str()),
            )
            .await?;
            Ok(HttpResponse::Ok().json(receipt))
        }
        Ok(None) => {
            audit(
                &state,
                &actor,
                "subscriber.erase",
                Some(subscriber),
                "not_found",
                Some(reference.as_str()),
            )
            .await?;
            Err(ApiError::NotFound("subscriber"))
        }
        Err(e) => {
            let _ = audit(
                &state,
                &actor,
                "subscriber.erase",
                Some(subscriber),
                "failed",
                Some(reference.as_str()),
            )
            .await;
            Err(ApiError::internal("erase a subscriber", e))
        }
    }
}

async fn export_of(
    state: &ApiState,
    actor: &str,
    subscriber: SubscriberId,
) -> Result<ExportDocument, ApiError> {
    let stream = StreamId::new(subscriber.stream_name())
        .map_err(|e| ApiError::internal("name the subscriber stream", e))?;
    let events = state
        .store
        .read_stream(&stream, 0)
        .await
        .map_err(|e| ApiError::internal("read the subscriber's events", e))?;
    if events.is_empty() {
        audit(
            state,
            actor,
            "subscriber.export",
            Some(subscriber),
            "not_found",
            None,
        )
        .await?;
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
            audit(
                state,
                actor,
                "subscriber.export",
                Some(subscriber),
                "erased",
                None,
            )
            .await?;
            return Err(ApiError::NotFound("subscriber (erased: nothing is held)"));
        }
        Err(CommandError::Contention { .. }) => return Err(ApiError::Busy),
        Err(e) => return Err(ApiError::internal("record the export", e)),
    }
    audit(
        state,
        actor,
        "subscriber.export",
        Some(subscriber),
        "ok",
        None,
    )
    .await?;
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
    path: web::Path<String>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let actor = state.tokens.authorize(&http, Scope::Admin)?.to_owned();
    let subscriber = parse_id(&path)?;
    let document = export_of(&state, &actor, subscriber).await?;
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
    payload: web::Payload,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let actor = state.tokens.authorize(&http, Scope::Admin)?.to_owned();
    let request: ExportByEmailRequest = json_body(&http, payload, &state).await?;
    let email = EmailAddress::parse(&request.email)
        .map_err(|e| ApiError::Validation(vec![FieldError::from_value_error("email", &e)]))?;
    let found = state
        .directory
        .find_many(std::slice::from_ref(&email))
        .await
        .map_err(|e| ApiError::internal("look up the address", e))?;
    let Some((_, subscriber)) = found.into_iter().next() else {
        audit(
            &state,
            &actor,
            "subscriber.export_by_email",
            None,
            "not_found",
            None,
        )
        .await?;
        return Err(ApiError::NotFound("subscriber"));
    };
    let document = export_of(&state, &actor, subscriber).await?;
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
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let actor = state.tokens.authorize(&http, Scope::Admin)?.to_owned();
    let subscriber = parse_id(&path)?;
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
    change(&state, &actor, "subscriber.rectify", subscriber, command).await
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
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let actor = state.tokens.authorize(&http, Scope::Admin)?.to_owned();
    let subscriber = parse_id(&path)?;
    let reason = reason_of(&http, payload, &state).await?;
    let command = SubscriberCommand::Restrict {
        actor: actor_of(&actor)?,
        reason,
    };
    change(&state, &actor, "subscriber.restrict", subscriber, command).await
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
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let actor = state.tokens.authorize(&http, Scope::Admin)?.to_owned();
    let subscriber = parse_id(&path)?;
    let reason = reason_of(&http, payload, &state).await?;
    let command = SubscriberCommand::LiftRestriction {
        actor: actor_of(&actor)?,
        reason,
    };
    change(
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
    path: web::Path<String>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let actor = state.tokens.authorize(&http, Scope::Admin)?.to_owned();
    let subscriber = parse_id(&path)?;
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
        audit(
            &state,
            &actor,
            "subscriber.object",
            Some(subscriber),
            "not_found",
            None,
        )
        .await?;
        return Err(ApiError::NotFound("subscriber"));
    }
    let command = SubscriberCommand::Unsubscribe {
        scope: UnsubscribeScope::All,
        channel: UnsubscribeChannel::Admin,
    };
    change(&state, &actor, "subscriber.object", subscriber, command).await
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
    http: HttpRequest,
    query: web::Query<AuditQuery>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let actor = state.tokens.authorize(&http, Scope::Admin)?.to_owned();
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
    audit(&state, &actor, "audit.read", None, "ok", None).await?;
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
    http: HttpRequest,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let actor = state.tokens.authorize(&http, Scope::Admin)?.to_owned();
    let counts = state
        .privacy
        .stats()
        .await
        .map_err(|e| ApiError::internal("read the statistics", e))?;
    audit(&state, &actor, "stats.read", None, "ok", None).await?;
    Ok(HttpResponse::Ok().json(StatsDocument { counts }))
}
