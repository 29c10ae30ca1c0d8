//! Errors as RFC 9457 problem documents (`application/problem+json`), or as HTML pages for
//! people who posted a form or followed a link.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, ContentType};
use actix_web::{HttpResponse, ResponseError};
use newsletter_domain::{Locale, ValueError};
use serde::Serialize;
use utoipa::ToSchema;

use crate::pages;

/// One field that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// The field's name in the request (`email`, `lists`, …).
    pub field: String,
    /// A stable code (`malformed`, `too_long`, `empty`, `unknown_list`, …).
    pub code: String,
    /// A human-readable explanation that does not repeat the input.
    pub detail: String,
}

impl FieldError {
    /// A field error from a domain validation error.
    pub fn from_value_error(field: &str, error: &ValueError) -> Self {
        Self {
            field: field.to_owned(),
            code: error.code().to_owned(),
            detail: error.to_string(),
        }
    }

    /// A field error with a code and message of the API's own.
    pub fn new(field: &str, code: &str, detail: &str) -> Self {
        Self {
            field: field.to_owned(),
            code: code.to_owned(),
            detail: detail.to_owned(),
        }
    }
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong in this case.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The failing fields, for validation problems.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// Why a confirm or unsubscribe link did not work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkProblem {
    /// Not a token we issued (malformed, forged, wrong purpose or unknown key).
    Invalid,
    /// A confirm link past its validity.
    Expired,
    /// The request it confirms was replaced, cancelled or expired.
    NoLongerValid,
}

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Fields failed validation.
    #[error("the request has invalid fields")]
    Validation(Vec<FieldError>),
    /// The body is not of a supported content type.
    #[error("unsupported content type")]
    UnsupportedMediaType {
        /// The content types that are accepted.
        accepted: &'static str,
    },
    /// The body is larger than allowed.
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body could not be parsed.
    #[error("the request body could not be read: {0}")]
    MalformedBody(String),
    /// A query parameter or path segment is invalid.
    #[error("{0}")]
    BadRequest(String),
    /// No or unknown credentials.
    #[error("a valid service token is required")]
    Unauthorized,
    /// Credentials without the needed scope.
    #[error("the service token lacks the scope this endpoint needs")]
    Forbidden,
    /// The path exists, the method does not.
    #[error("method not allowed on this path")]
    MethodNotAllowed,
    /// Nothing there.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// Too many requests from this client.
    #[error("too many requests; try again later")]
    RateLimited {
        /// How long to wait.
        retry_after: Duration,
    },
    /// A link token that does not work.
    #[error("the link does not work")]
    Link(LinkProblem),
    /// The stream kept changing under concurrent commands.
    #[error("the subscriber is being changed by other requests; try again")]
    Busy,
    /// Storage failed; details are in the log only.
    #[error("internal error")]
    Internal(String),
    /// An admin call could not be recorded in the audit log, so its result is withheld.
    #[error(
        "the call could not be recorded in the audit log, so its result is withheld; a change \
         it made stays made (retry: admin changes are idempotent, and the retry is recorded)"
    )]
    AuditUnavailable,
}

impl ApiError {
    /// Logs and hides an internal error.
    pub fn internal(context: &str, error: impl std::fmt::Display) -> Self {
        tracing::error!(%context, %error, "request failed");
        Self::Internal(context.to_owned())
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::Validation(_) | Self::MalformedBody(_) | Self::BadRequest(_) => {
                StatusCode::BAD_REQUEST
            }
            Self::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Link(LinkProblem::Expired | LinkProblem::NoLongerValid) => StatusCode::GONE,
            Self::Link(LinkProblem::Invalid) => StatusCode::BAD_REQUEST,
            Self::Busy | Self::AuditUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The problem's short kind (`validation`, `not-found`, …), the last segment of its type.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Validation(_) => "validation",
            Self::UnsupportedMediaType { .. } => "unsupported-media-type",
            Self::PayloadTooLarge { .. } => "payload-too-large",
            Self::MalformedBody(_) => "malformed-body",
            Self::BadRequest(_) => "bad-request",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound(_) => "not-found",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::RateLimited { .. } => "rate-limited",
            Self::Link(LinkProblem::Invalid) => "invalid-link",
            Self::Link(LinkProblem::Expired) => "expired-link",
            Self::Link(LinkProblem::NoLongerValid) => "link-no-longer-valid",
            Self::Busy => "busy",
            Self::Internal(_) => "internal",
            Self::AuditUnavailable => "audit-unavailable",
        }
    }

    /// The problem document for this error.
    pub fn problem(&self) -> Problem {
        let status = self.status();
        Problem {
            kind: format!("https://newsletter.invalid/problems/{}", self.kind()),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: Some(self.to_string()),
            errors: match self {
                Self::Validation(errors) => errors.clone(),
                Self::MalformedBody(detail) => vec![FieldError::new("body", "malformed", detail)],
                _ => Vec::new(),
            },
        }
    }

    fn builder(&self) -> actix_web::HttpResponseBuilder {
        let mut builder = HttpResponse::build(self.status());
        match self {
            Self::RateLimited { retry_after } => {
                builder.insert_header((
                    header::RETRY_AFTER,
                    retry_after.as_secs().max(1).to_string(),
                ));
            }
            Self::Unauthorized => {
                builder.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            Self::UnsupportedMediaType { accepted } => {
                builder.insert_header(("Accept-Post", *accepted));
            }
            _ => {}
        }
        builder
    }

    /// The error as an HTML page in the visitor's language.
    pub fn to_html(&self, locale: Locale) -> HttpResponse {
        self.builder()
            .content_type(ContentType::html())
            .body(pages::error_page(locale, self))
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        self.builder()
            .content_type("application/problem+json")
            .json(self.problem())
    }
}

/// An error shown as an HTML page (forms and links).
#[derive(Debug)]
pub struct HtmlError {
    /// The error.
    pub error: ApiError,
    /// The page's language.
    pub locale: Locale,
}

impl std::fmt::Display for HtmlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl ResponseError for HtmlError {
    fn status_code(&self) -> StatusCode {
        self.error.status()
    }

    fn error_response(&self) -> HttpResponse {
        self.error.to_html(self.locale)
    }
}
