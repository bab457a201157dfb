//! Firehose delivery streams to S3.

use herald_aws::{Clients, describe};
use serde::Deserialize;
use serde_norway::Value;

use crate::{
    errors::LocalError,
    template::{Physical, Resource, Template},
};

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
pub(super) async fn create_delivery_stream(
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
