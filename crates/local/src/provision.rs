//! Creates the template's tables and buses on the AWS-compatible endpoint.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, TimeToLiveSpecification,
};
use herald_aws::{Clients, describe};
use serde::Deserialize;

use crate::{LocalError, template::Template};

/// What was created for one stack: logical id → physical name.
#[derive(Clone, Debug)]
pub struct Deployment {
    pub stack_name: String,
    pub names: BTreeMap<String, String>,
    pub template: Template,
}

impl Deployment {
    /// The environment the template gives the function built from `binary`.
    pub fn function_environment(&self, binary: &str) -> Result<BTreeMap<String, String>, LocalError> {
        let function = self.template.function_by_binary(binary)?;
        self.template.environment(function, &self.names, &self.stack_name)
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

/// Creates every table and event bus the template declares, named after `stack`.
/// Resources that already exist are kept, so the stack can join a running endpoint.
pub async fn deploy(clients: &Clients, template: &Template, stack: &str) -> Result<Deployment, LocalError> {
    let mut names = BTreeMap::new();
    for table in template.resources_of_type("AWS::DynamoDB::Table") {
        let name = format!("{stack}-{}", table.logical_id);
        create_table(clients, &name, &table.properties).await.map_err(|e| e.context(&table.logical_id))?;
        names.insert(table.logical_id.clone(), name);
    }
    for bus in template.resources_of_type("AWS::Events::EventBus") {
        let name = match bus.properties.get("Name") {
            Some(value) => template.resolve(value, &names, stack)?,
            None => format!("{stack}-{}", bus.logical_id),
        };
        match clients.eventbridge.create_event_bus().name(&name).send().await {
            Ok(_) => {}
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_already_exists_exception()) => {}
            Err(e) => return Err(LocalError::Aws(format!("creating bus {name}: {}", describe(&e)))),
        }
        names.insert(bus.logical_id.clone(), name);
    }
    Ok(Deployment { stack_name: stack.to_owned(), names, template: template.clone() })
}

async fn create_table(clients: &Clients, name: &str, properties: &serde_norway::Value) -> Result<(), LocalError> {
    let props: TableProperties = serde_norway::from_value(properties.clone())
        .map_err(|e| LocalError::Template(format!("table properties: {e}")))?;
    let mut request = clients
        .dynamodb
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
    match request.send().await {
        Ok(_) => {}
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_in_use_exception()) => return Ok(()),
        Err(e) => return Err(LocalError::Aws(format!("creating table {name}: {}", describe(&e)))),
    }
    if let Some(ttl) = props.time_to_live_specification.filter(|t| t.enabled) {
        clients
            .dynamodb
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
    Ok(())
}
