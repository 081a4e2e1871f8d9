//! Schemas for the free-form values in the resource (deal field values).
//!
//! A Kubernetes structural schema must give every field a type unless it is marked
//! `x-kubernetes-preserve-unknown-fields`; a JSON value of any shape can only be described that
//! way, so these replace what schemars derives for `serde_json::Value`.

use schemars::{Schema, SchemaGenerator, json_schema};

/// Any JSON value: a CRM field value may be a string, a number, a boolean or null.
pub fn any_value(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "x-kubernetes-preserve-unknown-fields": true,
        "nullable": true
    })
}

/// A list of JSON values of any shape.
pub fn any_values(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "items": { "x-kubernetes-preserve-unknown-fields": true }
    })
}

/// A map from CRM field API names to JSON values of any shape.
pub fn any_value_map(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "additionalProperties": { "x-kubernetes-preserve-unknown-fields": true }
    })
}
