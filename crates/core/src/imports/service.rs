//! The import service: reads a dropped file as a stream, upserts its profiles with the
//! API's merge rules, accounts for every bad row, and checkpoints so that a long file
//! goes on in a fresh invocation without duplicating or losing a row.

use std::{
    collections::BTreeSet,
    io::{self, BufRead, BufReader, Cursor, Read},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use flate2::bufread::MultiGzDecoder;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::io::SyncIoBridge;

use chrono::Utc;
use herald_wire::backoff::Backoff;

use super::job::*;
use crate::{
    events::{DomainEvent, EventPublisher, ProfilesImported, PublishError},
    imports::{
        ImportFiles, ImportJobStore, ImportQueue, ObjectReader, parsing as import,
        parsing::{CsvMapping, CsvOptions, ImportError, ParsedRow, ResumeAt, RowError, RowIter, SNIFF_BYTES},
        patches::UserPatches,
    },
    profiles::{Profile, ProfileStore, ValidPatch, VersionedProfile},
    store::StoreError,
};

/// Where import files are dropped: the bucket notifies the importer of keys under it.
pub const IMPORTS_PREFIX: &str = "imports/";

/// A file the bucket reported as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DroppedFile {
    pub bucket: String,
    /// Decoded (S3 events carry keys URL-encoded).
    pub key: String,
    pub size: u64,
    /// S3's per-write sequencer: a redelivered notification names the same write, a new
    /// upload of the same key another one.
    pub sequencer: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportRunError {
    /// The job could not go on now; the message is retried.
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("reading the file failed: {0}")]
    Read(io::Error),
    #[error("the profiles of a slice kept changing under concurrent writes")]
    Contention,
    #[error("no job {0}")]
    UnknownJob(String),
}

/// How an invocation left a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    /// Not an import file (an errors object, a folder marker, outside `imports/`).
    Ignored,
    /// The job had finished before: nothing was done.
    AlreadyFinished,
    Done,
    Failed,
    /// Out of time: checkpointed, and a continuation message sent.
    Continued,
    /// Another invocation recorded progress on the job first; this one stopped.
    Superseded,
}

#[derive(Clone, Debug)]
pub struct ImportOptions {
    pub csv: CsvOptions,
    /// Users written per slice: one checkpoint, one event and at most one errors chunk each.
    pub users_per_slice: usize,
    /// Stops (and continues in a fresh invocation) after this many slices; None: only the
    /// deadline stops it. Bounds an invocation's work where no deadline does (tests, tuning).
    pub slices_per_invocation: Option<u32>,
    /// How long before the deadline the last slice must have been committed.
    pub stop_before_deadline: Duration,
    /// Waits between rounds of a slice's writes that lost a race.
    pub conflicts: Backoff,
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self {
            csv: CsvOptions::default(),
            users_per_slice: 1000,
            slices_per_invocation: None,
            stop_before_deadline: Duration::from_secs(60),
            conflicts: Backoff::new(Duration::from_millis(5), Duration::from_millis(500), 20),
        }
    }
}

/// Rejected rows held in one slice before it is written out regardless of its users.
const ERRORS_PER_SLICE: usize = 1000;

/// Users named in one `profiles.imported` event (ids are at most 128 characters, so an
/// event stays far below EventBridge's 256 KiB).
const USERS_PER_EVENT: usize = 1000;

pub struct ImportService {
    profiles: Arc<dyn ProfileStore>,
    jobs: Arc<dyn ImportJobStore>,
    files: Arc<dyn ImportFiles>,
    queue: Arc<dyn ImportQueue>,
    events: Arc<dyn EventPublisher>,
    pub options: ImportOptions,
    /// Where each committed slice's rows and rejects are counted.
    pub metrics: Arc<dyn crate::metrics::Metrics>,
}

/// The job id of one write of a file: stable across redelivered notifications.
pub fn job_id_for(file: &DroppedFile) -> String {
    let digest = Sha256::digest(format!("{}\n{}\n{}", file.bucket, file.key, file.sequencer));
    format!("imp_{}", &hex::encode(digest)[..24])
}

