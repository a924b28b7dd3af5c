//! The OpenAPI 3.1 document of the HTTP API, served at `GET /api/v1/openapi.json`.
//!
//! Nothing here lists operations: each handler carries its `#[utoipa::path]` and is
//! routed with utoipa-axum's `routes!`, which registers the route and its operation
//! together, so the router and the document cannot disagree on what exists. Bodies and
//! parameters come from the same types the handlers (de)serialize. This module adds what
//! is common to every operation: the bearer scheme, the error answers (from the one table
//! of [`crate::error::status`]), and the parameters of every path.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use hookline_core::Code;
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::path::{Operation, Parameter, ParameterIn, PathItem};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, RefOr, Required,
    Response, SecurityRequirement,
};

use crate::error::status;

/// The name of the bearer scheme every operation but the health checks requires.
const BEARER: &str = "HTTPBearer";

/// The document's frame: what the API is, and that it takes bearer tokens.
pub fn base() -> OpenApi {
    let bearer = SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build());
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Hookline")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "The sending API of the open-source Svix server (`/api/v1`), the Svix \
                     Ingest API (`/ingest/api/v1`) and Hookline's job tracker \
                     (`/api/v1/job`). Tokens: the admin token, or an application's token \
                     for that application only. Every error answers `{code, detail}` with a \
                     stable code, or for 422 the list of failing fields.",
                )),
        )
        .components(Some(
            // Query parameters name these by reference; the router gathers only the
            // schemas of bodies.
            ComponentsBuilder::new()
                .schema_from::<crate::extract::Limit>()
                .schema_from::<crate::extract::Timestamp>()
                .schema_from::<hookline_core::page::Order>()
                .security_scheme(BEARER, bearer)
                .build(),
        ))
        .security(Some(vec![SecurityRequirement::new(
            BEARER,
            Vec::<String>::new(),
        )]))
        .build()
}

/// The error answers of an operation: one response per status of the error vocabulary,
/// saying which codes it carries. Use as `responses((status = 200, …), Errors)`.
#[derive(Debug)]
pub struct Errors;

impl utoipa::IntoResponses for Errors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut codes: BTreeMap<u16, Vec<&'static str>> = BTreeMap::new();
        for code in Code::ALL {
            if code != Code::Validation {
                codes
                    .entry(status(code).as_u16())
                    .or_default()
                    .push(code.as_str());
            }
        }
        let mut responses: BTreeMap<String, RefOr<Response>> = codes
            .into_iter()
            .map(|(status, codes)| {
                let body = ObjectBuilder::new()
                    .property(
                        "code",
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .enum_values(Some(codes.clone())),
                    )
                    .required("code")
                    .property("detail", ObjectBuilder::new().schema_type(Type::String))
                    .required("detail");
                let response = json_response(&format!("One of: {}", codes.join(", ")), body);
                (status.to_string(), response)
            })
            .collect();
        let field = ObjectBuilder::new()
            .property(
                "loc",
                ArrayBuilder::new().items(ObjectBuilder::new().schema_type(Type::String)),
            )
            .required("loc")
            .property("msg", ObjectBuilder::new().schema_type(Type::String))
            .required("msg")
            .property("type", ObjectBuilder::new().schema_type(Type::String))
            .required("type");
        let invalid = ObjectBuilder::new()
            .property("detail", ArrayBuilder::new().items(field))
            .required("detail");
        responses.insert(
            "422".to_owned(),
            json_response("Fields of the request are invalid: where, and why", invalid),
        );
        responses
    }
}

fn json_response(description: &str, body: impl Into<Schema>) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new().schema(Some(body.into())).build(),
        )
        .build()
        .into()
}

