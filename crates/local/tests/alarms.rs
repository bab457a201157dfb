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