/// Why a key is not an import file, if it is not.
fn not_an_import(key: &str) -> Option<&'static str> {
    if !key.starts_with(IMPORTS_PREFIX) {
        Some("outside imports/")
    } else if key.ends_with('/') {
        Some("a folder marker")
    } else if key.split('/').any(|segment| segment == "errors") {
        Some("an errors object")
    } else {
        None
    }
}

/// `errors/<file>.csv` beside the input: `imports/a/users.csv.gz` → `imports/a/errors/users.csv`.
pub fn errors_key(key: &str) -> String {
    let (dir, name) = key.rsplit_once('/').map_or(("", key), |(dir, name)| (dir, name));
    let name = name.strip_suffix(".gz").unwrap_or(name);
    let name = if name.ends_with(".csv") { name.to_owned() } else { format!("{name}.csv") };
    if dir.is_empty() { format!("errors/{name}") } else { format!("{dir}/errors/{name}") }
}

/// Where a job keeps its slices' rejected rows until they are joined into the errors object.
fn error_parts_prefix(job: &ImportJob) -> String {
    format!("{}.parts/{}/", errors_key(&job.key), job.job_id)
}

impl ImportService {
    pub fn new(
        profiles: Arc<dyn ProfileStore>,
        jobs: Arc<dyn ImportJobStore>,
        files: Arc<dyn ImportFiles>,
        queue: Arc<dyn ImportQueue>,
        events: Arc<dyn EventPublisher>,
    ) -> Self {
        let metrics = Arc::new(crate::metrics::NoMetrics);
        Self { profiles, jobs, files, queue, events, options: ImportOptions::default(), metrics }
    }

    /// Imports a file the bucket reported, or goes on with its job if it was started.
    pub async fn start(&self, file: &DroppedFile, deadline: Instant) -> Result<RunOutcome, ImportRunError> {
        if let Some(reason) = not_an_import(&file.key) {
            tracing::info!(key = %file.key, reason, "not an import file; ignored");
            return Ok(RunOutcome::Ignored);
        }
        let now = Utc::now();
        let job = ImportJob {
            job_id: job_id_for(file),
            bucket: file.bucket.clone(),
            key: file.key.clone(),
            state: ImportState::Running,
            format: None,
            gzip: false,
            bytes_total: file.size,
            bytes_done: 0,
            rows_read: 0,
            imported: 0,
            unchanged: 0,
            rejected: 0,
            unknown_columns: Vec::new(),
            errors_key: None,
            failure: None,
            started_at: now,
            updated_at: now,
            finished_at: None,
            resume: Resume { offset: 0, line: 1, ..Resume::default() },
        };
        if self.jobs.create(&job).await? {
            tracing::info!(job_id = %job.job_id, key = %job.key, bytes = job.bytes_total, "import started");
            return self.run(job, deadline).await;
        }
        self.resume(&job.job_id, deadline).await
    }

    /// Goes on with a job from its last checkpoint.
    pub async fn resume(&self, job_id: &str, deadline: Instant) -> Result<RunOutcome, ImportRunError> {
        let job = self.jobs.get(job_id).await?.ok_or_else(|| ImportRunError::UnknownJob(job_id.to_owned()))?;
        if job.state != ImportState::Running {
            return Ok(RunOutcome::AlreadyFinished);
        }
        self.run(job, deadline).await
    }

    async fn run(&self, mut job: ImportJob, deadline: Instant) -> Result<RunOutcome, ImportRunError> {
        // A later invocation may repeat the slice an earlier one wrote but did not commit:
        // its events are sent again for every user it touches.
        let mut republish = job.resume.invocations > 0;
        job.resume.invocations += 1;
        let plan = match job.format() {
            None => Plan::Sniff,
            Some(format) => Plan::Resume {
                format,
                gzip: job.gzip,
                at: ResumeAt { offset: job.resume.offset, line: job.resume.line },
                csv_header: job.resume.csv_header.clone(),
            },
        };
        let from = match &plan {
            Plan::Resume { gzip: false, at, .. } => at.offset,
            _ => 0,
        };
        let Some(reader) = self.files.read_from(&job.bucket, &job.key, from).await? else {
            return self.fail(job, "the file is gone: it was deleted before it was imported".into()).await;
        };
        let (sender, mut slices) = mpsc::channel(2);
        let parser = Parser {
            plan,
            csv: self.options.csv.clone(),
            users_per_slice: self.options.users_per_slice.max(1),
            raw_bytes: Arc::new(AtomicU64::new(from)),
            sender,
        };
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || parser.run(reader, handle));

