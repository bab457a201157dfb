//! Bulk profile import: turns the records of a CSV, JSON Lines or Pinpoint endpoint export
//! file into validated profile patches, one record at a time.
//!
//! Pure and synchronous: it reads a `BufRead` (the adapter streams and decompresses the S3
//! object) and holds at most one record, itself bounded by [`MAX_RECORD_BYTES`], so memory
//! stays flat whatever the file size. Every item carries the byte offset just after its
//! record and the line that starts there ([`ResumeAt`]), so a checkpoint can resume from a
//! record boundary. Rows that cannot be imported are [`RowError`]s (line and reason, for the
//! errors file); only a file that cannot be read at all is an [`ImportError`].
//!
//! Row errors may quote values from the file (serde messages do): they belong in the errors
//! object beside the input, never in logs.

mod csv_rows;
mod json_rows;
#[cfg(test)]
mod tests;

pub use csv_rows::CsvMapping;
use csv_rows::*;
use json_rows::*;

use std::io::{self, BufRead};

use serde::{Deserialize, de::IgnoredAny};

use crate::{profiles::ProfilePatch, validation, validation::FieldError};

/// The longest record (CSV record or JSON line) read into memory. A CRM row is a few KiB; a
/// longer one is most likely an unclosed quote that would otherwise swallow the whole file.
pub const MAX_RECORD_BYTES: u64 = 1 << 20;

/// How many leading bytes [`sniff`] wants to see: enough for any sane header line.
pub const SNIFF_BYTES: usize = 64 * 1024;

const BOM: &[u8] = b"\xef\xbb\xbf";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Csv,
    /// One Herald profile per line: the body of `PUT /v1/users/{id}` plus `user_id`.
    JsonLines,
    /// Newline-delimited endpoints as Amazon Pinpoint's CreateExportJob writes them.
    PinpointExport,
}

/// Fails a whole file (or a whole resumed slice of it); bad rows are [`RowError`]s instead.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("not an import file: {0}")]
    NotAnImportFile(String),
    #[error("bad CSV header: {0}")]
    Header(String),
    /// Fatal in CSV: after an unclosed quote there is no record boundary to resume from.
    #[error("the record starting near line {line} is longer than {limit} bytes (an unclosed quote?)")]
    RecordTooLong { line: u64, limit: u64 },
    #[error("reading the file failed: {0}")]
    Read(#[from] io::Error),
}

fn not_an_import_file(reason: impl Into<String>) -> ImportError {
    ImportError::NotAnImportFile(reason.into())
}

// ---------------------------------------------------------------------------------------
// Sniffing

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sniffed {
    pub gzip: bool,
    /// `None` for gzip: sniff again on the start of the decompressed stream.
    pub format: Option<Format>,
}

/// Formats people drop by mistake, named so that the job fails with a reason they act on.
const MAGIC: &[(&[u8], &str)] = &[
    (b"\x89PNG", "a PNG image"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (an .xlsx workbook is one)"),
    (b"\xd0\xcf\x11\xe0", "an old Office document (.xls?)"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"PAR1", "a Parquet file"),
    (b"\x28\xb5\x2f\xfd", "zstd data"),
    (b"\xfd7zXZ\x00", "xz data"),
];

/// Tells what a file is from its first bytes (ideally [`SNIFF_BYTES`] of them, or all of a
/// shorter file). The format is decided by the first non-blank line only.
pub fn sniff(first_bytes: &[u8]) -> Result<Sniffed, ImportError> {
    if first_bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(Sniffed { gzip: true, format: None });
    }
    if first_bytes.is_empty() {
        return Err(not_an_import_file("the file is empty"));
    }
    if let Some((_, what)) = MAGIC.iter().find(|(magic, _)| first_bytes.starts_with(magic)) {
        return Err(not_an_import_file(format!("it is {what}, not CSV, JSON Lines or gzip")));
    }
    let text = first_bytes.strip_prefix(BOM).unwrap_or(first_bytes);
    let Some(start) = text.iter().position(|b| !b.is_ascii_whitespace()) else {
        return Err(not_an_import_file("it holds only blank lines"));
    };
    let rest = &text[start..];
    let (line, complete) = match rest.iter().position(|&b| b == b'\n') {
        Some(end) => (&rest[..end], true),
        None => (rest, false),
    };
    let line = first_line_text(line, complete)?;
    let format = if line.starts_with('{') {
        json_format(line, complete)?
    } else if line.starts_with('[') {
        return Err(not_an_import_file("it is a JSON array; Herald reads JSON Lines, one object per line"));
    } else if csv_header_has_user_id(line) {
        Format::Csv
    } else if line.to_ascii_lowercase().contains("user_id") {
        return Err(not_an_import_file(
            "its header has no user_id column of its own (separated by ';' or tabs? Herald reads comma-separated CSV)",
        ));
    } else {
        return Err(not_an_import_file(
            "its first line is neither a CSV header with a user_id column nor a JSON object",
        ));
    };
    Ok(Sniffed { gzip: false, format: Some(format) })
}