/// Completes the document the router gathered: every operation gets the parameters of
/// its path (the handlers read them as plain strings), and the endpoint operations the
/// Ingest API shares with the sending API (the same handlers, nested under a source) get
/// operation ids of their own.
pub fn finish(mut document: OpenApi) -> OpenApi {
    for (path, item) in document.paths.paths.iter_mut() {
        let shared = path.starts_with("/ingest/");
        for operation in operations(item) {
            operation.parameters = Some(path_parameters(path, operation.parameters.take()));
            if shared
                && let Some(id) = &mut operation.operation_id
                && let Some(rest) = id.strip_prefix("v1.endpoint.")
            {
                *id = format!("v1.ingest.endpoint.{rest}");
                operation.tags = Some(vec!["Ingest Endpoint".to_owned()]);
            }
        }
    }
    document
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.patch,
        &mut item.delete,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// The parameters of `path`'s template, in order, then the operation's own (`others`).
/// Query parameters are read by [`crate::extract::Query`], where an empty value is none.
fn path_parameters(path: &str, others: Option<Vec<Parameter>>) -> Vec<Parameter> {
    let names = path
        .split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'));
    let mut parameters: Vec<Parameter> = names
        .map(|name| {
            Parameter::builder()
                .name(name)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some(describe(name)))
                .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                .build()
        })
        .collect();
    let others = others
        .unwrap_or_default()
        .into_iter()
        .filter_map(|mut parameter| {
            match parameter.parameter_in {
                ParameterIn::Path => return None,
                // An optional query parameter given empty (`?before=`) counts as absent.
                // (utoipa has no field for OpenAPI's `allowEmptyValue`; extensions are written
                // as named.)
                ParameterIn::Query if parameter.required == Required::False => {
                    let allow = Extensions::from_iter([("allowEmptyValue", true)]);
                    parameter.extensions.get_or_insert_default().merge(allow);
                }
                _ => {}
            }
            Some(parameter)
        });
    parameters.extend(others);
    parameters
}

fn describe(name: &str) -> &'static str {
    match name {
        "app_id" => "The application's id or uid",
        "endpoint_id" => "The endpoint's id or uid",
        "msg_id" => "The message's id or event id",
        "attempt_id" => "The attempt's id",
        "event_type_name" => "The event type's name",
        "source_id" => "The source's id or uid",
        "request_id" => "The received request's id",
        "job_id" => "The job's id or uid",
        _ => "A path segment",
    }
}

/// The document, serialized once per router.
#[derive(Debug, Clone)]
pub struct Document(pub Bytes);

impl Document {
    pub fn new(document: &OpenApi) -> Self {
        let json = serde_json::to_vec(document).expect("the OpenAPI document serializes");
        Document(Bytes::from(json))
    }
}

/// `GET /api/v1/openapi.json`: open to anyone, as the API's shape is no secret.
pub async fn serve(State(document): State<Document>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document() -> serde_json::Value {
        let (_, document) =
            utoipa_axum::router::OpenApiRouter::<crate::AppState>::with_openapi(base())
                .nest("/api/v1", crate::api::router())
                .nest("/ingest/api/v1", crate::ingest::router())
                .split_for_parts();
        serde_json::to_value(finish(document)).unwrap()
    }

    /// Every `$ref` under `value`.
    fn refs<'a>(value: &'a serde_json::Value, found: &mut Vec<&'a str>) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::String(target)) = map.get("$ref") {
                    found.push(target);
                }
                map.values().for_each(|value| refs(value, found));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|value| refs(value, found)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_resolves() {
        let document = document();
        let mut found = Vec::new();
        refs(&document, &mut found);
        assert!(!found.is_empty());
        for target in found {
            let pointer = target.strip_prefix('#').expect("a local reference");
            assert!(
                document.pointer(pointer).is_some(),
                "{target} is not in the document"
            );
        }
    }

    #[test]
    fn every_operation_has_a_unique_id_and_its_path_parameters() {
        let document = document();
        let mut ids = std::collections::HashSet::new();
        for (path, item) in document["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let id = operation["operationId"].as_str().unwrap();
                assert!(ids.insert(id.to_owned()), "{method} {path}: {id} twice");
                let declared: Vec<&str> = operation["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["in"] == "path")
                    .map(|p| p["name"].as_str().unwrap())
                    .collect();
                let template: Vec<&str> = path
                    .split('/')
                    .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                    .collect();
                assert_eq!(declared, template, "{method} {path}");
            }
        }
    }
}
