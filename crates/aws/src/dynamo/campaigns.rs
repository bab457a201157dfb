//! Campaigns in the jobs table: one item per campaign, keyed by `job_id` (the campaign id),
//! as serde_dynamo writes a `Campaign` but for its filter, kept as JSON text in
//! `filter_json` (DynamoDB numbers would not give back a JSON number exactly as it was).
//! Like an import job, the item carries `kind = "campaign"` and
//! `started = "<created_at>#<campaign_id>"`, the keys of the `by_kind` index.
//!
//! Progress lives in the item too, so that each change is one conditional UpdateItem:
//! - `counters`: a map of the campaign's counters, created with every counter at zero so
//!   that `ADD counters.<name>` always finds its map;
//! - `cursors`: a map with one entry per members shard (`"0"` … `"15"`): `""` before the
//!   shard's first page, then the cursor of the next page to record, and `true` (a
//!   boolean, which no cursor can equal) once the shard's last page is recorded;
//! - `shards_done`: how many shards reached their end;
//! - `page_<shard>`: the shard's last recorded page, a map of `cursor` (what it read from,
//!   `""` for the start), `message_id` (the queue message that recorded it) and
//!   `followed_up` (whether that message sent the next page). Top-level attributes, so that
//!   campaigns stored before them take them on with a plain `SET`.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::{
    Client,
    operation::update_item::UpdateItemError,
    types::{AttributeValue, ReturnValue},
};
use chrono::{DateTime, Utc};
use herald_core::{
    campaigns::{Campaign, CampaignCounters, CampaignState, CampaignStore, PageRecord, ShardCursor, ShardProgress},
    segments::MEMBER_SHARDS,
    store::StoreError,
};

use crate::{
    dynamo::{Item, jobs, n, number_of, s},
    errors::unavailable,
};

const KIND: &str = "campaign";
const FILTER: &str = "filter";
const FILTER_JSON: &str = "filter_json";
const CURSORS: &str = "cursors";
/// The prefix of the `page_<shard>` attributes.
const PAGE_PREFIX: &str = "page_";
/// The attributes of the item that are not fields of a `Campaign` (with `page_*`).
const NOT_FIELDS: [&str; 5] = ["job_id", "kind", "started", CURSORS, FILTER_JSON];

#[derive(Clone, Debug)]
pub struct DynamoCampaignStore {
    client: Client,
    table: String,
}

/// A shard's entry in `cursors` before its first page is recorded.
fn start_cursor() -> AttributeValue {
    s("")
}

/// A shard's entry in `cursors` once its last page is recorded.
fn done_cursor() -> AttributeValue {
    AttributeValue::Bool(true)
}

fn to_item(campaign: &Campaign) -> Result<Item, StoreError> {
    let mut item: Item =
        serde_dynamo::to_item(campaign).map_err(|e| StoreError::Fatal(format!("unwritable campaign: {e}")))?;
    item.remove(FILTER);
    if let Some(filter) = &campaign.filter {
        item.insert(FILTER_JSON.to_owned(), s(filter.to_string()));
    }
    item.insert("job_id".into(), s(&campaign.campaign_id));
    item.insert("kind".into(), s(KIND));
    item.insert("started".into(), s(jobs::started_key(campaign.created_at, &campaign.campaign_id)));
    let cursors = (0..MEMBER_SHARDS).map(|shard| (shard.to_string(), start_cursor())).collect();
    item.insert(CURSORS.into(), AttributeValue::M(cursors));
    Ok(item)
}

fn from_item(mut item: Item) -> Result<Campaign, StoreError> {
    let filter = match item.remove(FILTER_JSON) {
        Some(AttributeValue::S(json)) => {
            Some(serde_json::from_str(&json).map_err(|e| StoreError::Fatal(format!("unreadable stored filter: {e}")))?)
        }
        Some(_) => return Err(StoreError::Fatal("filter_json is not a string".into())),
        None => None,
    };
    for name in NOT_FIELDS {
        item.remove(name);
    }
    item.retain(|name, _| !name.starts_with(PAGE_PREFIX));
    let mut campaign: Campaign =
        serde_dynamo::from_item(item).map_err(|e| StoreError::Fatal(format!("unreadable campaign: {e}")))?;
    campaign.filter = filter;
    Ok(campaign)
}

fn page_attribute(shard: u32) -> String {
    format!("{PAGE_PREFIX}{shard}")
}

/// Where `shard` stands in a campaign's item.
fn shard_progress(item: &Item, shard: u32) -> Result<ShardProgress, StoreError> {
    let unreadable = |what: &str| StoreError::Fatal(format!("unreadable {what} of shard {shard}"));
    let next = match item.get(CURSORS) {
        Some(AttributeValue::M(cursors)) => match cursors.get(&shard.to_string()) {
            Some(AttributeValue::S(c)) if c.is_empty() => ShardCursor::Start,
            Some(AttributeValue::S(c)) => ShardCursor::At(c.clone()),
            Some(AttributeValue::Bool(true)) => ShardCursor::Done,
            _ => return Err(unreadable("cursor")),
        },
        _ => return Err(unreadable("cursors")),
    };
    let last = match item.get(&page_attribute(shard)) {
        None => None,
        Some(AttributeValue::M(page)) => {
            let text = |name: &str| match page.get(name) {
                Some(AttributeValue::S(text)) => Ok(text.clone()),
                _ => Err(unreadable("page record")),
            };
            let cursor = text("cursor")?;
            Some(PageRecord {
                cursor: (!cursor.is_empty()).then_some(cursor),
                message_id: text("message_id")?,
                followed_up: matches!(page.get("followed_up"), Some(AttributeValue::Bool(true))),
            })
        }
        Some(_) => return Err(unreadable("page record")),
    };
    Ok(ShardProgress { next, last })
}

