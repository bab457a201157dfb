//! Secrets Manager secrets, their values generated as CloudFormation's
//! GenerateSecretString would.

use herald_aws::{Clients, describe};
use serde::Deserialize;
use serde_norway::Value;

use crate::{errors::LocalError, template::Template};

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SecretProperties {
    generate_secret_string: Option<GenerateSecretString>,
    secret_string: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GenerateSecretString {
    secret_string_template: Option<String>,
    generate_string_key: Option<String>,
    password_length: Option<usize>,
    #[serde(default)]
    exclude_punctuation: bool,
}

/// A random value as GenerateSecretString makes it: `PasswordLength` (default 32)
/// characters, put under `GenerateStringKey` in the `SecretStringTemplate` JSON when given.
fn generated_secret_value(spec: &GenerateSecretString) -> Result<String, LocalError> {
    use rand::Rng as _;
    const ALPHANUMERIC: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    const PUNCTUATION: &str = "!#$%&()*+,-./:;<=>?@[]^_`{|}~";
    let alphabet: Vec<char> = if spec.exclude_punctuation {
        ALPHANUMERIC.chars().collect()
    } else {
        ALPHANUMERIC.chars().chain(PUNCTUATION.chars()).collect()
    };
    let mut rng = rand::rng();
    let password: String =
        (0..spec.password_length.unwrap_or(32)).map(|_| alphabet[rng.random_range(0..alphabet.len())]).collect();
    match (&spec.secret_string_template, &spec.generate_string_key) {
        (Some(template), Some(key)) => {
            let mut value: serde_json::Map<String, serde_json::Value> = serde_json::from_str(template)
                .map_err(|_| LocalError::Template("SecretStringTemplate is not a JSON object".into()))?;
            value.insert(key.clone(), serde_json::Value::String(password));
            Ok(serde_json::Value::Object(value).to_string())
        }
        (None, None) => Ok(password),
        _ => Err(LocalError::Template("SecretStringTemplate and GenerateStringKey go together".into())),
    }
}

/// Creates a secret (or finds it, keeping its value, as a stack update keeps a generated
/// secret) and answers its ARN. The value is never logged nor put in an error.
pub(super) async fn create_secret(
    clients: &Clients,
    template: &Template,
    name: &str,
    properties: &Value,
    physical: &crate::template::Physical,
    stack: &str,
) -> Result<String, LocalError> {
    let failed = |e: String| LocalError::Aws(format!("creating secret {name}: {e}"));
    match clients.secretsmanager().describe_secret().secret_id(name).send().await {
        Ok(found) => return found.arn.ok_or_else(|| failed("the secret has no ARN".into())),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => {}
        Err(e) => return Err(failed(describe(&e))),
    }
    let props: SecretProperties = serde_norway::from_value(properties.clone())
        .map_err(|e| LocalError::Template(format!("secret properties: {e}")))?;
    let value = match (&props.generate_secret_string, &props.secret_string) {
        (Some(spec), None) => generated_secret_value(spec)?,
        (None, Some(value)) => template.resolve(value, physical, stack)?,
        _ => return Err(LocalError::Template("a secret has one of GenerateSecretString and SecretString".into())),
    };
    let created = clients.secretsmanager().create_secret().name(name).secret_string(value).send().await;
    created.map_err(|e| failed(describe(&e)))?.arn.ok_or_else(|| failed("no ARN in the answer".into()))
}
