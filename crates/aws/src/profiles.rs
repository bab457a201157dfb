//! The profiles table: one item per user, keyed by `user_id`, with optimistic
//! concurrency on `version`.

use async_trait::async_trait;
use aws_sdk_dynamodb::{Client, operation::put_item::PutItemError, types::AttributeValue};
use herald_core::{
    Profile,
    backoff::Backoff,
    ports::{ProfileStore, StoreError, StoredProfile},
};

use std::collections::HashMap;

use crate::{batch, unavailable};

/// Marks a tombstone: the profile was erased, only its id and version remain.
const ERASED: &str = "erased";

/// A stored item: a profile, or the tombstone of an erased one.
fn stored(item: batch::Item) -> Result<StoredProfile, StoreError> {
    if matches!(item.get(ERASED), Some(AttributeValue::Bool(true))) {
        let version = match item.get("version") {
            Some(AttributeValue::N(n)) => {
                n.parse().map_err(|_| StoreError::Unavailable(format!("bad version {n:?}")))?
            }
            _ => 0,
        };
        return Ok(StoredProfile { version, profile: None });
    }
    let profile: Profile =
        serde_dynamo::from_item(item).map_err(|e| StoreError::Unavailable(format!("unreadable profile item: {e}")))?;
    Ok(StoredProfile { version: profile.version, profile: Some(profile) })
}

#[derive(Clone, Debug)]
pub struct DynamoProfileStore {
    client: Client,
    table: String,
}

impl DynamoProfileStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    async fn put_if_version(&self, item: batch::Item, expected_version: u64) -> Result<(), StoreError> {
        let request = self.client.put_item().table_name(&self.table).set_item(Some(item));
        let request = if expected_version == 0 {
            request.condition_expression("attribute_not_exists(user_id)")
        } else {
            request
                .condition_expression("version = :expected")
                .expression_attribute_values(":expected", AttributeValue::N(expected_version.to_string()))
        };
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e) => match e.into_service_error() {
                PutItemError::ConditionalCheckFailedException(_) => Err(StoreError::Conflict),
                other => Err(unavailable(other)),
            },
        }
    }
}

#[async_trait]
impl ProfileStore for DynamoProfileStore {
    async fn load(&self, user_id: &str) -> Result<Option<StoredProfile>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("user_id", AttributeValue::S(user_id.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        output.item.map(stored).transpose()
    }

    async fn load_many(&self, user_ids: &[String]) -> Result<HashMap<String, StoredProfile>, StoreError> {
        let items = batch::get_all(&self.client, &self.table, "user_id", user_ids, false, &Backoff::default()).await?;
        items
            .into_iter()
            .map(|item| {
                let Some(AttributeValue::S(user_id)) = item.get("user_id").cloned() else {
                    return Err(StoreError::Unavailable("a profile item without user_id".into()));
                };
                Ok((user_id, stored(item)?))
            })
            .collect()
    }

    async fn save(&self, profile: &Profile, expected_version: u64) -> Result<(), StoreError> {
        let item =
            serde_dynamo::to_item(profile).map_err(|e| StoreError::Unavailable(format!("unwritable profile: {e}")))?;
        self.put_if_version(item, expected_version).await
    }

    async fn erase(&self, user_id: &str, version: u64, expected_version: u64) -> Result<(), StoreError> {
        let item = [
            ("user_id".to_owned(), AttributeValue::S(user_id.to_owned())),
            ("version".to_owned(), AttributeValue::N(version.to_string())),
            (ERASED.to_owned(), AttributeValue::Bool(true)),
        ]
        .into();
        self.put_if_version(item, expected_version).await
    }
}

/// A parallel Scan: part `part` is DynamoDB's scan segment `part` of `parts`, and the
/// cursor is the `user_id` of the page's LastEvaluatedKey. Eventually consistent: a
/// backfill's writes are guarded by the versions it read.
#[async_trait]
impl herald_core::ports::ProfileScan for DynamoProfileStore {
    async fn scan_page(
        &self,
        part: u32,
        parts: u32,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<herald_core::ports::ScanPage, StoreError> {
        if limit == 0 {
            return Ok(herald_core::ports::ScanPage::default());
        }
        let total = i32::try_from(parts.max(1)).map_err(|_| StoreError::Unavailable(format!("{parts} parts")))?;
        let segment = i32::try_from(part).ok().filter(|p| *p < total);
        let segment = segment.ok_or_else(|| StoreError::Unavailable(format!("no part {part} of {parts}")))?;
        let start = cursor.map(|id| HashMap::from([("user_id".to_owned(), AttributeValue::S(id.to_owned()))]));
        let output = self
            .client
            .scan()
            .table_name(&self.table)
            .segment(segment)
            .total_segments(total)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(unavailable)?;
        let profiles = output
            .items
            .unwrap_or_default()
            .into_iter()
            .map(|item| {
                let Some(AttributeValue::S(user_id)) = item.get("user_id").cloned() else {
                    return Err(StoreError::Unavailable("a profile item without user_id".into()));
                };
                Ok((user_id, stored(item)?))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let next = match output.last_evaluated_key.as_ref().and_then(|key| key.get("user_id")) {
            Some(AttributeValue::S(user_id)) => Some(user_id.clone()),
            Some(_) => return Err(StoreError::Unavailable("a scan stopped at a key that is not a user id".into())),
            None => None,
        };
        Ok(herald_core::ports::ScanPage { profiles, next })
    }
}
