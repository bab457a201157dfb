//! What a million deliveries cost in AWS infrastructure (provider fees apart), from what the
//! local stack's run of the path consumed: the requests counted at the SDK clients, the
//! DynamoDB capacity those requests consume as DynamoDB reckons it from item sizes, the
//! events put, and each function's invocations and handler time at its template
//! `MemorySize`. Beside it, what Amazon Pinpoint charged for the same messages.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use herald_aws::{RequestCounter, request_counter};
use herald_core::delivery::{DeliveryStatus, DeliveryStore};
use serde_json::{Value, json};

/// On-demand prices in us-east-1, as published on 2026-12-01 (the AWS pricing pages;
/// DynamoDB's after the on-demand throughput cut of 2024-11-01).
pub mod prices {
    /// DynamoDB on-demand, per write request unit (1 KB; twice for a transactional write).
    /// <https://aws.amazon.com/dynamodb/pricing/on-demand/>: $0.625 per million WRU.
    pub const DYNAMODB_WRITE_UNIT: f64 = 0.625 / 1e6;
    /// DynamoDB on-demand, per read request unit (4 KB strongly consistent; half for an
    /// eventually consistent read, twice for a transactional one): $0.125 per million RRU.
    pub const DYNAMODB_READ_UNIT: f64 = 0.125 / 1e6;
    /// SQS standard queues, per request (each 64 KB chunk of a payload is a request), after
    /// the free tier. <https://aws.amazon.com/sqs/pricing/>: $0.40 per million.
    pub const SQS_REQUEST: f64 = 0.40 / 1e6;
    /// EventBridge custom events put on a bus (each 64 KB chunk is an event).
    /// <https://aws.amazon.com/eventbridge/pricing/>: $1.00 per million.
    pub const EVENTBRIDGE_EVENT: f64 = 1.00 / 1e6;
    /// Lambda on arm64, per request. <https://aws.amazon.com/lambda/pricing/>: $0.20 per million.
    pub const LAMBDA_REQUEST: f64 = 0.20 / 1e6;
    /// Lambda on arm64, per GB-second of duration (the first tier, 7.5 billion GB-s a month).
    pub const LAMBDA_ARM_GB_SECOND: f64 = 0.000_013_333_4;
    /// API Gateway HTTP APIs, per request (the first 300 million a month).
    /// <https://aws.amazon.com/api-gateway/pricing/>: $1.00 per million.
    pub const HTTP_API_REQUEST: f64 = 1.00 / 1e6;
    /// Amazon Pinpoint, per mobile push notification: $1.00 per million (its pricing page;
    /// the monthly charge per targeted endpoint comes on top and is left out here).
    pub const PINPOINT_PUSH: f64 = 1.00 / 1e6;
    /// Amazon Pinpoint, per email: $0.10 per 1,000 (sending included).
    pub const PINPOINT_EMAIL: f64 = 0.10 / 1e3;
}

/// The deliveries table: its `by-notification-keys` index projects the keys, so each delivery
/// put writes an index entry too.
const DELIVERIES_TABLE: &str = "DeliveriesTable";

fn report(name: &str, value: f64, unit: &str) {
    println!("{name}: {value:.2} {unit}");
}

/// The bill of one run, in dollars, by what it pays for.
#[derive(Debug, Default)]
pub struct Bill {
    pub dynamodb_writes: f64,
    pub dynamodb_reads: f64,
    pub sqs: f64,
    pub eventbridge: f64,
    pub lambda: f64,
    pub http_api: f64,
}

impl Bill {
    pub fn total(&self) -> f64 {
        self.dynamodb_writes + self.dynamodb_reads + self.sqs + self.eventbridge + self.lambda + self.http_api
    }
}

/// Every table's largest item now, by logical id and by physical name: what an update
/// or delete (whose request does not carry its item) is charged as having written.
async fn largest_items(
    clients: &herald_aws::Clients,
    names: &BTreeMap<String, String>,
) -> (BTreeMap<String, usize>, BTreeMap<String, String>) {
    let mut largest = BTreeMap::new();
    let mut logical = BTreeMap::new();
    for (id, name) in names {
        let Ok(items) = clients
            .dynamodb()
            .scan()
            .table_name(name)
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
        else {
            continue; // not a table
        };
        let bytes = items.iter().map(herald_aws::dynamo::item_size).max().unwrap_or(0);
        largest.insert(name.clone(), bytes);
        logical.insert(name.clone(), id.clone());
    }
    (largest, logical)
}

