//! The pages behind the links in mails: confirm and unsubscribe.
//!
//! A `GET` never changes anything (mail scanners open every link); the page's button POSTs.
//! The RFC 8058 one-click `POST` (body `List-Unsubscribe=One-Click`) acts at once.

use actix_web::http::header::ContentType;
use actix_web::{HttpRequest, HttpResponse, web};
use newsletter_domain::{
    ConsentEvidence, DomainError, Subscriber, SubscriberCommand, SubscriberId, UnsubscribeChannel,
};
use newsletter_eventstore::{CommandError, EventMetadata, StreamId, execute};
use newsletter_tokens::TokenError;
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use super::body::{form_pairs, read_body};
use crate::client::{client_ip, preferred_locale, user_agent};
use crate::error::{ApiError, HtmlError, LinkProblem};
use crate::pages;
use crate::state::ApiState;

/// The token of a link.
#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct TokenQuery {
    /// The signed token from the link.
    token: Option<String>,
}

fn html(body: String) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::html())
        .body(body)
}

fn link_error(error: &TokenError) -> ApiError {
    match error {
        TokenError::Expired => ApiError::Link(LinkProblem::Expired),
        _ => ApiError::Link(LinkProblem::Invalid),
    }
}

fn metadata(actor: &str) -> EventMetadata {
    EventMetadata {
        correlation_id: Some(Uuid::now_v7()),
        causation_id: None,
        actor: Some(actor.to_owned()),
    }
}

/// The language of a subscriber's pages: theirs (confirmed, or their pending request's), else
/// the browser's. Reading the stream changes nothing.
async fn subscriber_locale(
    state: &ApiState,
    subscriber: SubscriberId,
    http: &HttpRequest,
) -> newsletter_domain::Locale {
    let Ok(stream) = StreamId::new(subscriber.stream_name()) else {
        return preferred_locale(http);
    };
    match newsletter_eventstore::command::load::<Subscriber>(state.store.as_ref(), &stream).await {
        Ok((subscriber_state, _)) => subscriber_state
            .locale()
            .unwrap_or_else(|| preferred_locale(http)),
        Err(_) => preferred_locale(http),
    }
}

/// The page behind a link (GET): reading only. A token that does not verify gets an error page
/// in the browser's language; a valid one the `page` with its button, in the subscriber's.
async fn prompt_page(
    state: &ApiState,
    http: &HttpRequest,
    verified: Result<SubscriberId, TokenError>,
    step: &str,
    page: fn(newsletter_domain::Locale, &str, &str) -> String,
    token: &str,
) -> Result<HttpResponse, HtmlError> {
    let subscriber = verified.map_err(|e| HtmlError {
        error: link_error(&e),
        locale: preferred_locale(http),
    })?;
    let locale = subscriber_locale(state, subscriber, http).await;
    state.metrics.step(step);
    Ok(html(page(locale, &state.config.public_url, token)))
}

/// Carries out a command a link's token authorised, on that subscriber's stream.
async fn execute_for(
    state: &ApiState,
    subscriber: SubscriberId,
    command: &SubscriberCommand,
) -> Result<(), CommandError<DomainError>> {
    let stream = StreamId::new(subscriber.stream_name()).map_err(CommandError::Store)?;
    execute::<Subscriber>(
        state.store.as_ref(),
        state.clock.as_ref(),
        &stream,
        command,
        &metadata("public"),
    )
    .await
    .map(|_| ())
}

/// Whether a POST body carries RFC 8058's `List-Unsubscribe=One-Click`, url-encoded or as a
/// `multipart/form-data` part (both are used by mail clients).
fn is_one_click(http: &HttpRequest, body: &[u8], pairs: &[(String, String)]) -> bool {
    if pairs
        .iter()
        .any(|(name, value)| name == "List-Unsubscribe" && value == "One-Click")
    {
        return true;
    }
    let multipart = http
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"));
    if !multipart {
        return false;
    }
    let text = String::from_utf8_lossy(body);
    text.split("\r\n--").chain(text.split("\n--")).any(|part| {
        part.to_ascii_lowercase()
            .contains("name=\"list-unsubscribe\"")
            && part
                .split_once("\r\n\r\n")
                .or_else(|| part.split_once("\n\n"))
                .is_some_and(|(_, value)| value.trim().starts_with("One-Click"))
    })
}

/// The token from the query string or, for posted forms, the body's `token` field.
async fn posted_token(
    http: &HttpRequest,
    query: &TokenQuery,
    payload: web::Payload,
    state: &ApiState,
) -> Result<(Option<String>, bool), ApiError> {
    let body = read_body(http, payload, state.config.max_body_bytes).await?;
    let pairs = form_pairs(&body);
    let token = query.token.clone().or_else(|| {
        pairs
            .iter()
            .find(|(name, _)| name == "token")
            .map(|(_, value)| value.clone())
    });
    Ok((token, is_one_click(http, &body, &pairs)))
}

