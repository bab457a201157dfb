//! SQS queues, created in dependency order (dead-letter queues first) and updated to
//! match the template when they exist.

use std::collections::HashMap;

use aws_sdk_sqs::{error::ProvideErrorMetadata, types::QueueAttributeName};
use herald_aws::{Clients, describe};

use crate::{
    errors::LocalError,
    template::{Physical, Resource, Template},
};

/// The SQS queue attributes a template may set, by their property (and attribute) name.
const QUEUE_SCALAR_ATTRIBUTES: [&str; 10] = [
    "ContentBasedDeduplication",
    "DelaySeconds",
    "FifoQueue",
    "KmsDataKeyReusePeriodSeconds",
    "KmsMasterKeyId",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "SqsManagedSseEnabled",
    "VisibilityTimeout",
];
const QUEUE_JSON_ATTRIBUTES: [&str; 2] = ["RedrivePolicy", "RedriveAllowPolicy"];

/// Creates the queues in dependency order: a queue whose properties name another queue's
/// attribute (a RedrivePolicy's dead-letter ARN) waits until that queue exists.
pub(super) async fn create_queues(
    clients: &Clients,
    template: &Template,
    physical: &mut Physical,
    stack: &str,
) -> Result<(), LocalError> {
    let mut pending: Vec<&Resource> = template.resources_of_type("AWS::SQS::Queue").collect();
    while !pending.is_empty() {
        let mut waiting = Vec::new();
        let mut unresolved = None;
        for queue in &pending {
            match queue_attributes(template, queue, physical, stack) {
                Ok(attributes) => create_queue(clients, template, queue, attributes, physical, stack)
                    .await
                    .map_err(|e| e.context(&queue.logical_id))?,
                Err(e) => {
                    unresolved = Some(e.context(&queue.logical_id));
                    waiting.push(*queue);
                }
            }
        }
        if waiting.len() == pending.len() {
            // No queue could be created: a cycle, or a reference to something missing.
            return Err(unresolved.unwrap_or_else(|| LocalError::Template("queues reference each other".into())));
        }
        pending = waiting;
    }
    Ok(())
}

fn queue_attributes(
    template: &Template,
    queue: &Resource,
    physical: &Physical,
    stack: &str,
) -> Result<HashMap<QueueAttributeName, String>, LocalError> {
    let mut attributes = HashMap::new();
    for name in QUEUE_SCALAR_ATTRIBUTES {
        if let Some(value) = queue.properties.get(name) {
            attributes.insert(QueueAttributeName::from(name), template.resolve(value, physical, stack)?);
        }
    }
    for name in QUEUE_JSON_ATTRIBUTES {
        if let Some(value) = queue.properties.get(name) {
            let json = template.resolve_json(value, physical, stack)?;
            let text = match json {
                serde_json::Value::String(text) => text,
                other => other.to_string(),
            };
            attributes.insert(QueueAttributeName::from(name), text);
        }
    }
    Ok(attributes)
}

async fn create_queue(
    clients: &Clients,
    template: &Template,
    queue: &Resource,
    attributes: HashMap<QueueAttributeName, String>,
    physical: &mut Physical,
    stack: &str,
) -> Result<(), LocalError> {
    let name = match queue.properties.get("QueueName") {
        Some(value) => template.resolve(value, physical, stack)?,
        // CloudFormation would add a random suffix; a stable name makes deploying twice
        // find the same queue.
        None if attributes.get(&QueueAttributeName::FifoQueue).is_some_and(|f| f == "true") => {
            format!("{stack}-{}.fifo", queue.logical_id)
        }
        None => format!("{stack}-{}", queue.logical_id),
    };
    let failed = |e: String| LocalError::Aws(format!("creating queue {name}: {e}"));
    let sqs = &clients.sqs();
    let url = match sqs.create_queue().queue_name(&name).set_attributes(Some(attributes.clone())).send().await {
        Ok(out) => out.queue_url.ok_or_else(|| failed("no QueueUrl in the answer".into()))?,
        // The queue exists with other attributes (the template changed): update it.
        Err(e)
            if e.as_service_error().is_some_and(|s| s.is_queue_name_exists())
                || e.code() == Some("QueueAlreadyExists") =>
        {
            let url = sqs.get_queue_url().queue_name(&name).send().await.map_err(|e| failed(describe(&e)))?.queue_url;
            let url = url.ok_or_else(|| failed("no QueueUrl in the answer".into()))?;
            sqs.set_queue_attributes()
                .queue_url(&url)
                .set_attributes(Some(attributes))
                .send()
                .await
                .map_err(|e| failed(describe(&e)))?;
            url
        }
        Err(e) => return Err(failed(describe(&e))),
    };
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| failed(describe(&e)))?
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .ok_or_else(|| failed("no QueueArn".into()))?;
    let id = &queue.logical_id;
    physical.record(id, &name);
    physical.record_ref(id, &url);
    physical.record_attribute(id, "Arn", arn);
    physical.record_attribute(id, "QueueName", &name);
    physical.record_attribute(id, "QueueUrl", url);
    Ok(())
}
