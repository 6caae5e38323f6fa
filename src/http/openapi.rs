//! `GET /openapi.json`: the OpenAPI 3.1 document of the gateway. Its paths
//! come from the very list of routes the router is built from
//! (`super::routes`), its schemas from the types the handlers parse and
//! serialize, so the document and what is served cannot drift apart.

use std::sync::LazyLock;

use axum::body::Bytes;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::conversations::dto::ConversationDto;
use super::error::ErrorReply;

/// What the document says beyond its routes.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "conversation-service",
        description = "Conversations tied to code repositories. The same operations are served over gRPC \
            (flashback.conversation.v1.ConversationService). Every reply carries `x-request-id`; \
            every error is `{\"success\": false, \"message\": ...}`.",
    ),
    components(schemas(ConversationDto, ErrorReply)),
    modifiers(&BearerAuth),
    tags(
        (name = "conversations", description = "The Conversation API"),
        (name = "ai", description = "Model provider configurations of a workspace"),
        (name = "operations", description = "Health, metrics and this document"),
    )
)]
pub struct ApiDoc;

/// The `bearer` security scheme: an API token (`fbk_...`) or, when
/// configured, a JWT.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API token (fbk_...) from `admin token create`, or a JWT when the service is configured for them",
                    ))
                    .build(),
            ),
        );
    }
}

/// An update must change something: `minProperties: 1` and no other
/// properties on its body, in the document (utoipa has no container
/// attribute for them; the route itself ignores unknown fields, as the
/// platform's client sends some).
struct UpdateNeedsAField;

impl Modify for UpdateNeedsAField {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{RefOr, schema::Schema};
        let schema = openapi.components.as_mut().map(|c| &mut c.schemas);
        let Some(schemas) = schema else { return };
        for name in ["UpdateAiLlmBody", "UpdatePolicyBody"] {
            if let Some(RefOr::T(Schema::Object(body))) = schemas.get_mut(name) {
                body.min_properties = Some(1);
                body.additional_properties = Some(Box::new(
                    utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
                ));
            }
        }
    }
}

/// The document: [`ApiDoc`] with every route of `super::routes`, rendered once.
static DOCUMENT: LazyLock<Bytes> = LazyLock::new(|| {
    let mut doc = ApiDoc::openapi();
    doc.merge(super::routes::document());
    // After the merge: the body's schema comes with its route.
    UpdateNeedsAField.modify(&mut doc);
    let mut doc = serde_json::to_value(&doc).unwrap_or_default();
    endpoint_needed_for_aws_and_other(&mut doc);
    moving_a_configuration_takes_its_secret(&mut doc);
    read_marks_need_ids(&mut doc);
    Bytes::from(doc.to_string())
});

/// A UUID in its canonical form (a `format` alone asserts nothing).
const UUID_PATTERN: &str =
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

/// Marking events read or unread takes `id` or `ids` (one to 100 UUIDs);
/// the other may be null.
fn read_marks_need_ids(doc: &mut serde_json::Value) {
    let body = doc.pointer_mut("/components/schemas/ReadIdsBody");
    if let Some(serde_json::Value::Object(body)) = body {
        let id = serde_json::json!({ "type": "string", "format": "uuid", "pattern": UUID_PATTERN });
        let ids = serde_json::json!({
            "type": "array",
            "items": { "type": "string", "format": "uuid", "pattern": UUID_PATTERN },
            "minItems": 1,
            "maxItems": 100,
        });
        body.insert(
            "properties".into(),
            serde_json::json!({
                "id": { "oneOf": [id, { "type": "null" }] },
                "ids": { "oneOf": [ids, { "type": "null" }] },
            }),
        );
        body.insert(
            "anyOf".into(),
            serde_json::json!([
                { "required": ["id"], "properties": { "id": id } },
                { "required": ["ids"], "properties": { "ids": ids } },
            ]),
        );
    }
}

/// Changing a configuration's `endpoint` or `aiType` takes its `secret`
/// again (so a stored key is never sent elsewhere).
fn moving_a_configuration_takes_its_secret(doc: &mut serde_json::Value) {
    let body = doc.pointer_mut("/components/schemas/UpdateAiLlmBody");
    if let Some(serde_json::Value::Object(body)) = body {
        body.insert(
            "if".into(),
            serde_json::json!({
                "anyOf": [
                    { "properties": { "endpoint": { "type": "string" } }, "required": ["endpoint"] },
                    { "properties": { "aiType": { "type": "string" } }, "required": ["aiType"] },
                ],
            }),
        );
        body.insert(
            "then".into(),
            serde_json::json!({
                "properties": { "secret": { "type": "string" } },
                "required": ["secret"],
            }),
        );
    }
}

/// A create's `endpoint` may be left out only where the provider has a
/// public API: a condition utoipa's schema types cannot say, so it is
/// written into the rendered document.
fn endpoint_needed_for_aws_and_other(doc: &mut serde_json::Value) {
    let body = doc.pointer_mut("/components/schemas/CreateAiLlmBody");
    if let Some(serde_json::Value::Object(body)) = body {
        body.insert(
            "if".into(),
            serde_json::json!({
                "properties": { "aiType": { "enum": ["AWS", "OTHER"] } },
                "required": ["aiType"],
            }),
        );
        body.insert(
            "then".into(),
            serde_json::json!({
                "properties": { "endpoint": { "type": "string" } },
                "required": ["endpoint"],
            }),
        );
    }
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn serve() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        DOCUMENT.clone(),
    )
        .into_response()
}
