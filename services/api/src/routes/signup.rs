//! `POST /v1/subscriptions`: the signup form (HTML or JSON).

use std::collections::BTreeSet;
use std::time::Instant;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use newsletter_domain::{
    CompanyName, ConsentEvidence, EmailAddress, ListId, Locale, PersonName, PhoneNumber,
    PostalAddress, Profile, RequestId, SourceId, Subscriber, SubscriberCommand, SubscriberId,
    ValueError,
};
use newsletter_eventstore::{CommandError, EventMetadata, StreamHint, StreamId, execute_with_hint};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::body::{BodyKind, body_kind, form_pairs, read_body};
use super::json::JsonFields;
use crate::client::{client_ip, preferred_locale, user_agent};
use crate::error::{ApiError, FieldError};
use crate::pages;
use crate::state::ApiState;

/// A signup, as JSON. Forms send the same fields url-encoded (`lists` repeated).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignupRequest {
    /// The address to subscribe (required).
    pub email: Option<String>,
    /// Full name.
    pub name: Option<String>,
    /// Company name.
    pub company: Option<String>,
    /// Postal address.
    pub address: Option<String>,
    /// Phone number.
    pub phone: Option<String>,
    /// Lists to join; the default list when absent.
    pub lists: Option<Vec<String>>,
    /// `da` or `en`; else from Accept-Language; else `da`.
    pub locale: Option<String>,
    /// The id of the form or page the signup came from.
    pub source: Option<String>,
    /// Honeypot: leave empty. Requests that fill it are accepted and ignored.
    pub website: Option<String>,
}

/// The answer to every accepted signup, whether or not the address was known.
#[derive(Debug, Serialize, ToSchema)]
pub struct SignupAccepted {
    /// Always `accepted`.
    pub status: &'static str,
    /// What happens next.
    pub detail: &'static str,
}

const ACCEPTED: SignupAccepted = SignupAccepted {
    status: "accepted",
    detail: "If the address can receive mail, a confirmation message is on its way. \
             The subscription starts when the link in it is confirmed.",
};

/// The fields of a signup after validation.
struct ValidSignup {
    email: EmailAddress,
    profile: Profile,
    lists: BTreeSet<ListId>,
    locale: Locale,
    source: Option<SourceId>,
}

