//! Reads infra/template.yaml, the one source of truth for resources: the local stack
//! creates what it declares and gives each function the environment it declares.

use std::{collections::BTreeMap, path::Path, time::Duration};

use serde_json::Value as Json;
use serde_norway::{Mapping, Value};

use crate::errors::LocalError;

#[derive(Clone, Debug)]
pub struct Resource {
    pub logical_id: String,
    pub kind: String,
    pub properties: Value,
    pub metadata: Value,
    /// The name of the condition the resource is created under (its `Condition`), if any.
    pub condition: Option<String>,
}

impl Resource {
    /// The Cargo binary a function is built from (its Metadata.BuildProperties.Binary).
    pub fn binary(&self) -> Option<&str> {
        self.metadata.get("BuildProperties").and_then(|b| b.get("Binary")).and_then(Value::as_str)
    }
}

#[derive(Clone, Debug)]
pub struct Template {
    pub resources: Vec<Resource>,
    /// The stack's outputs: name → its `Value`, unresolved.
    pub outputs: BTreeMap<String, Value>,
    parameters: BTreeMap<String, String>,
    global_environment: Mapping,
    /// `Globals: Function: Timeout`, unresolved.
    global_timeout: Option<Value>,
    /// `Globals: Function: MemorySize`, unresolved.
    global_memory_size: Option<Value>,
    /// The `Conditions` section, parsed: a resource under a condition that does not hold
    /// for the parameters' values is not created, as CloudFormation would not create it.
    conditions: BTreeMap<String, Condition>,
}

/// A condition function over parameters, as the `Conditions` section writes it.
#[derive(Clone, Debug)]
enum Condition {
    Equals(Operand, Operand),
    Not(Box<Condition>),
    And(Vec<Condition>),
    Or(Vec<Condition>),
    /// Another condition of the section, by name.
    Named(String),
}

#[derive(Clone, Debug)]
enum Operand {
    Literal(String),
    Parameter(String),
}

/// How deep conditions may name each other: deeper is a cycle, which CloudFormation refuses.
const CONDITION_DEPTH: usize = 16;

impl Condition {
    fn parse(value: &Value, parameters: &[String]) -> Result<Self, LocalError> {
        let (function, argument) = intrinsic(value)
            .ok_or_else(|| LocalError::Template(format!("a condition must be a condition function, not {value:?}")))?;
        let arguments = |count: Option<usize>| {
            let items = argument
                .as_sequence()
                .filter(|items| count.is_none_or(|n| items.len() == n))
                .ok_or_else(|| LocalError::Template(format!("{function} takes a list of {count:?} items")))?;
            items.iter().map(|item| Condition::parse(item, parameters)).collect::<Result<Vec<_>, _>>()
        };
        Ok(match function.as_str() {
            "Equals" => match argument.as_sequence().map(Vec::as_slice) {
                Some([a, b]) => Condition::Equals(Operand::parse(a, parameters)?, Operand::parse(b, parameters)?),
                _ => return Err(LocalError::Template("Equals takes two values".into())),
            },
            "Not" => Condition::Not(Box::new(arguments(Some(1))?.remove(0))),
            "And" => Condition::And(arguments(None)?),
            "Or" => Condition::Or(arguments(None)?),
            "Condition" => Condition::Named(
                argument.as_str().ok_or_else(|| LocalError::Template("Condition takes a name".into()))?.to_owned(),
            ),
            other => {
                return Err(LocalError::Template(format!("the local stack does not evaluate the condition {other}")));
            }
        })
    }
}

impl Operand {
    fn parse(value: &Value, parameters: &[String]) -> Result<Self, LocalError> {
        match intrinsic(value) {
            Some((function, Value::String(name))) if function == "Ref" && parameters.contains(name) => {
                Ok(Operand::Parameter(name.clone()))
            }
            Some((function, target)) if function == "Ref" => {
                Err(LocalError::Template(format!("a condition refers to {target:?}, not a parameter")))
            }
            Some((function, _)) => {
                Err(LocalError::Template(format!("the local stack does not evaluate {function} in a condition")))
            }
            None => scalar(value)
                .map(Operand::Literal)
                .ok_or_else(|| LocalError::Template(format!("cannot compare {value:?} in a condition"))),
        }
    }
}

