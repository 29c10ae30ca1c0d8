//! Probes and the OpenAPI document.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use crate::error::ApiError;
use crate::state::ApiState;

/// A probe's answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthStatus {
    /// `ok`.
    pub status: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/health/live", tag = "ops", responses((status = 200, body = HealthStatus)))]
pub(crate) async fn live() -> HttpResponse {
    HttpResponse::Ok().json(HealthStatus { status: "ok" })
}

/// The process can serve: its database is reachable and migrated.
#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "ops",
    responses(
        (status = 200, body = HealthStatus),
        (status = 503, body = crate::error::Problem, content_type = "application/problem+json")
    )
)]
pub(crate) async fn ready(state: web::Data<ApiState>) -> HttpResponse {
    match state.readiness.check().await {
        Ok(()) => HttpResponse::Ok().json(HealthStatus { status: "ok" }),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            let problem = ApiError::Busy.problem();
            HttpResponse::ServiceUnavailable()
                .content_type("application/problem+json")
                .json(crate::error::Problem {
                    detail: Some("not ready: the database is not reachable".to_owned()),
                    ..problem
                })
        }
    }
}

/// The running version.
#[derive(Debug, Serialize, ToSchema)]
pub struct VersionInfo {
    /// The package version.
    pub version: &'static str,
}

/// The running version.
#[utoipa::path(get, path = "/version", tag = "ops", responses((status = 200, body = VersionInfo)))]
pub(crate) async fn version() -> HttpResponse {
    HttpResponse::Ok().json(VersionInfo {
        version: env!("CARGO_PKG_VERSION"),
    })
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "ops", responses((status = 200, description = "OpenAPI 3 document", content_type = "application/json")))]
pub(crate) async fn openapi_document() -> HttpResponse {
    HttpResponse::Ok().json(crate::openapi::ApiDoc::openapi())
}
