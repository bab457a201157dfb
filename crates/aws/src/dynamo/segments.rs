//! The segments table: one item per segment, keyed by `segment_id`, as serde_dynamo writes
//! a `Segment` but for its rule, kept as JSON text in `rule_json` (DynamoDB numbers would
//! not give back a JSON number exactly as it was: `1.0` would come back as `1`). The item
//! `#catalog` holds the catalog revision, grown in the same transaction as every create,
//! replace and delete.

use async_trait::async_trait;
use aws_sdk_dynamodb::{
    Client,
    types::{AttributeValue, Put, ReturnValue, TransactWriteItem, Update},
};
use chrono::{DateTime, Utc};
use herald_core::{
    segments::{BackfillProgress, Segment, SegmentState, SegmentStore},
    store::StoreError,
};
use herald_wire::backoff::Backoff;

use crate::{
    dynamo::{
        Item, n, number_of, s,
        transaction::{CONDITIONAL_CHECK_FAILED, cancellation_codes, is_retryable},
    },
    errors::unavailable,
};

/// The key of the item that holds the catalog revision (not a valid segment id).
const CATALOG: &str = "#catalog";
const RULE: &str = "rule";
const RULE_JSON: &str = "rule_json";

#[derive(Clone, Debug)]
pub struct DynamoSegmentStore {
    client: Client,
    table: String,
    backoff: Backoff,
}

fn to_item(segment: &Segment) -> Result<Item, StoreError> {
    let mut item: Item =
        serde_dynamo::to_item(segment).map_err(|e| StoreError::Fatal(format!("unwritable segment: {e}")))?;
    item.remove(RULE);
    if let Some(rule) = &segment.rule {
        item.insert(RULE_JSON.to_owned(), s(rule.to_string()));
    }
    Ok(item)
}

/// Marks the tombstone a deleted segment leaves: its id is not used again, so members
/// rows still being removed never mix with a new segment's.
const DELETED: &str = "deleted";

fn is_tombstone(item: &Item) -> bool {
    matches!(item.get(DELETED), Some(AttributeValue::Bool(true)))
}

fn from_item(mut item: Item) -> Result<Segment, StoreError> {
    let rule = match item.remove(RULE_JSON) {
        Some(AttributeValue::S(json)) => {
            Some(serde_json::from_str(&json).map_err(|e| StoreError::Fatal(format!("unreadable stored rule: {e}")))?)
        }
        Some(_) => return Err(StoreError::Transient("rule_json is not a string".into())),
        None => None,
    };
    let mut segment: Segment =
        serde_dynamo::from_item(item).map_err(|e| StoreError::Fatal(format!("unreadable segment: {e}")))?;
    segment.rule = rule;
    Ok(segment)
}

fn state(state: SegmentState) -> AttributeValue {
    serde_dynamo::to_attribute_value(state).expect("states serialize")
}

