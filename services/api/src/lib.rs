//! The HTTP face of `newsletter` (actix-web): the public signup, confirm and unsubscribe
//! endpoints (JSON and plain HTML forms), the internal status API for other services, health
//! probes and the OpenAPI document.
//!
//! The application reaches storage only through ports: the event store, the
//! [`ports::SubscriberDirectory`] (the email index) and [`ports::StatusQueries`] (read models).
//! The binary wires the adapters.

pub mod auth;
pub mod client;
pub mod config;
pub mod error;
pub mod export;
pub mod metrics;
pub mod openapi;
pub mod pages;
pub mod ports;
pub mod rate_limit;
mod routes;
pub mod state;

pub use config::ApiConfig;
pub use routes::admin::{
    AdminSubscriberStatus, AuditItem, ErasureReceipt, MonthlyStats, PrivacyOperations,
};
pub use routes::configure;
pub use state::ApiState;
