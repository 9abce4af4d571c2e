//! The constraints the server enforces on parameters and headers, stated in
//! the OpenAPI document, so that a client (or a fuzzer) reading the document
//! knows which requests are well formed. The routes' `utoipa` attributes give
//! the shape; this adds the ranges, patterns and enums, in one place, because
//! `utoipa` takes patterns only as literals and several routes share each one.
//! Where a pattern is narrower than what the server takes (unusual git tag
//! names, say), the parameter's description says so; a request outside it is
//! refused (400) or names nothing (404), never quietly taken as something else.

use serde_json::{Value, json};

use super::api::MAX_PAGE;
use crate::persona::assignment::MAX_UNIT_CHARS;
use crate::persona::model::MAX_SLUG_LEN;
use crate::persona::settings_patch::EDITABLE_CONFIG;

/// A pin, as `?version=`, `?from=`, `?to=` and `If-Match` take it
/// (`crate::persona::pin`): a version number (leading zeros allowed), a
/// content hash, a commit prefix of 7 to 40 hex digits, `label:NAME`, or a tag
/// or label name with dotted numeric parts (`v1.2`).
pub const PIN: &str = concat!(
    "(?:0{0,5}[1-9][0-9]{0,4}",
    "|sha256:[0-9a-f]{64}",
    "|[0-9A-Fa-f]{7,40}",
    "|label:(?:[g-z][a-z0-9-]{0,39}|[a-f][0-9a-f]{0,18}[g-z-][a-z0-9-]{0,19})",
    "|(?:tag:)?[A-Za-z_][A-Za-z0-9_-]{0,59}(?:\\.[0-9][A-Za-z0-9_-]{0,19}){0,3})",
);

/// A persona reference in a path: a slug (`Slug`: lowercase letters and
/// digits in groups joined by single dashes, current or former) or the id
/// (`PersonaId`, a UUID with or without its dashes).
pub const REFERENCE: &str = concat!(
    "^(?:[a-z0-9]+(?:-[a-z0-9]+)*",
    "|[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}",
    "|[0-9A-Fa-f]{32})$",
);

/// A slug (`Slug`): lowercase letters and digits in groups joined by single dashes.
const SLUG: &str = "^[a-z0-9]+(?:-[a-z0-9]+)*$";

/// A label name (`check_label_name`): a lowercase letter, then lowercase
/// letters, digits or `-`, at most 40 in all, and not hex digits alone.
const LABEL: &str = "^(?:[g-z][a-z0-9-]{0,39}|[a-f][0-9a-f]{0,18}[g-z-][a-z0-9-]{0,19})$";

/// One trait range (`TraitRange`): `TYPE.NAME=MIN..MAX`, either bound optional, bounds from 0 to 1.
const TRAIT_RANGE: &str =
    "[a-z0-9_]+\\.[a-z0-9_]+=(?:0(?:\\.[0-9]{1,6})?|1(?:\\.0{1,6})?)?\\.\\.(?:0(?:\\.[0-9]{1,6})?|1(?:\\.0{1,6})?)?";

/// The most results each listing answers with, by path.
const LIMITS: [(&str, i64); 5] = [
    ("/api/personas", MAX_PAGE),
    ("/api/personas/search", 100),
    ("/api/personas/{reference}/similar", 50),
    ("/api/changes", MAX_PAGE),
    ("/api/webhooks/deliveries", MAX_PAGE),
];

/// Adds every constraint to `document` (the JSON of the merged OpenAPI documents).
pub fn constrain(document: &mut Value) {
    constrain_bodies(document);
    let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, operations) in paths.iter_mut() {
        let Some(operations) = operations.as_object_mut() else {
            continue;
        };
        for (method, operation) in operations.iter_mut() {
            let mut constrained = false;
            if let Some(parameters) = operation.get_mut("parameters").and_then(Value::as_array_mut) {
                for parameter in parameters {
                    constrained |= constrain_parameter(path, method, parameter);
                }
            }
            if let Some(responses) = operation.get_mut("responses").and_then(Value::as_object_mut) {
                // A malformed parameter is refused before the handler runs.
                if constrained {
                    responses
                        .entry("400")
                        .or_insert_with(|| error_response("a malformed parameter"));
                }
                // Every read and write needs the database (`/readyz` says when it is away).
                responses.entry("503").or_insert_with(|| {
                    error_response("the database cannot be reached, or (writes) this server only mirrors a remote")
                });
            }
        }
    }
}