/// The confirm page: shows a button, changes nothing.
#[utoipa::path(
    get,
    path = "/v1/confirm",
    tag = "public",
    params(TokenQuery),
    responses(
        (status = 200, description = "A page with a button that confirms", content_type = "text/html"),
        (status = 400, description = "Invalid link", content_type = "text/html"),
        (status = 410, description = "Expired link", content_type = "text/html"),
    )
)]
#[tracing::instrument(name = "confirm_page", skip_all)]
pub(crate) async fn confirm_page(
    http: HttpRequest,
    query: web::Query<TokenQuery>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, HtmlError> {
    let token = query.token.as_deref().unwrap_or_default();
    let verified = state
        .keys
        .verify_confirm(token, state.clock.now())
        .map(|claims| claims.subscriber);
    prompt_page(
        &state,
        &http,
        verified,
        "confirm_page_view",
        pages::confirm_prompt,
        token,
    )
    .await
}

/// Confirms a subscription (the button of the confirm page).
#[utoipa::path(
    post,
    path = "/v1/confirm",
    tag = "public",
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "token=<the link's token>"),
    responses(
        (status = 200, description = "Confirmed", content_type = "text/html"),
        (status = 400, description = "Invalid link", content_type = "text/html"),
        (status = 410, description = "Expired link, or a request that was replaced, cancelled or expired", content_type = "text/html"),
    )
)]
#[tracing::instrument(name = "confirm", skip_all)]
pub(crate) async fn confirm(
    http: HttpRequest,
    query: web::Query<TokenQuery>,
    payload: web::Payload,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, HtmlError> {
    let locale = preferred_locale(&http);
    let fail = |error| HtmlError { error, locale };
    let (token, _) = posted_token(&http, &query, payload, &state)
        .await
        .map_err(fail)?;
    let now = state.clock.now();
    let claims = state
        .keys
        .verify_confirm(token.as_deref().unwrap_or_default(), now)
        .map_err(|e| fail(link_error(&e)))?;
    let locale = subscriber_locale(&state, claims.subscriber, &http).await;
    let fail = |error| HtmlError { error, locale };
    let command = SubscriberCommand::Confirm {
        request_id: claims.request,
        consent: ConsentEvidence {
            policy_version: state.config.policy_version.clone(),
            source: None,
            at: now,
            ip: client_ip(&http, &state.config.trusted_proxies),
            user_agent: user_agent(&http),
        },
    };
    match execute_for(&state, claims.subscriber, &command).await {
        Ok(()) => {
            tracing::info!(subscriber = %claims.subscriber, "subscription confirmed");
            state.metrics.step("confirm");
            Ok(html(pages::confirmed(locale)))
        }
        Err(CommandError::Refused(DomainError::RequestExpired { .. })) => {
            Err(fail(ApiError::Link(LinkProblem::Expired)))
        }
        Err(CommandError::Refused(reason)) => {
            tracing::info!(subscriber = %claims.subscriber, %reason, "confirmation refused");
            Err(fail(ApiError::Link(LinkProblem::NoLongerValid)))
        }
        Err(CommandError::Contention { .. }) => Err(fail(ApiError::Busy)),
        Err(e) => Err(fail(ApiError::internal("record the confirmation", e))),
    }
}

/// The unsubscribe page: shows a button, changes nothing.
#[utoipa::path(
    get,
    path = "/v1/unsubscribe",
    tag = "public",
    params(TokenQuery),
    responses(
        (status = 200, description = "A page with a button that unsubscribes", content_type = "text/html"),
        (status = 400, description = "Invalid link", content_type = "text/html"),
    )
)]
#[tracing::instrument(name = "unsubscribe_page", skip_all)]
pub(crate) async fn unsubscribe_page(
    http: HttpRequest,
    query: web::Query<TokenQuery>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, HtmlError> {
    let token = query.token.as_deref().unwrap_or_default();
    let verified = state
        .keys
        .verify_unsubscribe(token)
        .map(|claims| claims.subscriber);
    prompt_page(
        &state,
        &http,
        verified,
        "unsubscribe_page_view",
        pages::unsubscribe_prompt,
        token,
    )
    .await
}

/// Unsubscribes: RFC 8058 one-click (`List-Unsubscribe=One-Click`, from mail clients) or the
/// button of the unsubscribe page. Works without expiry; repeating it changes nothing.
#[utoipa::path(
    post,
    path = "/v1/unsubscribe",
    tag = "public",
    params(TokenQuery),
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "List-Unsubscribe=One-Click (RFC 8058), or token=<the link's token> from the page"),
    responses(
        (status = 200, description = "Unsubscribed", content_type = "text/html"),
        (status = 400, description = "Invalid link", content_type = "text/html"),
    )
)]
#[tracing::instrument(name = "unsubscribe", skip_all)]
pub(crate) async fn unsubscribe(
    http: HttpRequest,
    query: web::Query<TokenQuery>,
    payload: web::Payload,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, HtmlError> {
    let locale = preferred_locale(&http);
    let fail = |error| HtmlError { error, locale };
    let (token, one_click) = posted_token(&http, &query, payload, &state)
        .await
        .map_err(fail)?;
    let claims = state
        .keys
        .verify_unsubscribe(token.as_deref().unwrap_or_default())
        .map_err(|e| fail(link_error(&e)))?;
    let command = SubscriberCommand::Unsubscribe {
        scope: claims.scope.clone(),
        channel: if one_click {
            UnsubscribeChannel::OneClick
        } else {
            UnsubscribeChannel::Link
        },
    };
    state.metrics.step(if one_click {
        "one_click_unsubscribe"
    } else {
        "link_unsubscribe"
    });
    withdraw(
        &state,
        &http,
        claims.subscriber,
        &command,
        pages::unsubscribed,
    )
    .await
}

/// Carries out a withdrawal (unsubscribe, cancel) and shows `done`. A withdrawal always
/// succeeds from the visitor's point of view: whatever the rules refuse (an unknown subscriber,
/// a request that already ended) leaves nothing of what they withdrew in force.
async fn withdraw(
    state: &ApiState,
    http: &HttpRequest,
    subscriber: SubscriberId,
    command: &SubscriberCommand,
    done: fn(newsletter_domain::Locale) -> String,
) -> Result<HttpResponse, HtmlError> {
    let locale = subscriber_locale(state, subscriber, http).await;
    let fail = |error| HtmlError { error, locale };
    match execute_for(state, subscriber, command).await {
        Ok(()) => {
            tracing::info!(%subscriber, command = command.name(), "withdrawal recorded");
            Ok(html(done(locale)))
        }
        Err(CommandError::Refused(reason)) => {
            tracing::info!(%subscriber, command = command.name(), %reason, "withdrawal changed nothing");
            Ok(html(done(locale)))
        }
        Err(CommandError::Contention { .. }) => Err(fail(ApiError::Busy)),
        Err(e) => Err(fail(ApiError::internal("record a withdrawal", e))),
    }
}

/// The "this wasn't me" page: shows a button, changes nothing.
#[utoipa::path(
    get,
    path = "/v1/cancel",
    tag = "public",
    params(TokenQuery),
    responses(
        (status = 200, description = "A page with a button that cancels the signup", content_type = "text/html"),
        (status = 400, description = "Invalid link", content_type = "text/html"),
    )
)]
#[tracing::instrument(name = "cancel_page", skip_all)]
pub(crate) async fn cancel_page(
    http: HttpRequest,
    query: web::Query<TokenQuery>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, HtmlError> {
    let token = query.token.as_deref().unwrap_or_default();
    let verified = state
        .keys
        .verify_cancel(token)
        .map(|claims| claims.subscriber);
    prompt_page(
        &state,
        &http,
        verified,
        "cancel_page_view",
        pages::cancel_prompt,
        token,
    )
    .await
}

/// Cancels one pending signup ("this wasn't me", the button of the cancel page). Only the lists
/// of that request are affected; other subscriptions stay as they are. Repeating it, or using
/// it after the request was confirmed or ended, changes nothing.
#[utoipa::path(
    post,
    path = "/v1/cancel",
    tag = "public",
    params(TokenQuery),
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "token=<the link's token>"),
    responses(
        (status = 200, description = "Cancelled (or nothing left to cancel)", content_type = "text/html"),
        (status = 400, description = "Invalid link", content_type = "text/html"),
    )
)]
#[tracing::instrument(name = "cancel", skip_all)]
pub(crate) async fn cancel(
    http: HttpRequest,
    query: web::Query<TokenQuery>,
    payload: web::Payload,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, HtmlError> {
    let locale = preferred_locale(&http);
    let fail = |error| HtmlError { error, locale };
    let (token, _) = posted_token(&http, &query, payload, &state)
        .await
        .map_err(fail)?;
    let claims = state
        .keys
        .verify_cancel(token.as_deref().unwrap_or_default())
        .map_err(|e| fail(link_error(&e)))?;
    let command = SubscriberCommand::CancelRequest {
        request_id: claims.request,
    };
    state.metrics.step("cancel");
    withdraw(&state, &http, claims.subscriber, &command, pages::cancelled).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn one_click_is_recognised_url_encoded_and_multipart() {
        let form = TestRequest::default()
            .insert_header(("Content-Type", "application/x-www-form-urlencoded"))
            .to_http_request();
        let body = b"List-Unsubscribe=One-Click";
        assert!(is_one_click(&form, body, &form_pairs(body)));
        assert!(!is_one_click(
            &form,
            b"token=abc",
            &form_pairs(b"token=abc")
        ));

        let multipart = TestRequest::default()
            .insert_header(("Content-Type", "multipart/form-data; boundary=XyZ"))
            .to_http_request();
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n--XyZ--\r\n";
        assert!(is_one_click(&multipart, body, &[]));
        let other = b"--XyZ\r\nContent-Disposition: form-data; name=\"token\"\r\n\r\nOne-Click\r\n--XyZ--\r\n";
        assert!(!is_one_click(&multipart, other, &[]));
    }
}
