//! The alarms in infra/template.yaml reach a person, read as CloudFormation would (fast, no
//! moto; the local stack creates no SNS topic): every alarm publishes to one topic that
//! CloudWatch can publish to, and that topic emails the `AlarmEmail` address when one is
//! given.

use std::path::Path;

use serde_norway::Value;

fn template() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/template.yaml");
    serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn resources_of_type<'a>(template: &'a Value, kind: &'a str) -> impl Iterator<Item = (&'a str, &'a Value)> {
    template["Resources"]
        .as_mapping()
        .unwrap()
        .iter()
        .filter(move |(_, r)| r["Type"] == kind)
        .map(|(id, r)| (id.as_str().unwrap(), r))
}

fn is_ref_to(value: &Value, logical_id: &str) -> bool {
    matches!(value, Value::Tagged(t) if t.tag == "!Ref" && t.value == logical_id)
}

#[test]
fn every_alarm_publishes_to_the_alarm_topic() {
    let template = template();
    let alarms: Vec<_> = resources_of_type(&template, "AWS::CloudWatch::Alarm").collect();
    assert!(!alarms.is_empty());
    for (id, alarm) in alarms {
        let actions =
            alarm["Properties"]["AlarmActions"].as_sequence().unwrap_or_else(|| panic!("{id} has no actions"));
        assert!(actions.iter().any(|a| is_ref_to(a, "AlarmTopic")), "{id} does not publish to AlarmTopic");
    }
}

#[test]
fn the_alarm_topic_is_not_under_the_aws_managed_key_cloudwatch_cannot_use() {
    let template = template();
    let key = &template["Resources"]["AlarmTopic"]["Properties"]["KmsMasterKeyId"];
    assert!(key.as_str().is_none_or(|key| key != "alias/aws/sns"), "{key:?}");
}

#[test]
fn the_alarm_topic_emails_the_alarm_address_when_one_is_given() {
    let template = template();
    let subscriptions: Vec<_> = resources_of_type(&template, "AWS::SNS::Subscription").collect();
    let (_, subscription) = subscriptions
        .iter()
        .find(|(_, s)| is_ref_to(&s["Properties"]["TopicArn"], "AlarmTopic"))
        .expect("a subscription to AlarmTopic");
    assert_eq!(subscription["Properties"]["Protocol"], "email");
    assert!(is_ref_to(&subscription["Properties"]["Endpoint"], "AlarmEmail"));
    // Only when an address is given: an empty one would fail the deployment.
    let condition = subscription["Condition"].as_str().expect("the subscription has a condition");
    assert!(matches!(template["Conditions"][condition], Value::Tagged(_)), "{condition} is not a condition");
    assert_eq!(template["Parameters"]["AlarmEmail"]["Default"], "");
}

fn functions(template: &Value) -> Vec<&str> {
    resources_of_type(template, "AWS::Serverless::Function").map(|(id, _)| id).collect()
}

/// The functions whose Lambda `metric` an alarm watches, directly or in its metric math.
fn functions_alarmed_on<'a>(template: &'a Value, metric: &str) -> Vec<&'a str> {
    let mut watched = Vec::new();
    for (_, alarm) in resources_of_type(template, "AWS::CloudWatch::Alarm") {
        let properties = &alarm["Properties"];
        let mut stats: Vec<&Value> = vec![properties];
        if let Some(metrics) = properties["Metrics"].as_sequence() {
            stats.extend(metrics.iter().map(|m| &m["MetricStat"]["Metric"]));
        }
        for stat in stats {
            if stat["Namespace"] != "AWS/Lambda" || stat["MetricName"] != metric {
                continue;
            }
            for dimension in stat["Dimensions"].as_sequence().into_iter().flatten() {
                if dimension["Name"] == "FunctionName"
                    && let Value::Tagged(t) = &dimension["Value"]
                    && t.tag == "!Ref"
                {
                    watched.push(t.value.as_str().unwrap());
                }
            }
        }
    }
    watched
}

