//! In-memory doubles of this capability's ports, for fast tests and benchmarks that stub
//! the stores. The port contract suites run them against the same cases as the adapters.

use std::{
    collections::BTreeMap,
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use async_trait::async_trait;

use crate::store::StoreError;

/// Objects by (bucket, key).
#[derive(Default)]
pub struct MemoryFiles {
    pub objects: Mutex<BTreeMap<(String, String), Vec<u8>>>,
}

impl MemoryFiles {
    pub fn insert(&self, bucket: &str, key: &str, body: impl Into<Vec<u8>>) {
        self.objects.lock().unwrap().insert((bucket.to_owned(), key.to_owned()), body.into());
    }

    pub fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        self.objects.lock().unwrap().get(&(bucket.to_owned(), key.to_owned())).cloned()
    }

    pub fn keys(&self) -> Vec<String> {
        self.objects.lock().unwrap().keys().map(|(_, key)| key.clone()).collect()
    }
}

#[async_trait]
impl crate::imports::ImportFiles for MemoryFiles {
    async fn read_from(
        &self,
        bucket: &str,
        key: &str,
        from: u64,
    ) -> Result<Option<crate::imports::ObjectReader>, StoreError> {
        Ok(self.get(bucket, key).map(|body| {
            let tail = body.get(from as usize..).unwrap_or_default().to_vec();
            Box::new(std::io::Cursor::new(tail)) as crate::imports::ObjectReader
        }))
    }

    async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), StoreError> {
        self.insert(bucket, key, body);
        Ok(())
    }

    async fn concatenate(&self, bucket: &str, prefix: &str, head: Vec<u8>, key: &str) -> Result<(), StoreError> {
        let mut objects = self.objects.lock().unwrap();
        let parts: Vec<(String, String)> =
            objects.keys().filter(|(b, k)| b == bucket && k.starts_with(prefix)).cloned().collect();
        if parts.is_empty() {
            return Ok(());
        }
        let mut joined = head;
        for part in &parts {
            joined.extend(objects.remove(part).unwrap_or_default());
        }
        objects.insert((bucket.to_owned(), key.to_owned()), joined);
        Ok(())
    }
}

/// Import jobs by id; `fail_saves` fails that many saves (an invocation dying mid-file).
#[derive(Default)]
pub struct MemoryImportJobs {
    pub jobs: Mutex<BTreeMap<String, crate::imports::ImportJob>>,
    pub fail_saves: AtomicUsize,
}

#[async_trait]
impl crate::imports::ImportJobStore for MemoryImportJobs {
    async fn create(&self, job: &crate::imports::ImportJob) -> Result<bool, StoreError> {
        let mut jobs = self.jobs.lock().unwrap();
        if jobs.contains_key(&job.job_id) {
            return Ok(false);
        }
        jobs.insert(job.job_id.clone(), job.clone());
        Ok(true)
    }

    async fn get(&self, job_id: &str) -> Result<Option<crate::imports::ImportJob>, StoreError> {
        Ok(self.jobs.lock().unwrap().get(job_id).cloned())
    }

    async fn save(&self, job: &crate::imports::ImportJob, expected_checkpoint: u64) -> Result<(), StoreError> {
        if self.fail_saves.load(Ordering::SeqCst) > 0 {
            self.fail_saves.fetch_sub(1, Ordering::SeqCst);
            return Err(StoreError::Transient("injected failure".into()));
        }
        let mut jobs = self.jobs.lock().unwrap();
        if jobs.get(&job.job_id).map(|j| j.resume.checkpoint) != Some(expected_checkpoint) {
            return Err(StoreError::Conflict);
        }
        jobs.insert(job.job_id.clone(), job.clone());
        Ok(())
    }

    async fn list(&self, limit: u32, cursor: Option<&str>) -> Result<crate::imports::ImportJobsPage, StoreError> {
        let mut jobs: Vec<_> = self.jobs.lock().unwrap().values().cloned().collect();
        jobs.sort_by(|a, b| (b.started_at, &b.job_id).cmp(&(a.started_at, &a.job_id)));
        // As the adapter: a page of none is the last, and a cursor it did not make fails.
        if limit == 0 {
            return Ok(crate::imports::ImportJobsPage::default());
        }
        let skip = match cursor {
            Some(c) => c.parse().map_err(|_| StoreError::Fatal("bad cursor".into()))?,
            None => 0usize,
        };
        let page: Vec<_> = jobs.iter().skip(skip).take(limit as usize).cloned().collect();
        let next = (skip + page.len() < jobs.len()).then(|| (skip + page.len()).to_string());
        Ok(crate::imports::ImportJobsPage { jobs: page, next })
    }
}

/// The continuation messages sent, by job id.
#[derive(Default)]
pub struct MemoryImportQueue(pub Mutex<Vec<String>>);

#[async_trait]
impl crate::imports::ImportQueue for MemoryImportQueue {
    async fn continue_job(&self, job_id: &str) -> Result<(), StoreError> {
        self.0.lock().unwrap().push(job_id.to_owned());
        Ok(())
    }
}
