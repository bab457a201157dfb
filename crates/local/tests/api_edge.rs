//! The API's edge in infra/template.yaml, read as CloudFormation would (fast, no moto):
//! access logs that hold no personal data and reserved concurrency as a parameter. Route
//! throttling is played by the local gateway and tested there (`gateway::tests`).

use std::{collections::BTreeSet, path::Path};

use serde_norway::Value;

/// The only `$context` variables the access log may name: none of them carries a path,
/// query, address, user agent or anything the request or the function wrote.
const ALLOWED: &[&str] = &[
    "$context.requestId",
    "$context.requestTime",
    "$context.routeKey",
    "$context.protocol",
    "$context.status",
    "$context.responseLatency",
    "$context.responseLength",
];

fn template() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/template.yaml");
    serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn access_log_settings(template: &Value) -> &Value {
    &template["Resources"]["HttpApi"]["Properties"]["AccessLogSettings"]
}

/// The access log format, parsed: API Gateway writes it as one JSON object per request.
fn format(template: &Value) -> serde_json::Map<String, serde_json::Value> {
    let format = access_log_settings(template)["Format"].as_str().expect("a Format string");
    serde_json::from_str(format).expect("the access log format is a JSON object")
}

#[test]
fn each_access_log_field_is_one_allowed_variable() {
    for (field, value) in format(&template()) {
        let value = value.as_str().unwrap_or_else(|| panic!("{field} is not a string"));
        assert!(ALLOWED.contains(&value), "{field}: {value} is not an allowed variable");
    }
}

#[test]
fn the_access_log_format_names_no_other_variable_anywhere() {
    let template = template();
    let text = access_log_settings(&template)["Format"].as_str().unwrap();
    let named: BTreeSet<&str> = text
        .match_indices('$')
        .map(|(at, _)| {
            let end = text[at + 1..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '_')).unwrap();
            &text[at..at + 1 + end]
        })
        .collect();
    let allowed: BTreeSet<&str> = ALLOWED.iter().copied().collect();
    assert!(named.is_subset(&allowed), "not allowed: {:?}", named.difference(&allowed).collect::<Vec<_>>());
}

#[test]
fn the_access_log_tells_which_request_which_route_and_how_it_ended() {
    let values: BTreeSet<String> = format(&template()).values().filter_map(|v| v.as_str().map(str::to_owned)).collect();
    for needed in ["$context.requestId", "$context.routeKey", "$context.status", "$context.responseLatency"] {
        assert!(values.contains(needed), "{needed} is missing");
    }
}

#[test]
fn access_logs_go_to_a_log_group_of_the_template_that_expires_them() {
    let template = template();
    let destination = &access_log_settings(&template)["DestinationArn"];
    let Value::Tagged(tagged) = destination else { panic!("DestinationArn is not a !GetAtt: {destination:?}") };
    assert_eq!(tagged.tag.to_string(), "!GetAtt");
    let group = tagged.value.as_str().unwrap().strip_suffix(".Arn").expect("the group's Arn");
    let group = &template["Resources"][group];
    assert_eq!(group["Type"], "AWS::Logs::LogGroup");
    // A number, or a parameter whose default is one.
    let retention = match &group["Properties"]["RetentionInDays"] {
        Value::Tagged(tagged) if tagged.tag == "!Ref" => {
            &template["Parameters"][tagged.value.as_str().expect("a parameter name")]["Default"]
        }
        days => days,
    };
    assert!(retention.as_u64().is_some_and(|days| days <= 365), "{group:?}");
}

/// A value as CloudFormation resolves it against `parameter`'s value: `!If` over the
/// template's conditions (`!Not`, `!Or`, `!Equals`, `!Ref`), `None` for `AWS::NoValue`.
fn resolve(template: &Value, value: &Value, parameter: (&str, &str)) -> Option<String> {
    let Value::Tagged(tagged) = value else { return Some(value.as_str().map(str::to_owned).unwrap_or_default()) };
    let args = || tagged.value.as_sequence().unwrap();
    match tagged.tag.to_string().as_str() {
        "!Ref" if tagged.value == "AWS::NoValue" => None,
        "!Ref" if tagged.value == parameter.0 => Some(parameter.1.to_owned()),
        "!If" => {
            let condition = &template["Conditions"][args()[0].as_str().unwrap()];
            let branch = if resolve(template, condition, parameter).unwrap() == "true" { 1 } else { 2 };
            resolve(template, &args()[branch], parameter)
        }
        "!Not" => Some((resolve(template, &args()[0], parameter).unwrap() != "true").to_string()),
        "!Or" => Some(args().iter().any(|c| resolve(template, c, parameter).unwrap() == "true").to_string()),
        "!Equals" => {
            Some((resolve(template, &args()[0], parameter) == resolve(template, &args()[1], parameter)).to_string())
        }
        other => panic!("{other} is not resolved here"),
    }
}

fn reserved_concurrency(given: &str) -> Option<String> {
    let template = template();
    let function = &template["Resources"]["ApiFunction"]["Properties"];
    resolve(&template, &function["ReservedConcurrentExecutions"], ("ApiReservedConcurrency", given))
}

#[test]
fn the_api_reserves_the_concurrency_its_parameter_gives() {
    assert_eq!(reserved_concurrency("75").as_deref(), Some("75"));
}

#[test]
fn the_api_reserves_no_concurrency_for_0_or_empty() {
    assert_eq!(reserved_concurrency("0"), None);
    assert_eq!(reserved_concurrency(""), None);
}

#[test]
fn the_api_reserves_50_by_default() {
    assert_eq!(template()["Parameters"]["ApiReservedConcurrency"]["Default"], "50");
}
