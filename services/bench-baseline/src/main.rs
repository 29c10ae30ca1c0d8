//! `bench-baseline [ADDR]`: answers `GET /` and `GET /internal/v1/subscribers/{id}` with a small
//! JSON document, on as many workers as `newsletter` uses, so `bench/run` can state our figures as
//! ratios of this machine's HTTP ceiling. The second route lets the status-by-id figure's baseline
//! take the very requests (same wrk script, same paths and headers) that `newsletter` answers.

use serde::Serialize;

#[derive(Serialize)]
struct Status {
    id: &'static str,
    status: &'static str,
}

async fn status() -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok().json(Status {
        id: "0190b7c4-0000-7000-8000-000000000000",
        status: "confirmed",
    })
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18090".to_owned());
    actix_web::HttpServer::new(|| {
        actix_web::App::new()
            .route("/", actix_web::web::get().to(status))
            .route(
                "/internal/v1/subscribers/{id}",
                actix_web::web::get().to(status),
            )
    })
    .bind(addr)?
    .run()
    .await
}
