//! The outbox of an item (`herald_core::events::Outbox`): written on the changed item in
//! the same conditional write, and read back from the images of the table's stream by
//! the relay.

use aws_sdk_dynamodb::types::AttributeValue;
use herald_core::{
    events::{DomainEvent, Outbox, OutboxWrite},
    store::StoreError,
};

use crate::dynamo::Item;

/// The attribute that holds an item's outbox.
pub const ATTRIBUTE: &str = "outbox";

/// Puts `events` in `item`'s outbox under `id`, new for every write that publishes. No
/// events, no outbox: the write replaces the item, so the last outbox goes with it and
/// nothing is published again.
pub fn fill(item: &mut Item, id: impl Into<String>, events: &[DomainEvent]) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let outbox: AttributeValue = serde_dynamo::to_attribute_value(Outbox::new(id, events))
        .map_err(|e| StoreError::Fatal(format!("unwritable outbox: {e}")))?;
    item.insert(ATTRIBUTE.to_owned(), outbox);
    Ok(())
}

/// The outbox in a stream image, if it has one.
pub fn in_image(image: &serde_dynamo::Item) -> Result<Option<Outbox>, serde_dynamo::Error> {
    image.get(ATTRIBUTE).map(|value| serde_dynamo::from_attribute_value(value.clone())).transpose()
}

/// A stream record's write, from its old and new images.
pub fn write(
    old_image: &serde_dynamo::Item,
    new_image: &serde_dynamo::Item,
) -> Result<OutboxWrite, serde_dynamo::Error> {
    Ok(OutboxWrite { before: in_image(old_image)?, after: in_image(new_image)? })
}

#[cfg(test)]
mod tests {
    use herald_core::events::ProfileChanged;

    use super::*;

    fn change() -> DomainEvent {
        DomainEvent::ProfileChanged(ProfileChanged {
            user_id: "u1".into(),
            version: 2,
            changed_attributes: vec![],
            changed_fields: vec!["email".into()],
            created: false,
            erased: false,
        })
    }

    #[test]
    fn an_outbox_written_on_an_item_reads_back_from_its_stream_image() {
        let mut item = Item::new();
        fill(&mut item, "2", &[change()]).unwrap();
        let image: serde_dynamo::Item = item.into();
        let write = write(&serde_dynamo::Item::from(Item::new()), &image).unwrap();
        assert_eq!(write.after, Some(Outbox::new("2", &[change()])));
        assert_eq!(write.due().len(), 1);
    }

    #[test]
    fn no_events_write_no_outbox() {
        let mut item = Item::new();
        fill(&mut item, "2", &[]).unwrap();
        assert!(item.is_empty());
    }
}
