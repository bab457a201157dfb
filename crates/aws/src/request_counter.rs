//! Counts the requests the SDK clients send (every attempt, retries included), by service
//! and operation: how benchmarks prove what a path costs in AWS calls. DynamoDB requests
//! are also weighed in capacity units ([`RequestCounter::capacity`]), from the items each
//! request writes and each answer returns, as DynamoDB's pricing reckons them.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use aws_sdk_dynamodb::config::{
    ConfigBag, Intercept, RuntimeComponents,
    interceptors::{BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef},
};
use aws_smithy_runtime_api::{box_error::BoxError, client::orchestrator::Metadata};
use aws_smithy_types::config_bag::{Storable, StoreReplace};
use serde_json::Value;

/// DynamoDB operations that write.
pub const DYNAMODB_WRITES: [&str; 5] = ["PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"];

/// One write capacity unit (WRU on demand) covers an item of up to 1 KB; larger items
/// take one per KB begun.
pub const WRITE_UNIT_BYTES: usize = 1024;
/// One read capacity unit (RRU on demand) covers a strongly consistent read of up to 4 KB;
/// an eventually consistent one costs half, a transactional one twice.
pub const READ_UNIT_BYTES: usize = 4096;

/// The capacity a table's requests consumed, in on-demand request units.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Capacity {
    pub write_units: f64,
    pub read_units: f64,
}

/// One item a request wrote: its size when the request shows it (a put), none when it
/// does not (an update or delete changes an item the request does not carry).
#[derive(Clone, Debug, PartialEq)]
struct Write {
    bytes: Option<usize>,
    transactional: bool,
}

#[derive(Clone, Debug, Default)]
struct Counts {
    requests: BTreeMap<(String, String), u64>,
    /// Per table: every item written.
    writes: BTreeMap<String, Vec<Write>>,
    /// Per table: read units, known from the answers.
    read_units: BTreeMap<String, f64>,
    /// Events put on buses (PutEvents entries).
    events_put: u64,
    /// ReceiveMessage answers that held no message (a poller's idle wait).
    empty_receives: u64,
}

#[derive(Clone, Debug, Default)]
pub struct RequestCounter(Arc<Mutex<Counts>>);

/// A request's service, operation and JSON body, kept from before its transmission until
/// its answer is read.
#[derive(Clone, Debug)]
struct SentRequest {
    service: String,
    operation: String,
    body: Value,
}

impl Storable for SentRequest {
    type Storer = StoreReplace<Self>;
}

impl RequestCounter {
    /// Requests sent to `service` (as the SDK names it, e.g. `DynamoDB`, `SQS`) for the
    /// given operations, or all of them when `operations` is empty.
    pub fn count(&self, service: &str, operations: &[&str]) -> u64 {
        let counts = self.0.lock().expect("counter lock");
        counts
            .requests
            .iter()
            .filter(|((s, op), _)| s == service && (operations.is_empty() || operations.contains(&op.as_str())))
            .map(|(_, n)| n)
            .sum()
    }

    pub fn snapshot(&self) -> BTreeMap<(String, String), u64> {
        self.0.lock().expect("counter lock").requests.clone()
    }

    pub fn reset(&self) {
        *self.0.lock().expect("counter lock") = Counts::default();
    }

    /// The capacity each table's requests consumed, failed conditional writes included
    /// (DynamoDB charges them too). A write's units are its item's size in KB begun, twice
    /// in a transaction; an update or delete is charged the size of the largest item
    /// `largest_item_bytes` names for its table (the request does not carry the item), at
    /// least one unit. Reads are charged from the items the answers return: a get per item,
    /// a query per answer, each in 4 KB begun, at least one unit, half when eventually
    /// consistent, twice in a transaction. Writes to a global secondary index are not in
    /// these figures (see [`index_write_units`]).
    pub fn capacity(&self, largest_item_bytes: &BTreeMap<String, usize>) -> BTreeMap<String, Capacity> {
        let counts = self.0.lock().expect("counter lock");
        let mut tables: BTreeMap<String, Capacity> = BTreeMap::new();
        for (table, writes) in &counts.writes {
            let largest = largest_item_bytes.get(table).copied().unwrap_or(0);
            let units: f64 = writes
                .iter()
                .map(|w| {
                    let units = write_units(w.bytes.unwrap_or(largest)) as f64;
                    if w.transactional { 2.0 * units } else { units }
                })
                .sum();
            tables.entry(table.clone()).or_default().write_units += units;
        }
        for (table, units) in &counts.read_units {
            tables.entry(table.clone()).or_default().read_units += units;
        }
        tables
    }

