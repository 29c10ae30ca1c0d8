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
        crate::routes::internal::subscriber_by_id,
        crate::routes::internal::lookup,
        crate::routes::internal::list_members,
        crate::routes::health::live,
        crate::routes::health::ready,
        crate::routes::health::version,
        crate::routes::health::openapi_document,
    ),
    components(schemas(
        SignupRequest, SignupAccepted, Problem, FieldError, SubscriberDocument, ListStatusView,
        StatusName, LookupRequest, LookupResponse, MemberDocument, MemberPageDocument,
        ListUnsubscribeHeaders, HealthStatus, VersionInfo
    )),
    modifiers(&ServiceTokenAuth),
    tags(
        (name = "public", description = "Signup form, confirm and unsubscribe links"),
        (name = "internal", description = "Subscriber status for other services (bearer token, scope `status`)"),
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