/// The write bodies, as the server reads them: unknown members refused
/// (`deny_unknown_fields`, the patch's own check), no nulls where a value is
/// needed. What JSON Schema cannot say (a default mode must be an enabled
/// one; a value from the registry's vocabulary) is answered 422.
fn constrain_bodies(document: &mut Value) {
    let content_hash = json!({"type": "string", "pattern": "^sha256:[0-9a-f]{64}$"});
    let reason = json!({"type": ["string", "null"], "maxLength": 500});
    if let Some(schema) = document.pointer_mut("/components/schemas/LabelMoveRequest") {
        *schema = json!({
            "description": "Where to point the label: exactly one of `version` and `content_hash`, and why.",
            "oneOf": [
                {
                    "type": "object",
                    "properties": {"version": {"type": "integer", "minimum": 1, "maximum": u32::MAX}, "reason": reason},
                    "required": ["version"],
                    "additionalProperties": false,
                },
                {
                    "type": "object",
                    "properties": {"content_hash": content_hash, "reason": reason},
                    "required": ["content_hash"],
                    "additionalProperties": false,
                },
            ],
        });
    }
    let config: serde_json::Map<String, Value> = EDITABLE_CONFIG
        .iter()
        .map(|key| {
            let kind = if *key == "voice_enabled" { "boolean" } else { "string" };
            (key.to_string(), json!({"type": [kind, "null"]}))
        })
        .collect();
    let patch = json!({
        "type": "object",
        "description": "A JSON merge patch (RFC 7396) over the persona's settings; null removes a value.",
        "properties": {
            "config": {
                "type": "object",
                "additionalProperties": false,
                "properties": config,
            },
            "modes": {"type": "object", "additionalProperties": {"type": ["boolean", "null"]}},
            "traits": {
                "type": "object",
                "additionalProperties": {
                    "type": ["object", "null"],
                    "additionalProperties": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
                },
            },
        },
        "additionalProperties": false,
    });
    if let Some(schema) = document.pointer_mut(
        "/paths/~1api~1personas~1{reference}~1settings/patch/requestBody/content/application~1merge-patch+json/schema",
    ) {
        *schema = patch;
    }
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    })
}

/// Whether `parameter` has a constraint the server enforces (now stated in its schema).
fn constrain_parameter(path: &str, method: &str, parameter: &mut Value) -> bool {
    let location = parameter["in"].as_str().unwrap_or_default().to_string();
    let name = parameter["name"].as_str().unwrap_or_default().to_string();
    let schema = match (location.as_str(), name.as_str()) {
        ("query", "limit") => {
            let maximum = LIMITS
                .iter()
                .find(|(limited, _)| *limited == path)
                .map_or(MAX_PAGE, |(_, maximum)| *maximum);
            json!({"type": "integer", "format": "int64", "minimum": 1, "maximum": maximum})
        }
        ("query", "offset") => json!({"type": "integer", "format": "int64", "minimum": 0}),
        ("query", "version" | "from" | "to") => json!({"type": "string", "pattern": format!("^{PIN}$")}),
        ("query", "semantic") => json!({"type": "boolean"}),
        // Shared with the HTML forms, whose "either" choice sends it empty.
        ("query", "is_real") => json!({"type": "string", "enum": ["true", "false", ""]}),
        ("query", "traits") => json!({"type": "string", "pattern": format!("^(?:{TRAIT_RANGE}(?:,{TRAIT_RANGE})*)?$")}),
        ("query", "q") => json!({"type": "string", "pattern": "^[^\\u0000]*\\S[^\\u0000]*$"}),
        ("query", "spec") => json!({"type": "string", "enum": ["v2", "v3"]}),
        ("query", "include") => json!({"type": "string", "enum": ["prompt", ""]}),
        ("query", "at") => json!({"type": "string", "pattern": "^[0-9A-Fa-f]{7,40}$"}),
        ("query", "unit") => {
            parameter["required"] = Value::Bool(true);
            json!({"type": "string", "minLength": 1, "maxLength": MAX_UNIT_CHARS, "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"})
        }
        // `@pin` in the path is accepted too (see the description); the document
        // states `?version=` because the two may not both be given.
        ("path", "reference") => json!({"type": "string", "pattern": REFERENCE, "maxLength": MAX_SLUG_LEN}),
        // A profile is named by its file's slug (`Slug`); anything else is refused (400).
        ("path", "slug") if path.starts_with("/api/profiles/") => {
            json!({"type": "string", "pattern": SLUG, "maxLength": MAX_SLUG_LEN})
        }
        ("path", "label") if method != "get" => json!({"type": "string", "pattern": LABEL, "maxLength": 40}),
        ("header", "If-Match") => {
            json!({"type": "string", "pattern": format!("^\"?(?:sha256:[0-9a-f]{{64}}(?:@v[1-9][0-9]{{0,5}})?|@?{PIN})\"?$")})
        }
        ("header", "If-None-Match") => json!({"type": "string", "enum": ["*"]}),
        ("header", "Authorization") => json!({"type": "string", "pattern": "^Bearer \\S+$"}),
        _ => {
            // Any other text: the server refuses a NUL byte anywhere in the
            // address or a header before a handler runs.
            if parameter["schema"]["type"] == "string" && location != "header" {
                parameter["schema"]["pattern"] = Value::String("^[^\\u0000]*$".to_string());
                return true;
            }
            return false;
        }
    };
    parameter["schema"] = schema;
    true
}