    /// Items put (written whole: PutItem, a BatchWriteItem or transaction's Put) per table.
    pub fn items_put(&self) -> BTreeMap<String, u64> {
        let counts = self.0.lock().expect("counter lock");
        counts
            .writes
            .iter()
            .map(|(table, writes)| (table.clone(), writes.iter().filter(|w| w.bytes.is_some()).count() as u64))
            .collect()
    }

    /// Entries put on event buses.
    pub fn events_put(&self) -> u64 {
        self.0.lock().expect("counter lock").events_put
    }

    /// ReceiveMessage requests answered with no message.
    pub fn empty_receives(&self) -> u64 {
        self.0.lock().expect("counter lock").empty_receives
    }

    fn record_answer(&self, request: &SentRequest, answer: Option<&Value>) {
        match (request.service.as_str(), request.operation.as_str()) {
            ("DynamoDB", _) => self.record_dynamodb(request, answer),
            ("EventBridge", "PutEvents") => {
                let entries = request.body.get("Entries").and_then(Value::as_array).map_or(0, Vec::len);
                self.0.lock().expect("counter lock").events_put += entries as u64;
            }
            ("SQS", "ReceiveMessage") => {
                let received = answer.and_then(|a| a.get("Messages")).and_then(Value::as_array).map_or(0, Vec::len);
                if answer.is_some() && received == 0 {
                    self.0.lock().expect("counter lock").empty_receives += 1;
                }
            }
            _ => {}
        }
    }

    fn record_dynamodb(&self, request: &SentRequest, answer: Option<&Value>) {
        let body = &request.body;
        let mut counts = self.0.lock().expect("counter lock");
        let table_of = |value: &Value| value.get("TableName").and_then(Value::as_str).unwrap_or_default().to_owned();
        let consistent = |value: &Value| value.get("ConsistentRead").and_then(Value::as_bool).unwrap_or(false);
        let mut write = |table: String, bytes: Option<usize>, transactional: bool| {
            counts.writes.entry(table).or_default().push(Write { bytes, transactional });
        };
        match request.operation.as_str() {
            "PutItem" => write(table_of(body), body.get("Item").map(item_bytes), false),
            "UpdateItem" | "DeleteItem" => write(table_of(body), None, false),
            "BatchWriteItem" => {
                for (table, requests) in body.get("RequestItems").and_then(Value::as_object).into_iter().flatten() {
                    for request in requests.as_array().into_iter().flatten() {
                        let bytes = request.pointer("/PutRequest/Item").map(item_bytes);
                        write(table.clone(), bytes, false);
                    }
                }
            }
            "TransactWriteItems" => {
                for item in body.get("TransactItems").and_then(Value::as_array).into_iter().flatten() {
                    if let Some(put) = item.get("Put") {
                        write(table_of(put), put.get("Item").map(item_bytes), true);
                    }
                    for kind in ["Update", "Delete", "ConditionCheck"] {
                        if let Some(change) = item.get(kind) {
                            write(table_of(change), None, true);
                        }
                    }
                }
            }
            _ => {}
        }
        let mut read = |table: String, units: f64| *counts.read_units.entry(table).or_default() += units;
        match request.operation.as_str() {
            "GetItem" => {
                let bytes = answer.and_then(|a| a.get("Item")).map_or(0, item_bytes);
                read(table_of(body), read_units(bytes, consistent(body)));
            }
            "Query" | "Scan" => {
                let bytes = answer
                    .and_then(|a| a.get("Items"))
                    .and_then(Value::as_array)
                    .map_or(0, |items| items.iter().map(item_bytes).sum());
                read(table_of(body), read_units(bytes, consistent(body)));
            }
            "BatchGetItem" => {
                for (table, request) in body.get("RequestItems").and_then(Value::as_object).into_iter().flatten() {
                    let keys = request.get("Keys").and_then(Value::as_array).map_or(0, Vec::len);
                    let found: Vec<usize> = answer
                        .and_then(|a| a.pointer(&format!("/Responses/{}", table.replace('~', "~0").replace('/', "~1"))))
                        .and_then(Value::as_array)
                        .map(|items| items.iter().map(item_bytes).collect())
                        .unwrap_or_default();
                    // Keys not found still cost the least a read costs.
                    let missing = keys.saturating_sub(found.len());
                    let units: f64 = found
                        .iter()
                        .chain(std::iter::repeat_n(&0, missing))
                        .map(|b| read_units(*b, consistent(request)))
                        .sum();
                    read(table.clone(), units);
                }
            }
            "TransactGetItems" => {
                for item in body.get("TransactItems").and_then(Value::as_array).into_iter().flatten() {
                    if let Some(get) = item.get("Get") {
                        read(table_of(get), 2.0 * read_units(0, true));
                    }
                }
            }
            _ => {}
        }
    }
}

