//! Tables, names and clients of the adapter suites, which make their own resources on the
//! moto endpoint instead of deploying the template.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType,
};
use herald_aws::{Clients, RequestCounter};

/// Clients on the test's moto endpoint whose requests `counter` counts.
pub async fn clients(counter: &RequestCounter) -> Clients {
    let config = herald_aws::local_sdk_config(&crate::aws_endpoint()).await;
    Clients::counted(&config, counter)
}

/// `prefix` and a random suffix: a resource name of this test alone.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

pub fn key(name: &str, key_type: KeyType) -> KeySchemaElement {
    KeySchemaElement::builder().attribute_name(name).key_type(key_type).build().unwrap()
}

pub fn string_attribute(name: &str) -> AttributeDefinition {
    AttributeDefinition::builder().attribute_name(name).attribute_type(ScalarAttributeType::S).build().unwrap()
}

/// A table shaped as the template's JobsTable, its `by_kind` index included.
pub async fn jobs_table(clients: &Clients) -> String {
    let table = unique("jobs");
    let index = GlobalSecondaryIndex::builder()
        .index_name("by_kind")
        .key_schema(key("kind", KeyType::Hash))
        .key_schema(key("started", KeyType::Range))
        .projection(Projection::builder().projection_type(ProjectionType::All).build())
        .build()
        .unwrap();
    clients
        .dynamodb()
        .create_table()
        .table_name(&table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(string_attribute("job_id"))
        .attribute_definitions(string_attribute("kind"))
        .attribute_definitions(string_attribute("started"))
        .key_schema(key("job_id", KeyType::Hash))
        .global_secondary_indexes(index)
        .send()
        .await
        .expect("jobs table");
    table
}

/// Creates the template's tables `logical_ids` (and nothing else), named for this test
/// alone; returns logical id → table name. Cheaper than a whole stack: the port contract
/// suites need a table or two, shaped as deployed.
pub async fn template_tables(clients: &Clients, logical_ids: &[&str]) -> std::collections::BTreeMap<String, String> {
    let path = herald_local::repo_root().join("infra/template.yaml");
    let mut template = herald_local::Template::load(&path).expect("the template loads");
    template.resources.retain(|r| r.kind == "AWS::DynamoDB::Table" && logical_ids.contains(&r.logical_id.as_str()));
    assert_eq!(template.resources.len(), logical_ids.len(), "the template declares every table of {logical_ids:?}");
    let deployment =
        herald_local::provision::deploy(clients, &template, &unique("c")).await.expect("the tables are created");
    deployment.names().clone()
}