#[test]
fn every_function_has_an_errors_alarm_and_a_throttles_alarm() {
    let template = template();
    let functions = functions(&template);
    assert_eq!(functions.len(), 10);
    for metric in ["Errors", "Throttles"] {
        let watched = functions_alarmed_on(&template, metric);
        for function in &functions {
            assert!(watched.contains(function), "no alarm on {function}'s {metric}");
        }
    }
}

#[test]
fn a_metric_math_alarm_adds_up_every_metric_it_reads() {
    let template = template();
    for (id, alarm) in resources_of_type(&template, "AWS::CloudWatch::Alarm") {
        let Some(metrics) = alarm["Properties"]["Metrics"].as_sequence() else { continue };
        let returned: Vec<&Value> = metrics.iter().filter(|m| m["ReturnData"] == true).collect();
        assert_eq!(returned.len(), 1, "{id} returns one series");
        let expression = returned[0]["Expression"].as_str().unwrap();
        for metric in metrics.iter().filter(|m| m["ReturnData"] == false) {
            let metric_id = metric["Id"].as_str().unwrap();
            assert!(expression.contains(metric_id), "{id}'s expression leaves {metric_id} out");
        }
    }
}

#[test]
fn the_http_apis_5xx_has_an_alarm() {
    let template = template();
    let alarmed = resources_of_type(&template, "AWS::CloudWatch::Alarm").any(|(_, alarm)| {
        let p = &alarm["Properties"];
        p["Namespace"] == "AWS/ApiGateway"
            && p["MetricName"] == "5xx"
            && p["Dimensions"]
                .as_sequence()
                .is_some_and(|ds| ds.iter().any(|d| d["Name"] == "ApiId" && is_ref_to(&d["Value"], "HttpApi")))
    });
    assert!(alarmed, "no alarm on the HTTP API's 5xx");
}

/// The dashboard's body with `${…}` resolved to the name inside, as JSON.
fn dashboard(template: &Value) -> (String, serde_json::Value) {
    let body = &template["Resources"]["Dashboard"]["Properties"]["DashboardBody"];
    let Value::Tagged(sub) = body else { panic!("the dashboard body is a !Sub") };
    assert_eq!(sub.tag, "!Sub");
    let text = sub.value.as_str().unwrap().to_owned();
    let mut resolved = String::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find("${") {
        let end = start + rest[start..].find('}').unwrap();
        resolved.push_str(&rest[..start]);
        resolved.push_str(&rest[start + 2..end]);
        rest = &rest[end + 1..];
    }
    resolved.push_str(rest);
    let json = serde_json::from_str(&resolved).unwrap_or_else(|e| panic!("the dashboard body is not JSON: {e}"));
    (text, json)
}

#[test]
fn the_dashboard_names_every_function_and_every_metric_herald_writes() {
    let template = template();
    let (text, json) = dashboard(&template);
    assert!(json["widgets"].as_array().is_some_and(|w| !w.is_empty()));
    for function in functions(&template) {
        for metric in ["Errors", "Throttles", "Duration"] {
            let named = json["widgets"].as_array().unwrap().iter().any(|w| {
                w["properties"]["metrics"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|m| m[0] == "AWS/Lambda" && m[1] == metric && m[3] == function)
            });
            assert!(named, "the dashboard has no {metric} of {function}");
        }
    }
    for metric in herald_edge::metrics::Metric::ALL {
        assert!(
            text.contains(&format!("\"{}\"", metric.name())) || text.contains(&format!("\\\"{}\\\"", metric.name())),
            "the dashboard shows no {}",
            metric.name()
        );
    }
    assert!(text.contains("Herald/${AWS::StackName}"), "the functions' namespace");
}

#[test]
fn the_functions_write_their_metrics_under_the_stacks_namespace() {
    let template = template();
    let namespace = &template["Globals"]["Function"]["Environment"]["Variables"]["METRICS_NAMESPACE"];
    assert!(matches!(namespace, Value::Tagged(t) if t.tag == "!Sub" && t.value == "Herald/${AWS::StackName}"));
}
