//! The import service over in-memory ports: what a file does to profiles, the job, the
//! errors object and the events, across slices, invocations and failures.

use std::{
    io::Write,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use herald_core::{
    events::{DomainEvent, memory::MemoryBus},
    imports::{
        DroppedFile, ImportJob, ImportJobStore, ImportService, ImportState, RunOutcome, job_id_for,
        memory::{MemoryFiles, MemoryImportJobs, MemoryImportQueue},
    },
    profiles::{ProfileStore, memory::MemoryProfiles},
    store::StoreError,
};

const BUCKET: &str = "imports-bucket";

struct Harness {
    profiles: Arc<MemoryProfiles>,
    jobs: Arc<MemoryImportJobs>,
    files: Arc<MemoryFiles>,
    queue: Arc<MemoryImportQueue>,
    bus: Arc<MemoryBus>,
    service: ImportService,
}

fn harness() -> Harness {
    let profiles = Arc::new(MemoryProfiles::default());
    let jobs = Arc::new(MemoryImportJobs::default());
    let files = Arc::new(MemoryFiles::default());
    let queue = Arc::new(MemoryImportQueue::default());
    let bus = Arc::new(MemoryBus::default());
    let service = ImportService::new(profiles.clone(), jobs.clone(), files.clone(), queue.clone(), bus.clone());
    Harness { profiles, jobs, files, queue, bus, service }
}

fn later() -> Instant {
    Instant::now() + Duration::from_secs(900)
}

impl Harness {
    fn drop_file(&self, key: &str, body: impl Into<Vec<u8>>, sequencer: &str) -> DroppedFile {
        let body = body.into();
        let size = body.len() as u64;
        self.files.insert(BUCKET, key, body);
        DroppedFile { bucket: BUCKET.into(), key: key.into(), size, sequencer: sequencer.into() }
    }

    async fn import(&self, key: &str, body: impl Into<Vec<u8>>) -> ImportJob {
        let file = self.drop_file(key, body, "0001");
        assert_eq!(self.service.start(&file, later()).await.unwrap(), RunOutcome::Done);
        self.job(&file).await
    }

    async fn job(&self, file: &DroppedFile) -> ImportJob {
        self.jobs.get(&job_id_for(file)).await.unwrap().unwrap()
    }

    async fn profile(&self, user_id: &str) -> herald_core::profiles::Profile {
        self.profiles.load(user_id).await.unwrap().and_then(|s| s.profile).unwrap()
    }

    fn imported_users(&self) -> Vec<String> {
        let published = self.bus.published.lock().unwrap();
        published
            .iter()
            .flat_map(|e| match e {
                DomainEvent::ProfilesImported(e) => e.user_ids.clone(),
                _ => vec![],
            })
            .collect()
    }

    fn errors(&self, key: &str) -> String {
        String::from_utf8(self.files.get(BUCKET, key).expect("an errors object")).unwrap()
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn numbered_csv(users: u32) -> String {
    let mut csv = String::from("user_id,email,attr.plan\n");
    for i in 0..users {
        csv.push_str(&format!("u{i},u{i}@example.com,pro\n"));
    }
    csv
}

#[tokio::test]
async fn a_csv_file_creates_its_profiles_and_counts_its_rows() {
    let h = harness();
    let job =
        h.import("imports/users.csv", "user_id,email,attr.tags\nu1,a@example.com,vip;new\nu2,b@example.com,\n").await;
    assert_eq!((job.state, job.rows_read, job.imported, job.unchanged, job.rejected), (ImportState::Done, 2, 2, 0, 0));
    assert_eq!(job.format.as_deref(), Some("csv"));
    assert_eq!(job.bytes_done, job.bytes_total);
    assert!(job.finished_at.is_some());
    let u1 = h.profile("u1").await;
    assert_eq!(u1.email.as_deref(), Some("a@example.com"));
    assert_eq!(u1.attributes["tags"].iter().collect::<Vec<_>>(), ["new", "vip"]);
    assert_eq!(u1.version, 1);
    assert_eq!(h.imported_users(), ["u1", "u2"]);
}

#[tokio::test]
async fn each_slice_counts_its_rows_and_rejects_in_the_metrics() {
    use herald_core::metrics::{Metric, memory::MemoryMetrics};
    let mut h = harness();
    let metrics = Arc::new(MemoryMetrics::default());
    h.service.metrics = metrics.clone();
    h.service.options.users_per_slice = 2;
    h.import("imports/m.csv", "user_id,email\nu1,a@example.com\nu2,not-an-email\nu3,c@example.com\nu4,d@example.com\n")
        .await;
    assert_eq!(metrics.total(Metric::ImportRows, &[]), 3.0);
    assert_eq!(metrics.total(Metric::ImportRejects, &[]), 1.0);
    let slices = metrics.recorded.lock().unwrap().iter().filter(|(m, ..)| *m == Metric::ImportRows).count();
    assert_eq!(slices, 2, "one count per slice, not per row");
}

#[tokio::test]
async fn bad_rows_go_to_the_errors_object_with_line_and_reason_and_the_rest_is_imported() {
    let h = harness();
    let job = h
        .import("imports/crm/users.csv", "user_id,email\nu1,a@example.com\nu2,not-an-email\n,c@example.com\nu4,\n")
        .await;
    assert_eq!((job.rows_read, job.imported, job.rejected), (4, 2, 2));
    assert_eq!(job.errors_key.as_deref(), Some("imports/crm/errors/users.csv"));
    let errors = h.errors("imports/crm/errors/users.csv");
    let lines: Vec<&str> = errors.lines().collect();
    assert_eq!(lines[0], "line,reason");
    assert!(lines[1].starts_with("3,") && lines[1].contains("email"), "{errors}");
    assert!(lines[2].starts_with("4,") && lines[2].contains("user_id"), "{errors}");
    assert_eq!(lines.len(), 3);
    assert!(h.files.keys().iter().all(|k| !k.contains(".parts/")), "the parts are removed: {:?}", h.files.keys());
}

#[tokio::test]
async fn importing_the_same_file_again_changes_nothing_and_publishes_nothing() {
    let h = harness();
    let body = numbered_csv(5);
    h.import("imports/users.csv", body.clone()).await;
    let published = h.bus.published.lock().unwrap().len();
    let again = h.drop_file("imports/users.csv", body, "0002");
    assert_eq!(h.service.start(&again, later()).await.unwrap(), RunOutcome::Done);
    let job = h.job(&again).await;
    assert_eq!((job.imported, job.unchanged), (5, 5));
    assert_eq!(h.profile("u3").await.version, 1);
    assert_eq!(h.bus.published.lock().unwrap().len(), published);
}

#[tokio::test]
async fn a_redelivered_notification_of_a_finished_job_does_nothing() {
    let h = harness();
    let file = h.drop_file("imports/users.csv", numbered_csv(3), "0001");
    h.service.start(&file, later()).await.unwrap();
    assert_eq!(h.service.start(&file, later()).await.unwrap(), RunOutcome::AlreadyFinished);
}

#[tokio::test]
async fn a_long_file_goes_on_in_new_invocations_from_its_checkpoint() {
    let mut h = harness();
    h.service.options.users_per_slice = 10;
    h.service.options.slices_per_invocation = Some(3);
    let file = h.drop_file("imports/users.csv", numbered_csv(95), "0001");
    assert_eq!(h.service.start(&file, later()).await.unwrap(), RunOutcome::Continued);
    let job = h.job(&file).await;
    assert_eq!((job.state, job.rows_read), (ImportState::Running, 30));
    assert!(job.bytes_done > 0 && job.bytes_done < job.bytes_total);
    h.run_continuations().await;
    let job = h.job(&file).await;
    assert_eq!((job.state, job.rows_read, job.imported, job.resume.invocations), (ImportState::Done, 95, 95, 4));
    assert_eq!(h.profiles.records.lock().unwrap().len(), 95);
}

impl Harness {
    /// Plays the queue: runs every continuation message, including those the runs send.
    async fn run_continuations(&self) {
        loop {
            let next = self.queue.0.lock().unwrap().pop();
            let Some(job_id) = next else { return };
            self.service.resume(&job_id, later()).await.unwrap();
        }
    }
}

#[tokio::test]
async fn an_invocation_that_dies_before_its_checkpoint_is_resumed_with_no_row_lost_or_counted_twice() {
    let mut h = harness();
    h.service.options.users_per_slice = 10;
    let file = h.drop_file("imports/users.csv", numbered_csv(35), "0001");
    let job_id = job_id_for(&file);
    h.service.options.slices_per_invocation = Some(1);
    assert_eq!(h.service.start(&file, later()).await.unwrap(), RunOutcome::Continued);
    // The second slice's profiles are written, then recording its checkpoint fails.
    h.jobs.fail_saves.store(1, Ordering::SeqCst);
    assert!(h.service.resume(&job_id, later()).await.is_err());
    assert_eq!(h.profiles.records.lock().unwrap().len(), 20, "the dying invocation wrote its slice");
    h.service.options.slices_per_invocation = None;
    h.queue.0.lock().unwrap().clear();
    // The message comes back after its visibility timeout.
    assert_eq!(h.service.resume(&job_id, later()).await.unwrap(), RunOutcome::Done);
    let job = h.job(&file).await;
    assert_eq!((job.rows_read, job.imported, job.rejected), (35, 35, 0));
    assert_eq!(h.profiles.records.lock().unwrap().len(), 35);
    assert!(h.profiles.records.lock().unwrap().values().all(|p| p.version == 1), "each profile written once");
    let users = h.imported_users();
    for i in 10..20 {
        assert!(users.contains(&format!("u{i}")), "the slice written before the crash is published again: u{i}");
    }
}

#[tokio::test]
async fn a_gzip_compressed_csv_is_imported_and_resumed_inside_the_compressed_stream() {
    let mut h = harness();
    h.service.options.users_per_slice = 10;
    h.service.options.slices_per_invocation = Some(2);
    let file = h.drop_file("imports/users.csv.gz", gzip(numbered_csv(45).as_bytes()), "0001");
    assert_eq!(h.service.start(&file, later()).await.unwrap(), RunOutcome::Continued);
    h.run_continuations().await;
    let job = h.job(&file).await;
    assert_eq!((job.state, job.gzip, job.rows_read, job.imported), (ImportState::Done, true, 45, 45));
    assert_eq!(h.profiles.records.lock().unwrap().len(), 45);
}

#[tokio::test]
async fn json_lines_are_merged_with_the_apis_rules() {
    let h = harness();
    h.import(
        "imports/a.jsonl",
        "{\"user_id\":\"u1\",\"email\":\"a@example.com\",\"attributes\":{\"plan\":[\"free\"]}}\n",
    )
    .await;
    let job =
        h.import("imports/b.jsonl", "{\"user_id\":\"u1\",\"email\":null,\"attributes\":{\"tier\":[\"2\"]}}\n").await;
    assert_eq!(job.format.as_deref(), Some("jsonl"));
    let u1 = h.profile("u1").await;
    assert_eq!(u1.email, None);
    assert_eq!(u1.attributes.keys().collect::<Vec<_>>(), ["plan", "tier"]);
    assert_eq!(u1.version, 2);
}

#[tokio::test]
async fn a_pinpoint_users_endpoints_in_different_slices_add_up() {
    let mut h = harness();
    h.service.options.users_per_slice = 1;
    let export = concat!(
        r#"{"ChannelType":"GCM","Address":"fcm-token-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","User":{"UserId":"u1"}}"#,
        "
",
        r#"{"ChannelType":"EMAIL","Address":"b@example.com","User":{"UserId":"u2"}}"#,
        "
",
        r#"{"ChannelType":"GCM","Address":"fcm-token-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbb","User":{"UserId":"u1"}}"#,
        "
"
    );
    let job = h.import("imports/export.json", export).await;
    assert_eq!((job.format.as_deref(), job.imported), (Some("pinpoint"), 3));
    assert_eq!(h.profile("u1").await.device_tokens.len(), 2);
}

#[tokio::test]
async fn a_file_that_is_no_import_file_fails_the_job_with_its_reason() {
    let h = harness();
    let file = h.drop_file("imports/logo.png", b"\x89PNG\r\n\x1a\n....".to_vec(), "0001");
    assert_eq!(h.service.start(&file, later()).await.unwrap(), RunOutcome::Failed);
    let job = h.job(&file).await;
    assert_eq!(job.state, ImportState::Failed);
    assert!(job.failure.as_deref().unwrap().contains("PNG"), "{:?}", job.failure);
    assert!(h.profiles.records.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_csv_without_a_user_id_column_fails_the_job() {
    let h = harness();
    let file = h.drop_file("imports/users.csv", "email,phone\na@example.com,\n", "0001");
    assert_eq!(h.service.start(&file, later()).await.unwrap(), RunOutcome::Failed);
    assert!(h.job(&file).await.failure.unwrap().contains("user_id"));
}

#[tokio::test]
async fn errors_objects_and_folder_markers_are_not_imported() {
    let h = harness();
    for key in
        ["imports/errors/users.csv", "imports/x/errors/users.csv.parts/imp_1/0.csv", "imports/", "other/users.csv"]
    {
        let file = h.drop_file(key, numbered_csv(1), "0001");
        assert_eq!(h.service.start(&file, later()).await.unwrap(), RunOutcome::Ignored, "{key}");
    }
    assert!(h.jobs.jobs.lock().unwrap().is_empty());
}

#[tokio::test]
async fn unknown_columns_are_ignored_and_reported_once_on_the_job() {
    let h = harness();
    let job = h.import("imports/users.csv", "user_id,shoe_size,email,shoe_size\nu1,42,a@example.com,43\n").await;
    assert_eq!(job.unknown_columns, ["shoe_size"]);
    assert_eq!(job.imported, 1);
}

#[tokio::test]
async fn a_deleted_file_fails_the_job() {
    let h = harness();
    let file = DroppedFile { bucket: BUCKET.into(), key: "imports/gone.csv".into(), size: 10, sequencer: "1".into() };
    assert_eq!(h.service.start(&file, later()).await.unwrap(), RunOutcome::Failed);
    assert!(h.job(&file).await.failure.unwrap().contains("gone"));
}

/// A job store whose reads return the job as it was when `freeze` was called: an
/// invocation that read the job before another one recorded progress.
struct StaleReads {
    inner: Arc<MemoryImportJobs>,
    frozen: std::sync::Mutex<Option<ImportJob>>,
}

#[async_trait::async_trait]
impl ImportJobStore for StaleReads {
    async fn create(&self, job: &ImportJob) -> Result<bool, StoreError> {
        self.inner.create(job).await
    }
    async fn get(&self, job_id: &str) -> Result<Option<ImportJob>, StoreError> {
        let frozen = self.frozen.lock().unwrap().clone();
        match frozen {
            Some(job) => Ok(Some(job)),
            None => self.inner.get(job_id).await,
        }
    }
    async fn save(&self, job: &ImportJob, expected: u64) -> Result<(), StoreError> {
        self.inner.save(job, expected).await
    }
    async fn list(&self, limit: u32, cursor: Option<&str>) -> Result<herald_core::imports::ImportJobsPage, StoreError> {
        self.inner.list(limit, cursor).await
    }
}

#[tokio::test]
async fn an_invocation_overtaken_by_another_of_the_same_job_stops_without_recording() {
    let h = harness();
    let stale = Arc::new(StaleReads { inner: h.jobs.clone(), frozen: Default::default() });
    let mut service =
        ImportService::new(h.profiles.clone(), stale.clone(), h.files.clone(), h.queue.clone(), h.bus.clone());
    service.options.users_per_slice = 5;
    service.options.slices_per_invocation = Some(1);
    let file = h.drop_file("imports/users.csv", numbered_csv(20), "0001");
    service.start(&file, later()).await.unwrap();
    let job_id = job_id_for(&file);
    *stale.frozen.lock().unwrap() = h.jobs.get(&job_id).await.unwrap();
    assert_eq!(service.resume(&job_id, later()).await.unwrap(), RunOutcome::Continued);
    assert_eq!(service.resume(&job_id, later()).await.unwrap(), RunOutcome::Superseded);
    assert_eq!(h.jobs.get(&job_id).await.unwrap().unwrap().rows_read, 10);
}
