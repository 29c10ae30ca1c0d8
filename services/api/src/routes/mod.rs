//! Routing: which handler answers which path and method.

pub(crate) mod admin;
pub(crate) mod body;
pub(crate) mod health;
pub(crate) mod internal;
mod json;
pub(crate) mod links;
pub(crate) mod signup;

use actix_web::{HttpRequest, HttpResponse, web};

use crate::error::ApiError;

async fn method_not_allowed() -> HttpResponse {
    actix_web::ResponseError::error_response(&ApiError::MethodNotAllowed)
}

async fn not_found(_: HttpRequest) -> HttpResponse {
    actix_web::ResponseError::error_response(&ApiError::NotFound("endpoint"))
}

/// Registers every endpoint. The caller adds the [`crate::ApiState`] as app data.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::QueryConfig::default().error_handler(|error, _| {
            ApiError::BadRequest(format!("invalid query: {error}")).into()
        }),
    )
    .app_data(
        web::PathConfig::default().error_handler(|error, _| {
            ApiError::BadRequest(format!("invalid path: {error}")).into()
        }),
    )
    .service(
        web::resource("/v1/subscriptions")
            .route(web::post().to(signup::subscribe))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/confirm")
            .route(web::get().to(links::confirm_page))
            .route(web::post().to(links::confirm))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/unsubscribe")
            .route(web::get().to(links::unsubscribe_page))
            .route(web::post().to(links::unsubscribe))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/cancel")
            .route(web::get().to(links::cancel_page))
            .route(web::post().to(links::cancel))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/internal/v1/subscribers/lookup")
            .route(web::post().to(internal::lookup))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/internal/v1/subscribers/{id}")
            .route(web::get().to(internal::subscriber_by_id))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/internal/v1/lists/{list}/subscribers")
            .route(web::get().to(internal::list_members))
            .default_service(web::to(method_not_allowed)),
    )
    .configure(admin::configure)
    .route("/health/live", web::get().to(health::live))
    .route("/health/ready", web::get().to(health::ready))
    .route("/version", web::get().to(health::version))
    .route("/openapi.json", web::get().to(health::openapi_document))
    .route("/metrics", web::get().to(crate::metrics::metrics_endpoint))
    .default_service(web::to(not_found));
}
