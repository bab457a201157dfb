//! The event archive's Athena table (infra/template.yaml `EventArchiveTable`) reads the
//! events the archive holds: its columns are EventBridge's envelope and its `detail`
//! struct is `delivery.status_changed` v1, field for field, so a field added to the event
//! without its column (or a column naming no field) fails here, not in a user's query.

use std::{collections::BTreeSet, path::Path};

use chrono::Utc;
use herald_core::{
    channel::Channel,
    delivery::{DeliveryStatus, events::DeliveryStatusChanged},
};
use serde_norway::Value;

fn table() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/template.yaml");
    let template: Value = serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    template["Resources"]["EventArchiveTable"]["Properties"]["TableInput"].clone()
}

fn column_names(table: &Value) -> Vec<String> {
    let columns = table["StorageDescriptor"]["Columns"].as_sequence().expect("the table has columns");
    columns.iter().map(|c| c["Name"].as_str().unwrap().to_owned()).collect()
}

fn column_type(table: &Value, name: &str) -> String {
    let columns = table["StorageDescriptor"]["Columns"].as_sequence().unwrap();
    let column =
        columns.iter().find(|c| c["Name"].as_str() == Some(name)).unwrap_or_else(|| panic!("no column {name}"));
    column["Type"].as_str().unwrap().to_owned()
}

/// The field names of a Hive `struct<a:int,b:string>` (no nested structs here).
fn struct_fields(hive_type: &str) -> BTreeSet<String> {
    let inner = hive_type.strip_prefix("struct<").and_then(|t| t.strip_suffix('>')).expect("a struct type");
    inner.split(',').map(|field| field.split_once(':').expect("name:type").0.to_owned()).collect()
}

/// A change with every optional field set, so each one is serialized.
fn every_field() -> DeliveryStatusChanged {
    DeliveryStatusChanged {
        version: 1,
        delivery_id: "d".into(),
        notification_id: "n".into(),
        channel: Channel::Email,
        user_id: Some("u".into()),
        status: DeliveryStatus::Bounced,
        previous_status: Some(DeliveryStatus::Sent),
        at: Utc::now(),
        sequence: 4,
        reason: Some("Permanent/General".into()),
        provider: Some("ses".into()),
        provider_message_id: Some("m".into()),
    }
}

#[test]
fn the_detail_struct_names_every_field_of_the_event_and_nothing_else() {
    let serialized = serde_json::to_value(every_field()).unwrap();
    let fields: BTreeSet<String> = serialized.as_object().unwrap().keys().cloned().collect();
    assert_eq!(struct_fields(&column_type(&table(), "detail")), fields);
}

#[test]
fn the_columns_are_eventbridges_envelope_with_detail_type_mapped_from_its_hyphenated_key() {
    let table = table();
    let columns: BTreeSet<String> = column_names(&table).into_iter().collect();
    let envelope = ["id", "detail_type", "source", "account", "region", "time", "detail"];
    assert_eq!(columns, envelope.iter().map(|c| c.to_string()).collect());
    let serde = &table["StorageDescriptor"]["SerdeInfo"];
    assert_eq!(serde["SerializationLibrary"].as_str(), Some("org.openx.data.jsonserde.JsonSerDe"));
    assert_eq!(serde["Parameters"]["mapping.detail_type"].as_str(), Some("detail-type"));
}

#[test]
fn the_year_month_and_day_partitions_are_projected_from_the_path_firehose_writes() {
    let template_text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/template.yaml")).unwrap();
    let template: Value = serde_norway::from_str(&template_text).unwrap();
    let destination =
        &template["Resources"]["EventArchiveDeliveryStream"]["Properties"]["ExtendedS3DestinationConfiguration"];
    let days = "year=!{timestamp:yyyy}/month=!{timestamp:MM}/day=!{timestamp:dd}/";
    assert_eq!(destination["Prefix"].as_str(), Some(format!("events/{days}").as_str()));
    assert!(destination["ErrorOutputPrefix"].as_str().unwrap().starts_with("errors/"), "errors apart from events");
    assert!(destination["ErrorOutputPrefix"].as_str().unwrap().ends_with(days), "errors by day too");
    let table = table();
    let keys: Vec<(&str, &str)> = table["PartitionKeys"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|k| (k["Name"].as_str().unwrap(), k["Type"].as_str().unwrap()))
        .collect();
    assert_eq!(keys, [("year", "string"), ("month", "string"), ("day", "string")]);
    let parameters = &table["Parameters"];
    for key in ["year", "month", "day"] {
        assert_eq!(parameters[format!("projection.{key}.type").as_str()].as_str(), Some("integer"), "{key}");
    }
    // Firehose's MM and dd: two digits, '03'.
    assert_eq!(parameters["projection.month.digits"].as_str(), Some("2"));
    assert_eq!(parameters["projection.month.range"].as_str(), Some("1,12"));
    assert_eq!(parameters["projection.day.digits"].as_str(), Some("2"));
    assert_eq!(parameters["projection.day.range"].as_str(), Some("1,31"));
    let location = match &parameters["storage.location.template"] {
        Value::Tagged(sub) => sub.value.as_str().unwrap().to_owned(),
        other => panic!("a !Sub, not {other:?}"),
    };
    assert!(location.ends_with("/events/year=${!year}/month=${!month}/day=${!day}/"), "{location}");
}