        let mut slices_done = 0u32;
        while let Some(parsed) = slices.recv().await {
            let slice = match parsed {
                Parsed::Started { format, gzip, csv_header, unknown_columns } => {
                    if !unknown_columns.is_empty() {
                        tracing::warn!(job_id = %job.job_id, columns = ?unknown_columns, "unknown columns ignored");
                    }
                    job.format = Some(format_name(format).to_owned());
                    job.gzip = gzip;
                    job.resume.csv_header = csv_header;
                    job.unknown_columns = unknown_columns;
                    continue;
                }
                Parsed::Failed(ImportError::Read(e)) if !is_corrupt(&e) => return Err(ImportRunError::Read(e)),
                Parsed::Failed(e) => return self.fail(job, e.to_string()).await,
                Parsed::Slice(slice) => slice,
            };
            let last = slice.last;
            self.commit(&mut job, slice, republish).await?;
            republish = false;
            match self.checkpoint(&mut job).await {
                Err(StoreError::Conflict) => {
                    tracing::warn!(job_id = %job.job_id, "another invocation went on with this job; stopping");
                    return Ok(RunOutcome::Superseded);
                }
                other => other?,
            }
            if last {
                return self.finish(job).await;
            }
            slices_done += 1;
            let out_of_slices = self.options.slices_per_invocation.is_some_and(|n| slices_done >= n);
            if out_of_slices || Instant::now() + self.options.stop_before_deadline >= deadline {
                self.queue.continue_job(&job.job_id).await?;
                tracing::info!(job_id = %job.job_id, offset = job.resume.offset, "import goes on in a new invocation");
                return Ok(RunOutcome::Continued);
            }
        }
        // The parser ended without a last slice: it panicked.
        Err(ImportRunError::Read(io::Error::other("the parser stopped unexpectedly")))
    }

    /// Writes a slice's profiles, sends its events, stores its rejected rows and counts it
    /// into the job (not yet saved).
    async fn commit(&self, job: &mut ImportJob, slice: Slice, republish: bool) -> Result<(), ImportRunError> {
        let format = job.format().unwrap_or(import::Format::Csv);
        let mut errors = slice.errors;
        let applied = self.apply(format, slice.users, &mut errors).await?;
        let mut event = ProfilesImported {
            job_id: job.job_id.clone(),
            user_ids: applied.changed,
            changed_attributes: applied.attributes.into_iter().collect(),
            changed_fields: applied.fields.into_iter().collect(),
            everything: applied.created,
        };
        if republish && !applied.unchanged_users.is_empty() {
            event.user_ids.extend(applied.unchanged_users);
            event.everything = true;
        }
        self.publish(event).await?;
        let rejected: u64 = errors.iter().map(|(_, rows)| rows).sum();
        if !errors.is_empty() {
            errors.sort_by_key(|(e, _)| e.line);
            let key = format!("{}{:020}.csv", error_parts_prefix(job), slice.start.offset);
            self.files.put(&job.bucket, &key, error_rows_csv(&errors)).await?;
        }
        self.metrics.count(crate::metrics::Metric::ImportRows, &[], applied.imported);
        self.metrics.count(crate::metrics::Metric::ImportRejects, &[], rejected);
        job.rows_read += slice.records;
        job.imported += applied.imported;
        job.unchanged += applied.unchanged;
        job.rejected += rejected;
        job.resume.offset = slice.end.offset;
        job.resume.line = slice.end.line;
        job.bytes_done = if job.gzip { slice.raw_bytes } else { slice.end.offset }.min(job.bytes_total);
        Ok(())
    }

    /// Merges each user's patch into the stored profile with the API's rules and saves the
    /// changed ones under their versions; users that lost a race are read again and merged
    /// again. A merge the profile refuses (too many attributes once merged) rejects the
    /// user's rows into `errors`.
    async fn apply(
        &self,
        format: import::Format,
        users: Vec<(ParsedRow, u64)>,
        errors: &mut Vec<(RowError, u64)>,
    ) -> Result<Applied, ImportRunError> {
        let mut applied = Applied::default();
        let ids: Vec<String> = users.iter().map(|(row, _)| row.user_id.clone()).collect();
        let mut stored = self.profiles.load_many(&ids).await?;
        let mut pending = users;
        let mut retry = 0;
        loop {
            let mut writes = Vec::new();
            let mut written = Vec::new();
            for (row, rows) in pending.drain(..) {
                let current = stored.remove(&row.user_id);
                let expected = current.as_ref().map_or(0, |s| s.version);
                let existing = current.and_then(|s| s.profile);
                let created = existing.is_none();
                let mut profile = existing.unwrap_or_else(|| Profile::new(row.user_id.clone()));
                // Rows were validated as they were read; a Pinpoint user's endpoints added to
                // the stored profile can outgrow a limit, so they are checked again.
                let patch = match format {
                    import::Format::PinpointExport => {
                        crate::imports::patches::adding_to(&profile, row.patch.clone()).validate()
                    }
                    _ => Ok(ValidPatch::from_validated_rows(row.patch.clone())),
                };
                match patch.and_then(|patch| patch.merge_into(&mut profile)) {
                    Err(invalid) => {
                        let reason =
                            invalid.0.iter().map(|f| format!("{}: {}", f.field, f.message)).collect::<Vec<_>>();
                        let error = RowError {
                            line: row.line,
                            reason: format!("merged with the stored profile: {}", reason.join("; ")),
                            end_offset: row.end_offset,
                            next_line: row.next_line,
                        };
                        errors.push((error, rows));
                    }
                    Ok(changes) if !created && changes.is_empty() => {
                        applied.imported += rows;
                        applied.unchanged += rows;
                        applied.unchanged_users.push(row.user_id);
                    }
                    Ok(changes) => {
                        profile.version = expected + 1;
                        profile.updated_at = Utc::now();
                        writes.push(VersionedProfile { profile, expected_version: expected });
                        written.push((row, rows, changes, created));
                    }
                }
            }
            let saved = self.profiles.save_many(&writes).await?;
            for ((row, rows, changes, created), saved) in written.into_iter().zip(saved) {
                if saved {
                    applied.imported += rows;
                    applied.created |= created;
                    applied.attributes.extend(changes.attributes);
                    applied.fields.extend(changes.fields);
                    applied.changed.push(row.user_id);
                } else {
                    pending.push((row, rows));
                }
            }
            if pending.is_empty() {
                return Ok(applied);
            }
            if !self.options.conflicts.wait(retry).await {
                return Err(ImportRunError::Contention);
            }
            retry += 1;
            // The race was lost to a recent write: read it strongly consistent.
            for (row, _) in &pending {
                if let Some(current) = self.profiles.load(&row.user_id).await? {
                    stored.insert(row.user_id.clone(), current);
                }
            }
        }
    }

    async fn publish(&self, event: ProfilesImported) -> Result<(), PublishError> {
        if event.user_ids.is_empty() {
            return Ok(());
        }
        let events: Vec<DomainEvent> = event
            .user_ids
            .chunks(USERS_PER_EVENT)
            .map(|users| DomainEvent::ProfilesImported(ProfilesImported { user_ids: users.to_vec(), ..event.clone() }))
            .collect();
        self.events.publish(&events).await
    }

    /// Records the job's progress, fenced against another invocation of the same job.
    async fn checkpoint(&self, job: &mut ImportJob) -> Result<(), StoreError> {
        let expected = job.resume.checkpoint;
        job.resume.checkpoint += 1;
        job.updated_at = Utc::now();
        self.jobs.save(job, expected).await
    }

    /// After the last slice was committed: joins the rejected rows into the errors object
    /// and marks the job done.
    async fn finish(&self, mut job: ImportJob) -> Result<RunOutcome, ImportRunError> {
        if job.rejected > 0 {
            let key = errors_key(&job.key);
            self.files.concatenate(&job.bucket, &error_parts_prefix(&job), b"line,reason\n".to_vec(), &key).await?;
            job.errors_key = Some(key);
        }
        job.state = ImportState::Done;
        job.bytes_done = job.bytes_total;
        job.finished_at = Some(Utc::now());
        match self.checkpoint(&mut job).await {
            Err(StoreError::Conflict) => return Ok(RunOutcome::Superseded),
            other => other?,
        }
        tracing::info!(
            job_id = %job.job_id, rows = job.rows_read, imported = job.imported, unchanged = job.unchanged,
            rejected = job.rejected, "import done"
        );
        Ok(RunOutcome::Done)
    }

    async fn fail(&self, mut job: ImportJob, reason: String) -> Result<RunOutcome, ImportRunError> {
        tracing::warn!(job_id = %job.job_id, %reason, "import failed");
        job.state = ImportState::Failed;
        job.failure = Some(reason);
        job.finished_at = Some(Utc::now());
        match self.checkpoint(&mut job).await {
            Err(StoreError::Conflict) => Ok(RunOutcome::Superseded),
            Err(e) => Err(e.into()),
            Ok(()) => Ok(RunOutcome::Failed),
        }
    }
}

