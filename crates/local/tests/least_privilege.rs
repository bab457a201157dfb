//! Least privilege, proven: every function's policy in infra/template.yaml grants exactly
//! the AWS actions its code calls, on the resources it calls them on. `CALLS` is the table
//! of those calls, read from each function's wiring (`from_aws`/`connect`) and the SDK
//! operations of the adapters it builds (crates/aws). Moto does not enforce IAM, so this
//! test, not the end-to-end suite, is what says the policies fit the code.
//!
//! Resources are written as the template names them: `Table` for `!GetAtt Table.Arn` (and
//! `${Table.Arn}` inside a `!Sub`), `Table.StreamArn` for other attributes, a `!Sub`'s
//! text otherwise. SAM's policy templates are expanded as SAM documents them
//! (samtranslator/policy_templates_data/policy_templates.json). Not checked here: what
//! SAM adds for the event sources of its own roles (AWSLambdaSQSQueueExecutionRole) and
//! the logs policy (AWSLambdaBasicExecutionRole); the platform, not the code, uses them.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use serde_norway::Value;

/// (resource, actions): what a function calls on a resource.
type Calls = &'static [(&'static str, &'static [&'static str])];

/// Every channel worker: the pipeline's stores (crates/worker `from_aws`), the campaign
/// counters and its own queue. DescribeTable is the cold-start warm-up (`Clients::warm_up`).
const WORKER_STORES: Calls = &[
    // claim_all: a transaction of UpdateItems (deliveries and rate-limit counts);
    // current_claim: GetItem; finish: UpdateItem.
    ("DeliveriesTable", &["dynamodb:DescribeTable", "dynamodb:GetItem", "dynamodb:UpdateItem"]),
    ("RateLimitsTable", &["dynamodb:UpdateItem"]),
    // get_many / suppressed_among: batched reads only; workers never write them.
    ("PreferencesTable", &["dynamodb:BatchGetItem"]),
    ("SuppressionsTable", &["dynamodb:BatchGetItem"]),
    ("TemplatesTable", &["dynamodb:GetItem"]),
    // DynamoCampaignStore: get (GetItem), add_outcomes (UpdateItem).
    ("JobsTable", &["dynamodb:GetItem", "dynamodb:UpdateItem"]),
];

const EMAIL_WORKER: Calls = &[
    ("EmailQueue", &["sqs:SendMessage"]),
    // SesEmailSender: SendEmail from the sender's identity, in any region the worker
    // fails over to (SECONDARY_PROVIDER_REGION), through the feedback configuration set
    // in the stack's region (SES authorizes the send on both).
    ("arn:${AWS::Partition}:ses:*:${AWS::AccountId}:identity/${SenderAddress}", &["ses:SendEmail"]),
    (
        "arn:${AWS::Partition}:ses:${AWS::Region}:${AWS::AccountId}:configuration-set/${FeedbackConfigurationSet}",
        &["ses:SendEmail"],
    ),
    // SecretsManagerKeyRings at init (`from_aws`): the tracking keys sign links.
    ("TrackingKeysSecret", &["secretsmanager:GetSecretValue"]),
];

const SMS_WORKER: Calls = &[
    ("SmsQueue", &["sqs:SendMessage"]),
    // SnsSmsSender: Publish to a phone number, which has no ARN.
    ("*", &["sns:Publish"]),
];

const PUSH_WORKER: Calls = &[
    ("PushQueue", &["sqs:SendMessage"]),
    // SnsPushSender: an endpoint per token on the platform applications, then Publish to
    // it; a disabled endpoint's attributes are read.
    ("arn:${AWS::Partition}:sns:*:${AWS::AccountId}:app/*", &["sns:CreatePlatformEndpoint"]),
    ("arn:${AWS::Partition}:sns:*:${AWS::AccountId}:endpoint/*", &["sns:GetEndpointAttributes", "sns:Publish"]),
    // Disabled tokens leave the profile (ProfileService: load, then a versioned put whose
    // outbox the relay publishes).
    ("ProfilesTable", &["dynamodb:GetItem", "dynamodb:PutItem"]),
];