fn state(state: CampaignState) -> AttributeValue {
    serde_dynamo::to_attribute_value(state).expect("states serialize")
}

fn now() -> AttributeValue {
    timestamp(Utc::now())
}

/// A time as serde_dynamo writes the campaign's (RFC 3339 text).
fn timestamp(at: DateTime<Utc>) -> AttributeValue {
    serde_dynamo::to_attribute_value(at).expect("times serialize")
}

/// An UpdateItem's `ADD` clauses for the non-zero counters of some counts, and the names
/// and values they use (`#c_<name>` and `:c_<name>`, under `#counters`).
#[derive(Default)]
struct Additions {
    clauses: Vec<String>,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Additions {
    fn of(counts: &CampaignCounters) -> Self {
        let mut additions = Self::default();
        for (name, value) in counts.fields() {
            if value == 0 {
                continue;
            }
            additions.clauses.push(format!("#counters.#c_{name} :c_{name}"));
            additions.names.insert(format!("#c_{name}"), name.to_owned());
            additions.values.insert(format!(":c_{name}"), n(value));
        }
        if !additions.clauses.is_empty() {
            additions.names.insert("#counters".into(), "counters".into());
        }
        additions
    }
}

impl DynamoCampaignStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    /// Adds `counts` to an existing campaign's counters (never a stray item for a campaign
    /// that is not there), and with `unless_done` only while it is not done: false if the
    /// condition failed and nothing was added.
    async fn add(&self, campaign_id: &str, counts: &CampaignCounters, unless_done: bool) -> Result<bool, StoreError> {
        let Additions { clauses, mut names, mut values } = Additions::of(counts);
        if clauses.is_empty() {
            return Ok(true);
        }
        let mut condition = "attribute_exists(#counters)".to_owned();
        if unless_done {
            condition.push_str(" AND #state <> :done");
            names.insert("#state".into(), "state".into());
            values.insert(":done".into(), state(CampaignState::Done));
        }
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("job_id", s(campaign_id))
            .update_expression(format!("ADD {}", clauses.join(", ")))
            .condition_expression(condition)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) => match e.into_service_error() {
                UpdateItemError::ConditionalCheckFailedException(_) => Ok(false),
                other => Err(unavailable(other)),
            },
        }
    }
}

#[async_trait]
impl CampaignStore for DynamoCampaignStore {
    async fn create(&self, campaign: &Campaign) -> Result<bool, StoreError> {
        jobs::put_new(&self.client, &self.table, to_item(campaign)?).await
    }

    async fn get(&self, campaign_id: &str) -> Result<Option<Campaign>, StoreError> {
        jobs::get(&self.client, &self.table, campaign_id, KIND).await?.map(from_item).transpose()
    }

    async fn get_with_shard(
        &self,
        campaign_id: &str,
        shard: u32,
    ) -> Result<Option<(Campaign, ShardProgress)>, StoreError> {
        let Some(item) = jobs::get(&self.client, &self.table, campaign_id, KIND).await? else { return Ok(None) };
        let progress = shard_progress(&item, shard)?;
        Ok(Some((from_item(item)?, progress)))
    }

    async fn set_state(
        &self,
        campaign_id: &str,
        to: CampaignState,
        from: &[CampaignState],
    ) -> Result<bool, StoreError> {
        if from.is_empty() {
            return Ok(false);
        }
        let placeholders: Vec<String> = (0..from.len()).map(|i| format!(":from{i}")).collect();
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("job_id", s(campaign_id))
            .update_expression("SET #state = :state, #updated_at = :now")
            .condition_expression(format!("#kind = :kind AND #state IN ({})", placeholders.join(", ")))
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#updated_at", "updated_at")
            .expression_attribute_names("#kind", "kind")
            .expression_attribute_values(":state", state(to))
            .expression_attribute_values(":now", now())
            .expression_attribute_values(":kind", s(KIND));
        for (placeholder, from) in placeholders.iter().zip(from) {
            update = update.expression_attribute_values(placeholder, state(*from));
        }
        match update.send().await {
            Ok(_) => Ok(true),
            Err(e) => match e.into_service_error() {
                UpdateItemError::ConditionalCheckFailedException(_) => Ok(false),
                other => Err(unavailable(other)),
            },
        }
    }