/// Damaged data (a broken gzip stream) fails the job; any other read error is retried.
fn is_corrupt(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput | io::ErrorKind::UnexpectedEof)
}

fn error_rows_csv(errors: &[(RowError, u64)]) -> Vec<u8> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    for (error, rows) in errors {
        let reason = match rows {
            1 => error.reason.clone(),
            n => format!("{} (the user's {} earlier rows are rejected with it)", error.reason, n - 1),
        };
        writer.write_record([error.line.to_string(), reason]).expect("writing to memory");
    }
    writer.into_inner().expect("writing to memory")
}

#[derive(Default)]
struct Applied {
    imported: u64,
    unchanged: u64,
    changed: Vec<String>,
    unchanged_users: Vec<String>,
    created: bool,
    attributes: BTreeSet<String>,
    fields: BTreeSet<String>,
}

// ---------------------------------------------------------------------------------------
// Parsing, on a blocking thread ahead of the writes

enum Plan {
    /// The first invocation: tell the format from the first bytes.
    Sniff,
    Resume {
        format: import::Format,
        gzip: bool,
        at: ResumeAt,
        csv_header: Option<Vec<String>>,
    },
}

enum Parsed {
    Started { format: import::Format, gzip: bool, csv_header: Option<Vec<String>>, unknown_columns: Vec<String> },
    Slice(Slice),
    Failed(ImportError),
}

