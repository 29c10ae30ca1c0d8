//! Reading request bodies with a size limit and a known content type.

use actix_web::http::header;
use actix_web::{HttpRequest, web};
use futures::StreamExt;

use crate::error::ApiError;

/// The body formats the public endpoints accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyKind {
    /// `application/json`.
    Json,
    /// `application/x-www-form-urlencoded` (plain HTML forms).
    Form,
}

/// The body's format from `Content-Type`, or 415.
pub(crate) fn body_kind(
    request: &HttpRequest,
    accepted: &'static str,
) -> Result<BodyKind, ApiError> {
    let essence = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(|value| {
            value
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
    match essence.as_deref() {
        Some("application/json") if accepted.contains("application/json") => Ok(BodyKind::Json),
        Some("application/x-www-form-urlencoded")
            if accepted.contains("application/x-www-form-urlencoded") =>
        {
            Ok(BodyKind::Form)
        }
        _ => Err(ApiError::UnsupportedMediaType { accepted }),
    }
}

/// Reads the whole body, refusing (413) anything over `limit` bytes without buffering it.
pub(crate) async fn read_body(
    request: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, ApiError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::MalformedBody(e.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The pairs of a form body (repeated names kept, in order).
pub(crate) fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}
