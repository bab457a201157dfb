//! The imports bucket over S3: files are read as streams from an offset (a resumed
//! import skips what it already committed), and the rejected rows, written chunk by chunk
//! under a prefix, are joined into one object by a streamed multipart upload.

use async_trait::async_trait;
use aws_sdk_s3::{
    Client,
    error::SdkError,
    operation::get_object::GetObjectError,
    primitives::ByteStream,
    types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier},
};
use herald_core::{
    imports::{ImportFiles, ObjectReader},
    store::StoreError,
};

use crate::errors::{describe, unavailable};

/// Bytes gathered before they are uploaded as one part: S3 wants at least 5 MiB in every
/// part but the last; 8 MiB keeps the parts few and the memory bounded.
const PART_SIZE: usize = 8 * 1024 * 1024;
/// DeleteObjects takes at most 1000 keys.
const DELETE_LIMIT: usize = 1000;

#[derive(Clone, Debug)]
pub struct S3ImportFiles {
    client: Client,
}

impl S3ImportFiles {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// Every key under `prefix`, in key order (ListObjectsV2 lists in UTF-8 binary order).
    async fn keys_under(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        let mut pages = self.client.list_objects_v2().bucket(bucket).prefix(prefix).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(unavailable)?;
            keys.extend(page.contents.unwrap_or_default().into_iter().filter_map(|object| object.key));
        }
        keys.sort();
        Ok(keys)
    }

    /// Appends the parts to `buffer`, uploading a part whenever 8 MiB are gathered (the
    /// multipart upload is started then); answers the parts uploaded.
    async fn upload_parts(
        &self,
        bucket: &str,
        key: &str,
        parts: &[String],
        buffer: &mut Vec<u8>,
        upload: &mut Option<String>,
    ) -> Result<Vec<CompletedPart>, StoreError> {
        let mut completed = Vec::new();
        for part in parts {
            let object = self.client.get_object().bucket(bucket).key(part).send().await.map_err(unavailable)?;
            let mut body = object.body;
            while let Some(chunk) =
                body.try_next().await.map_err(|e| StoreError::Transient(crate::errors::describe(&e)))?
            {
                buffer.extend_from_slice(&chunk);
                if buffer.len() >= PART_SIZE {
                    let bytes = std::mem::replace(buffer, Vec::with_capacity(PART_SIZE + chunk.len()));
                    completed.push(self.upload_part(bucket, key, upload, completed.len() + 1, bytes).await?);
                }
            }
        }
        Ok(completed)
    }

    /// Uploads part `number` (1-based), starting the multipart upload on the first.
    async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload: &mut Option<String>,
        number: usize,
        bytes: Vec<u8>,
    ) -> Result<CompletedPart, StoreError> {
        let upload_id = match upload {
            Some(id) => id.clone(),
            None => {
                let created =
                    self.client.create_multipart_upload().bucket(bucket).key(key).send().await.map_err(unavailable)?;
                let id = created.upload_id.ok_or_else(|| StoreError::Transient("no upload id".into()))?;
                upload.insert(id).clone()
            }
        };
        let number = i32::try_from(number).map_err(|_| StoreError::Transient(format!("part {number}")))?;
        let output = self
            .client
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(CompletedPart::builder().part_number(number).set_e_tag(output.e_tag).build())
    }

    /// Uploads what is left in `buffer` as the last part (it may be under 5 MiB) and
    /// completes the upload.
    async fn complete_upload(
        &self,
        bucket: &str,
        key: &str,
        upload: &mut Option<String>,
        mut completed: Vec<CompletedPart>,
        buffer: Vec<u8>,
    ) -> Result<(), StoreError> {
        if !buffer.is_empty() {
            completed.push(self.upload_part(bucket, key, upload, completed.len() + 1, buffer).await?);
        }
        let upload_id = upload.clone().ok_or_else(|| StoreError::Transient("no upload to complete".into()))?;
        let parts = CompletedMultipartUpload::builder().set_parts(Some(completed)).build();
        self.client
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(parts)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn delete_all(&self, bucket: &str, keys: &[String]) -> Result<(), StoreError> {
        for chunk in keys.chunks(DELETE_LIMIT) {
            let objects = chunk
                .iter()
                .map(|key| ObjectIdentifier::builder().key(key).build().map_err(crate::errors::unbuildable))
                .collect::<Result<Vec<_>, _>>()?;
            let delete =
                Delete::builder().set_objects(Some(objects)).quiet(true).build().map_err(crate::errors::unbuildable)?;
            let output =
                self.client.delete_objects().bucket(bucket).delete(delete).send().await.map_err(unavailable)?;
            // DeleteObjects answers 200 even when some keys could not be deleted.
            if let Some(error) = output.errors.unwrap_or_default().first() {
                return Err(StoreError::Transient(format!(
                    "deleting {:?} failed: {} {}",
                    error.key.as_deref().unwrap_or_default(),
                    error.code.as_deref().unwrap_or_default(),
                    error.message.as_deref().unwrap_or_default()
                )));
            }
        }
        Ok(())
    }
}