/// An intrinsic function's name (without `Fn::` or `!`) and its argument, in either form.
fn intrinsic(value: &Value) -> Option<(String, &Value)> {
    match value {
        Value::Tagged(tagged) => Some((tagged.tag.to_string().strip_prefix('!')?.to_owned(), &tagged.value)),
        Value::Mapping(m) if m.len() == 1 => {
            let (key, argument) = m.iter().next()?;
            let key = key.as_str()?;
            (key == "Ref" || key == "Condition" || key.starts_with("Fn::"))
                .then(|| (key.strip_prefix("Fn::").unwrap_or(key).to_owned(), argument))
        }
        _ => None,
    }
}

/// The account the local endpoint plays (moto's default), `AWS::AccountId`.
pub const ACCOUNT: &str = "123456789012";

/// Lambda's timeout for a function whose template sets none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// Lambda's memory for a function whose template sets none.
pub const DEFAULT_MEMORY_SIZE_MB: u32 = 128;

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
                let condition = match body.get("Condition") {
                    Some(Value::String(name)) => Some(name.clone()),
                    Some(other) => {
                        return Err(LocalError::Template(format!("{logical_id}'s Condition {other:?} is not a name")));
                    }
                    None => None,
                };
                Ok(Resource {
                    logical_id: logical_id.to_owned(),
                    kind: kind.to_owned(),
                    properties: body.get("Properties").cloned().unwrap_or(Value::Null),
                    metadata: body.get("Metadata").cloned().unwrap_or(Value::Null),
                    condition,
                })
            })
            .collect::<Result<Vec<_>, LocalError>>()?;
        let declared: Vec<String> = doc
            .get("Parameters")
            .and_then(Value::as_mapping)
            .into_iter()
            .flatten()
            .filter_map(|(name, _)| name.as_str().map(str::to_owned))
            .collect();
        let conditions = doc
            .get("Conditions")
            .and_then(Value::as_mapping)
            .into_iter()
            .flatten()
            .map(|(name, body)| {
                let name =
                    name.as_str().ok_or_else(|| LocalError::Template("a condition's name is not a string".into()))?;
                let condition = Condition::parse(body, &declared).map_err(|e| e.context(name))?;
                Ok((name.to_owned(), condition))
            })
            .collect::<Result<BTreeMap<_, _>, LocalError>>()?;
        let parameters = doc
            .get("Parameters")
            .and_then(Value::as_mapping)
            .into_iter()
            .flatten()
            .filter_map(|(name, p)| Some((name.as_str()?.to_owned(), scalar(p.get("Default")?)?)))
            .collect();
        let outputs = doc
            .get("Outputs")
            .and_then(Value::as_mapping)
            .into_iter()
            .flatten()
            .filter_map(|(name, o)| Some((name.as_str()?.to_owned(), o.get("Value")?.clone())))
            .collect();
        let global_function = doc.get("Globals").and_then(|g| g.get("Function"));
        let global_environment = environment_of(global_function);
        let global_timeout = global_function.and_then(|f| f.get("Timeout")).cloned();
        let global_memory_size = global_function.and_then(|f| f.get("MemorySize")).cloned();
        let template =
            Self { resources, outputs, parameters, global_environment, global_timeout, global_memory_size, conditions };
        for name in template.conditions.keys() {
            template.condition_holds(name, 0).map_err(|e| e.context(name))?;
        }
        for resource in &template.resources {
            if let Some(name) = &resource.condition {
                template.condition_holds(name, 0).map_err(|e| e.context(&resource.logical_id))?;
            }
        }
        Ok(template)
    }

    /// Whether the named condition holds for the parameters' values now.
    fn condition_holds(&self, name: &str, depth: usize) -> Result<bool, LocalError> {
        if depth > CONDITION_DEPTH {
            return Err(LocalError::Template(format!("the condition {name} names itself")));
        }
        let condition =
            self.conditions.get(name).ok_or_else(|| LocalError::Template(format!("no condition {name}")))?;
        self.holds(condition, depth + 1)
    }

    fn holds(&self, condition: &Condition, depth: usize) -> Result<bool, LocalError> {
        let value = |operand: &Operand| match operand {
            Operand::Literal(text) => text.clone(),
            // A parameter without a default or a value is an empty string here; CloudFormation
            // would refuse the deployment, `sam deploy` would ask for it.
            Operand::Parameter(name) => self.parameters.get(name).cloned().unwrap_or_default(),
        };
        Ok(match condition {
            Condition::Equals(a, b) => value(a) == value(b),
            Condition::Not(inner) => !self.holds(inner, depth)?,
            Condition::And(all) => {
                all.iter().map(|c| self.holds(c, depth)).collect::<Result<Vec<_>, _>>()?.iter().all(|h| *h)
            }
            Condition::Or(any) => {
                any.iter().map(|c| self.holds(c, depth)).collect::<Result<Vec<_>, _>>()?.iter().any(|h| *h)
            }
            Condition::Named(name) => self.condition_holds(name, depth)?,
        })
    }

    /// Whether the template creates `resource` for the parameters' values now. Every
    /// condition was evaluated when the template was parsed, so this cannot fail.
    pub fn creates(&self, resource: &Resource) -> bool {
        resource.condition.as_deref().is_none_or(|name| self.condition_holds(name, 0).unwrap_or(false))
    }

    /// Sets parameter values, as `sam deploy --parameter-overrides` would.
    pub fn set_parameter(&mut self, name: &str, value: impl Into<String>) {
        self.parameters.insert(name.to_owned(), value.into());
    }

    /// The resources of a type that the template creates (their condition holds).
    pub fn resources_of_type<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Resource> {
        self.resources.iter().filter(move |r| r.kind == kind && self.creates(r))
    }

    /// The function built from the Cargo binary `binary` (its BuildProperties.Binary).
    pub fn function_by_binary(&self, binary: &str) -> Result<&Resource, LocalError> {
        self.resources_of_type("AWS::Serverless::Function")
            .find(|f| f.binary() == Some(binary))
            .ok_or_else(|| LocalError::Template(format!("no function builds the binary {binary}")))
    }

    /// The value of a parameter: its default, or what `set_parameter` gave it.
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters.get(name).map(String::as_str)
    }

    /// A function's environment variables (Globals first, its own over them), with
    /// intrinsic functions resolved against what was created (`physical`).
    pub fn environment(
        &self,
        function: &Resource,
        physical: &Physical,
        stack: &str,
    ) -> Result<BTreeMap<String, String>, LocalError> {
        let mut variables = self.global_environment.clone();
        variables.extend(environment_of(Some(&function.properties)));
        variables
            .iter()
            .map(|(k, v)| {
                let key =
                    k.as_str().ok_or_else(|| LocalError::Template("an environment name is not a string".into()))?;
                Ok((key.to_owned(), self.resolve(v, physical, stack)?))
            })
            .collect()
    }

    /// When Lambda stops the function: its `Timeout`, else `Globals: Function: Timeout`,
    /// else Lambda's default of 3 s; 1 to 900 seconds, as Lambda accepts.
    pub fn timeout(&self, function: &Resource, physical: &Physical, stack: &str) -> Result<Duration, LocalError> {
        let Some(value) = function.properties.get("Timeout").or(self.global_timeout.as_ref()) else {
            return Ok(DEFAULT_TIMEOUT);
        };
        let text = self.resolve(value, physical, stack)?;
        let seconds = text.parse::<u64>().ok().filter(|s| (1..=900).contains(s)).ok_or_else(|| {
            LocalError::Template(format!("{}: Timeout {text:?} is not a number from 1 to 900", function.logical_id))
        })?;
        Ok(Duration::from_secs(seconds))
    }

    /// A function's memory in MB: its `MemorySize`, else `Globals: Function: MemorySize`,
    /// else Lambda's default of 128; 128 to 10,240, as Lambda accepts.
    pub fn memory_size(&self, function: &Resource, physical: &Physical, stack: &str) -> Result<u32, LocalError> {
        let Some(value) = function.properties.get("MemorySize").or(self.global_memory_size.as_ref()) else {
            return Ok(DEFAULT_MEMORY_SIZE_MB);
        };
        let text = self.resolve(value, physical, stack)?;
        text.parse::<u32>().ok().filter(|m| (128..=10_240).contains(m)).ok_or_else(|| {
            LocalError::Template(format!(
                "{}: MemorySize {text:?} is not a number from 128 to 10240",
                function.logical_id
            ))
        })
    }

    /// Resolves the intrinsic functions the local stack needs to a string: plain scalars,
    /// `Ref` to a resource or parameter, `Fn::GetAtt` of a created resource, and `Sub`
    /// over pseudo parameters, refs and `${X.Attribute}`; short and long forms alike.
    pub fn resolve(&self, value: &Value, physical: &Physical, stack: &str) -> Result<String, LocalError> {
        let reference = |target: &str| {
            physical
                .reference(target)
                .map(str::to_owned)
                .or_else(|| self.parameters.get(target).cloned())
                .or_else(|| pseudo_parameter(target, stack))
                .ok_or_else(|| LocalError::Template(format!("Ref to unknown {target}")))
        };
        let get_att = |id: &str, attribute: &str| {
            physical.attribute(id, attribute).map(str::to_owned).ok_or_else(|| {
                LocalError::Template(format!("GetAtt {id}.{attribute}: the local stack has not created it"))
            })
        };
        // `${Name}` in a Sub is a Ref, `${Name.Attribute}` a GetAtt.
        let sub_variable = |name: &str| match name.split_once('.') {
            Some((id, attribute)) => get_att(id, attribute),
            None => reference(name),
        };
        let get_att_of = |target: &Value| match target {
            Value::String(dotted) => match dotted.split_once('.') {
                Some((id, attribute)) => get_att(id, attribute),
                None => Err(LocalError::Template(format!("GetAtt {dotted:?} names no attribute"))),
            },
            Value::Sequence(pair) => match pair.as_slice() {
                [Value::String(id), Value::String(attribute)] => get_att(id, attribute),
                _ => Err(LocalError::Template(format!("GetAtt takes [resource, attribute], not {pair:?}"))),
            },
            other => Err(LocalError::Template(format!("GetAtt of {other:?}"))),
        };
        match value {
            Value::Tagged(tagged) => match (tagged.tag.to_string().as_str(), &tagged.value) {
                ("!Ref", Value::String(target)) => reference(target),
                ("!Sub", Value::String(text)) => substitute(text, sub_variable),
                ("!GetAtt", target) => get_att_of(target),
                (tag, _) => Err(LocalError::Template(format!("the local stack does not resolve {tag} here"))),
            },
            Value::Mapping(m) if m.len() == 1 => match m.iter().next() {
                Some((Value::String(f), Value::String(target))) if f == "Ref" => reference(target),
                Some((Value::String(f), Value::String(text))) if f == "Fn::Sub" => substitute(text, sub_variable),
                Some((Value::String(f), target)) if f == "Fn::GetAtt" => get_att_of(target),
                _ => Err(LocalError::Template(format!("the local stack does not resolve {value:?}"))),
            },
            other => scalar(other).ok_or_else(|| LocalError::Template(format!("cannot use {other:?} as a string"))),
        }
    }

    /// Resolves a structured property (a RedrivePolicy, an EventPattern) to JSON: every
    /// intrinsic function inside becomes the string it resolves to, the rest is kept.
    pub fn resolve_json(&self, value: &Value, physical: &Physical, stack: &str) -> Result<Json, LocalError> {
        Ok(match value {
            Value::Tagged(_) => Json::String(self.resolve(value, physical, stack)?),
            Value::Mapping(m) if is_intrinsic(m) => Json::String(self.resolve(value, physical, stack)?),
            Value::Mapping(m) => Json::Object(
                m.iter()
                    .map(|(k, v)| {
                        let key =
                            scalar(k).ok_or_else(|| LocalError::Template(format!("a key {k:?} is not a string")))?;
                        Ok((key, self.resolve_json(v, physical, stack)?))
                    })
                    .collect::<Result<_, LocalError>>()?,
            ),
            Value::Sequence(items) => {
                Json::Array(items.iter().map(|v| self.resolve_json(v, physical, stack)).collect::<Result<_, _>>()?)
            }
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Number(n) => serde_json::to_value(n).map_err(|e| LocalError::Template(e.to_string()))?,
            Value::String(s) => Json::String(s.clone()),
        })
    }
}

