//! S3 buckets, named as CloudFormation would name them, with their notifications to
//! queues.

use aws_sdk_s3::types::{
    BucketLocationConstraint, CreateBucketConfiguration, Event, FilterRule, FilterRuleName, NotificationConfiguration,
    NotificationConfigurationFilter, QueueConfiguration, S3KeyFilter,
};
use herald_aws::{Clients, describe};
use serde_norway::Value;

use crate::{
    errors::LocalError,
    template::{Physical, Resource, Template},
};

/// A bucket's name: its `BucketName`, or one derived from the stack and logical id as
/// CloudFormation would (lower-cased, S3-valid), stable so that deploying twice finds it.
pub fn bucket_name(stack: &str, logical_id: &str) -> String {
    let name: String = format!("{stack}-{logical_id}")
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.' { c } else { '-' })
        .take(63)
        .collect();
    let name = name.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if name.len() >= 3 { name.to_owned() } else { format!("{name}-bucket") }
}

/// Buckets named by a parameter (`BucketName: !Ref P`) that has no value: P and the name
/// CloudFormation would generate. A deployment passes a globally unique name; the local
/// stack derives one per stack, as for unnamed buckets.
pub fn unset_bucket_names(template: &Template, stack: &str) -> Vec<(String, String)> {
    template
        .resources_of_type("AWS::S3::Bucket")
        .filter_map(|bucket| {
            let serde_norway::Value::Tagged(tagged) = bucket.properties.get("BucketName")? else { return None };
            let parameter = tagged.value.as_str().filter(|_| tagged.tag == "!Ref")?;
            template
                .parameter(parameter)
                .is_none()
                .then(|| (parameter.to_owned(), bucket_name(stack, &bucket.logical_id)))
        })
        .collect()
}

/// Creates a bucket (or finds it, when this account owns it) and sets its notifications
/// to queues. The endpoint's region decides the location constraint, as the CLI does.
pub(super) async fn create_bucket(
    clients: &Clients,
    template: &Template,
    bucket: &Resource,
    physical: &mut Physical,
    stack: &str,
) -> Result<(), LocalError> {
    let name = match bucket.properties.get("BucketName") {
        Some(value) => template.resolve(value, physical, stack)?,
        None => bucket_name(stack, &bucket.logical_id),
    };
    let failed = |e: String| LocalError::Aws(format!("creating bucket {name}: {e}"));
    let region = clients.s3().config().region().map(|r| r.as_ref().to_owned()).unwrap_or_default();
    let mut request = clients.s3().create_bucket().bucket(&name);
    if !region.is_empty() && region != "us-east-1" {
        request = request.create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(region.as_str()))
                .build(),
        );
    }
    match request.send().await {
        Ok(_) => {}
        Err(e) if e.as_service_error().is_some_and(|s| s.is_bucket_already_owned_by_you()) => {}
        Err(e) => return Err(failed(describe(&e))),
    }
    let notifications = bucket_notifications(template, bucket, physical, stack)?;
    if let Some(notifications) = notifications {
        clients
            .s3()
            .put_bucket_notification_configuration()
            .bucket(&name)
            .notification_configuration(notifications)
            .send()
            .await
            .map_err(|e| LocalError::Aws(format!("setting the notifications of bucket {name}: {}", describe(&e))))?;
    }
    let id = &bucket.logical_id;
    physical.record(id, &name);
    // S3 ARNs name neither region nor account.
    physical.record_attribute(id, "Arn", format!("arn:aws:s3:::{name}"));
    Ok(())
}

/// The bucket's `NotificationConfiguration.QueueConfigurations`, with each queue's ARN
/// resolved to the queue created; None if it has none.
fn bucket_notifications(
    template: &Template,
    bucket: &Resource,
    physical: &Physical,
    stack: &str,
) -> Result<Option<NotificationConfiguration>, LocalError> {
    let Some(queues) = bucket
        .properties
        .get("NotificationConfiguration")
        .and_then(|n| n.get("QueueConfigurations"))
        .and_then(Value::as_sequence)
    else {
        return Ok(None);
    };
    let mut configuration = NotificationConfiguration::builder();
    for (i, queue) in queues.iter().enumerate() {
        let context = format!("NotificationConfiguration.QueueConfigurations[{i}]");
        let field = |name: &str| {
            queue
                .get(name)
                .ok_or_else(|| LocalError::Template(format!("{context} has no {name}")))
                .and_then(|v| template.resolve(v, physical, stack))
        };
        let mut built = QueueConfiguration::builder()
            .id(format!("{}-{i}", bucket.logical_id))
            .queue_arn(field("Queue")?)
            .events(Event::from(field("Event")?.as_str()));
        let rules =
            queue.get("Filter").and_then(|f| f.get("S3Key")).and_then(|k| k.get("Rules")).and_then(Value::as_sequence);
        if let Some(rules) = rules {
            let mut key = S3KeyFilter::builder();
            for rule in rules {
                let part = |name: &str| {
                    rule.get(name)
                        .ok_or_else(|| LocalError::Template(format!("a filter rule of {context} has no {name}")))
                        .and_then(|v| template.resolve(v, physical, stack))
                };
                // CloudFormation takes `prefix` or `Prefix`; S3 wants them lower-case.
                key = key.filter_rules(
                    FilterRule::builder()
                        .name(FilterRuleName::from(part("Name")?.to_ascii_lowercase().as_str()))
                        .value(part("Value")?)
                        .build(),
                );
            }
            built = built.filter(NotificationConfigurationFilter::builder().key(key.build()).build());
        }
        configuration = configuration
            .queue_configurations(built.build().map_err(|e| LocalError::Template(format!("{context}: {e}")))?);
    }
    Ok(Some(configuration.build()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUCKETS: &str = r#"
Parameters:
  Unset: {Type: String}
  Given: {Type: String, Default: chosen-bucket}
Resources:
  ByUnset: {Type: AWS::S3::Bucket, Properties: {BucketName: !Ref Unset}}
  ByGiven: {Type: AWS::S3::Bucket, Properties: {BucketName: !Ref Given}}
  Unnamed: {Type: AWS::S3::Bucket, Properties: {}}
"#;

    #[test]
    fn a_bucket_named_by_an_unset_parameter_gets_the_stacks_derived_name() {
        let template = Template::parse(BUCKETS).unwrap();
        assert_eq!(unset_bucket_names(&template, "S1"), vec![("Unset".to_owned(), "s1-byunset".to_owned())]);
    }
}
