//! Reads infra/template.yaml, the one source of truth for resources: the local stack
//! creates what it declares and gives each function the environment it declares.

use std::{collections::BTreeMap, path::Path};

use serde_norway::{Mapping, Value};

use crate::LocalError;

#[derive(Clone, Debug)]
pub struct Resource {
    pub logical_id: String,
    pub kind: String,
    pub properties: Value,
    pub metadata: Value,
}

#[derive(Clone, Debug)]
pub struct Template {
    pub resources: Vec<Resource>,
    parameters: BTreeMap<String, String>,
    global_environment: Mapping,
}

impl Template {
    pub fn load(path: &Path) -> Result<Self, LocalError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| LocalError::Template(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self, LocalError> {
        let doc: Value = serde_norway::from_str(text).map_err(|e| LocalError::Template(format!("not YAML: {e}")))?;
        let resources = doc
            .get("Resources")
            .and_then(Value::as_mapping)
            .ok_or_else(|| LocalError::Template("no Resources section".into()))?
            .iter()
            .map(|(id, body)| {
                let logical_id =
                    id.as_str().ok_or_else(|| LocalError::Template("a resource id is not a string".into()))?;
                let kind = body
                    .get("Type")
                    .and_then(Value::as_str)
                    .ok_or_else(|| LocalError::Template(format!("{logical_id} has no Type")))?;
                Ok(Resource {
                    logical_id: logical_id.to_owned(),
                    kind: kind.to_owned(),
                    properties: body.get("Properties").cloned().unwrap_or(Value::Null),
                    metadata: body.get("Metadata").cloned().unwrap_or(Value::Null),
                })
            })
            .collect::<Result<Vec<_>, LocalError>>()?;
        let parameters = doc
            .get("Parameters")
            .and_then(Value::as_mapping)
            .into_iter()
            .flatten()
            .filter_map(|(name, p)| Some((name.as_str()?.to_owned(), scalar(p.get("Default")?)?)))
            .collect();
        let global_environment = environment_of(doc.get("Globals").and_then(|g| g.get("Function")));
        Ok(Self { resources, parameters, global_environment })
    }

    /// Sets parameter values, as `sam deploy --parameter-overrides` would.
    pub fn set_parameter(&mut self, name: &str, value: impl Into<String>) {
        self.parameters.insert(name.to_owned(), value.into());
    }

    pub fn resources_of_type<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Resource> {
        self.resources.iter().filter(move |r| r.kind == kind)
    }

    /// The function built from the Cargo binary `binary` (its BuildProperties.Binary).
    pub fn function_by_binary(&self, binary: &str) -> Result<&Resource, LocalError> {
        self.resources_of_type("AWS::Serverless::Function")
            .find(|f| {
                f.metadata.get("BuildProperties").and_then(|b| b.get("Binary")).and_then(Value::as_str) == Some(binary)
            })
            .ok_or_else(|| LocalError::Template(format!("no function builds the binary {binary}")))
    }

    /// A function's environment variables (Globals first, its own over them), with
    /// `!Ref`, `!Sub` and parameters resolved against `names` (logical id → physical name).
    pub fn environment(
        &self,
        function: &Resource,
        names: &BTreeMap<String, String>,
        stack: &str,
    ) -> Result<BTreeMap<String, String>, LocalError> {
        let mut variables = self.global_environment.clone();
        variables.extend(environment_of(Some(&function.properties)));
        variables
            .iter()
            .map(|(k, v)| {
                let key =
                    k.as_str().ok_or_else(|| LocalError::Template("an environment name is not a string".into()))?;
                Ok((key.to_owned(), self.resolve(v, names, stack)?))
            })
            .collect()
    }

    /// Resolves the intrinsic functions the local stack needs: plain scalars, `Ref` to a
    /// resource or parameter, and `Sub` over `${AWS::StackName}`, `${AWS::Region}` and refs.
    pub fn resolve(&self, value: &Value, names: &BTreeMap<String, String>, stack: &str) -> Result<String, LocalError> {
        let reference = |target: &str| {
            names
                .get(target)
                .or_else(|| self.parameters.get(target))
                .cloned()
                .or_else(|| pseudo_parameter(target, stack))
                .ok_or_else(|| LocalError::Template(format!("Ref to unknown {target}")))
        };
        match value {
            Value::Tagged(tagged) => match (tagged.tag.to_string().as_str(), &tagged.value) {
                ("!Ref", Value::String(target)) => reference(target),
                ("!Sub", Value::String(text)) => substitute(text, reference),
                (tag, _) => Err(LocalError::Template(format!("the local stack does not resolve {tag} here"))),
            },
            Value::Mapping(m) if m.len() == 1 => match m.iter().next() {
                Some((Value::String(f), Value::String(target))) if f == "Ref" => reference(target),
                Some((Value::String(f), Value::String(text))) if f == "Fn::Sub" => substitute(text, reference),
                _ => Err(LocalError::Template(format!("the local stack does not resolve {value:?}"))),
            },
            other => scalar(other).ok_or_else(|| LocalError::Template(format!("cannot use {other:?} as a string"))),
        }
    }
}

fn environment_of(function_properties: Option<&Value>) -> Mapping {
    function_properties
        .and_then(|p| p.get("Environment"))
        .and_then(|e| e.get("Variables"))
        .and_then(Value::as_mapping)
        .cloned()
        .unwrap_or_default()
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn pseudo_parameter(name: &str, stack: &str) -> Option<String> {
    match name {
        "AWS::StackName" => Some(stack.to_owned()),
        "AWS::Region" => Some("us-east-1".to_owned()),
        "AWS::AccountId" => Some("123456789012".to_owned()),
        "AWS::URLSuffix" => Some("amazonaws.com".to_owned()),
        _ => None,
    }
}

fn substitute(text: &str, reference: impl Fn(&str) -> Result<String, LocalError>) -> Result<String, LocalError> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').ok_or_else(|| LocalError::Template(format!("unclosed ${{ in {text:?}")))?;
        out.push_str(&reference(&rest[start + 2..start + end])?);
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = r#"
Parameters:
  Level: {Type: String, Default: info}
Globals:
  Function:
    Environment:
      Variables: {A: !Ref Table, LEVEL: !Ref Level, SHARED: global}
Resources:
  Table: {Type: AWS::DynamoDB::Table, Properties: {}}
  Fn:
    Type: AWS::Serverless::Function
    Metadata: {BuildProperties: {Binary: herald-x}}
    Properties:
      Environment:
        Variables: {SHARED: own, BUS: !Sub "${AWS::StackName}-bus", LONG: {Ref: Table}}
"#;

    #[test]
    fn function_environment_merges_globals_and_resolves_refs() {
        let t = Template::parse(TEMPLATE).unwrap();
        let names = BTreeMap::from([("Table".to_owned(), "s-Table".to_owned())]);
        let env = t.environment(t.function_by_binary("herald-x").unwrap(), &names, "s").unwrap();
        let expected: BTreeMap<String, String> =
            [("A", "s-Table"), ("LEVEL", "info"), ("SHARED", "own"), ("BUS", "s-bus"), ("LONG", "s-Table")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
        assert_eq!(env, expected);
    }

    #[test]
    fn a_ref_to_nothing_is_an_error() {
        let t = Template::parse(TEMPLATE).unwrap();
        let err = t.resolve(&serde_norway::from_str("!Ref Nope").unwrap(), &BTreeMap::new(), "s").unwrap_err();
        assert!(err.to_string().contains("Nope"));
    }

    #[test]
    fn the_real_template_parses_and_names_the_api_function() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/template.yaml");
        let t = Template::load(&path).unwrap();
        assert!(t.function_by_binary("herald-api").is_ok());
        assert!(t.resources_of_type("AWS::DynamoDB::Table").count() >= 2);
    }
}