struct Slice {
    /// Where the slice's first record starts, and where the next slice starts.
    start: ResumeAt,
    end: ResumeAt,
    /// Each user once, with how many rows went into them.
    users: Vec<(ParsedRow, u64)>,
    errors: Vec<(RowError, u64)>,
    records: u64,
    /// Bytes of the object (compressed, for gzip) read so far.
    raw_bytes: u64,
    last: bool,
}

struct Parser {
    plan: Plan,
    csv: CsvOptions,
    users_per_slice: usize,
    raw_bytes: Arc<AtomicU64>,
    sender: mpsc::Sender<Parsed>,
}

type Input = Box<dyn BufRead + Send>;

impl Parser {
    fn run(self, reader: ObjectReader, handle: tokio::runtime::Handle) {
        let raw = Counting { inner: SyncIoBridge::new_with_handle(reader, handle), count: self.raw_bytes.clone() };
        let rows = match self.open(BufReader::with_capacity(SNIFF_BYTES, raw)) {
            Ok(rows) => rows,
            Err(e) => {
                let _ = self.sender.blocking_send(Parsed::Failed(e));
                return;
            }
        };
        self.slices(rows);
    }

    fn open(&self, raw: BufReader<Counting>) -> Result<RowIter<Input>, ImportError> {
        match &self.plan {
            Plan::Sniff => {
                let (head, raw) = peek(raw)?;
                let sniffed = import::sniff(&head)?;
                let (format, input): (_, Input) = if sniffed.gzip {
                    let decoded = BufReader::new(MultiGzDecoder::new(Cursor::new(head).chain(raw)));
                    let (head, decoded) = peek(decoded)?;
                    let format = import::sniff(&head)?
                        .format
                        .ok_or_else(|| ImportError::NotAnImportFile("gzip holding another compressed file".into()))?;
                    (format, Box::new(BufReader::new(Cursor::new(head).chain(decoded))))
                } else {
                    let format = sniffed.format.expect("a file that is not gzip has a format");
                    (format, Box::new(Cursor::new(head).chain(raw)))
                };
                let rows = import::rows(input, format, &self.csv)?;
                let csv_header = rows.csv_mapping().map(|m| m.header().to_vec());
                let started = Parsed::Started {
                    format,
                    gzip: sniffed.gzip,
                    csv_header,
                    unknown_columns: rows.unknown_columns().to_vec(),
                };
                let _ = self.sender.blocking_send(started);
                Ok(rows)
            }
            Plan::Resume { format, gzip, at, csv_header } => {
                let input: Input = if *gzip {
                    // A gzip stream cannot be entered in the middle: decompress up to the offset.
                    let mut decoded = BufReader::new(MultiGzDecoder::new(raw));
                    io::copy(&mut (&mut decoded).take(at.offset), &mut io::sink())?;
                    Box::new(decoded)
                } else {
                    Box::new(raw)
                };
                match csv_header {
                    Some(header) => {
                        let (mapping, _) = CsvMapping::from_header(header, self.csv.multi_value_separator)?;
                        Ok(import::rows_after_header(input, mapping, *at))
                    }
                    None => import::json_rows_from(input, *format, *at),
                }
            }
        }
    }