/// The first line as text, refusing binary data. A line cut by the end of the sniffed
/// bytes may end in the middle of a UTF-8 sequence: that part is dropped, not refused.
fn first_line_text(line: &[u8], complete: bool) -> Result<&str, ImportError> {
    let text = match std::str::from_utf8(line) {
        Ok(text) => text,
        Err(e) if !complete && e.error_len().is_none() => std::str::from_utf8(&line[..e.valid_up_to()]).unwrap_or(""),
        Err(_) => return Err(not_an_import_file("its first line is not UTF-8 text (binary data?)")),
    };
    if text.chars().any(|c| c.is_control() && c != '\t' && c != '\r') {
        return Err(not_an_import_file("its first line holds control characters (binary data?)"));
    }
    Ok(text)
}

fn json_format(line: &str, complete: bool) -> Result<Format, ImportError> {
    /// Herald's profile shape refuses unknown fields, so a `ChannelType` key is Pinpoint's.
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "ChannelType")]
        channel_type: Option<IgnoredAny>,
    }
    if !complete {
        // A first line longer than the sniffed bytes cannot be parsed; its keys still tell.
        return Ok(if line.contains("\"ChannelType\"") { Format::PinpointExport } else { Format::JsonLines });
    }
    match serde_json::from_str::<Probe>(line) {
        Ok(Probe { channel_type: Some(_) }) => Ok(Format::PinpointExport),
        Ok(Probe { channel_type: None }) => Ok(Format::JsonLines),
        Err(e) => Err(not_an_import_file(format!(
            "its first line starts like JSON but is not one JSON object ({e}); JSON Lines needs one object per line"
        ))),
    }
}

fn csv_header_has_user_id(line: &str) -> bool {
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(line.as_bytes());
    let mut header = csv::StringRecord::new();
    matches!(reader.read_record(&mut header), Ok(true))
        && header.iter().any(|name| matches!(Column::from_name(clean_header(name)), Ok(Column::UserId)))
}

// ---------------------------------------------------------------------------------------
// Rows

/// A record boundary: the byte offset of the (decompressed) input, counting a BOM, and the
/// 1-based line that starts there. Reading resumes from one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResumeAt {
    pub offset: u64,
    pub line: u64,
}

impl ResumeAt {
    pub const START: ResumeAt = ResumeAt { offset: 0, line: 1 };
}

#[derive(Clone, Debug, PartialEq)]
pub struct ParsedRow {
    /// The 1-based line where the record starts.
    pub line: u64,
    pub user_id: String,
    /// Passed the API's validation, in its canonical form (phones in E.164).
    pub patch: ProfilePatch,
    /// The byte offset just after the record.
    pub end_offset: u64,
    /// The line that starts at `end_offset`.
    pub next_line: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowError {
    pub line: u64,
    pub reason: String,
    pub end_offset: u64,
    pub next_line: u64,
}

impl ParsedRow {
    pub fn resume_at(&self) -> ResumeAt {
        ResumeAt { offset: self.end_offset, line: self.next_line }
    }
}

impl RowError {
    pub fn resume_at(&self) -> ResumeAt {
        ResumeAt { offset: self.end_offset, line: self.next_line }
    }
}

/// One record's outcome. The iterators yield `Result<Row, ImportError>`: the outer error
/// stops the file (it could not be read), the inner one rejects only this row.
pub type Row = Result<ParsedRow, RowError>;

/// Where a record lies; makes its row or its error.
#[derive(Clone, Copy)]
struct Span {
    line: u64,
    end: ResumeAt,
}

impl Span {
    fn error(self, reason: impl Into<String>) -> RowError {
        RowError { line: self.line, reason: reason.into(), end_offset: self.end.offset, next_line: self.end.line }
    }