/// What the endpoint made of the template's resources, as `Ref` and `Fn::GetAtt` see
/// them. Provisioning records each value from the create call's answer (or from a
/// describe call when the resource already existed), never from a guess at its format.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Physical {
    /// Logical id → physical name: a table's, queue's, bus's or rule's name.
    pub names: BTreeMap<String, String>,
    /// Logical id → what `Ref` returns where that is not the name (a queue's URL).
    pub refs: BTreeMap<String, String>,
    /// Logical id → attribute → value, e.g. `EmailQueue` → `Arn` → `arn:aws:sqs:…`.
    pub attributes: BTreeMap<String, BTreeMap<String, String>>,
}

impl Physical {
    /// Records a created resource under its physical name.
    pub fn record(&mut self, logical_id: &str, name: impl Into<String>) {
        self.names.insert(logical_id.to_owned(), name.into());
    }

    /// Records what `Ref` returns for a resource whose Ref is not its name.
    pub fn record_ref(&mut self, logical_id: &str, value: impl Into<String>) {
        self.refs.insert(logical_id.to_owned(), value.into());
    }

    pub fn record_attribute(&mut self, logical_id: &str, attribute: &str, value: impl Into<String>) {
        self.attributes.entry(logical_id.to_owned()).or_default().insert(attribute.to_owned(), value.into());
    }