/// Write units for an item of `bytes`: one per KB begun, at least one.
pub fn write_units(bytes: usize) -> u64 {
    bytes.div_ceil(WRITE_UNIT_BYTES).max(1) as u64
}

/// Read units for `bytes` read at once: one per 4 KB begun, at least one; half of that
/// when eventually consistent.
pub fn read_units(bytes: usize, consistent: bool) -> f64 {
    let units = bytes.div_ceil(READ_UNIT_BYTES).max(1) as f64;
    if consistent { units } else { units / 2.0 }
}

/// The index writes that `puts` cost on a global secondary index projecting the keys only
/// (`ProjectionType: KEYS_ONLY`): one unit per item put (its entry, a few dozen bytes).
/// An update that changes no key writes nothing to it; a put over an item, its keys
/// unchanged, is counted all the same (an upper bound).
pub fn index_write_units(puts: u64) -> f64 {
    puts as f64
}

/// An item's size in DynamoDB's JSON wire form (`{"name": {"S": "..."}}`), reckoned as
/// [`crate::dynamo`]'s `item_size` does: attribute names plus values.
pub fn item_bytes(item: &Value) -> usize {
    item.as_object()
        .map_or(0, |attributes| attributes.iter().map(|(name, value)| name.len() + value_bytes(value)).sum())
}

fn value_bytes(value: &Value) -> usize {
    let Some((kind, inner)) = value.as_object().and_then(|o| o.iter().next()) else { return 0 };
    match (kind.as_str(), inner) {
        ("S" | "N", Value::String(text)) => text.len(),
        // Binary values travel in base64: four characters per three bytes.
        ("B", Value::String(text)) => text.len() * 3 / 4,
        ("SS" | "NS", Value::Array(texts)) => texts.iter().filter_map(Value::as_str).map(str::len).sum(),
        ("BS", Value::Array(texts)) => texts.iter().filter_map(Value::as_str).map(|t| t.len() * 3 / 4).sum(),
        ("L", Value::Array(values)) => 3 + values.iter().map(|v| 1 + value_bytes(v)).sum::<usize>(),
        ("M", Value::Object(map)) => 3 + map.iter().map(|(k, v)| 1 + k.len() + value_bytes(v)).sum::<usize>(),
        _ => 1,
    }
}

