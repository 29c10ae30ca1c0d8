//! `/internal/v1/…`: subscriber status for other services (bearer token, scope `status`).
//!
//! Answers come from the `StatusQueries` port: in the binary, status by id from the in-memory
//! status view and lookups and listings from the SQL read models. Both follow the event log
//! within moments; a status read right after a change may still show the state before it.

use std::collections::HashMap;

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use newsletter_domain::{EmailAddress, Locale, SubscriberId, UnsubscribeScope};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::body::{body_kind, read_body};
use super::json::JsonFields;
use crate::auth::Scope;
use crate::error::ApiError;
use crate::ports::{ListStatusView, StatusName, SubscriberRecord};
use crate::state::ApiState;

/// A subscriber's status on every list.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriberDocument {
    /// The subscriber's id.
    pub id: Uuid,
    /// The address (only in lookups, where the caller sent it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Status per list.
    pub lists: Vec<ListStatusView>,
    /// The language for mails (`da` or `en`).
    #[schema(value_type = Option<String>, example = "da")]
    pub locale: Option<Locale>,
}

impl SubscriberDocument {
    fn from_record(record: SubscriberRecord, email: Option<&EmailAddress>) -> Self {
        Self {
            id: *record.id.as_uuid(),
            email: email.map(|e| e.as_str().to_owned()),
            lists: record.lists,
            locale: record.locale,
        }
    }
}

/// Addresses to look up.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LookupRequest {
    /// Up to 1,000 addresses. Addresses that are not valid are treated as unknown.
    pub emails: Vec<String>,
}

/// The known ones among the looked-up addresses.
#[derive(Debug, Serialize, ToSchema)]
pub struct LookupResponse {
    /// One document per known address.
    pub subscribers: Vec<SubscriberDocument>,
}

/// A list member, with what a newsletter sender needs to mail them.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberDocument {
    /// The subscriber's id.
    pub id: Uuid,
    /// The address to send to.
    pub email: String,
    /// The name, if given.
    pub name: Option<String>,
    /// The newsletter's language.
    #[schema(value_type = Option<String>, example = "da")]
    pub locale: Option<Locale>,
    /// Member since.
    pub since: DateTime<Utc>,
    /// The page where this member can unsubscribe from this list (no expiry).
    pub unsubscribe_url: String,
    /// The RFC 8058 headers to put on the newsletter mail.
    pub list_unsubscribe_headers: ListUnsubscribeHeaders,
}

/// RFC 2369 / RFC 8058 headers for one member and list.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListUnsubscribeHeaders {
    /// `<https://…/v1/unsubscribe?token=…>`
    #[serde(rename = "List-Unsubscribe")]
    pub list_unsubscribe: String,
    /// Always `List-Unsubscribe=One-Click`.
    #[serde(rename = "List-Unsubscribe-Post")]
    pub list_unsubscribe_post: &'static str,
}

/// One page of list members.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberPageDocument {
    /// The members, in id order.
    pub subscribers: Vec<MemberDocument>,
    /// Pass as `after` for the next page; null on the last page.
    pub next: Option<String>,
}

/// Paging through a list.
#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct MembersQuery {
    /// `confirmed` (default), `pending`, `unsubscribed` or `restricted`.
    status: Option<String>,
    /// 1 to 1,000 (default 100).
    limit: Option<String>,
    /// The `next` cursor of the previous page.
    after: Option<String>,
}

fn parse_subscriber_id(raw: &str) -> Option<SubscriberId> {
    Uuid::parse_str(raw).ok().map(SubscriberId::from_uuid)
}

/// A subscriber's status by id.
#[utoipa::path(
    get,
    path = "/internal/v1/subscribers/{id}",
    tag = "internal",
    params(("id" = Uuid, Path, description = "The subscriber id")),
    security(("service_token" = [])),
    responses(
        (status = 200, body = SubscriberDocument),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(name = "subscriber_by_id", skip_all)]
pub(crate) async fn subscriber_by_id(
    http: HttpRequest,
    path: web::Path<String>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    state.tokens.authorize(&http, Scope::Status)?;
    let id = parse_subscriber_id(&path).ok_or(ApiError::NotFound("subscriber"))?;
    let record = state
        .queries
        .subscriber(id)
        .await
        .map_err(|e| ApiError::internal("read a subscriber", e))?
        .ok_or(ApiError::NotFound("subscriber"))?;
    Ok(HttpResponse::Ok().json(SubscriberDocument::from_record(record, None)))
}

/// Subscribers by address (addresses travel in the body, never in URLs).
#[utoipa::path(
    post,
    path = "/internal/v1/subscribers/lookup",
    tag = "internal",
    request_body = LookupRequest,
    security(("service_token" = [])),
    responses(
        (status = 200, body = LookupResponse),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 413, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 415, body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(name = "lookup", skip_all)]