    /// What `Ref` to the resource returns.
    pub fn reference(&self, logical_id: &str) -> Option<&str> {
        self.refs.get(logical_id).or_else(|| self.names.get(logical_id)).map(String::as_str)
    }

    /// What `Fn::GetAtt` of the resource's attribute returns.
    pub fn attribute(&self, logical_id: &str, attribute: &str) -> Option<&str> {
        self.attributes.get(logical_id)?.get(attribute).map(String::as_str)
    }

    /// The logical id of the resource whose `Arn` is `arn`.
    pub fn by_arn(&self, arn: &str) -> Option<&str> {
        self.attributes.iter().find(|(_, a)| a.get("Arn").is_some_and(|v| v == arn)).map(|(id, _)| id.as_str())
    }
}

/// `{Ref: X}` or `{Fn::…: …}`, as opposed to a mapping of plain properties.
fn is_intrinsic(mapping: &Mapping) -> bool {
    mapping.len() == 1
        && mapping.keys().next().and_then(Value::as_str).is_some_and(|k| k == "Ref" || k.starts_with("Fn::"))
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
        "AWS::AccountId" => Some(ACCOUNT.to_owned()),
        "AWS::URLSuffix" => Some("amazonaws.com".to_owned()),
        "AWS::Partition" => Some("aws".to_owned()),
        _ => None,
    }
}

