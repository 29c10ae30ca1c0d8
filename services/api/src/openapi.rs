//! The OpenAPI 3 document, generated from the handlers' annotations (served at `/openapi.json`).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::{FieldError, Problem};
use crate::ports::{ListStatusView, StatusName};
use crate::routes::health::{HealthStatus, VersionInfo};
use crate::routes::internal::{
    ListUnsubscribeHeaders, LookupRequest, LookupResponse, MemberDocument, MemberPageDocument,
    SubscriberDocument,
};
use crate::routes::signup::{SignupAccepted, SignupRequest};

/// The service's OpenAPI description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "newsletter",
        description = "Event-sourced newsletter subscriptions: double opt-in signup, confirm and \
                       one-click unsubscribe links, and subscriber status for internal services."
    ),
    paths(
        crate::routes::signup::subscribe,
        crate::routes::links::confirm_page,
        crate::routes::links::confirm,
        crate::routes::links::unsubscribe_page,
        crate::routes::links::unsubscribe,
        crate::routes::links::cancel_page,
        crate::routes::links::cancel,
        crate::routes::internal::subscriber_by_id,
        crate::routes::internal::lookup,
        crate::routes::internal::list_members,
        crate::routes::admin::erase,
        crate::routes::admin::export_by_id,
        crate::routes::admin::export_by_email,
        crate::routes::admin::rectify,
        crate::routes::admin::restrict,
        crate::routes::admin::lift_restriction,
        crate::routes::admin::object,
        crate::routes::admin::audit_log,
        crate::routes::admin::stats,
        crate::routes::health::live,
        crate::routes::health::ready,
        crate::routes::health::version,
        crate::routes::health::openapi_document,
    ),
    components(schemas(
        SignupRequest, SignupAccepted, Problem, FieldError, SubscriberDocument, ListStatusView,
        StatusName, LookupRequest, LookupResponse, MemberDocument, MemberPageDocument,
        ListUnsubscribeHeaders, HealthStatus, VersionInfo,
        crate::routes::admin::ErasureReceipt, crate::routes::admin::AuditItem,
        crate::routes::admin::AuditPage, crate::routes::admin::AdminSubscriberStatus,
        crate::routes::admin::AdminListStatus, crate::routes::admin::ReasonRequest,
        crate::routes::admin::ExportByEmailRequest, crate::export::ExportDocument, crate::export::PolicyInfo,
        crate::routes::admin::MonthlyStats, crate::routes::admin::StatsDocument
    )),
    modifiers(&ServiceTokenAuth),
    tags(
        (name = "public", description = "Signup form, confirm and unsubscribe links"),
        (name = "internal", description = "Subscriber status for other services (bearer token, scope `status`)"),
        (name = "admin", description = "GDPR requests of the data protection officer (bearer token, scope `admin`)"),
        (name = "ops", description = "Health probes and this document"),
    )
)]
pub struct ApiDoc;

/// Declares the bearer service-token scheme the internal endpoints use.
struct ServiceTokenAuth;

impl Modify for ServiceTokenAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "service_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}
