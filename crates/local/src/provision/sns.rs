//! SNS: the platform applications the template takes as parameters, and the account's
//! SMS delivery status attributes.

use herald_aws::{Clients, describe};

use crate::{errors::LocalError, template::Template};

/// SNS platform applications are not CloudFormation resources, so the template takes
/// their ARNs as parameters: parameter, SNS platform, name suffix.
const PLATFORM_APPLICATIONS: [(&str, &str, &str); 3] = [
    ("ApnsPlatformApplicationArn", "APNS", "apns"),
    ("ApnsSandboxPlatformApplicationArn", "APNS_SANDBOX", "apns-sandbox"),
    ("FcmPlatformApplicationArn", "GCM", "fcm"),
];

/// The output naming the role SNS writes SMS delivery status with, when the template has
/// it on: scripts/deploy sets it as the account's, and so does the local stack.
pub const SMS_DELIVERY_STATUS_ROLE: &str = "SmsDeliveryStatusRoleArn";

/// The account's SMS attributes that have SNS log every message's delivery status.
pub(super) async fn set_sms_delivery_status(clients: &Clients, role: &str) -> Result<(), LocalError> {
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

/// Creates one platform application per `*PlatformApplicationArn` parameter the template
/// declares and nobody set, and sets the parameter to its ARN, so the functions'
/// environments name them. moto accepts any credentials; "local" stands for them.
pub(super) async fn create_platform_applications(
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
