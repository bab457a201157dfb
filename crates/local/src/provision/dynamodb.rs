//! DynamoDB tables: key schema, attributes, indexes, stream and TTL as the template
//! declares them.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, StreamSpecification, StreamViewType, TimeToLiveSpecification,
};
use herald_aws::{Clients, describe};
use serde::Deserialize;
use serde_norway::Value;

use crate::errors::LocalError;

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

/// Creates a table (or finds it) and answers its ARN and its stream's, if it has one.
pub(super) async fn create_table(
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