/// The webhook worker calls user-chosen URLs, never AWS, beyond the stores and its signing
/// keys (read at init).
const WEBHOOK_WORKER: Calls =
    &[("WebhookQueue", &["sqs:SendMessage"]), ("WebhookSigningKeysSecret", &["secretsmanager:GetSecretValue"])];

const SEGMENTER: Calls = &[
    ("SegmenterQueue", &["sqs:SendMessage"]),
    // load, scan_page; membership transactions check the profile's version.
    ("ProfilesTable", &["dynamodb:ConditionCheckItem", "dynamodb:GetItem", "dynamodb:Scan"]),
    // Engagement recorded (DynamoActivityStore::record: Puts and Updates in a transaction).
    (
        "ActivityTable",
        &[
            "dynamodb:BatchGetItem",
            "dynamodb:ConditionCheckItem",
            "dynamodb:GetItem",
            "dynamodb:PutItem",
            "dynamodb:UpdateItem",
        ],
    ),
    ("SegmentsTable", &["dynamodb:GetItem", "dynamodb:Scan", "dynamodb:UpdateItem"]),
    (
        "MembersTable",
        &[
            "dynamodb:BatchGetItem",
            "dynamodb:BatchWriteItem",
            "dynamodb:DeleteItem",
            "dynamodb:DescribeTable",
            "dynamodb:GetItem",
            "dynamodb:PutItem",
            "dynamodb:Query",
            "dynamodb:UpdateItem",
        ],
    ),
    ("EventBus", &["events:PutEvents"]),
];

const IMPORTER: Calls = &[
    // load, load_many, save_many (a transaction of versioned Puts).
    ("ProfilesTable", &["dynamodb:BatchGetItem", "dynamodb:GetItem", "dynamodb:PutItem"]),
    // DynamoImportJobStore: create/save (PutItem), get (GetItem).
    ("JobsTable", &["dynamodb:DescribeTable", "dynamodb:GetItem", "dynamodb:PutItem"]),
    ("ImporterQueue", &["sqs:SendMessage"]),
    ("EventBus", &["events:PutEvents"]),
    // S3ImportFiles: reads the file; the errors object is a multipart upload of parts
    // (PutObject covers the upload calls) that are deleted after.
    ("ImportsBucket/imports/*", &["s3:AbortMultipartUpload", "s3:DeleteObject", "s3:GetObject", "s3:PutObject"]),
    ("ImportsBucket", &["s3:ListBucket"]),
];

const DISPATCHER: Calls = &[
    ("ProfilesTable", &["dynamodb:BatchGetItem"]),
    ("ActivityTable", &["dynamodb:BatchGetItem"]),
    ("MembersTable", &["dynamodb:DescribeTable", "dynamodb:Query"]),
    // DynamoCampaignStore: get, and the page / settle updates.
    ("JobsTable", &["dynamodb:GetItem", "dynamodb:UpdateItem"]),
    // The reconciler recounts a campaign's deliveries: their keys from the index, then
    // their items.
    ("DeliveriesTable/index/by-notification-keys", &["dynamodb:Query"]),
    ("DeliveriesTable", &["dynamodb:BatchGetItem"]),
    ("DispatchQueue", &["sqs:SendMessage"]),
    ("EmailQueue", &["sqs:SendMessage"]),
    ("SmsQueue", &["sqs:SendMessage"]),
    ("PushQueue", &["sqs:SendMessage"]),
    ("WebhookQueue", &["sqs:SendMessage"]),
];

const RELAY: Calls = &[
    ("EventBus", &["events:PutEvents"]),
    // Not the code's but its stream event sources' (Lambda reads the streams with the
    // function's role and leaves failed positions on the failure queue).
    (
        "ProfilesTable.StreamArn",
        &["dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator", "dynamodb:ListStreams"],
    ),
    (
        "MembersTable.StreamArn",
        &["dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator", "dynamodb:ListStreams"],
    ),
    (
        "DeliveriesTable.StreamArn",
        &["dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator", "dynamodb:ListStreams"],
    ),
    ("RelayFailureQueue", &["sqs:SendMessage"]),
];

