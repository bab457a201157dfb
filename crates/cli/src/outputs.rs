//! Finding the stack's resources: its CloudFormation outputs, from DescribeStacks or from
//! a file in the shape DescribeStacks answers (`aws cloudformation describe-stacks`
//! prints it; herald-local writes it, adding the AWS endpoint it serves as `Endpoint`).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::CliError;

/// The stack's outputs by name, and the endpoint that holds its resources when it is not
/// AWS's own (herald-local).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StackOutputs {
    pub stack_name: String,
    pub values: BTreeMap<String, String>,
    pub endpoint: Option<String>,
}

impl StackOutputs {
    /// `{"Stacks":[{"StackName":…,"Outputs":[{"OutputKey":…,"OutputValue":…},…]}]}`, with
    /// an optional top-level `"Endpoint"`. The file holds one stack.
    pub fn parse(text: &str) -> Result<Self, CliError> {
        let bad = |why: &str| CliError::Outputs(format!("the outputs file {why}"));
        let document: Value = serde_json::from_str(text).map_err(|_| bad("is not JSON"))?;
        let stack = match document.get("Stacks").and_then(Value::as_array).map(Vec::as_slice) {
            Some([stack]) => stack,
            Some(_) => return Err(bad("must hold exactly one stack")),
            None => return Err(bad("has no Stacks list (the shape of describe-stacks)")),
        };
        let values = stack
            .get("Outputs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|o| match (o.get("OutputKey").and_then(Value::as_str), o.get("OutputValue").and_then(Value::as_str)) {
                (Some(key), Some(value)) => Ok((key.to_owned(), value.to_owned())),
                _ => Err(bad("has an output without OutputKey and OutputValue")),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            stack_name: stack.get("StackName").and_then(Value::as_str).unwrap_or_default().to_owned(),
            values,
            endpoint: document.get("Endpoint").and_then(Value::as_str).map(str::to_owned),
        })
    }

    /// The outputs of the deployed stack `name` (DescribeStacks).
    pub async fn describe(client: &aws_sdk_cloudformation::Client, name: &str) -> Result<Self, CliError> {
        let answer = client
            .describe_stacks()
            .stack_name(name)
            .send()
            .await
            .map_err(|e| CliError::Stack(format!("DescribeStacks {name}: {}", herald_aws::describe(&e))))?;
        let stack = answer.stacks().first().ok_or_else(|| CliError::Stack(format!("no stack {name}")))?;
        let values = stack
            .outputs()
            .iter()
            .filter_map(|o| Some((o.output_key()?.to_owned(), o.output_value()?.to_owned())))
            .collect();
        Ok(Self { stack_name: name.to_owned(), values, endpoint: None })
    }

    /// The output `key`, or an error naming it.
    pub fn get(&self, key: &str) -> Result<&str, CliError> {
        self.values.get(key).map(String::as_str).ok_or_else(|| {
            CliError::Outputs(format!(
                "the stack {} has no output {key}: deploy this version of the template",
                self.stack_name
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DESCRIBED: &str = r#"{"Stacks":[{"StackName":"prod","StackStatus":"UPDATE_COMPLETE","Outputs":[
        {"OutputKey":"ApiKeysTableName","OutputValue":"prod-ApiKeysTable-1X","Description":"keys"},
        {"OutputKey":"ApiUrl","OutputValue":"https://a.execute-api.eu-west-1.amazonaws.com"}]}]}"#;

    #[test]
    fn a_describe_stacks_answer_gives_the_outputs_by_name() {
        let outputs = StackOutputs::parse(DESCRIBED).unwrap();
        assert_eq!(outputs.get("ApiKeysTableName").unwrap(), "prod-ApiKeysTable-1X");
        assert_eq!((outputs.stack_name.as_str(), outputs.endpoint.as_deref()), ("prod", None));
    }

    #[test]
    fn herald_locals_endpoint_is_read_beside_the_stacks() {
        let local = r#"{"Stacks":[{"StackName":"herald","Outputs":[]}],"Endpoint":"http://127.0.0.1:5000"}"#;
        assert_eq!(StackOutputs::parse(local).unwrap().endpoint.as_deref(), Some("http://127.0.0.1:5000"));
    }

    #[test]
    fn a_missing_output_is_named() {
        let error = StackOutputs::parse(DESCRIBED).unwrap().get("TrackingKeysSecretArn").unwrap_err();
        assert!(error.to_string().contains("the stack prod has no output TrackingKeysSecretArn"), "{error}");
    }

    #[test]
    fn a_file_of_another_shape_is_refused() {
        for text in ["[]", "not json", r#"{"Stacks":[]}"#, r#"{"Stacks":[{"Outputs":[{"OutputKey":"A"}]}]}"#] {
            assert!(matches!(StackOutputs::parse(text), Err(CliError::Outputs(_))), "{text}");
        }
    }
}