pub(crate) async fn lookup(
    http: HttpRequest,
    payload: web::Payload,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    state.tokens.authorize(&http, Scope::Status)?;
    body_kind(&http, "application/json")?;
    // 1,000 addresses of up to 254 characters, quoted and separated.
    let limit = state.config.max_lookup * 260 + 1024;
    let body = read_body(&http, payload, limit).await?;
    let mut fields = JsonFields::parse(&body)?;
    let emails = fields.required_string_array("emails");
    fields.finish()?;
    let request = LookupRequest {
        emails: emails.unwrap_or_default(),
    };
    if request.emails.len() > state.config.max_lookup {
        return Err(ApiError::Validation(vec![crate::error::FieldError::new(
            "emails",
            "too_many",
            &format!("at most {} addresses per lookup", state.config.max_lookup),
        )]));
    }
    let mut emails: Vec<EmailAddress> = request
        .emails
        .iter()
        .filter_map(|raw| EmailAddress::parse(raw).ok())
        .collect();
    emails.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    emails.dedup_by(|a, b| a.as_str() == b.as_str());
    let found = state
        .directory
        .find_many(&emails)
        .await
        .map_err(|e| ApiError::internal("look up addresses", e))?;
    let ids: Vec<SubscriberId> = found.iter().map(|(_, id)| *id).collect();
    let records = state
        .queries
        .subscribers(&ids)
        .await
        .map_err(|e| ApiError::internal("read subscribers", e))?;
    let mut by_id: HashMap<SubscriberId, SubscriberRecord> =
        records.into_iter().map(|r| (r.id, r)).collect();
    let subscribers = found
        .iter()
        .filter_map(|(email, id)| {
            by_id
                .remove(id)
                .map(|record| SubscriberDocument::from_record(record, Some(email)))
        })
        .collect();
    Ok(HttpResponse::Ok().json(LookupResponse { subscribers }))
}

/// Members of a list, for the newsletter sender, with their unsubscribe URL and headers.
#[utoipa::path(
    get,
    path = "/internal/v1/lists/{list}/subscribers",
    tag = "internal",
    params(("list" = String, Path, description = "A configured list id"), MembersQuery),
    security(("service_token" = [])),
    responses(
        (status = 200, body = MemberPageDocument),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(name = "list_members", skip_all)]
pub(crate) async fn list_members(
    http: HttpRequest,
    path: web::Path<String>,
    query: web::Query<MembersQuery>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    state.tokens.authorize(&http, Scope::Status)?;
    let list = state
        .config
        .lists
        .parse(&path)
        .map_err(|_| ApiError::NotFound("list"))?;
    let status = match query.status.as_deref().unwrap_or("confirmed") {
        "confirmed" => StatusName::Confirmed,
        "pending" => StatusName::Pending,
        "unsubscribed" => StatusName::Unsubscribed,
        "restricted" => StatusName::Restricted,
        _ => {
            return Err(ApiError::Validation(vec![crate::error::FieldError::new(
                "status",
                "invalid",
                "status must be confirmed, pending, unsubscribed or restricted",
            )]));
        }
    };
    let limit = match query.limit.as_deref() {
        None | Some("") => 100,
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|limit| (1..=1000).contains(limit))
            .ok_or_else(|| {
                ApiError::Validation(vec![crate::error::FieldError::new(
                    "limit",
                    "out_of_range",
                    "limit must be a whole number from 1 to 1000",
                )])
            })?,
    };
    let after = match query.after.as_deref().filter(|a| !a.is_empty()) {
        Some(raw) => Some(parse_subscriber_id(raw).ok_or_else(|| {
            ApiError::Validation(vec![crate::error::FieldError::new(
                "after",
                "invalid_cursor",
                "after is not a cursor of this API",
            )])
        })?),
        None => None,
    };
    let page = state
        .queries
        .list_members(&list, status, after, limit)
        .await
        .map_err(|e| ApiError::internal("read list members", e))?;
    let base = state.config.public_url.trim_end_matches('/');
    let subscribers = page
        .members
        .into_iter()
        .map(|member| {
            let token = state
                .keys
                .unsubscribe_token(member.id, UnsubscribeScope::List(list.clone()));
            let unsubscribe_url = format!("{base}/v1/unsubscribe?token={token}");
            MemberDocument {
                id: *member.id.as_uuid(),
                email: member.email.as_str().to_owned(),
                name: member.name,
                locale: member.locale,
                since: member.since,
                list_unsubscribe_headers: ListUnsubscribeHeaders {
                    list_unsubscribe: format!("<{unsubscribe_url}>"),
                    list_unsubscribe_post: "List-Unsubscribe=One-Click",
                },
                unsubscribe_url,
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(MemberPageDocument {
        subscribers,
        next: page.next_after.map(|id| id.as_uuid().to_string()),
    }))
}
