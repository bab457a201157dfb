//! Creates the template's resources on the AWS-compatible endpoint: tables, buses, queues
//! (dead-letter queues first), rules and their targets, SES identities and configuration
//! sets, Secrets Manager secrets (values generated as CloudFormation's
//! GenerateSecretString would), the SNS platform applications the template takes as
//! parameters, buckets with their notifications to queues, Firehose delivery streams and
//! log groups; with SNS's SMS delivery status on, the account's SMS attributes as
//! scripts/deploy sets them. Alarms, topics, queue and bucket policies, the HTTP API,
//! functions and roles are not created (functions and roles get their ARNs, which other
//! resources name): the local stack plays API Gateway, Lambda and subscription filters
//! itself, and nothing local reads the others.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, StreamSpecification, StreamViewType, TimeToLiveSpecification,
};
use aws_sdk_eventbridge::types::{RuleState, Target};
use aws_sdk_s3::types::{
    BucketLocationConstraint, CreateBucketConfiguration, Event, FilterRule, FilterRuleName, NotificationConfiguration,
    NotificationConfigurationFilter, QueueConfiguration, S3KeyFilter,
};
use aws_sdk_sqs::{error::ProvideErrorMetadata, types::QueueAttributeName};
use herald_aws::{Clients, describe};
use serde::Deserialize;
use serde_norway::Value;

use crate::{
    errors::LocalError,
    template::{ACCOUNT, Physical, Resource, Template},
};

/// What was created for one stack.
#[derive(Clone, Debug)]
pub struct Deployment {
    pub stack_name: String,
    /// Names, refs and attributes of every created resource, by logical id.
    pub physical: Physical,
    /// The template with the parameters provisioning set (platform application ARNs).
    pub template: Template,
}

impl Deployment {
    /// The memory Lambda gives the function logical id `function` (what its duration is
    /// billed by).
    pub fn memory_size(&self, function: &str) -> Result<u32, LocalError> {
        let resource = self
            .template
            .resources
            .iter()
            .find(|r| r.logical_id == function)
            .ok_or_else(|| LocalError::Template(format!("no resource {function}")))?;
        self.template.memory_size(resource, &self.physical, &self.stack_name)
    }

    /// The environment the template gives the function built from `binary`.
    pub fn function_environment(&self, binary: &str) -> Result<BTreeMap<String, String>, LocalError> {
        let function = self.template.function_by_binary(binary)?;
        self.template.environment(function, &self.physical, &self.stack_name)
    }

    /// Logical id → physical name of every created resource.
    pub fn names(&self) -> &BTreeMap<String, String> {
        &self.physical.names
    }

    /// The URL of the queue `logical_id` (e.g. `EmailQueue`).
    pub fn queue_url(&self, logical_id: &str) -> Option<&str> {
        self.physical.attribute(logical_id, "QueueUrl")
    }

    /// The template's outputs as they resolve against what was created; an output of a
    /// resource the local stack does not create (the HTTP API) is left out.
    pub fn outputs(&self) -> BTreeMap<String, String> {
        self.template
            .outputs
            .iter()
            .filter_map(|(name, value)| {
                Some((name.clone(), self.template.resolve(value, &self.physical, &self.stack_name).ok()?))
            })
            .collect()
    }

