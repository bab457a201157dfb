//! EventBridge buses, and rules with their targets.

use aws_sdk_eventbridge::types::{RuleState, Target};
use herald_aws::{Clients, describe};
use serde_norway::Value;

use crate::{
    errors::LocalError,
    template::{Physical, Resource, Template},
};

pub(super) async fn create_bus(clients: &Clients, name: &str) -> Result<String, LocalError> {
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

/// PutRule and PutTargets both replace what exists, so a rule is created or updated alike.
pub(super) async fn create_rule(
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