    fn slices(self, mut rows: RowIter<Input>) {
        let mut users = UserPatches::for_format(rows.format());
        let mut errors = Vec::new();
        let mut records = 0;
        let mut start = rows.position();
        loop {
            let next = rows.next();
            let last = match next {
                None => true,
                Some(Err(e)) => {
                    let _ = self.sender.blocking_send(Parsed::Failed(e));
                    return;
                }
                Some(Ok(Ok(row))) => {
                    users.add(row);
                    false
                }
                Some(Ok(Err(error))) => {
                    errors.push((error, 1));
                    false
                }
            };
            if !last {
                records += 1;
            }
            if last || users.len() >= self.users_per_slice || errors.len() >= ERRORS_PER_SLICE {
                let end = rows.position();
                let slice = Slice {
                    start,
                    end,
                    users: users.drain_counted().collect(),
                    errors: std::mem::take(&mut errors),
                    records: std::mem::take(&mut records),
                    raw_bytes: self.raw_bytes.load(Ordering::Relaxed),
                    last,
                };
                // The receiver is gone once the invocation stopped: so does the parser.
                if self.sender.blocking_send(Parsed::Slice(slice)).is_err() || last {
                    return;
                }
                start = end;
            }
        }
    }
}

/// Reads up to [`SNIFF_BYTES`] (less only at the end of the input) and gives them back
/// with the rest of the input.
fn peek<R: Read>(mut input: R) -> Result<(Vec<u8>, R), ImportError> {
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    (&mut input).take(SNIFF_BYTES as u64).read_to_end(&mut head)?;
    Ok((head, input))
}

/// Counts the bytes read from the object, for progress through a compressed file.
struct Counting {
    inner: SyncIoBridge<ObjectReader>,
    count: Arc<AtomicU64>,
}

impl Read for Counting {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}