    /// The ARN of a created table, bus, queue or rule.
    pub fn arn(&self, logical_id: &str) -> Option<&str> {
        self.physical.attribute(logical_id, "Arn")
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TableProperties {
    key_schema: Vec<KeyElement>,
    attribute_definitions: Vec<AttributeDef>,
    #[serde(default)]
    global_secondary_indexes: Vec<IndexDef>,
    time_to_live_specification: Option<TtlDef>,
    stream_specification: Option<StreamDef>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StreamDef {
    stream_view_type: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KeyElement {
    attribute_name: String,
    key_type: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AttributeDef {
    attribute_name: String,
    attribute_type: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct IndexDef {
    index_name: String,
    key_schema: Vec<KeyElement>,
    projection: ProjectionDef,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ProjectionDef {
    projection_type: String,
    #[serde(default)]
    non_key_attributes: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TtlDef {
    attribute_name: String,
    enabled: bool,
}

fn key_schema(elements: &[KeyElement]) -> Result<Vec<KeySchemaElement>, LocalError> {
    elements
        .iter()
        .map(|k| {
            KeySchemaElement::builder()
                .attribute_name(&k.attribute_name)
                .key_type(KeyType::from(k.key_type.as_str()))
                .build()
                .map_err(|e| LocalError::Template(e.to_string()))
        })
        .collect()
}

/// SNS platform applications are not CloudFormation resources, so the template takes
/// their ARNs as parameters: parameter, SNS platform, name suffix.
const PLATFORM_APPLICATIONS: [(&str, &str, &str); 3] = [
    ("ApnsPlatformApplicationArn", "APNS", "apns"),
    ("ApnsSandboxPlatformApplicationArn", "APNS_SANDBOX", "apns-sandbox"),
    ("FcmPlatformApplicationArn", "GCM", "fcm"),
];

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

/// Creates the template's resources, named after `stack`. Resources that already exist
/// are kept (and queues and rules updated to match), so the stack can join a running
/// endpoint and deploying twice changes nothing.
pub async fn deploy(clients: &Clients, template: &Template, stack: &str) -> Result<Deployment, LocalError> {
    let mut template = template.clone();
    for (parameter, name) in unset_bucket_names(&template, stack) {
        template.set_parameter(&parameter, name);
    }
    let mut physical = Physical::default();
    for table in template.resources_of_type("AWS::DynamoDB::Table") {
        let name = format!("{stack}-{}", table.logical_id);
        let (arn, stream) =
            create_table(clients, &name, &table.properties).await.map_err(|e| e.context(&table.logical_id))?;
        physical.record(&table.logical_id, &name);
        physical.record_attribute(&table.logical_id, "Arn", arn);
        if let Some(stream) = stream {
            physical.record_attribute(&table.logical_id, "StreamArn", stream);
        }
    }
    for secret in template.resources_of_type("AWS::SecretsManager::Secret") {
        let name = format!("{stack}-{}", secret.logical_id);
        let arn = create_secret(clients, &template, &name, &secret.properties, &physical, stack)
            .await
            .map_err(|e| e.context(&secret.logical_id))?;
        physical.record(&secret.logical_id, &name);
        // `Ref` to a secret is its ARN, what functions get in their environment.
        physical.record_ref(&secret.logical_id, &arn);
        physical.record_attribute(&secret.logical_id, "Arn", arn);
    }
    for bus in template.resources_of_type("AWS::Events::EventBus") {
        let name = match bus.properties.get("Name") {
            Some(value) => template.resolve(value, &physical, stack)?,
            None => format!("{stack}-{}", bus.logical_id),
        };
        let arn = create_bus(clients, &name).await?;
        physical.record(&bus.logical_id, &name);
        physical.record_attribute(&bus.logical_id, "Arn", arn);
    }
    for identity in template.resources_of_type("AWS::SES::EmailIdentity") {
        let address = match identity.properties.get("EmailIdentity") {
            Some(value) => template.resolve(value, &physical, stack)?,
            None => return Err(LocalError::Template(format!("{} has no EmailIdentity", identity.logical_id))),
        };
        match clients.sesv2().create_email_identity().email_identity(&address).send().await {
            Ok(_) => {}
            Err(e) if e.as_service_error().is_some_and(|s| s.is_already_exists_exception()) => {}
            Err(e) => return Err(LocalError::Aws(format!("creating SES identity {address}: {}", describe(&e)))),
        }
        physical.record(&identity.logical_id, address);
    }
    for set in template.resources_of_type("AWS::SES::ConfigurationSet") {
        let name = match set.properties.get("Name") {
            Some(value) => template.resolve(value, &physical, stack)?,
            None => format!("{stack}-{}", set.logical_id),
        };
        match clients.sesv2().create_configuration_set().configuration_set_name(&name).send().await {
            Ok(_) => {}
            // SES v2 says AlreadyExistsException; moto, v1's ConfigurationSetAlreadyExists.
            Err(e)
                if e.as_service_error().is_some_and(|s| {
                    s.is_already_exists_exception() || s.meta().code() == Some("ConfigurationSetAlreadyExistsException")
                }) => {}
            Err(e) => return Err(LocalError::Aws(format!("creating configuration set {name}: {}", describe(&e)))),
        }
        physical.record(&set.logical_id, name);
    }
    for destination in template.resources_of_type("AWS::SES::ConfigurationSetEventDestination") {
        create_event_destination(clients, &template, destination, &physical, stack)
            .await
            .map_err(|e| e.context(&destination.logical_id))?;
    }
    create_platform_applications(clients, &mut template, stack).await?;
    for role in template.resources_of_type("AWS::IAM::Role") {
        // Not created: moto does not enforce IAM (tests/e2e/least_privilege.rs reads the
        // policies instead), but a rule's target and a delivery stream name their role.
        let name = format!("{stack}-{}", role.logical_id);
        physical.record_attribute(&role.logical_id, "Arn", format!("arn:aws:iam::{ACCOUNT}:role/{name}"));
        physical.record(&role.logical_id, name);
    }
    for function in template.resources_of_type("AWS::Serverless::Function") {
        // Not created either (the local stack runs them), but a subscription filter names
        // its function by ARN.
        let name = format!("{stack}-{}", function.logical_id);
        physical.record_attribute(
            &function.logical_id,
            "Arn",
            format!("arn:aws:lambda:us-east-1:{ACCOUNT}:function:{name}"),
        );
        physical.record(&function.logical_id, name);
    }
    for group in template.resources_of_type("AWS::Logs::LogGroup") {
        create_log_group(clients, &template, group, &mut physical, stack)
            .await
            .map_err(|e| e.context(&group.logical_id))?;
    }
    create_queues(clients, &template, &mut physical, stack).await?;
    // After the queues: a bucket's notifications name them.
    for bucket in template.resources_of_type("AWS::S3::Bucket") {
        create_bucket(clients, &template, bucket, &mut physical, stack)
            .await
            .map_err(|e| e.context(&bucket.logical_id))?;
    }
    // After the buckets they deliver to.
    for stream in template.resources_of_type("AWS::KinesisFirehose::DeliveryStream") {
        create_delivery_stream(clients, &template, stream, &mut physical, stack)
            .await
            .map_err(|e| e.context(&stream.logical_id))?;
    }
    // After every target: queues, delivery streams.
    for rule in template.resources_of_type("AWS::Events::Rule") {
        create_rule(clients, &template, rule, &mut physical, stack).await.map_err(|e| e.context(&rule.logical_id))?;
    }
    let deployment = Deployment { stack_name: stack.to_owned(), physical, template };
    if let Some(role) = deployment.outputs().get(SMS_DELIVERY_STATUS_ROLE) {
        set_sms_delivery_status(clients, role).await?;
    }
    Ok(deployment)
}

/// The output naming the role SNS writes SMS delivery status with, when the template has
/// it on: scripts/deploy sets it as the account's, and so does the local stack.
pub const SMS_DELIVERY_STATUS_ROLE: &str = "SmsDeliveryStatusRoleArn";

/// The account's SMS attributes that have SNS log every message's delivery status.
async fn set_sms_delivery_status(clients: &Clients, role: &str) -> Result<(), LocalError> {
    clients
        .sns()
        .set_sms_attributes()
        .attributes("DeliveryStatusIAMRole", role)
        .attributes("DeliveryStatusSuccessSamplingRate", "100")
        .send()
        .await
        .map_err(|e| LocalError::Aws(format!("setting SNS's SMS delivery status role: {}", describe(&e))))?;
    Ok(())
}

/// A log group, named by its `LogGroupName` or after the stack; one that exists is kept
/// (SNS's groups are the account's, shared by stacks on one endpoint).
async fn create_log_group(
    clients: &Clients,
    template: &Template,
    group: &Resource,
    physical: &mut Physical,
    stack: &str,
) -> Result<(), LocalError> {
    let name = match group.properties.get("LogGroupName") {
        Some(value) => template.resolve(value, physical, stack)?,
        None => format!("{stack}-{}", group.logical_id),
    };
    let logs = aws_sdk_cloudwatchlogs::Client::new(&clients.sdk_config);
    let failed = |e: String| LocalError::Aws(format!("creating log group {name}: {e}"));
    match logs.create_log_group().log_group_name(&name).send().await {
        Ok(_) => {}
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_already_exists_exception()) => {}
        Err(e) => return Err(failed(describe(&e))),
    }
    let described =
        logs.describe_log_groups().log_group_name_prefix(&name).send().await.map_err(|e| failed(describe(&e)))?;
    let arn = described
        .log_groups
        .unwrap_or_default()
        .into_iter()
        .find(|g| g.log_group_name.as_deref() == Some(name.as_str()))
        .and_then(|g| g.arn)
        .ok_or_else(|| failed("DescribeLogGroups does not list it".into()))?;
    physical.record(&group.logical_id, &name);
    physical.record_attribute(&group.logical_id, "Arn", arn);
    Ok(())
}

async fn create_bus(clients: &Clients, name: &str) -> Result<String, LocalError> {
    let failed = |e: String| LocalError::Aws(format!("creating bus {name}: {e}"));
    match clients.eventbridge().create_event_bus().name(name).send().await {
        Ok(out) => out.event_bus_arn.ok_or_else(|| failed("no EventBusArn in the answer".into())),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_already_exists_exception()) => {
            let out = clients.eventbridge().describe_event_bus().name(name).send().await;
            out.map_err(|e| failed(describe(&e)))?.arn.ok_or_else(|| failed("the bus has no Arn".into()))
        }
        Err(e) => Err(failed(describe(&e))),
    }
}

/// Creates one platform application per `*PlatformApplicationArn` parameter the template
/// declares and nobody set, and sets the parameter to its ARN, so the functions'
/// environments name them. moto accepts any credentials; "local" stands for them.
async fn create_platform_applications(
    clients: &Clients,
    template: &mut Template,
    stack: &str,
) -> Result<(), LocalError> {
    for (parameter, platform, suffix) in PLATFORM_APPLICATIONS {
        if template.parameter(parameter) != Some("") {
            continue;
        }
        let name = format!("{stack}-{suffix}");
        // Creating an application again with the same name and attributes answers the
        // same ARN, so this is idempotent.
        let created = clients
            .sns()
            .create_platform_application()
            .name(&name)
            .platform(platform)
            .attributes("PlatformCredential", "local")
            .attributes("PlatformPrincipal", "local")
            .send()
            .await
            .map_err(|e| LocalError::Aws(format!("creating platform application {name}: {}", describe(&e))))?;
        let arn = created
            .platform_application_arn
            .ok_or_else(|| LocalError::Aws(format!("no ARN for platform application {name}")))?;
        template.set_parameter(parameter, arn);
    }
    Ok(())
}

/// Creates the queues in dependency order: a queue whose properties name another queue's
/// attribute (a RedrivePolicy's dead-letter ARN) waits until that queue exists.
async fn create_queues(
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

/// A configuration set's event destination, EventBridge the one kind played (the moto
/// patch publishes the mailbox simulator's events to it). Creating it again replaces it.
async fn create_event_destination(
    clients: &Clients,
    template: &Template,
    destination: &Resource,
    physical: &Physical,
    stack: &str,
) -> Result<(), LocalError> {
    use aws_sdk_sesv2::types::{EventBridgeDestination, EventDestinationDefinition, EventType};
    let properties = &destination.properties;
    let field = |value: Option<&Value>, name: &str| {
        value
            .ok_or_else(|| LocalError::Template(format!("{} has no {name}", destination.logical_id)))
            .and_then(|v| template.resolve(v, physical, stack))
    };
    let set = field(properties.get("ConfigurationSetName"), "ConfigurationSetName")?;
    let definition = properties
        .get("EventDestination")
        .ok_or_else(|| LocalError::Template(format!("{} has no EventDestination", destination.logical_id)))?;
    let name = field(definition.get("Name"), "EventDestination.Name")?;
    let bus = field(definition.get("EventBridgeDestination").and_then(|d| d.get("EventBusArn")), "an EventBusArn")?;
    // CloudFormation names the types as SES v1 does (`deliveryDelay`), SES v2 as DELIVERY_DELAY.
    let types: Vec<EventType> = definition
        .get("MatchingEventTypes")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|t| {
            let mut upper = String::new();
            for c in t.chars() {
                if c.is_ascii_uppercase() {
                    upper.push('_');
                }
                upper.push(c.to_ascii_uppercase());
            }
            EventType::from(upper.as_str())
        })
        .collect();
    let enabled = definition.get("Enabled").and_then(Value::as_bool).unwrap_or(false);
    let definition = EventDestinationDefinition::builder()
        .enabled(enabled)
        .set_matching_event_types(Some(types))
        .event_bridge_destination(EventBridgeDestination::builder().event_bus_arn(bus).build().expect("the ARN is set"))
        .build();
    clients
        .sesv2()
        .create_configuration_set_event_destination()
        .configuration_set_name(&set)
        .event_destination_name(&name)
        .event_destination(definition)
        .send()
        .await
        .map_err(|e| LocalError::Aws(format!("creating event destination {name}: {}", describe(&e))))?;
    Ok(())
}

/// PutRule and PutTargets both replace what exists, so a rule is created or updated alike.
async fn create_rule(
    clients: &Clients,
    template: &Template,
    rule: &Resource,
    physical: &mut Physical,
    stack: &str,
) -> Result<(), LocalError> {
    let properties = &rule.properties;
    let optional = |name: &str| properties.get(name).map(|v| template.resolve(v, physical, stack)).transpose();
    let name = optional("Name")?.unwrap_or_else(|| format!("{stack}-{}", rule.logical_id));
    let bus = optional("EventBusName")?;
    let pattern = match properties.get("EventPattern") {
        Some(pattern) => Some(match template.resolve_json(pattern, physical, stack)? {
            // A pattern may be given as a JSON string too.
            serde_json::Value::String(text) => text,
            other => other.to_string(),
        }),
        None => None,
    };
    let failed = |e: String| LocalError::Aws(format!("creating rule {name}: {e}"));
    let created = clients
        .eventbridge()
        .put_rule()
        .name(&name)
        .set_event_bus_name(bus.clone())
        .set_event_pattern(pattern)
        .set_schedule_expression(optional("ScheduleExpression")?)
        .set_description(optional("Description")?)
        .set_state(optional("State")?.map(|s| RuleState::from(s.as_str())))
        .send()
        .await
        .map_err(|e| failed(describe(&e)))?;
    let arn = created.rule_arn.ok_or_else(|| failed("no RuleArn in the answer".into()))?;
    let mut targets = Vec::new();
    for target in properties.get("Targets").and_then(Value::as_sequence).into_iter().flatten() {
        let field = |name: &str| target.get(name).map(|v| template.resolve(v, physical, stack)).transpose();
        let built = Target::builder()
            .set_id(field("Id")?)
            .set_arn(field("Arn")?)
            .set_input(field("Input")?)
            .set_input_path(field("InputPath")?)
            .set_role_arn(field("RoleArn")?)
            .build()
            .map_err(|e| LocalError::Template(format!("a target of {name}: {e}")))?;
        targets.push(built);
    }
    if !targets.is_empty() {
        let answer = clients
            .eventbridge()
            .put_targets()
            .rule(&name)
            .set_event_bus_name(bus)
            .set_targets(Some(targets))
            .send()
            .await
            .map_err(|e| failed(describe(&e)))?;
        if answer.failed_entry_count > 0 {
            return Err(failed(format!("targets refused: {:?}", answer.failed_entries.unwrap_or_default())));
        }
    }
    physical.record(&rule.logical_id, &name);
    physical.record_attribute(&rule.logical_id, "Arn", arn);
    Ok(())
}

/// An `ExtendedS3DestinationConfiguration` as far as the local stack plays it; any other
/// field is refused rather than ignored, so the local stack never claims to play it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct S3Destination {
    #[serde(rename = "BucketARN")]
    bucket_arn: String,
    #[serde(rename = "RoleARN")]
    role_arn: String,
    prefix: Option<String>,
    error_output_prefix: Option<String>,
    buffering_hints: Option<BufferingHints>,
    compression_format: Option<String>,
    processing_configuration: Option<Processing>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct BufferingHints {
    interval_in_seconds: Option<i32>,
    #[serde(rename = "SizeInMBs")]
    size_in_mbs: Option<i32>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct Processing {
    enabled: Option<bool>,
    #[serde(default)]
    processors: Vec<Processor>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct Processor {
    #[serde(rename = "Type")]
    kind: String,
}

/// A Firehose delivery stream to S3 (moto's Firehose writes each put to the bucket; the
/// moto patch plays its prefix expressions, delimiter and compression). Its CloudWatch
/// logging options are left out: the local stack creates no log groups.
async fn create_delivery_stream(
    clients: &Clients,
    template: &Template,
    stream: &Resource,
    physical: &mut Physical,
    stack: &str,
) -> Result<(), LocalError> {
    use aws_sdk_firehose::types::{
        BufferingHints as Hints, CompressionFormat, DeliveryStreamType, ExtendedS3DestinationConfiguration,
        ProcessingConfiguration, Processor as FirehoseProcessor, ProcessorType,
    };
    let properties = &stream.properties;
    let name = match properties.get("DeliveryStreamName") {
        Some(value) => template.resolve(value, physical, stack)?,
        None => format!("{stack}-{}", stream.logical_id),
    };
    let mut destination =
        properties.get("ExtendedS3DestinationConfiguration").and_then(Value::as_mapping).cloned().ok_or_else(|| {
            LocalError::Template(
                "the local stack plays Firehose to S3 only (ExtendedS3DestinationConfiguration)".into(),
            )
        })?;
    destination.remove("CloudWatchLoggingOptions");
    let destination: S3Destination =
        serde_json::from_value(template.resolve_json(&Value::Mapping(destination), physical, stack)?)
            .map_err(|e| LocalError::Template(format!("ExtendedS3DestinationConfiguration: {e}")))?;
    let processing = destination.processing_configuration.map(|p| {
        ProcessingConfiguration::builder()
            .set_enabled(p.enabled)
            .set_processors(Some(
                p.processors
                    .iter()
                    .map(|processor| {
                        FirehoseProcessor::builder()
                            .r#type(ProcessorType::from(processor.kind.as_str()))
                            .build()
                            .expect("the type is set")
                    })
                    .collect(),
            ))
            .build()
    });
    let hints = destination.buffering_hints.map(|h| {
        Hints::builder().set_interval_in_seconds(h.interval_in_seconds).set_size_in_mbs(h.size_in_mbs).build()
    });
    let configuration = ExtendedS3DestinationConfiguration::builder()
        .bucket_arn(destination.bucket_arn)
        .role_arn(destination.role_arn)
        .set_prefix(destination.prefix)
        .set_error_output_prefix(destination.error_output_prefix)
        .set_buffering_hints(hints)
        .set_compression_format(destination.compression_format.as_deref().map(CompressionFormat::from))
        .set_processing_configuration(processing)
        .build()
        .map_err(|e| LocalError::Template(format!("ExtendedS3DestinationConfiguration: {e}")))?;
    let firehose = aws_sdk_firehose::Client::new(&clients.sdk_config);
    let failed = |e: String| LocalError::Aws(format!("creating delivery stream {name}: {e}"));
    let arn = match firehose
        .create_delivery_stream()
        .delivery_stream_name(&name)
        .delivery_stream_type(DeliveryStreamType::DirectPut)
        .extended_s3_destination_configuration(configuration)
        .send()
        .await
    {
        Ok(created) => created.delivery_stream_arn,
        // Deployed before: keep it.
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_in_use_exception()) => {
            let described = firehose
                .describe_delivery_stream()
                .delivery_stream_name(&name)
                .send()
                .await
                .map_err(|e| failed(describe(&e)))?;
            described.delivery_stream_description.map(|d| d.delivery_stream_arn)
        }
        Err(e) => return Err(failed(describe(&e))),
    }
    .ok_or_else(|| failed("no DeliveryStreamARN in the answer".into()))?;
    physical.record(&stream.logical_id, &name);
    physical.record_attribute(&stream.logical_id, "Arn", arn);
    Ok(())
}

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
async fn create_bucket(
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

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SecretProperties {
    generate_secret_string: Option<GenerateSecretString>,
    secret_string: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GenerateSecretString {
    secret_string_template: Option<String>,
    generate_string_key: Option<String>,
    password_length: Option<usize>,
    #[serde(default)]
    exclude_punctuation: bool,
}

/// A random value as GenerateSecretString makes it: `PasswordLength` (default 32)
/// characters, put under `GenerateStringKey` in the `SecretStringTemplate` JSON when given.
fn generated_secret_value(spec: &GenerateSecretString) -> Result<String, LocalError> {
    use rand::Rng as _;
    const ALPHANUMERIC: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    const PUNCTUATION: &str = "!#$%&()*+,-./:;<=>?@[]^_`{|}~";
    let alphabet: Vec<char> = if spec.exclude_punctuation {
        ALPHANUMERIC.chars().collect()
    } else {
        ALPHANUMERIC.chars().chain(PUNCTUATION.chars()).collect()
    };
    let mut rng = rand::rng();
    let password: String =
        (0..spec.password_length.unwrap_or(32)).map(|_| alphabet[rng.random_range(0..alphabet.len())]).collect();
    match (&spec.secret_string_template, &spec.generate_string_key) {
        (Some(template), Some(key)) => {
            let mut value: serde_json::Map<String, serde_json::Value> = serde_json::from_str(template)
                .map_err(|_| LocalError::Template("SecretStringTemplate is not a JSON object".into()))?;
            value.insert(key.clone(), serde_json::Value::String(password));
            Ok(serde_json::Value::Object(value).to_string())
        }
        (None, None) => Ok(password),
        _ => Err(LocalError::Template("SecretStringTemplate and GenerateStringKey go together".into())),
    }
}

/// Creates a secret (or finds it, keeping its value, as a stack update keeps a generated
/// secret) and answers its ARN. The value is never logged nor put in an error.
async fn create_secret(
    clients: &Clients,
    template: &Template,
    name: &str,
    properties: &Value,
    physical: &crate::template::Physical,
    stack: &str,
) -> Result<String, LocalError> {
    let failed = |e: String| LocalError::Aws(format!("creating secret {name}: {e}"));
    match clients.secretsmanager().describe_secret().secret_id(name).send().await {
        Ok(found) => return found.arn.ok_or_else(|| failed("the secret has no ARN".into())),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => {}
        Err(e) => return Err(failed(describe(&e))),
    }
    let props: SecretProperties = serde_norway::from_value(properties.clone())
        .map_err(|e| LocalError::Template(format!("secret properties: {e}")))?;
    let value = match (&props.generate_secret_string, &props.secret_string) {
        (Some(spec), None) => generated_secret_value(spec)?,
        (None, Some(value)) => template.resolve(value, physical, stack)?,
        _ => return Err(LocalError::Template("a secret has one of GenerateSecretString and SecretString".into())),
    };
    let created = clients.secretsmanager().create_secret().name(name).secret_string(value).send().await;
    created.map_err(|e| failed(describe(&e)))?.arn.ok_or_else(|| failed("no ARN in the answer".into()))
}

/// Creates a table (or finds it) and answers its ARN and its stream's, if it has one.
async fn create_table(
    clients: &Clients,
    name: &str,
    properties: &Value,
) -> Result<(String, Option<String>), LocalError> {
    let props: TableProperties = serde_norway::from_value(properties.clone())
        .map_err(|e| LocalError::Template(format!("table properties: {e}")))?;
    let mut request = clients
        .dynamodb()
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .set_key_schema(Some(key_schema(&props.key_schema)?));
    for a in &props.attribute_definitions {
        request = request.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(&a.attribute_name)
                .attribute_type(ScalarAttributeType::from(a.attribute_type.as_str()))
                .build()
                .map_err(|e| LocalError::Template(e.to_string()))?,
        );
    }
    if let Some(stream) = &props.stream_specification {
        request = request.stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::from(stream.stream_view_type.as_str()))
                .build()
                .map_err(|e| LocalError::Template(e.to_string()))?,
        );
    }
    for index in &props.global_secondary_indexes {
        let projection = Projection::builder()
            .projection_type(ProjectionType::from(index.projection.projection_type.as_str()))
            .set_non_key_attributes(
                (!index.projection.non_key_attributes.is_empty()).then(|| index.projection.non_key_attributes.clone()),
            )
            .build();
        request = request.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(&index.index_name)
                .set_key_schema(Some(key_schema(&index.key_schema)?))
                .projection(projection)
                .build()
                .map_err(|e| LocalError::Template(e.to_string()))?,
        );
    }
    let created = match request.send().await {
        Ok(out) => out.table_description,
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_in_use_exception()) => {
            let described = clients.dynamodb().describe_table().table_name(name).send().await;
            let table = described.map_err(|e| LocalError::Aws(format!("describing table {name}: {}", describe(&e))))?;
            let table = table.table.ok_or_else(|| LocalError::Aws(format!("{name} is not described")))?;
            let arn = table.table_arn.ok_or_else(|| LocalError::Aws(format!("{name} has no ARN")))?;
            return Ok((arn, table.latest_stream_arn));
        }
        Err(e) => return Err(LocalError::Aws(format!("creating table {name}: {}", describe(&e)))),
    };
    let created = created.ok_or_else(|| LocalError::Aws(format!("table {name} is not described")))?;
    let arn = created.table_arn.ok_or_else(|| LocalError::Aws(format!("no ARN for table {name}")))?;
    let stream = created.latest_stream_arn;
    if let Some(ttl) = props.time_to_live_specification.filter(|t| t.enabled) {
        clients
            .dynamodb()
            .update_time_to_live()
            .table_name(name)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(ttl.attribute_name)
                    .enabled(true)
                    .build()
                    .map_err(|e| LocalError::Template(e.to_string()))?,
            )
            .send()
            .await
            .map_err(|e| LocalError::Aws(format!("enabling TTL on {name}: {}", describe(&e))))?;
    }
    Ok((arn, stream))
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