    fn row(self, parsed: Result<(String, ProfilePatch), String>) -> Row {
        match parsed.and_then(|(user_id, patch)| validated(user_id, patch)) {
            Ok((user_id, patch)) => {
                Ok(ParsedRow { line: self.line, user_id, patch, end_offset: self.end.offset, next_line: self.end.line })
            }
            Err(reason) => Err(self.error(reason)),
        }
    }
}

/// The checks `ProfileService::upsert` makes, by the same functions, every fault at once.
fn validated(user_id: String, patch: ProfilePatch) -> Result<(String, ProfilePatch), String> {
    let mut faults: Vec<FieldError> = Vec::new();
    if let Err(e) = validation::check_user_id(&user_id) {
        faults.extend(e.0);
    }
    let patch = match patch.validate() {
        Ok(valid) => Some(valid.into_patch()),
        Err(e) => {
            faults.extend(e.0);
            None
        }
    };
    if let (true, Some(patch)) = (faults.is_empty(), patch) {
        Ok((user_id, patch))
    } else {
        Err(faults.iter().map(|f| format!("{}: {}", f.field, f.message)).collect::<Vec<_>>().join("; "))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsvOptions {
    /// Splits an `attr.<name>` cell into the attribute's values.
    pub multi_value_separator: char,
}

impl Default for CsvOptions {
    fn default() -> Self {
        Self { multi_value_separator: ';' }
    }
}

/// Reads `reader` from its start (a CSV begins with its header).
pub fn rows<R: BufRead>(reader: R, format: Format, options: &CsvOptions) -> Result<RowIter<R>, ImportError> {
    let source = match format {
        Format::Csv => Source::Csv(Box::new(CsvRows::with_header(reader, options)?)),
        Format::JsonLines | Format::PinpointExport => Source::Json(JsonRows::new(reader, format, ResumeAt::START)),
    };
    Ok(RowIter { source })
}

/// Resumes a CSV: `reader` starts at `from` (a row's [`ParsedRow::resume_at`]), and the
/// header read at the start of the file is given as its mapping ([`RowIter::csv_mapping`]).
/// Offsets and lines stay those of the whole file. Unknown columns are not reported again.
pub fn rows_after_header<R: BufRead>(reader: R, mapping: CsvMapping, from: ResumeAt) -> RowIter<R> {
    RowIter { source: Source::Csv(Box::new(CsvRows::resumed(reader, mapping, from))) }
}

/// Resumes a JSON Lines or Pinpoint file: `reader` starts at `from`. A CSV needs its header
/// mapping: see [`rows_after_header`].
pub fn json_rows_from<R: BufRead>(reader: R, format: Format, from: ResumeAt) -> Result<RowIter<R>, ImportError> {
    if format == Format::Csv {
        return Err(ImportError::Header("resuming a CSV needs its header mapping: use rows_after_header".into()));
    }
    Ok(RowIter { source: Source::Json(JsonRows::new(reader, format, from)) })
}

/// The rows of a file in file order. Fused: ends after the first [`ImportError`].
pub struct RowIter<R> {
    source: Source<R>,
}

enum Source<R> {
    /// Boxed: the CSV reader's state is large, and there is one per file.
    Csv(Box<CsvRows<R>>),
    Json(JsonRows<R>),
}

impl<R: BufRead> Iterator for RowIter<R> {
    type Item = Result<Row, ImportError>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.source {
            Source::Csv(rows) => rows.next_row(),
            Source::Json(rows) => rows.next_row(),
        }
    }
}

impl<R: BufRead> RowIter<R> {
    pub fn format(&self) -> Format {
        match &self.source {
            Source::Csv(_) => Format::Csv,
            Source::Json(rows) => rows.format,
        }
    }

    /// Header names that map to no field, each once, in header order (CSV only).
    pub fn unknown_columns(&self) -> &[String] {
        match &self.source {
            Source::Csv(rows) => &rows.unknown,
            Source::Json(_) => &[],
        }
    }

    /// The header's mapping, to resume the file later with [`rows_after_header`].
    pub fn csv_mapping(&self) -> Option<&CsvMapping> {
        match &self.source {
            Source::Csv(rows) => Some(&rows.mapping),
            Source::Json(_) => None,
        }
    }

    /// How far the input has been consumed: after the last record read (for progress).
    pub fn position(&self) -> ResumeAt {
        match &self.source {
            Source::Csv(rows) => rows.position(),
            Source::Json(rows) => rows.at,
        }
    }
}
