//! An import job: one dropped file's progress, counts and checkpoint, as the jobs table
//! keeps it and `GET /v1/imports` shows it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::imports::parsing::Format;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportState {
    Running,
    Done,
    Failed,
}

/// One file's import: what the API shows, plus where to resume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportJob {
    pub job_id: String,
    pub bucket: String,
    pub key: String,
    pub state: ImportState,
    /// `csv`, `jsonl` or `pinpoint`, once the file was recognised.
    pub format: Option<String>,
    pub gzip: bool,
    /// The object's size, and how much of it the committed rows cover (for gzip, of the
    /// compressed object, approximately).
    pub bytes_total: u64,
    pub bytes_done: u64,
    /// Records read (valid or not), rows imported (applied to a profile, whether or not
    /// they changed it), rows that changed nothing, rows rejected.
    pub rows_read: u64,
    pub imported: u64,
    pub unchanged: u64,
    pub rejected: u64,
    /// CSV header names that map to no field: ignored, reported once here.
    pub unknown_columns: Vec<String>,
    /// The object that lists the rejected rows (line, reason), once the job is done.
    pub errors_key: Option<String>,
    /// Why the job failed.
    pub failure: Option<String>,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub resume: Resume,
}

/// Where the next invocation starts, and the fence between runners.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    /// Byte offset in the (decompressed) file, and the line that starts there.
    pub offset: u64,
    pub line: u64,
    /// The CSV header as read at the start of the file, to map the columns on resume.
    pub csv_header: Option<Vec<String>>,
    /// Bumped by every save; a save is conditional on the value read.
    pub checkpoint: u64,
    pub invocations: u32,
}

impl ImportJob {
    pub fn format(&self) -> Option<Format> {
        self.format.as_deref().and_then(format_from_name)
    }
}

pub fn format_name(format: Format) -> &'static str {
    match format {
        Format::Csv => "csv",
        Format::JsonLines => "jsonl",
        Format::PinpointExport => "pinpoint",
    }
}

fn format_from_name(name: &str) -> Option<Format> {
    [Format::Csv, Format::JsonLines, Format::PinpointExport].into_iter().find(|f| format_name(*f) == name)
}