fn blank_to_none(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

fn request_from_json(body: &[u8]) -> Result<SignupRequest, ApiError> {
    let mut fields = JsonFields::parse(body)?;
    let request = SignupRequest {
        email: fields.string("email"),
        name: fields.string("name"),
        company: fields.string("company"),
        address: fields.string("address"),
        phone: fields.string("phone"),
        lists: fields.strings("lists"),
        locale: fields.string("locale"),
        source: fields.string("source"),
        website: fields.string("website"),
    };
    fields.finish()?;
    Ok(request)
}

fn request_from_form(body: &[u8]) -> SignupRequest {
    let mut request = SignupRequest::default();
    for (name, value) in form_pairs(body) {
        match name.as_str() {
            "email" => request.email = Some(value),
            "name" => request.name = Some(value),
            "company" => request.company = Some(value),
            "address" => request.address = Some(value),
            "phone" => request.phone = Some(value),
            "lists" | "lists[]" | "list" => request.lists.get_or_insert_with(Vec::new).push(value),
            "locale" => request.locale = Some(value),
            "source" => request.source = Some(value),
            "website" => request.website = Some(value),
            // Unknown form fields (submit buttons, CSRF fields of the host page) are ignored.
            _ => {}
        }
    }
    request
}

/// Collects field errors while parsing.
#[derive(Default)]
struct Checker {
    errors: Vec<FieldError>,
}

impl Checker {
    fn check<T>(&mut self, name: &str, result: Result<T, ValueError>) -> Option<T> {
        result
            .map_err(|e| self.errors.push(FieldError::from_value_error(name, &e)))
            .ok()
    }

    fn optional<T>(
        &mut self,
        name: &str,
        value: Option<String>,
        parse: impl FnOnce(&str) -> Result<T, ValueError>,
    ) -> Option<T> {
        let value = blank_to_none(value)?;
        self.check(name, parse(&value))
    }
}

fn validate(
    request: SignupRequest,
    http: &HttpRequest,
    state: &ApiState,
) -> Result<ValidSignup, ApiError> {
    let mut checker = Checker::default();
    let email = match blank_to_none(request.email) {
        Some(raw) => checker.check("email", EmailAddress::parse(&raw)),
        None => {
            checker
                .errors
                .push(FieldError::new("email", "empty", "email is required"));
            None
        }
    };
    let profile = Profile {
        name: checker.optional("name", request.name, PersonName::parse),
        company: checker.optional("company", request.company, CompanyName::parse),
        address: checker.optional("address", request.address, PostalAddress::parse),
        phone: checker.optional("phone", request.phone, PhoneNumber::parse),
    };
    let requested: Vec<String> = request
        .lists
        .unwrap_or_default()
        .into_iter()
        .filter(|l| !l.trim().is_empty())
        .collect();
    let mut lists = BTreeSet::new();
    if requested.len() > 64 {
        checker.errors.push(FieldError::new(
            "lists",
            "too_many",
            "at most 64 lists per signup",
        ));
    } else if requested.is_empty() {
        lists.insert(state.config.default_list.clone());
    } else {
        for list in &requested {
            if let Some(id) = checker.check("lists", state.config.lists.parse(list.trim())) {
                lists.insert(id);
            }
        }
    }
    let locale = match blank_to_none(request.locale) {
        Some(raw) => checker.check("locale", Locale::parse(raw.trim())),
        None => Some(preferred_locale(http)),
    };
    let source = checker.optional("source", request.source, |raw| SourceId::parse(raw.trim()));
    match (email, locale) {
        (Some(email), Some(locale)) if checker.errors.is_empty() => Ok(ValidSignup {
            email,
            profile,
            lists,
            locale,
            source,
        }),
        _ => Err(ApiError::Validation(checker.errors)),
    }
}

/// Subscribe to one or more lists (double opt-in).
///
/// Accepts a plain HTML form (`application/x-www-form-urlencoded`, `lists` repeated) or JSON.
/// Answers the same whether or not the address is already known: 202 with JSON for JSON
/// clients; an HTML page (or a 303 to the configured thank-you page) for forms. A confirmation
/// mail follows; nothing is subscribed until its link is confirmed.
#[utoipa::path(
    post,
    path = "/v1/subscriptions",
    tag = "public",
    request_body(
        content(
            (SignupRequest = "application/json"),
            (SignupRequest = "application/x-www-form-urlencoded")
        )
    ),
    responses(
        (status = 202, description = "Accepted (JSON clients)", body = SignupAccepted),
        (status = 200, description = "Thank-you page (forms)", content_type = "text/html"),
        (status = 303, description = "Redirect to the configured thank-you page (forms)"),
        (status = 400, description = "Invalid fields", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Unsupported content type", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited; see Retry-After", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(name = "signup", skip_all)]
pub(crate) async fn subscribe(
    http: HttpRequest,
    payload: web::Payload,
    state: web::Data<ApiState>,
) -> HttpResponse {
    let kind = body_kind(&http, "application/json, application/x-www-form-urlencoded");
    let is_form = matches!(kind, Ok(BodyKind::Form));
    let respond_error = |error: ApiError| {
        if is_form {
            error.to_html(preferred_locale(&http))
        } else {
            actix_web::ResponseError::error_response(&error)
        }
    };
    if let Some(ip) = client_ip(&http, &state.config.trusted_proxies)
        && let Err(retry_after) = state.signup_limiter.check(ip, Instant::now())
    {
        tracing::info!("signup rate-limited");
        state.metrics.step("rate_limited");
        return respond_error(ApiError::RateLimited { retry_after });
    }
    let body_kind = match kind {
        Ok(kind) => kind,
        Err(error) => return respond_error(error),
    };
    let body = match read_body(&http, payload, state.config.max_body_bytes).await {
        Ok(body) => body,
        Err(error) => return respond_error(error),
    };
    let request = match body_kind {
        BodyKind::Json => match request_from_json(&body) {
            Ok(request) => request,
            Err(error) => return respond_error(error),
        },
        BodyKind::Form => request_from_form(&body),
    };
    if blank_to_none(request.website.clone()).is_some() {
        tracing::info!("honeypot filled; signup ignored");
        state.metrics.step("honeypot");
        return accepted(body_kind, &state, preferred_locale(&http));
    }
    let signup = match validate(request, &http, &state) {
        Ok(signup) => signup,
        Err(error) => return respond_error(error),
    };
    let locale = signup.locale;
    match request_subscription(signup, &http, &state).await {
        Ok(()) => {
            state.metrics.step("signup");
            accepted(body_kind, &state, locale)
        }
        Err(error) => respond_error(error),
    }
}

async fn request_subscription(
    signup: ValidSignup,
    http: &HttpRequest,
    state: &ApiState,
) -> Result<(), ApiError> {
    let now = state.clock.now();
    let masked = signup.email.masked();
    let candidate = SubscriberId::from_uuid(Uuid::now_v7());
    let subscriber = state
        .directory
        .claim(&signup.email, candidate)
        .await
        .map_err(|e| ApiError::internal("claim the address in the email index", e))?;
    // An id minted just now and stored by this claim has no stream yet: decide without reading.
    let hint = if subscriber == candidate {
        StreamHint::BelievedNew
    } else {
        StreamHint::Unknown
    };
    let stream = StreamId::new(subscriber.stream_name())
        .map_err(|e| ApiError::internal("name the subscriber stream", e))?;
    let command = SubscriberCommand::RequestSubscription {
        request_id: RequestId::from_uuid(Uuid::now_v7()),
        lists: signup.lists,
        email: signup.email,
        profile: signup.profile,
        locale: signup.locale,
        consent: ConsentEvidence {
            policy_version: state.config.policy_version.clone(),
            source: signup.source,
            at: now,
            ip: client_ip(http, &state.config.trusted_proxies),
            user_agent: user_agent(http),
        },
        confirm_by: now + state.config.confirm_ttl,
    };
    let metadata = EventMetadata {
        correlation_id: Some(Uuid::now_v7()),
        causation_id: None,
        actor: Some("public".to_owned()),
    };
    match execute_with_hint::<Subscriber>(
        state.store.as_ref(),
        state.clock.as_ref(),
        &stream,
        &command,
        &metadata,
        hint,
    )
    .await
    {
        Ok(outcome) => {
            tracing::info!(subscriber = %subscriber, email = %masked, events = outcome.events.len(), "signup recorded");
            Ok(())
        }
        // Refusals (throttled, restricted, erased) answer like a success: no enumeration.
        Err(CommandError::Refused(reason)) => {
            tracing::info!(subscriber = %subscriber, email = %masked, %reason, "signup refused by the rules");
            Ok(())
        }
        Err(CommandError::Contention { .. }) => Err(ApiError::Busy),
        Err(e) => Err(ApiError::internal("record the signup", e)),
    }
}

fn accepted(kind: BodyKind, state: &ApiState, locale: Locale) -> HttpResponse {
    match kind {
        BodyKind::Json => HttpResponse::Accepted().json(ACCEPTED),
        BodyKind::Form => match &state.config.thank_you_url {
            Some(url) => HttpResponse::SeeOther()
                .insert_header((header::LOCATION, url.as_str()))
                .finish(),
            None => HttpResponse::Ok()
                .content_type(actix_web::http::header::ContentType::html())
                .body(pages::signup_received(locale)),
        },
    }
}
