//! Request bodies have the JSON shapes the OpenAPI document gives them. serde fills a
//! struct from an array too (field by field, in order: `["tok", "apns"]` is a device
//! token) and a unit variant from `{"sms": null}`, shapes the document refuses. So each
//! body that serde took is also checked against the document's schema of its route: the
//! JSON type of every value, the fields an object may and must have, and which branch of
//! a `oneOf` it takes. Values (lengths, patterns, ranges) are left to the validation that
//! follows, which names each fault in its own words.

use axum::http::Method;
use herald_core::validation::ValidationErrors;
use serde_json::Value;

use crate::openapi::DOCUMENT;

/// The schema of the JSON body of `method` on the path template `path`, if the document
/// gives one.
pub fn request_schema(method: &Method, path: &str) -> Option<&'static Value> {
    let operation = DOCUMENT.get("paths")?.get(path)?.get(method.as_str().to_ascii_lowercase())?;
    operation.get("requestBody")?.get("content")?.get("application/json")?.get("schema")
}

/// Checks `value` against `schema` (see the module): Err names every value at fault.
pub fn check(schema: &Value, value: &Value) -> Result<(), ValidationErrors> {
    let mut faults = Vec::new();
    check_at(schema, value, &Path::Root, &mut faults);
    let mut errors = ValidationErrors::default();
    for (field, message) in faults {
        errors.add(field, message);
    }
    errors.into_result()
}

/// Where a value is, spelled as serde_path_to_error spells it (`a.b[0].c`; `body` for
/// the whole).
enum Path<'a> {
    Root,
    Field(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl Path<'_> {
    fn spell(&self) -> String {
        match self {
            Path::Root => "body".into(),
            Path::Field(Path::Root, name) => (*name).into(),
            Path::Field(parent, name) => format!("{}.{name}", parent.spell()),
            Path::Index(parent, i) => format!("{}[{i}]", parent.spell()),
        }
    }
}

type Faults = Vec<(String, String)>;

/// The schema a `$ref` names (only `#/...` pointers into this document).
fn resolve(schema: &Value) -> &Value {
    let mut schema = schema;
    // A reference to a reference is followed too, a few levels at most.
    for _ in 0..8 {
        match schema.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix('#')) {
            Some(pointer) => match DOCUMENT.pointer(pointer) {
                Some(target) => schema = target,
                None => break,
            },
            None => break,
        }
    }
    schema
}

fn type_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn an(type_name: &str) -> String {
    match type_name {
        "array" | "object" | "integer" => format!("an {type_name}"),
        "null" => "null".into(),
        other => format!("a {other}"),
    }
}

fn check_at(schema: &Value, value: &Value, path: &Path, faults: &mut Faults) {
    let schema = resolve(schema);
    let Some(schema) = schema.as_object() else {
        // `true` takes anything; `false` nothing, which serde has refused already.
        return;
    };
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let actual = type_of(value);
        let admitted = types.iter().any(|t| *t == actual || (*t == "number" && actual == "integer"));
        if !types.is_empty() && !admitted {
            let expected: Vec<String> = types.iter().map(|t| an(t)).collect();
            faults.push((path.spell(), format!("must be {}, not {}", expected.join(" or "), an(actual))));
            return;
        }
    }
    if let Some(members) = schema.get("allOf").and_then(Value::as_array) {
        for member in members {
            check_at(member, value, path, faults);
        }
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(branches) = schema.get(key).and_then(Value::as_array) {
            check_branches(branches, value, path, faults);
        }
    }
    match value {
        Value::Object(fields) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            for required in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
                if let Some(name) = required.as_str().filter(|name| !fields.contains_key(*name)) {
                    faults.push((Path::Field(path, name).spell(), "is required".into()));
                }
            }
            for (name, field) in fields {
                let at = Path::Field(path, name);
                match (properties.and_then(|p| p.get(name)), schema.get("additionalProperties")) {
                    (Some(property), _) => check_at(property, field, &at, faults),
                    (None, Some(Value::Bool(false))) if properties.is_some() => {
                        faults.push((at.spell(), "is not a field of this object".into()))
                    }
                    (None, Some(additional)) => check_at(additional, field, &at, faults),
                    (None, None) => {}
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check_at(item_schema, item, &Path::Index(path, i), faults);
                }
            }
        }
        _ => {}
    }
}

/// A value of a `oneOf` (or `anyOf`) fits some branch; if none, the faults of the branch
/// it comes closest to: of those of its type, the one with the fewest faults.
fn check_branches(branches: &[Value], value: &Value, path: &Path, faults: &mut Faults) {
    let here = path.spell();
    let mut closest: Option<((bool, usize), Faults)> = None;
    for branch in branches {
        let mut branch_faults = Vec::new();
        check_at(branch, value, path, &mut branch_faults);
        if branch_faults.is_empty() {
            return;
        }
        let other_type = branch_faults.iter().any(|(field, message)| *field == here && message.starts_with("must be"));
        let score = (other_type, branch_faults.len());
        if closest.as_ref().is_none_or(|(best, _)| score < *best) {
            closest = Some((score, branch_faults));
        }
    }
    faults.extend(closest.map(|(_, f)| f).unwrap_or_default());
}
