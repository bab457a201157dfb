//! Providers' delivery feedback in their own formats, read into core's `Feedback`.

pub mod ses;
pub mod sns_sms;

/// A provider event Herald cannot read: retrying cannot help (it goes to the dead-letter
/// queue and its alarm). The message never quotes the event, which holds addresses.
#[derive(Debug, thiserror::Error)]
pub enum FeedbackFormatError {
    #[error("not a provider event Herald reads: {0}")]
    Unreadable(String),
    #[error("the SES event carries no {} tag (not sent by Herald)", ses::DELIVERY_TAG)]
    NotHeralds,
}