/// Prices what `counter` and Lambda's meter saw on `stack`'s resources.
async fn bill(stack: &herald_local::LocalStack, counter: &RequestCounter, uncounted: &herald_aws::Clients) -> Bill {
    let (largest, logical) = largest_items(uncounted, stack.physical_names()).await;
    let capacity = counter.capacity(&largest);
    let put = counter.items_put();
    let mut bill = Bill::default();
    for (table, used) in &capacity {
        let id = logical.get(table).map_or(table.as_str(), String::as_str);
        let mut write_units = used.write_units;
        if id == DELIVERIES_TABLE {
            write_units += request_counter::index_write_units(put.get(table).copied().unwrap_or(0));
        }
        eprintln!("  {id}: {write_units:.1} write units, {:.1} read units", used.read_units);
        bill.dynamodb_writes += write_units * prices::DYNAMODB_WRITE_UNIT;
        bill.dynamodb_reads += used.read_units * prices::DYNAMODB_READ_UNIT;
    }
    // Each event the bus routes reaches one queue: one SendMessage there. Pollers' idle
    // waits are left out: Lambda's pollers make them whatever the traffic.
    let sqs_requests = counter.count("SQS", &[]) - counter.empty_receives() + counter.events_put();
    bill.sqs = sqs_requests as f64 * prices::SQS_REQUEST;
    bill.eventbridge = counter.events_put() as f64 * prices::EVENTBRIDGE_EVENT;
    for (function, billed) in herald_local::billed::snapshot() {
        let memory_gb =
            f64::from(stack.deployment.memory_size(&function).expect("a function of the template")) / 1024.0;
        let seconds = billed.duration.as_secs_f64();
        eprintln!("  {function}: {} invocations, {seconds:.2} s at {memory_gb} GB", billed.invocations);
        bill.lambda +=
            billed.invocations as f64 * prices::LAMBDA_REQUEST + seconds * memory_gb * prices::LAMBDA_ARM_GB_SECOND;
        if function == herald_local::gateway::API_FUNCTION {
            bill.http_api += billed.invocations as f64 * prices::HTTP_API_REQUEST;
        }
    }
    bill
}

/// The channel a cost run sends on, and what a user needs for it.
#[derive(Clone, Copy)]
pub enum Channel {
    Push,
    Email,
}

impl Channel {
    fn name(self) -> &'static str {
        match self {
            Channel::Push => "push",
            Channel::Email => "email",
        }
    }

    fn profile(self, run: &str, user: usize) -> Value {
        match self {
            // moto matches device tokens across stacks: each run's are its own.
            Channel::Push => json!({"device_tokens": [{"token": format!("{run}{user:056x}"), "platform": "apns"}]}),
            Channel::Email => json!({"email": format!("u{user}@example.com")}),
        }
    }
}

/// `infra cost per million <channel> usd`: 40 notifications of 10 users each through the
/// whole local stack (API, bus, queue, worker, provider on moto), every AWS request of the
/// stack counted, the waiting done with clients of its own (not counted).
pub async fn cost_per_million(channel: Channel) -> f64 {
    const USERS: usize = 400;
    const PER_NOTIFICATION: usize = 10;
    let counter = RequestCounter::default();
    let stack = crate::local_stack(Some(counter.clone())).await;
    let uncounted = herald_aws::Clients::new(&herald_aws::local_sdk_config(&stack.endpoint).await);
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", stack.api_url);
    let run = &uuid::Uuid::new_v4().simple().to_string()[..8];
    for u in 0..USERS {
        let answer = http
            .put(url(&format!("/v1/users/c{u}")))
            .bearer_auth(&stack.admin_key)
            .json(&channel.profile(run, u))
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success(), "the profile is stored: {}", answer.status());
    }
    let deliveries = herald_aws::DynamoDeliveryStore::new(uncounted.dynamodb(), &stack.api_config.deliveries_table);
    // Let the profile writes' own work (relay, segmenter) finish before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    counter.reset();
    herald_local::billed::reset();

    let mut ids = Vec::new();
    for n in 0..USERS / PER_NOTIFICATION {
        let recipients: Vec<Value> =
            (0..PER_NOTIFICATION).map(|i| json!({"user_id": format!("c{}", n * PER_NOTIFICATION + i)})).collect();
        let body = json!({"type": "news", "recipients": recipients, "channels": [channel.name()],
            "content": {channel.name(): {"subject": "News", "body": "Hello {{ name }}"}}, "params": {"name": "you"}});
        ids.push(crate::notify(&http, &stack, &body).await);
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    for id in &ids {
        loop {
            let list = deliveries.list(id).await.unwrap();
            if list.len() == PER_NOTIFICATION && list.iter().all(|d| d.status == DeliveryStatus::Sent) {
                break;
            }
            assert!(Instant::now() < deadline, "the {} deliveries did not finish", channel.name());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let total = (ids.len() * PER_NOTIFICATION) as f64;
    eprintln!("{} cost run, per {total} deliveries:", channel.name());
    for ((service, operation), n) in counter.snapshot() {
        eprintln!("  {service} {operation}: {n}");
    }
    let bill = bill(&stack, &counter, &uncounted).await;
    let per_million = |dollars: f64| dollars / total * 1e6;
    eprintln!(
        "  per million: dynamodb writes ${:.3}, reads ${:.3}, sqs ${:.3}, eventbridge ${:.3}, lambda ${:.3}, http api ${:.3}",
        per_million(bill.dynamodb_writes),
        per_million(bill.dynamodb_reads),
        per_million(bill.sqs),
        per_million(bill.eventbridge),
        per_million(bill.lambda),
        per_million(bill.http_api)
    );
    let name = channel.name();
    report(&format!("infra cost per million {name} usd"), per_million(bill.total()), "USD");
    report(
        &format!("dynamodb write units per {name} delivery"),
        bill.dynamodb_writes / prices::DYNAMODB_WRITE_UNIT / total,
        "WRU",
    );
    let pinpoint = match channel {
        Channel::Push => prices::PINPOINT_PUSH,
        Channel::Email => prices::PINPOINT_EMAIL,
    };
    report(&format!("pinpoint cost per million {name} usd"), pinpoint * 1e6, "USD");
    stack.stop().await;
    per_million(bill.total())
}

/// Both channels' figures.
pub async fn infra_costs() {
    cost_per_million(Channel::Push).await;
    cost_per_million(Channel::Email).await;
}