    async fn record_page(
        &self,
        campaign_id: &str,
        shard: u32,
        cursor: Option<&str>,
        next: Option<&str>,
        counts: &CampaignCounters,
        message_id: &str,
    ) -> Result<Option<u32>, StoreError> {
        let Additions { mut clauses, names, values } = Additions::of(counts);
        clauses.push("#shards_done :shard_done".into());
        // The last page of a shard grows `shards_done`, which UPDATED_NEW returns. Other
        // pages add zero to it, which not every store counts as an update (moto leaves it
        // out of UPDATED_NEW): those read it from the whole new item.
        let returned = if next.is_none() { ReturnValue::UpdatedNew } else { ReturnValue::AllNew };
        let expression =
            format!("SET #cursors.#shard = :next, #page = :page, #updated_at = :now ADD {}", clauses.join(", "));
        let record = HashMap::from([
            ("cursor".to_owned(), s(cursor.unwrap_or_default())),
            ("message_id".to_owned(), s(message_id)),
            ("followed_up".to_owned(), AttributeValue::Bool(false)),
        ]);
        let (next, shard_done) = match next {
            Some(next) => (s(next), 0),
            None => (done_cursor(), 1),
        };
        let names = names.into_iter().chain([
            ("#cursors".to_owned(), CURSORS.to_owned()),
            ("#shard".to_owned(), shard.to_string()),
            ("#updated_at".to_owned(), "updated_at".to_owned()),
            ("#shards_done".to_owned(), "shards_done".to_owned()),
            ("#page".to_owned(), page_attribute(shard)),
        ]);
        let values = values.into_iter().chain([
            (":next".to_owned(), next),
            (":now".to_owned(), now()),
            (":shard_done".to_owned(), n(shard_done)),
            (":cursor".to_owned(), cursor.map(s).unwrap_or_else(start_cursor)),
            (":page".to_owned(), AttributeValue::M(record)),
        ]);
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("job_id", s(campaign_id))
            .update_expression(expression)
            .condition_expression("#cursors.#shard = :cursor")
            .set_expression_attribute_names(Some(names.collect()))
            .set_expression_attribute_values(Some(values.collect()))
            .return_values(returned)
            .send()
            .await;
        match result {
            Ok(output) => {
                let attributes = output.attributes.unwrap_or_default();
                let done = number_of(&attributes, "shards_done")?;
                Ok(Some(u32::try_from(done).unwrap_or(u32::MAX)))
            }
            Err(e) => match e.into_service_error() {
                // Recorded already (or no such campaign).
                UpdateItemError::ConditionalCheckFailedException(_) => Ok(None),
                other => Err(unavailable(other)),
            },
        }
    }

    async fn page_followed_up(
        &self,
        campaign_id: &str,
        shard: u32,
        cursor: Option<&str>,
        message_id: &str,
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("job_id", s(campaign_id))
            .update_expression("SET #page.followed_up = :true")
            .condition_expression("#page.#cursor = :cursor AND #page.message_id = :by")
            .expression_attribute_names("#page", page_attribute(shard))
            .expression_attribute_names("#cursor", "cursor")
            .expression_attribute_values(":true", AttributeValue::Bool(true))
            .expression_attribute_values(":cursor", s(cursor.unwrap_or_default()))
            .expression_attribute_values(":by", s(message_id))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => match e.into_service_error() {
                // A later page of the shard replaced the record (or there is none).
                UpdateItemError::ConditionalCheckFailedException(_) => Ok(()),
                other => Err(unavailable(other)),
            },
        }
    }

    async fn add_outcomes(&self, campaign_id: &str, counts: &CampaignCounters) -> Result<bool, StoreError> {
        self.add(campaign_id, counts, true).await
    }

    async fn settle(&self, campaign_id: &str, outcomes: &CampaignCounters) -> Result<bool, StoreError> {
        let mut sets = vec!["#state = :done".to_owned(), "#updated_at = :now".to_owned()];
        let mut update = self.client.update_item().table_name(&self.table).key("job_id", s(campaign_id));
        for (name, value) in outcomes.outcomes() {
            sets.push(format!("#counters.#c_{name} = :c_{name}"));
            update = update
                .expression_attribute_names(format!("#c_{name}"), name)
                .expression_attribute_values(format!(":c_{name}"), n(value));
        }
        let result = update
            .update_expression(format!("SET {}", sets.join(", ")))
            .condition_expression("#kind = :kind AND #state = :sending")
            .expression_attribute_names("#counters", "counters")
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#updated_at", "updated_at")
            .expression_attribute_names("#kind", "kind")
            .expression_attribute_values(":done", state(CampaignState::Done))
            .expression_attribute_values(":sending", state(CampaignState::Sending))
            .expression_attribute_values(":now", now())
            .expression_attribute_values(":kind", s(KIND))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) => match e.into_service_error() {
                UpdateItemError::ConditionalCheckFailedException(_) => Ok(false),
                other => Err(unavailable(other)),
            },
        }
    }

    async fn add_counts(&self, campaign_id: &str, counts: &CampaignCounters) -> Result<(), StoreError> {
        if !self.add(campaign_id, counts, false).await? {
            tracing::warn!(campaign_id, "counts for an unknown campaign were dropped");
        }
        Ok(())
    }
}
