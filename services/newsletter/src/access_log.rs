//! One log line per HTTP request: method, route template, status, duration. Never the query
//! string (it carries link tokens) nor bodies.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;

/// Logs the request after it is answered.
pub async fn log_request(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = request.method().clone();
    let metrics = request
        .app_data::<actix_web::web::Data<std::sync::Arc<newsletter_api::metrics::Metrics>>>()
        .cloned();
    let response = next.call(request).await?;
    // Asked after routing, so actix-web names the resource it matched; asked before, it would
    // match the path against every route's pattern again (a regex each: about a quarter of the
    // CPU of a status-by-id request, seen with perf).
    let route = response
        .request()
        .match_pattern()
        .unwrap_or_else(|| "<unmatched>".to_owned());
    let status = response.status().as_u16();
    let elapsed = started.elapsed().as_secs_f64();
    let millis = elapsed * 1000.0;
    if let Some(metrics) = metrics {
        metrics
            .http_requests
            .with_label_values(&[method.as_str(), route.as_str(), &status.to_string()])
            .inc();
        metrics
            .http_duration
            .with_label_values(&[method.as_str(), route.as_str()])
            .observe(elapsed);
    }
    if status >= 500 {
        tracing::warn!(%method, %route, status, millis, "request");
    } else {
        tracing::info!(%method, %route, status, millis, "request");
    }
    Ok(response)
}
