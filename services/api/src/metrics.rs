//! Prometheus metrics of every role, served as text at `GET /metrics`.
//!
//! No label ever holds personal data: labels are route templates, status codes, event types,
//! list ids, statuses and projection names.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Every metric the service exports, in one registry.
pub struct Metrics {
    registry: Registry,
    /// HTTP requests by method, route template and status.
    pub http_requests: IntCounterVec,
    /// HTTP request durations by method and route template, in seconds.
    pub http_duration: HistogramVec,
    /// Events appended, by event type.
    pub events_appended: IntCounterVec,
    /// The signup funnel: `signup`, `honeypot`, `rate_limited`, `confirm`, `one_click_unsubscribe`,
    /// `link_unsubscribe`, `cancel`, `confirm_page_view`, `unsubscribe_page_view`, `cancel_page_view`.
    pub funnel: IntCounterVec,
    /// Confirmation mails by outcome: `sent`, `failed`, `retried`, `skipped`.
    pub mails: IntCounterVec,
    /// Events the mailer has not handled yet (sampled).
    pub mailer_backlog: IntGauge,
    /// A projection's checkpoint, as the `prepare` part of its position.
    pub projection_position: IntGaugeVec,
    /// Events readable after a projection's checkpoint (sampled, capped at 10,000).
    pub projection_lag_events: IntGaugeVec,
    /// Age of the oldest event a projection has not applied yet, in seconds (0 when caught up).
    pub projection_lag_seconds: IntGaugeVec,
    /// Subscribers by list and reported status (from the read model, sampled).
    pub subscribers: IntGaugeVec,
    /// 1, labelled with the version.
    pub build_info: IntGaugeVec,
    /// Leases this process holds (1) or waits for (0), by role.
    pub lease_held: IntGaugeVec,
    /// Times this process lost a lease.
    pub lease_lost: IntCounter,
}

fn registered<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    collector: C,
) -> C {
    // Names are static and unique, so registration cannot fail; a failure would only drop the
    // metric from the output, never stop the service.
    if let Err(e) = registry.register(Box::new(collector.clone())) {
        tracing::error!(error = %e, "a metric could not be registered");
    }
    collector
}

impl Metrics {
    /// A registry with every metric at zero.
    ///
    /// The metric definitions are constants; building them only fails on programming errors,
    /// which the unit test below catches.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("newsletter".to_owned()), None)?;
        let r = &registry;
        let metrics = Self {
            http_requests: registered(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "http_requests_total",
                        "HTTP requests by method, route template and status",
                    ),
                    &["method", "route", "status"],
                )?,
            ),
            http_duration: registered(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "http_request_duration_seconds",
                        "HTTP request durations by method and route template",
                    )
                    .buckets(vec![
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                        5.0,
                    ]),
                    &["method", "route"],
                )?,
            ),
            events_appended: registered(
                r,
                IntCounterVec::new(
                    Opts::new("events_appended_total", "Events appended, by event type"),
                    &["type"],
                )?,
            ),
            funnel: registered(
                r,
                IntCounterVec::new(Opts::new("funnel_total", "Signup funnel steps"), &["step"])?,
            ),
            mails: registered(
                r,
                IntCounterVec::new(
                    Opts::new("confirmation_mails_total", "Confirmation mails by outcome"),
                    &["outcome"],
                )?,
            ),
            mailer_backlog: registered(
                r,
                IntGauge::new(
                    "mailer_backlog_events",
                    "Events the mailer has not handled yet",
                )?,
            ),
            projection_position: registered(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "projection_position",
                        "A projection's checkpoint (prepare part)",
                    ),
                    &["projection"],
                )?,
            ),
            projection_lag_events: registered(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "projection_lag_events",
                        "Events readable after a projection's checkpoint (capped at 10000)",
                    ),
                    &["projection"],
                )?,
            ),
            projection_lag_seconds: registered(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "projection_lag_seconds",
                        "Age of the oldest event a projection has not applied",
                    ),
                    &["projection"],
                )?,
            ),
            subscribers: registered(
                r,
                IntGaugeVec::new(
                    Opts::new("subscribers", "Subscribers by list and reported status"),
                    &["list", "status"],
                )?,
            ),
            build_info: registered(
                r,
                IntGaugeVec::new(Opts::new("build_info", "Build information"), &["version"])?,
            ),
            lease_held: registered(
                r,
                IntGaugeVec::new(
                    Opts::new("lease_held", "1 while this process holds the role's lease"),
                    &["role"],
                )?,
            ),
            lease_lost: registered(
                r,
                IntCounter::new("lease_lost_total", "Leases this process lost")?,
            ),
            registry,
        };
        metrics
            .build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        Ok(metrics)
    }

    /// Counts one step of the signup funnel.
    pub fn step(&self, step: &str) {
        self.funnel.with_label_values(&[step]).inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "metrics could not be encoded");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// `GET /metrics` for an app that holds `web::Data<Arc<Metrics>>`.
pub async fn metrics_endpoint(
    metrics: actix_web::web::Data<std::sync::Arc<Metrics>>,
) -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(metrics.render())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_registers_and_renders() {
        let metrics = Metrics::new().unwrap();
        metrics.step("signup");
        metrics
            .http_requests
            .with_label_values(&["POST", "/v1/subscriptions", "202"])
            .inc();
        let text = metrics.render();
        assert!(
            text.contains("newsletter_funnel_total{step=\"signup\"} 1"),
            "{text}"
        );
        assert!(text.contains("newsletter_build_info{version="), "{text}");
        assert!(text.contains("newsletter_http_requests_total{method=\"POST\",route=\"/v1/subscriptions\",status=\"202\"} 1"));
    }
}
