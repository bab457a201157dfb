//! What imports needs from the outside world: implemented over AWS in herald-aws and in
//! memory (`memory`) for tests.

use async_trait::async_trait;

use crate::store::StoreError;

/// A file being read, as a stream of its bytes.
pub type ObjectReader = Box<dyn tokio::io::AsyncRead + Send + Unpin>;

/// The bucket import files are dropped in.
#[async_trait]
pub trait ImportFiles: Send + Sync {
    /// The object's bytes from byte `from` to its end, streamed (never held whole).
    /// `Ok(None)` if the object does not exist (any more).
    async fn read_from(&self, bucket: &str, key: &str, from: u64) -> Result<Option<ObjectReader>, StoreError>;

    /// Writes a small object whole (a chunk of rejected rows).
    async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), StoreError>;

    /// Writes `head` followed by every object under `prefix`, in key order, as the one
    /// object `key`, streamed (the parts are never all in memory), then deletes the
    /// objects under `prefix`. With nothing under `prefix`, `key` is left as it is: an
    /// earlier call joined the parts but its caller stopped before recording it.
    async fn concatenate(&self, bucket: &str, prefix: &str, head: Vec<u8>, key: &str) -> Result<(), StoreError>;
}

/// The import jobs (the jobs table).
#[async_trait]
pub trait ImportJobStore: Send + Sync {
    /// Stores a new job; false (and nothing written) if a job with its id exists.
    async fn create(&self, job: &crate::imports::ImportJob) -> Result<bool, StoreError>;
    async fn get(&self, job_id: &str) -> Result<Option<crate::imports::ImportJob>, StoreError>;
    /// Replaces the job if its stored `checkpoint` is still `expected_checkpoint`, else
    /// `Err(Conflict)`: two runners of one job never both record progress.
    async fn save(&self, job: &crate::imports::ImportJob, expected_checkpoint: u64) -> Result<(), StoreError>;
    /// Jobs newest first (by `started_at`), `limit` per page, from an opaque cursor.
    async fn list(&self, limit: u32, cursor: Option<&str>) -> Result<ImportJobsPage, StoreError>;
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImportJobsPage {
    pub jobs: Vec<crate::imports::ImportJob>,
    /// Opaque; None on the last page.
    pub next: Option<String>,
}

/// The importer's own queue: a job that runs out of time goes on in a fresh invocation.
#[async_trait]
pub trait ImportQueue: Send + Sync {
    async fn continue_job(&self, job_id: &str) -> Result<(), StoreError>;
}
