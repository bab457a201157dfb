//! Bulk import: a generated 1,000,000-row CSV through the import service with the stores
//! stubbed (throughput per core of CPU time, and peak memory), and 100,000 rows end to end
//! on the local stack (time, and DynamoDB requests counted at the importer's SDK clients).

use std::{
    collections::HashMap,
    io::{BufWriter, Write},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use herald_core::{
    events::{DomainEvent, EventPublisher, PublishError},
    imports::{
        DroppedFile, ImportFiles, ImportJobStore, ImportService, ImportState, ObjectReader, RunOutcome, job_id_for,
        memory::{MemoryImportJobs, MemoryImportQueue},
    },
    profiles::{Profile, ProfileStore, StoredProfile, VersionedProfile},
    store::StoreError,
};

pub fn report(name: &str, value: f64, unit: &str) {
    println!("{name}: {value:.2} {unit}");
}

/// A CRM export: every row has an id, an email, a time zone and two attributes (one
/// multi-valued); one row in four has a phone number.
fn write_csv(path: &Path, rows: u64) {
    let mut out = BufWriter::new(std::fs::File::create(path).expect("a temporary file"));
    writeln!(out, "user_id,email,phone,timezone,attr.plan,attr.tags").unwrap();
    let plans = ["free", "pro", "team", "enterprise"];
    for i in 0..rows {
        let phone = if i % 4 == 0 { format!("+1415555{:04}", i % 10_000) } else { String::new() };
        let plan = plans[(i % 4) as usize];
        writeln!(out, "user-{i:08},user{i}@example.com,{phone},Europe/Paris,{plan},beta;cohort-{}", i % 50).unwrap();
    }
    out.flush().unwrap();
}

/// Reads the file from disk, as S3 would stream it.
struct DiskFiles(std::path::PathBuf);

#[async_trait]
impl ImportFiles for DiskFiles {
    async fn read_from(&self, _: &str, _: &str, from: u64) -> Result<Option<ObjectReader>, StoreError> {
        use tokio::io::AsyncSeekExt;
        let mut file = tokio::fs::File::open(&self.0).await.map_err(|e| StoreError::Transient(e.to_string()))?;
        file.seek(std::io::SeekFrom::Start(from)).await.map_err(|e| StoreError::Transient(e.to_string()))?;
        Ok(Some(Box::new(file)))
    }
    async fn put(&self, _: &str, _: &str, _: Vec<u8>) -> Result<(), StoreError> {
        Ok(())
    }
    async fn concatenate(&self, _: &str, _: &str, _: Vec<u8>, _: &str) -> Result<(), StoreError> {
        Ok(())
    }
}

/// A profiles table that holds nothing and accepts every write.
#[derive(Default)]
struct EmptyProfiles {
    saved: AtomicU64,
}

#[async_trait]
impl ProfileStore for EmptyProfiles {
    async fn load(&self, _: &str) -> Result<Option<StoredProfile>, StoreError> {
        Ok(None)
    }
    async fn load_many(&self, _: &[String]) -> Result<HashMap<String, StoredProfile>, StoreError> {
        Ok(HashMap::new())
    }
    async fn save(&self, _: &Profile, _: u64, _: &[DomainEvent]) -> Result<(), StoreError> {
        Ok(())
    }
    async fn erase(&self, _: &str, _: u64, _: u64, _: &[DomainEvent]) -> Result<(), StoreError> {
        Ok(())
    }
    async fn save_many(&self, writes: &[VersionedProfile]) -> Result<Vec<bool>, StoreError> {
        self.saved.fetch_add(writes.len() as u64, Ordering::Relaxed);
        Ok(vec![true; writes.len()])
    }
}

struct NoBus;

#[async_trait]
impl EventPublisher for NoBus {
    async fn publish(&self, _: &[DomainEvent]) -> Result<(), PublishError> {
        Ok(())
    }
}

/// CPU time of the whole process (every thread): user + system.
pub fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("Linux /proc");
    // Fields after the command name (which is in parentheses); utime and stime are 14 and 15.
    let fields: Vec<&str> = stat.rsplit_once(')').expect("a stat line").1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux.
}

pub fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux /proc");
    let line = status.lines().find(|l| l.starts_with(field)).expect("the field");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The argument that runs [`million_rows_stubbed`] alone, in a process of its own.
pub const STUBBED_IMPORT: &str = "--stubbed-import";