fn substitute(text: &str, reference: impl Fn(&str) -> Result<String, LocalError>) -> Result<String, LocalError> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').ok_or_else(|| LocalError::Template(format!("unclosed ${{ in {text:?}")))?;
        let variable = &rest[start + 2..start + end];
        match variable.strip_prefix('!') {
            // `${!Literal}` is CloudFormation's escape for a literal `${Literal}`.
            Some(literal) => out.push_str(&format!("${{{literal}}}")),
            None => out.push_str(&reference(variable)?),
        }
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

    fn yaml(text: &str) -> Value {
        serde_norway::from_str(text).unwrap()
    }

    /// What provisioning would record for a table and a queue named after stack `s`.
    fn created() -> Physical {
        let mut p = Physical::default();
        p.record("Table", "s-Table");
        p.record_attribute("Table", "Arn", "arn:aws:dynamodb:us-east-1:123456789012:table/s-Table");
        p.record("Queue", "s-Queue");
        p.record_ref("Queue", "http://localhost/123456789012/s-Queue");
        p.record_attribute("Queue", "Arn", "arn:aws:sqs:us-east-1:123456789012:s-Queue");
        p.record_attribute("Queue", "QueueName", "s-Queue");
        p.record_attribute("Queue", "QueueUrl", "http://localhost/123456789012/s-Queue");
        p
    }

    #[test]
    fn function_environment_merges_globals_and_resolves_refs() {
        let t = Template::parse(TEMPLATE).unwrap();
        let env = t.environment(t.function_by_binary("herald-x").unwrap(), &created(), "s").unwrap();
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
        let err = t.resolve(&yaml("!Ref Nope"), &Physical::default(), "s").unwrap_err();
        assert!(err.to_string().contains("Nope"));
    }

    #[test]
    fn get_att_arn_gives_the_recorded_arn_in_short_and_long_forms() {
        let t = Template::parse(TEMPLATE).unwrap();
        let arn = "arn:aws:sqs:us-east-1:123456789012:s-Queue";
        for form in
            ["!GetAtt Queue.Arn", "!GetAtt [Queue, Arn]", "{Fn::GetAtt: [Queue, Arn]}", "{Fn::GetAtt: Queue.Arn}"]
        {
            assert_eq!(t.resolve(&yaml(form), &created(), "s").unwrap(), arn, "{form}");
        }
        let table = t.resolve(&yaml("!GetAtt Table.Arn"), &created(), "s").unwrap();
        assert_eq!(table, "arn:aws:dynamodb:us-east-1:123456789012:table/s-Table");
    }

    #[test]
    fn get_att_gives_a_queues_name_and_url() {
        let t = Template::parse(TEMPLATE).unwrap();
        assert_eq!(t.resolve(&yaml("!GetAtt Queue.QueueName"), &created(), "s").unwrap(), "s-Queue");
        let url = t.resolve(&yaml("{Fn::GetAtt: [Queue, QueueUrl]}"), &created(), "s").unwrap();
        assert_eq!(url, "http://localhost/123456789012/s-Queue");
    }

    #[test]
    fn a_ref_to_a_queue_gives_its_url_as_cloudformation_does() {
        let t = Template::parse(TEMPLATE).unwrap();
        assert_eq!(t.resolve(&yaml("!Ref Queue"), &created(), "s").unwrap(), "http://localhost/123456789012/s-Queue");
        assert_eq!(t.resolve(&yaml("{Ref: Queue}"), &created(), "s").unwrap(), "http://localhost/123456789012/s-Queue");
    }

    #[test]
    fn get_att_of_something_not_created_is_an_error_naming_it() {
        let t = Template::parse(TEMPLATE).unwrap();
        for form in ["!GetAtt Nope.Arn", "!GetAtt Queue.Nope", "!GetAtt Queue", "{Fn::GetAtt: [Queue]}"] {
            let err = t.resolve(&yaml(form), &created(), "s").unwrap_err().to_string();
            assert!(err.contains("GetAtt"), "{form}: {err}");
        }
    }

    #[test]
    fn sub_resolves_attributes_refs_and_escapes() {
        let t = Template::parse(TEMPLATE).unwrap();
        let text = t.resolve(&yaml(r#"!Sub "${Table.Arn}/index/i ${Queue} ${!Literal}""#), &created(), "s").unwrap();
        assert_eq!(
            text,
            "arn:aws:dynamodb:us-east-1:123456789012:table/s-Table/index/i http://localhost/123456789012/s-Queue ${Literal}"
        );
    }

    #[test]
    fn structured_properties_resolve_to_json_with_intrinsics_inside() {
        let t = Template::parse(TEMPLATE).unwrap();
        let policy = yaml("{deadLetterTargetArn: !GetAtt Queue.Arn, maxReceiveCount: 5}");
        assert_eq!(
            t.resolve_json(&policy, &created(), "s").unwrap(),
            serde_json::json!({"deadLetterTargetArn": "arn:aws:sqs:us-east-1:123456789012:s-Queue", "maxReceiveCount": 5})
        );
        let pattern =
            yaml("{source: [herald], detail-type: [notification.email], detail: {n: [{numeric: ['>', 1.5]}]}}");
        assert_eq!(
            t.resolve_json(&pattern, &created(), "s").unwrap(),
            serde_json::json!({"source": ["herald"], "detail-type": ["notification.email"],
                "detail": {"n": [{"numeric": [">", 1.5]}]}})
        );
        let long = yaml("{q: {Fn::GetAtt: [Queue, QueueName]}, r: {Ref: Table}}");
        assert_eq!(
            t.resolve_json(&long, &created(), "s").unwrap(),
            serde_json::json!({"q": "s-Queue", "r": "s-Table"})
        );
    }

    #[test]
    fn parameters_can_be_read_and_set() {
        let mut t = Template::parse(TEMPLATE).unwrap();
        assert_eq!(t.parameter("Level"), Some("info"));
        assert_eq!(t.parameter("Nope"), None);
        t.set_parameter("Level", "debug");
        assert_eq!(t.resolve(&yaml("!Ref Level"), &Physical::default(), "s").unwrap(), "debug");
    }

    fn timeout_of(text: &str, function: &str) -> Result<Duration, LocalError> {
        let t = Template::parse(text).unwrap();
        let function = t.resources.iter().find(|r| r.logical_id == function).unwrap();
        t.timeout(function, &Physical::default(), "s")
    }

    const TIMEOUTS: &str = r#"
Parameters:
  Slow: {Type: Number, Default: 45}
Globals:
  Function: {Timeout: 10}
Resources:
  Own: {Type: AWS::Serverless::Function, Properties: {Timeout: 30}}
  Inherits: {Type: AWS::Serverless::Function, Properties: {}}
  Parameterised: {Type: AWS::Serverless::Function, Properties: {Timeout: !Ref Slow}}
  TooLong: {Type: AWS::Serverless::Function, Properties: {Timeout: 901}}
"#;

    #[test]
    fn a_functions_own_timeout_comes_before_the_globals() {
        assert_eq!(timeout_of(TIMEOUTS, "Own").unwrap(), Duration::from_secs(30));
        assert_eq!(timeout_of(TIMEOUTS, "Parameterised").unwrap(), Duration::from_secs(45));
    }

    #[test]
    fn a_function_without_a_timeout_takes_the_globals() {
        assert_eq!(timeout_of(TIMEOUTS, "Inherits").unwrap(), Duration::from_secs(10));
    }

    #[test]
    fn without_any_timeout_a_function_gets_lambdas_default_of_3_seconds() {
        let text = "Resources: {F: {Type: AWS::Serverless::Function, Properties: {}}}";
        assert_eq!(timeout_of(text, "F").unwrap(), Duration::from_secs(3));
    }

    #[test]
    fn a_timeout_lambda_would_refuse_is_an_error_naming_the_function() {
        let err = timeout_of(TIMEOUTS, "TooLong").unwrap_err().to_string();
        assert!(err.contains("TooLong") && err.contains("901"), "{err}");
    }

    #[test]
    fn the_real_template_parses_and_names_the_api_function() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/template.yaml");
        let t = Template::load(&path).unwrap();
        assert!(t.function_by_binary("herald-api").is_ok());
        assert!(t.resources_of_type("AWS::DynamoDB::Table").count() >= 2);
    }

    #[test]
    fn the_real_template_declares_a_queue_and_an_sqs_worker_per_channel() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/template.yaml");
        let t = Template::load(&path).unwrap();
        for channel in ["email", "sms", "push", "webhook"] {
            assert!(t.function_by_binary(&format!("herald-worker-{channel}")).is_ok(), "{channel}");
        }
        assert!(t.resources_of_type("AWS::SQS::Queue").count() >= 8);
    }

    const CONDITIONAL: &str = r#"