const FEEDBACK: Calls = &[
    // FeedbackService: advance (a conditional UpdateItem), get when it did not move; the
    // warm-up.
    ("DeliveriesTable", &["dynamodb:DescribeTable", "dynamodb:GetItem", "dynamodb:UpdateItem"]),
    // apply_receipt: find_by_provider_message (a Query of the receipt index).
    ("DeliveriesTable/index/by-receipt-keys", &["dynamodb:Query"]),
    // suppress (PutItem), count_soft_bounce (UpdateItem).
    ("SuppressionsTable", &["dynamodb:PutItem", "dynamodb:UpdateItem"]),
];

const API: Calls = &[
    // ProfileService: load, load_many, save (a versioned put); the warm-up.
    ("ProfilesTable", &["dynamodb:BatchGetItem", "dynamodb:DescribeTable", "dynamodb:GetItem", "dynamodb:PutItem"]),
    ("ApiKeysTable", &["dynamodb:DescribeTable", "dynamodb:GetItem"]),
    ("EventBus", &["events:DescribeEventBus", "events:PutEvents"]),
    // create (BatchWriteItem), create_if_absent (PutItem), get, advance (UpdateItem);
    // a notification's deliveries are listed by the index's keys, then read (BatchGetItem).
    (
        "DeliveriesTable",
        &[
            "dynamodb:BatchGetItem",
            "dynamodb:BatchWriteItem",
            "dynamodb:GetItem",
            "dynamodb:PutItem",
            "dynamodb:UpdateItem",
        ],
    ),
    ("DeliveriesTable/index/by-notification-keys", &["dynamodb:Query"]),
    ("NotificationsTable", &["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"]),
    ("TemplatesTable", &["dynamodb:GetItem", "dynamodb:PutItem"]),
    ("PreferencesTable", &["dynamodb:GetItem", "dynamodb:PutItem"]),
    // SuppressionService: get, suppress, remove, list (a Scan).
    ("SuppressionsTable", &["dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Scan"]),
    ("ActivityTable", &["dynamodb:ConditionCheckItem", "dynamodb:PutItem", "dynamodb:UpdateItem"]),
    // A deleted segment leaves a tombstone (a Put), never a DeleteItem.
    ("SegmentsTable", &["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Scan", "dynamodb:UpdateItem"]),
    ("MembersTable", &["dynamodb:BatchGetItem", "dynamodb:BatchWriteItem", "dynamodb:GetItem", "dynamodb:Query"]),
    ("DispatchQueue", &["sqs:SendMessage"]),
    // Import jobs are read and listed (by_kind); campaigns created, read and cancelled.
    ("JobsTable", &["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"]),
    ("JobsTable/index/by_kind", &["dynamodb:Query"]),
    // SecretsManagerKeyRings at init (`Services::from_aws`): tracking keys verify links,
    // the webhook keys' public halves are published.
    ("TrackingKeysSecret", &["secretsmanager:GetSecretValue"]),
    ("WebhookSigningKeysSecret", &["secretsmanager:GetSecretValue"]),
];

/// Function (logical id) → the calls of its code.
fn table() -> BTreeMap<&'static str, Vec<Calls>> {
    BTreeMap::from([
        ("EmailWorkerFunction", vec![WORKER_STORES, EMAIL_WORKER]),
        ("SmsWorkerFunction", vec![WORKER_STORES, SMS_WORKER]),
        ("PushWorkerFunction", vec![WORKER_STORES, PUSH_WORKER]),
        ("WebhookWorkerFunction", vec![WORKER_STORES, WEBHOOK_WORKER]),
        ("SegmenterFunction", vec![SEGMENTER]),
        ("ImporterFunction", vec![IMPORTER]),
        ("DispatcherFunction", vec![DISPATCHER]),
        ("RelayFunction", vec![RELAY]),
        ("FeedbackFunction", vec![FEEDBACK]),
        ("ApiFunction", vec![API]),
    ])
}

/// An action on a resource.
type Grant = (String, String);

fn needed(function: &str) -> BTreeSet<Grant> {
    table()[function].iter().flat_map(|calls| grants_of(calls)).collect()
}

fn template() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/template.yaml");
    serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn resource<'a>(template: &'a Value, id: &str) -> &'a Value {
    template["Resources"].get(id).unwrap_or_else(|| panic!("no resource {id}"))
}