/// The status code of a failed call, when the service answered.
fn status<E>(error: &SdkError<E>) -> Option<u16> {
    error.raw_response().map(|r| r.status().as_u16())
}

#[async_trait]
impl ImportFiles for S3ImportFiles {
    async fn read_from(&self, bucket: &str, key: &str, from: u64) -> Result<Option<ObjectReader>, StoreError> {
        let range = (from > 0).then(|| format!("bytes={from}-"));
        match self.client.get_object().bucket(bucket).key(key).set_range(range).send().await {
            Ok(object) => {
                // A store that ignored the range would replay the file from its start.
                if from > 0 && object.content_range.is_none() {
                    return Err(StoreError::Transient(format!(
                        "s3://{bucket}/{key}: the range from {from} was ignored"
                    )));
                }
                Ok(Some(Box::new(object.body.into_async_read())))
            }
            // The object was deleted (or never was): the import has nothing to read.
            Err(e) if matches!(e.as_service_error(), Some(GetObjectError::NoSuchKey(_))) => Ok(None),
            Err(e)
                if status(&e) == Some(404)
                    && e.as_service_error().and_then(|e| e.meta().code()) != Some("NoSuchBucket") =>
            {
                Ok(None)
            }
            // The offset is at (or past) the end: everything was read already.
            Err(e) if status(&e) == Some(416) => Ok(Some(Box::new(tokio::io::empty()))),
            Err(e) => Err(StoreError::Transient(describe(&e))),
        }
    }

    async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn concatenate(&self, bucket: &str, prefix: &str, head: Vec<u8>, key: &str) -> Result<(), StoreError> {
        let parts = self.keys_under(bucket, prefix).await?;
        if parts.is_empty() {
            // Joined by an earlier call whose caller stopped before recording it.
            return Ok(());
        }
        let mut buffer = head;
        let mut upload = None;
        let result = match self.upload_parts(bucket, key, &parts, &mut buffer, &mut upload).await {
            // Everything fitted in one buffer: a single PutObject.
            Ok(_) if upload.is_none() => self.put(bucket, key, buffer).await,
            Ok(completed) => self.complete_upload(bucket, key, &mut upload, completed, buffer).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            // An unfinished upload keeps its parts (and bills them) until aborted.
            if let Some(upload_id) = upload {
                let abort = self.client.abort_multipart_upload().bucket(bucket).key(key).upload_id(upload_id).send();
                if let Err(abort_error) = abort.await {
                    tracing::warn!(error = %describe(&abort_error), "aborting a multipart upload failed");
                }
            }
            return Err(e);
        }
        // Only once `key` holds them all: a failure before leaves the parts for a retry.
        self.delete_all(bucket, &parts).await
    }
}
