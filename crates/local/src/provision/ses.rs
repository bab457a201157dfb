//! SES identities, configuration sets and their event destinations.

use herald_aws::{Clients, describe};
use serde_norway::Value;

use crate::{
    errors::LocalError,
    template::{Physical, Resource, Template},
};

/// An email identity; one that exists is kept.
pub(super) async fn create_email_identity(clients: &Clients, address: &str) -> Result<(), LocalError> {
    match clients.sesv2().create_email_identity().email_identity(address).send().await {
        Ok(_) => Ok(()),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_already_exists_exception()) => Ok(()),
        Err(e) => Err(LocalError::Aws(format!("creating SES identity {address}: {}", describe(&e)))),
    }
}

/// A configuration set; one that exists is kept.
pub(super) async fn create_configuration_set(clients: &Clients, name: &str) -> Result<(), LocalError> {
    match clients.sesv2().create_configuration_set().configuration_set_name(name).send().await {
        Ok(_) => Ok(()),
        // SES v2 says AlreadyExistsException; moto, v1's ConfigurationSetAlreadyExists.
        Err(e)
            if e.as_service_error().is_some_and(|s| {
                s.is_already_exists_exception() || s.meta().code() == Some("ConfigurationSetAlreadyExistsException")
            }) =>
        {
            Ok(())
        }
        Err(e) => Err(LocalError::Aws(format!("creating configuration set {name}: {}", describe(&e)))),
    }
}

/// A configuration set's event destination, EventBridge the one kind played (the moto
/// patch publishes the mailbox simulator's events to it). Creating it again replaces it.
pub(super) async fn create_event_destination(
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