impl DynamoSegmentStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into(), backoff: Backoff::default() }
    }

    /// The catalog revision's growth, as a transaction item.
    fn bump_catalog(&self) -> TransactWriteItem {
        let update = Update::builder()
            .table_name(&self.table)
            .key("segment_id", s(CATALOG))
            .update_expression("ADD revision :one")
            .expression_attribute_values(":one", n(1))
            .build()
            .expect("the update is complete");
        TransactWriteItem::builder().update(update).build()
    }

    /// Writes `change` with the catalog's growth; false if its condition failed.
    async fn transact(&self, change: TransactWriteItem) -> Result<bool, StoreError> {
        let items = vec![change, self.bump_catalog()];
        let mut retry = 0;
        loop {
            let result = self.client.transact_write_items().set_transact_items(Some(items.clone())).send().await;
            let codes = match result {
                Ok(_) => return Ok(true),
                Err(e) => cancellation_codes(e)?,
            };
            if codes.first().is_some_and(|code| code == CONDITIONAL_CHECK_FAILED) {
                return Ok(false);
            }
            // Another change of the catalog at the same moment, or throttling.
            if !codes.iter().any(|code| is_retryable(code)) {
                return Err(StoreError::Transient(format!("saving the segment was cancelled: {codes:?}")));
            }
            if !self.backoff.wait(retry).await {
                return Err(StoreError::Transient("saving the segment kept being cancelled".into()));
            }
            retry += 1;
        }
    }

    async fn put(&self, segment: &Segment, expected_version: Option<u64>) -> Result<(), StoreError> {
        let put = Put::builder().table_name(&self.table).set_item(Some(to_item(segment)?));
        let put = match expected_version {
            None => put.condition_expression("attribute_not_exists(segment_id)"),
            Some(version) => put
                .condition_expression("#v = :expected")
                .expression_attribute_names("#v", "version")
                .expression_attribute_values(":expected", n(version)),
        };
        let item = TransactWriteItem::builder().put(put.build().expect("the put is complete")).build();
        if self.transact(item).await? { Ok(()) } else { Err(StoreError::Conflict) }
    }

    /// An UpdateItem on version `version` of a segment; None when the condition failed.
    async fn update_version(
        &self,
        segment_id: &str,
        expression: String,
        condition: &str,
        names: &[(&str, &str)],
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<Option<Segment>, StoreError> {
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("segment_id", s(segment_id))
            .update_expression(expression)
            .condition_expression(condition)
            .return_values(ReturnValue::AllNew);
        for (placeholder, name) in names {
            request = request.expression_attribute_names(*placeholder, *name);
        }
        for (placeholder, value) in values {
            request = request.expression_attribute_values(placeholder, value);
        }
        match request.send().await {
            Ok(output) => output
                .attributes
                .map(from_item)
                .transpose()?
                .ok_or_else(|| StoreError::Transient("the update returned no segment".into()))
                .map(Some),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }
}

#[async_trait]
impl SegmentStore for DynamoSegmentStore {
    async fn create(&self, segment: &Segment) -> Result<(), StoreError> {
        self.put(segment, None).await
    }

    async fn replace(&self, segment: &Segment, expected_version: u64) -> Result<(), StoreError> {
        self.put(segment, Some(expected_version)).await
    }

    async fn delete(&self, segment_id: &str) -> Result<bool, StoreError> {
        if segment_id == CATALOG {
            return Ok(false);
        }
        let tombstone = Put::builder()
            .table_name(&self.table)
            .item("segment_id", s(segment_id))
            .item(DELETED, AttributeValue::Bool(true))
            .condition_expression("attribute_exists(segment_id)")
            .build()
            .expect("the put is complete");
        self.transact(TransactWriteItem::builder().put(tombstone).build()).await
    }

    async fn get(&self, segment_id: &str) -> Result<Option<Segment>, StoreError> {
        if segment_id == CATALOG {
            return Ok(None);
        }
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("segment_id", s(segment_id))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        output.item.filter(|item| !is_tombstone(item)).map(from_item).transpose()
    }

    /// A strongly consistent scan: the segmenter caches the list under the revision it
    /// read just before, so the list must be at least as new.
    async fn list(&self) -> Result<Vec<Segment>, StoreError> {
        let items = crate::dynamo::scan_consistent(&self.client, &self.table).await?;
        items
            .into_iter()
            .filter(|item| !matches!(item.get("segment_id"), Some(AttributeValue::S(id)) if id == CATALOG))
            .filter(|item| !is_tombstone(item))
            .map(from_item)
            .collect()
    }

    async fn catalog_revision(&self) -> Result<u64, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("segment_id", s(CATALOG))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        output.item.map_or(Ok(0), |item| number_of(&item, "revision"))
    }

    async fn add_progress(
        &self,
        segment_id: &str,
        version: u64,
        progress: &BackfillProgress,
        finished_part: Option<u32>,
        at: DateTime<Utc>,
    ) -> Result<Option<Segment>, StoreError> {
        if segment_id == CATALOG {
            return Ok(None);
        }
        // `backfill` is a map (serde_dynamo writes the struct so); nested numbers grow with
        // SET, since ADD takes top-level attributes only.
        let mut grown = vec![
            ("#scanned", "profiles_scanned", ":scanned", progress.profiles_scanned),
            ("#entered", "entered", ":entered", progress.entered),
            ("#exited", "exited", ":exited", progress.exited),
        ];
        if finished_part.is_some() {
            grown.push(("#done", "parts_done", ":one", 1));
        }
        let mut names = vec![("#b", "backfill"), ("#v", "version")];
        let mut values = vec![(":zero", n(0)), (":v", n(version))];
        let mut sets = Vec::new();
        for (name, field, value, amount) in grown {
            sets.push(format!("#b.{name} = if_not_exists(#b.{name}, :zero) + {value}"));
            names.push((name, field));
            values.push((value, n(amount)));
        }
        let mut expression = format!("SET {}", sets.join(", "));
        let mut condition = "#v = :v".to_owned();
        if let Some(part) = finished_part {
            // A part's last page counts once, however often its message is delivered.
            expression.push_str(" ADD #fp :parts");
            condition.push_str(" AND NOT contains(#fp, :part)");
            names.push(("#fp", "finished_parts"));
            values.push((":parts", AttributeValue::Ns(vec![part.to_string()])));
            values.push((":part", n(part)));
        }
        let segment = match self.update_version(segment_id, expression, &condition, &names, values).await? {
            Some(segment) => segment,
            // Another version, or this part counted before: by a delivery that may have
            // stopped before making the segment ready, so readiness is checked again.
            None => match self.get(segment_id).await?.filter(|s| s.version == version) {
                Some(segment) => segment,
                None => return Ok(None),
            },
        };
        let finished = finished_part.is_some()
            && segment.backfill.parts_done >= segment.backfill.parts
            && segment.state == SegmentState::Backfilling;
        if !finished {
            return Ok(Some(segment));
        }
        let ready = self
            .update_version(
                segment_id,
                "SET #state = :ready, #b.#finished = :at".to_owned(),
                "#v = :v AND #state = :backfilling",
                &[("#b", "backfill"), ("#finished", "finished_at"), ("#state", "state"), ("#v", "version")],
                vec![
                    (":ready", state(SegmentState::Ready)),
                    (":backfilling", state(SegmentState::Backfilling)),
                    (":at", serde_dynamo::to_attribute_value(at).expect("times serialize")),
                    (":v", n(version)),
                ],
            )
            .await?;
        match ready {
            Some(segment) => Ok(Some(segment)),
            // Made ready meanwhile by another part, or moved on to a new version.
            None => Ok(self.get(segment_id).await?.filter(|s| s.version == version)),
        }
    }
}