/// A resource reference as `CALLS` writes it.
fn name(value: &Value) -> String {
    let get_att = |dotted: &str| match dotted.strip_suffix(".Arn") {
        Some(id) => id.to_owned(),
        None => dotted.to_owned(),
    };
    match value {
        Value::String(s) => s.clone(),
        Value::Tagged(t) => match (t.tag.to_string().as_str(), &t.value) {
            ("!GetAtt", Value::String(dotted)) => get_att(dotted),
            ("!Ref", Value::String(id)) => id.clone(),
            ("!Sub", Value::String(text)) => {
                // `${X.Arn}` is X's ARN: written as X, the rest of the text kept.
                let mut out = text.clone();
                while let Some(start) = out.find("${") {
                    let end = start + out[start..].find('}').unwrap();
                    let Some(id) = out[start + 2..end].strip_suffix(".Arn").map(str::to_owned) else { break };
                    out.replace_range(start..=end, &id);
                }
                out
            }
            (tag, v) => panic!("a resource as {tag} {v:?}: teach this test to read it"),
        },
        other => panic!("a resource as {other:?}: teach this test to read it"),
    }
}

fn strings(value: &Value) -> Vec<&Value> {
    match value {
        Value::Sequence(items) => items.iter().collect(),
        one => vec![one],
    }
}

fn statement_grants(statement: &Value, grants: &mut BTreeSet<Grant>) {
    assert_eq!(statement["Effect"].as_str(), Some("Allow"), "only Allow statements are read: {statement:?}");
    assert!(statement.get("NotAction").is_none() && statement.get("NotResource").is_none(), "{statement:?}");
    for action in strings(&statement["Action"]) {
        let action = action.as_str().expect("an action is a string");
        for resource in strings(&statement["Resource"]) {
            grants.insert((action.to_owned(), name(resource)));
        }
    }
}

/// A SAM policy template's statement, as SAM expands it (policy_templates.json).
fn sam_policy_template(template_name: &str, parameters: &Value, grants: &mut BTreeSet<Grant>) {
    let parameter = |key: &str| {
        let value = parameters.get(key).unwrap_or_else(|| panic!("{template_name} without {key}"));
        // The templates take names (`!Ref Table`, `!GetAtt Queue.QueueName`): the resource.
        let name = name(value);
        name.strip_suffix(".QueueName").map(str::to_owned).unwrap_or(name)
    };
    let mut add = |actions: &[&str], resources: &[String]| {
        for action in actions {
            for resource in resources {
                grants.insert((action.to_string(), resource.clone()));
            }
        }
    };
    match template_name {
        // `sqs:SendMessage*` names SendMessage only: IAM authorises SendMessageBatch's
        // entries as SendMessage.
        "SQSSendMessagePolicy" => add(&["sqs:SendMessage"], &[parameter("QueueName")]),
        "EventBridgePutEventsPolicy" => add(&["events:PutEvents"], &[parameter("EventBusName")]),
        "DynamoDBReadPolicy" | "DynamoDBCrudPolicy" => {
            let table = parameter("TableName");
            let read: &[&str] = &[
                "dynamodb:GetItem",
                "dynamodb:Scan",
                "dynamodb:Query",
                "dynamodb:BatchGetItem",
                "dynamodb:DescribeTable",
            ];
            let write: &[&str] = &[
                "dynamodb:DeleteItem",
                "dynamodb:PutItem",
                "dynamodb:UpdateItem",
                "dynamodb:BatchWriteItem",
                "dynamodb:ConditionCheckItem",
            ];
            let resources = [table.clone(), format!("{table}/index/*")];
            add(read, &resources);
            if template_name == "DynamoDBCrudPolicy" {
                add(write, &resources);
            }
        }
        other => panic!("the SAM policy template {other} is not expanded here: add it from SAM's documentation"),
    }
}