/// `import rows per second per core` and `import peak rss mb`: 1,000,000 rows on a
/// single-threaded runtime (the parser runs on its blocking thread beside it), divided by
/// the CPU time the process used; the peak resident set is reset first.
pub fn million_rows_stubbed() {
    const ROWS: u64 = 1_000_000;
    let path = std::env::temp_dir().join(format!("herald-bench-import-{}.csv", std::process::id()));
    write_csv(&path, ROWS);
    let size = std::fs::metadata(&path).unwrap().len();
    // Forget the peak so far (the file generation): "5" resets VmHWM.
    std::fs::write("/proc/self/clear_refs", "5").expect("resetting the peak RSS");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let profiles = Arc::new(EmptyProfiles::default());
    let jobs = Arc::new(MemoryImportJobs::default());
    let service = ImportService::new(
        profiles.clone(),
        jobs.clone(),
        Arc::new(DiskFiles(path.clone())),
        Arc::new(MemoryImportQueue::default()),
        Arc::new(NoBus),
    );
    let file = DroppedFile { bucket: "bench".into(), key: "imports/bench.csv".into(), size, sequencer: "1".into() };
    let (cpu, wall) = (cpu_time(), Instant::now());
    let outcome = runtime.block_on(service.start(&file, Instant::now() + Duration::from_secs(3600))).unwrap();
    let (cpu, wall) = (cpu_time() - cpu, wall.elapsed());
    std::fs::remove_file(&path).ok();
    assert_eq!(outcome, RunOutcome::Done);
    let job = runtime.block_on(jobs.get(&job_id_for(&file))).unwrap().unwrap();
    assert_eq!((job.imported, profiles.saved.load(Ordering::Relaxed)), (ROWS, ROWS));
    eprintln!("import: {ROWS} rows, {size} bytes, {:.2} s wall, {:.2} s CPU", wall.as_secs_f64(), cpu.as_secs_f64());
    report("import rows per second per core", ROWS as f64 / cpu.as_secs_f64(), "rows/s");
    report("import peak rss mb", status_kib("VmHWM:") as f64 / 1024.0, "MB");
}

/// `import 100k rows local seconds` and `dynamodb requests per 1000 rows`: the importer
/// on the local stack's tables, bus and queue, fed a 100,000-row file from a bucket of
/// its own (so that the stack's importer does not run it too), its clients counted.
pub async fn hundred_thousand_rows_local() {
    const ROWS: u64 = 100_000;
    let stack = crate::local_stack(None).await;
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap();
    let counter = herald_aws::RequestCounter::default();
    let clients = herald_aws::Clients::counted(&herald_aws::local_sdk_config(&endpoint).await, &counter);
    let names = stack.physical_names();
    let config = herald_importer::ImporterConfig::from_lookup(|name| match name {
        "PROFILES_TABLE" => names.get("ProfilesTable").cloned(),
        "JOBS_TABLE" => names.get("JobsTable").cloned(),
        "EVENT_BUS_NAME" => names.get("EventBus").cloned(),
        "IMPORTER_QUEUE_URL" => stack.queue_url("ImporterQueue").map(str::to_owned),
        _ => None,
    })
    .expect("the stack's names");
    let function = herald_importer::ImporterHandler::from_aws(&clients, &config);

    let bucket = format!("bench-imports-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    clients.s3().create_bucket().bucket(&bucket).send().await.expect("a bucket");
    let path = std::env::temp_dir().join(format!("herald-bench-import-local-{}.csv", std::process::id()));
    write_csv(&path, ROWS);
    let body = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).ok();
    let size = body.len() as u64;
    let key = "imports/bench.csv";
    clients.s3().put_object().bucket(&bucket).key(key).body(body.into()).send().await.expect("the file is stored");
    counter.reset();

    let file = DroppedFile { bucket, key: key.into(), size, sequencer: "1".into() };
    let started = Instant::now();
    let outcome = function.service.start(&file, Instant::now() + Duration::from_secs(3600)).await.unwrap();
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(outcome, RunOutcome::Done);
    let dynamodb = counter.count("DynamoDB", &[]);
    eprintln!("import local: {:?}", counter.snapshot());
    let job = herald_aws::DynamoImportJobStore::new(clients.dynamodb(), config.jobs_table.clone());
    let job = job.get(&job_id_for(&file)).await.unwrap().expect("the job");
    assert_eq!((job.state, job.imported), (ImportState::Done, ROWS));
    report("import 100k rows local seconds", seconds, "s");
    report("dynamodb requests per 1000 rows", dynamodb as f64 * 1000.0 / ROWS as f64, "requests");
    stack.stop().await;
}
