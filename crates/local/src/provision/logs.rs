//! CloudWatch Logs log groups.

use herald_aws::{Clients, describe};

use crate::{
    errors::LocalError,
    template::{Physical, Resource, Template},
};

/// A log group, named by its `LogGroupName` or after the stack; one that exists is kept
/// (SNS's groups are the account's, shared by stacks on one endpoint).
pub(super) async fn create_log_group(
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