/// What a function's policies grant: its inline statements and expanded SAM policy
/// templates, or its own role's policies.
fn granted(template: &Value, function: &str) -> BTreeSet<Grant> {
    let properties = &resource(template, function)["Properties"];
    let mut grants = BTreeSet::new();
    if let Some(role) = properties.get("Role") {
        return role_grants(template, &name(role));
    }
    for policy in strings(properties.get("Policies").unwrap_or(&Value::Sequence(vec![]))) {
        match policy {
            Value::Mapping(m) if m.contains_key("Statement") => {
                for statement in strings(&policy["Statement"]) {
                    statement_grants(statement, &mut grants);
                }
            }
            Value::Mapping(m) if m.len() == 1 => {
                let (key, parameters) = m.iter().next().unwrap();
                sam_policy_template(key.as_str().unwrap(), parameters, &mut grants);
            }
            other => panic!("{function}: a managed policy or unreadable entry {other:?}"),
        }
    }
    grants
}

/// What a role's inline policies grant; it attaches no managed policy beyond Lambda's logs.
fn role_grants(template: &Value, role_id: &str) -> BTreeSet<Grant> {
    let role = &resource(template, role_id)["Properties"];
    for managed in role.get("ManagedPolicyArns").map(strings).unwrap_or_default() {
        let arn = name(managed);
        assert!(arn.ends_with("AWSLambdaBasicExecutionRole"), "{role_id} attaches {arn}");
    }
    let mut grants = BTreeSet::new();
    for policy in strings(&role["Policies"]) {
        for statement in strings(&policy["PolicyDocument"]["Statement"]) {
            statement_grants(statement, &mut grants);
        }
    }
    grants
}

fn functions(template: &Value) -> Vec<String> {
    template["Resources"]
        .as_mapping()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["Type"].as_str() == Some("AWS::Serverless::Function"))
        .map(|(id, _)| id.as_str().unwrap().to_owned())
        .collect()
}

fn show(grants: &BTreeSet<Grant>) -> String {
    grants.iter().map(|(a, r)| format!("\n  {a} on {r}")).collect()
}

#[test]
fn the_table_names_every_function_of_the_template() {
    let template = template();
    let in_template: BTreeSet<String> = functions(&template).into_iter().collect();
    let in_table: BTreeSet<String> = table().keys().map(|k| k.to_string()).collect();
    assert_eq!(in_template, in_table);
}

#[test]
fn every_call_a_functions_code_makes_is_granted_on_its_resource() {
    let template = template();
    let mut missing = String::new();
    for function in functions(&template) {
        let lacking: BTreeSet<Grant> = needed(&function).difference(&granted(&template, &function)).cloned().collect();
        if !lacking.is_empty() {
            missing.push_str(&format!("\n{function} would be refused:{}", show(&lacking)));
        }
    }
    assert!(missing.is_empty(), "calls the code makes that the template does not grant:{missing}");
}

#[test]
fn no_function_is_granted_what_its_code_does_not_call() {
    let template = template();
    let mut extra = String::new();
    for function in functions(&template) {
        let beyond: BTreeSet<Grant> = granted(&template, &function).difference(&needed(&function)).cloned().collect();
        if !beyond.is_empty() {
            extra.push_str(&format!("\n{function} is granted more than it calls:{}", show(&beyond)));
        }
    }
    assert!(extra.is_empty(), "grants beyond the table of calls:{extra}");
}

/// The bucket's ARN as the template spells it from its `BucketName`.
fn bucket_arn(template: &Value, bucket: &str) -> String {
    let bucket_name = resource(template, bucket)["Properties"]
        .get("BucketName")
        .unwrap_or_else(|| panic!("{bucket} has no BucketName: a queue policy cannot name a generated one"));
    let bucket_name = match bucket_name {
        Value::Tagged(t) if t.tag == "!Ref" => format!("${{{}}}", t.value.as_str().unwrap()),
        Value::Tagged(t) if t.tag == "!Sub" => t.value.as_str().unwrap().to_owned(),
        other => other.as_str().unwrap().to_owned(),
    };
    format!("arn:${{AWS::Partition}}:s3:::{bucket_name}")
}

