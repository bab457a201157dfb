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
//!
//! Each service's resources are created in its own module below; `deploy` orders them
//! (a resource after those it names).

mod dynamodb;
mod eventbridge;
mod firehose;
mod logs;
mod s3;
mod secretsmanager;
mod ses;
mod sns;
mod sqs;

use std::collections::BTreeMap;

use herald_aws::Clients;

pub use s3::{bucket_name, unset_bucket_names};
pub use sns::SMS_DELIVERY_STATUS_ROLE;

use crate::{
    errors::LocalError,
    template::{ACCOUNT, Physical, Template},
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
        let (arn, stream) = dynamodb::create_table(clients, &name, &table.properties)
            .await
            .map_err(|e| e.context(&table.logical_id))?;
        physical.record(&table.logical_id, &name);
        physical.record_attribute(&table.logical_id, "Arn", arn);
        if let Some(stream) = stream {
            physical.record_attribute(&table.logical_id, "StreamArn", stream);
        }
    }
    for secret in template.resources_of_type("AWS::SecretsManager::Secret") {
        let name = format!("{stack}-{}", secret.logical_id);
        let arn = secretsmanager::create_secret(clients, &template, &name, &secret.properties, &physical, stack)
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
        let arn = eventbridge::create_bus(clients, &name).await?;
        physical.record(&bus.logical_id, &name);
        physical.record_attribute(&bus.logical_id, "Arn", arn);
    }
    for identity in template.resources_of_type("AWS::SES::EmailIdentity") {
        let address = match identity.properties.get("EmailIdentity") {
            Some(value) => template.resolve(value, &physical, stack)?,
            None => return Err(LocalError::Template(format!("{} has no EmailIdentity", identity.logical_id))),
        };
        ses::create_email_identity(clients, &address).await?;
        physical.record(&identity.logical_id, address);
    }
    for set in template.resources_of_type("AWS::SES::ConfigurationSet") {
        let name = match set.properties.get("Name") {
            Some(value) => template.resolve(value, &physical, stack)?,
            None => format!("{stack}-{}", set.logical_id),
        };
        ses::create_configuration_set(clients, &name).await?;
        physical.record(&set.logical_id, name);
    }
    for destination in template.resources_of_type("AWS::SES::ConfigurationSetEventDestination") {
        ses::create_event_destination(clients, &template, destination, &physical, stack)
            .await
            .map_err(|e| e.context(&destination.logical_id))?;
    }
    sns::create_platform_applications(clients, &mut template, stack).await?;
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
        logs::create_log_group(clients, &template, group, &mut physical, stack)
            .await
            .map_err(|e| e.context(&group.logical_id))?;
    }
    sqs::create_queues(clients, &template, &mut physical, stack).await?;
    // After the queues: a bucket's notifications name them.
    for bucket in template.resources_of_type("AWS::S3::Bucket") {
        s3::create_bucket(clients, &template, bucket, &mut physical, stack)
            .await
            .map_err(|e| e.context(&bucket.logical_id))?;
    }
    // After the buckets they deliver to.
    for stream in template.resources_of_type("AWS::KinesisFirehose::DeliveryStream") {
        firehose::create_delivery_stream(clients, &template, stream, &mut physical, stack)
            .await
            .map_err(|e| e.context(&stream.logical_id))?;
    }
    // After every target: queues, delivery streams.
    for rule in template.resources_of_type("AWS::Events::Rule") {
        eventbridge::create_rule(clients, &template, rule, &mut physical, stack)
            .await
            .map_err(|e| e.context(&rule.logical_id))?;
    }
    let deployment = Deployment { stack_name: stack.to_owned(), physical, template };
    if let Some(role) = deployment.outputs().get(SMS_DELIVERY_STATUS_ROLE) {
        sns::set_sms_delivery_status(clients, role).await?;
    }
    Ok(deployment)
}