impl Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "RequestCounter"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(metadata) = cfg.load::<Metadata>() {
            let (service, operation) = (metadata.service().to_owned(), metadata.name().to_owned());
            *self.0.lock().expect("counter lock").requests.entry((service.clone(), operation.clone())).or_default() +=
                1;
            // The services whose JSON requests and answers say more than their count.
            if matches!(service.as_str(), "DynamoDB" | "EventBridge" | "SQS") {
                let body = context.request().body().bytes().and_then(|b| serde_json::from_slice(b).ok());
                if let Some(body) = body {
                    cfg.interceptor_state().store_put(SentRequest { service, operation, body });
                }
            }
        }
        Ok(())
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(request) = cfg.load::<SentRequest>().cloned() {
            let answer: Option<Value> =
                context.response().and_then(|r| r.body().bytes()).and_then(|b| serde_json::from_slice(b).ok());
            self.record_answer(&request, answer.as_ref());
            cfg.interceptor_state().unset::<SentRequest>();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn counted(operation: &str, body: Value, answer: Value) -> RequestCounter {
        let counter = RequestCounter::default();
        let request = SentRequest { service: "DynamoDB".into(), operation: operation.into(), body };
        counter.record_answer(&request, Some(&answer));
        counter
    }

    #[test]
    fn a_put_costs_one_write_unit_per_kilobyte_begun() {
        let big = "x".repeat(1500);
        let counter = counted("PutItem", json!({"TableName": "t", "Item": {"k": {"S": big}}}), json!({}));
        assert_eq!(counter.capacity(&BTreeMap::new())["t"].write_units, 2.0);
    }

    #[test]
    fn a_transactional_write_costs_twice_and_an_update_is_charged_the_largest_item() {
        let body = json!({"TransactItems": [
            {"Update": {"TableName": "deliveries", "Key": {"delivery_id": {"S": "d"}}}},
            {"Put": {"TableName": "limits", "Item": {"window_key": {"S": "w"}}}},
        ]});
        let counter = counted("TransactWriteItems", body, json!({}));
        let capacity = counter.capacity(&BTreeMap::from([("deliveries".to_owned(), 2100)]));
        assert_eq!((capacity["deliveries"].write_units, capacity["limits"].write_units), (6.0, 2.0));
    }

    #[test]
    fn only_puts_count_as_items_put() {
        let body = json!({"TransactItems": [
            {"Update": {"TableName": "deliveries", "Key": {"delivery_id": {"S": "d"}}}},
            {"Put": {"TableName": "deliveries", "Item": {"delivery_id": {"S": "e"}}}},
        ]});
        let counter = counted("TransactWriteItems", body, json!({}));
        assert_eq!(counter.items_put()["deliveries"], 1);
    }

    #[test]
    fn reads_cost_per_four_kilobytes_and_half_when_eventually_consistent() {
        let item = json!({"k": {"S": "x".repeat(5000)}});
        let get = counted("GetItem", json!({"TableName": "t", "ConsistentRead": true}), json!({"Item": item}));
        assert_eq!(get.capacity(&BTreeMap::new())["t"].read_units, 2.0);
        let query = counted("Query", json!({"TableName": "t"}), json!({"Items": [item, item]}));
        assert_eq!(query.capacity(&BTreeMap::new())["t"].read_units, 1.5);
    }

    #[test]
    fn a_batch_get_charges_the_least_read_for_keys_not_found() {
        let body =
            json!({"RequestItems": {"t": {"Keys": [{"k": {"S": "a"}}, {"k": {"S": "b"}}], "ConsistentRead": true}}});
        let counter = counted("BatchGetItem", body, json!({"Responses": {"t": [{"k": {"S": "a"}}]}}));
        assert_eq!(counter.capacity(&BTreeMap::new())["t"].read_units, 2.0);
    }

    #[test]
    fn item_sizes_count_names_and_values_as_dynamodb_does() {
        let item =
            json!({"id": {"S": "abc"}, "n": {"N": "12"}, "l": {"L": [{"S": "x"}]}, "m": {"M": {"a": {"BOOL": true}}}});
        // id 2+3, n 1+2, l 1+(3+1+1), m 1+(3+1+1+1)
        assert_eq!(item_bytes(&item), 5 + 3 + 6 + 7);
    }
}