Parameters:
  Sink: {Type: String, Default: "off", AllowedValues: ["off", "on"]}
  Level: {Type: String, Default: "1"}
Conditions:
  SinkOn: !Equals [!Ref Sink, "on"]
  SinkOff: !Not [!Condition SinkOn]
  Both: {"Fn::And": [{Condition: SinkOn}, {"Fn::Equals": [{Ref: Level}, "2"]}]}
  Either: !Or [!Condition SinkOn, !Equals [!Ref Level, "2"]]
Resources:
  Always: {Type: AWS::SQS::Queue}
  OnlyOn: {Type: AWS::SQS::Queue, Condition: SinkOn}
  OnlyOff: {Type: AWS::SQS::Queue, Condition: SinkOff}
  OnlyBoth: {Type: AWS::SQS::Queue, Condition: Both}
  OnlyEither: {Type: AWS::SQS::Queue, Condition: Either}
"#;

    fn created_queues(t: &Template) -> Vec<&str> {
        t.resources_of_type("AWS::SQS::Queue").map(|r| r.logical_id.as_str()).collect()
    }

    #[test]
    fn a_resource_under_a_condition_is_created_only_while_it_holds() {
        let mut t = Template::parse(CONDITIONAL).unwrap();
        assert_eq!(created_queues(&t), ["Always", "OnlyOff"]);
        t.set_parameter("Sink", "on");
        assert_eq!(created_queues(&t), ["Always", "OnlyOn", "OnlyEither"]);
        t.set_parameter("Level", "2");
        assert_eq!(created_queues(&t), ["Always", "OnlyOn", "OnlyBoth", "OnlyEither"]);
    }

    #[test]
    fn a_resource_under_an_undeclared_condition_is_an_error_naming_it() {
        let text = "Resources: {Q: {Type: AWS::SQS::Queue, Condition: Missing}}";
        let err = Template::parse(text).unwrap_err().to_string();
        assert!(err.contains('Q') && err.contains("Missing"), "{err}");
    }

    #[test]
    fn a_condition_naming_itself_is_an_error() {
        let text = "Conditions: {Loop: !Not [!Condition Loop]}\nResources: {}";
        let err = Template::parse(text).unwrap_err().to_string();
        assert!(err.contains("Loop"), "{err}");
    }

    #[test]
    fn a_condition_on_something_not_a_parameter_is_an_error() {
        let text = "Conditions: {C: !Equals [!Ref Table, x]}\nResources: {Table: {Type: AWS::DynamoDB::Table}}";
        let err = Template::parse(text).unwrap_err().to_string();
        assert!(err.contains("Table") && err.contains("not a parameter"), "{err}");
    }

    #[test]
    fn the_real_templates_conditions_evaluate() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/template.yaml");
        let t = Template::load(&path).unwrap();
        assert!(!t.conditions.is_empty());
        assert!(t.resources_of_type("AWS::SNS::Subscription").next().is_none(), "AlarmEmail is empty by default");
    }
}