#[test]
fn the_importer_queue_accepts_notifications_only_from_the_imports_bucket() {
    let template = template();
    let expected = bucket_arn(&template, "ImportsBucket");
    let policy = &resource(&template, "ImporterQueuePolicy")["Properties"]["PolicyDocument"];
    let statements = strings(&policy["Statement"]);
    assert!(!statements.is_empty());
    for statement in statements {
        assert_eq!(statement["Effect"].as_str(), Some("Allow"));
        assert_eq!(statement["Principal"]["Service"].as_str(), Some("s3.amazonaws.com"), "only S3 may send");
        assert_eq!(name(&statement["Action"]), "sqs:SendMessage");
        assert_eq!(name(&statement["Resource"]), "ImporterQueue");
        let condition = &statement["Condition"];
        assert_eq!(condition.as_mapping().map(|m| m.len()), Some(2), "ArnEquals and StringEquals only: {condition:?}");
        assert_eq!(name(&condition["ArnEquals"]["aws:SourceArn"]), expected, "the source is the imports bucket");
        assert_eq!(name(&condition["StringEquals"]["aws:SourceAccount"]), "AWS::AccountId", "of this account");
    }
}

fn grants_of(calls: Calls) -> BTreeSet<Grant> {
    calls.iter().flat_map(|(resource, actions)| actions.iter().map(|a| (a.to_string(), resource.to_string()))).collect()
}

/// The one service a role may be assumed by.
fn trusted_service(template: &Value, role_id: &str) -> String {
    let statements = strings(&resource(template, role_id)["Properties"]["AssumeRolePolicyDocument"]["Statement"]);
    assert_eq!(statements.len(), 1, "{role_id}: {statements:?}");
    statements[0]["Principal"]["Service"].as_str().unwrap().to_owned()
}

#[test]
fn the_event_archive_rule_may_only_put_records_on_the_archive_stream() {
    let template = template();
    assert_eq!(trusted_service(&template, "EventArchiveRuleRole"), "events.amazonaws.com");
    assert_eq!(
        show(&role_grants(&template, "EventArchiveRuleRole")),
        show(&grants_of(&[("EventArchiveDeliveryStream", &["firehose:PutRecord", "firehose:PutRecordBatch"])]))
    );
}

#[test]
fn the_event_archive_stream_may_only_write_the_archive_bucket_and_its_error_log() {
    let template = template();
    assert_eq!(trusted_service(&template, "EventArchiveDeliveryRole"), "firehose.amazonaws.com");
    // Firehose assumes it for this account only (AWS's confused-deputy guard for Firehose).
    let trust = &resource(&template, "EventArchiveDeliveryRole")["Properties"]["AssumeRolePolicyDocument"];
    assert_eq!(name(&trust["Statement"][0]["Condition"]["StringEquals"]["sts:ExternalId"]), "AWS::AccountId");
    let expected = grants_of(&[
        ("EventArchiveBucket", &["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"]),
        ("EventArchiveBucket/*", &["s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload"]),
        ("EventArchiveLogGroup:log-stream:*", &["logs:PutLogEvents"]),
    ]);
    assert_eq!(show(&role_grants(&template, "EventArchiveDeliveryRole")), show(&expected));
}

#[test]
fn sns_may_only_write_the_sms_delivery_status_log_groups_and_only_they_invoke_the_feedback_function() {
    let template = template();
    assert_eq!(trusted_service(&template, "SmsDeliveryStatusRole"), "sns.amazonaws.com");
    const LOGS: &[&str] = &[
        "logs:CreateLogGroup",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "logs:PutMetricFilter",
        "logs:PutRetentionPolicy",
    ];
    const EXPECTED: Calls = &[("SmsDeliveryLogGroup", LOGS), ("SmsFailureLogGroup", LOGS)];
    let expected = EXPECTED;
    assert_eq!(show(&role_grants(&template, "SmsDeliveryStatusRole")), show(&grants_of(expected)));
    let permission = &resource(&template, "SmsDeliveryStatusPermission")["Properties"];
    assert_eq!(name(&permission["Principal"]), "logs.amazonaws.com");
    assert_eq!(name(&permission["FunctionName"]), "FeedbackFunction");
    assert!(
        name(&permission["SourceArn"])
            .ends_with(":log-group:sns/${AWS::Region}/${AWS::AccountId}/DirectPublishToPhoneNumber*")
    );
}
