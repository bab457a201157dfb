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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, BufRead, Read};

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::profile::{DeviceToken, Platform, ProfilePatch};
use crate::validation::{self, FieldError};

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

impl Format {
    /// How rows of one user in this format fold together in [`UserPatches`].
    pub fn combine_rule(self) -> Combine {
        match self {
            Format::Csv | Format::JsonLines => Combine::LastRowWins,
            Format::PinpointExport => Combine::MergeEndpoints,
        }
    }
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

// ---------------------------------------------------------------------------------------
// CSV

/// What one CSV column holds.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Column {
    Ignored,
    UserId,
    Email,
    Phone,
    Timezone,
    Attribute(String),
    Token(Platform),
}

impl Column {
    /// `name` is trimmed; matching is case-insensitive, attribute names keep their case.
    fn from_name(name: &str) -> Result<Column, String> {
        Ok(match name.to_ascii_lowercase().as_str() {
            // `User.UserId` and `User.UserAttributes.<name>` are Pinpoint's CSV spellings.
            "user_id" | "user.userid" => Column::UserId,
            "email" => Column::Email,
            "phone" => Column::Phone,
            "timezone" => Column::Timezone,
            "apns_token" => Column::Token(Platform::Apns),
            "apns_sandbox_token" => Column::Token(Platform::ApnsSandbox),
            "fcm_token" => Column::Token(Platform::Fcm),
            _ => match attribute_column(name) {
                Some(attribute) => {
                    // Checked once here rather than failing every row with the same fault.
                    validation::attribute_name(attribute)?;
                    Column::Attribute(attribute.to_owned())
                }
                None => Column::Ignored,
            },
        })
    }
}

/// The attribute an `attr.<name>` (or Pinpoint's `User.UserAttributes.<name>`) column fills.
fn attribute_column(name: &str) -> Option<&str> {
    ["attr.", "user.userattributes."].iter().find_map(|prefix| strip_prefix_ignore_case(name, prefix))
}

fn strip_prefix_ignore_case<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    let head = name.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &name[prefix.len()..])
}

/// Header names are trimmed; a BOM the CSV reader left (when it came in a short first
/// read) goes too.
fn clean_header(name: &str) -> &str {
    name.trim_start_matches('\u{feff}').trim()
}

/// A CSV header: which field each column fills.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsvMapping {
    columns: Vec<Column>,
    names: Vec<String>,
    separator: char,
}

impl CsvMapping {
    /// Maps a header row. Returns the mapping and the names of the columns it ignores
    /// (once each, in header order). A header without a user id column, with two columns for
    /// the same field or with an invalid attribute name is an error.
    pub fn from_header<I, S>(headers: I, separator: char) -> Result<(CsvMapping, Vec<String>), ImportError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut mapping = CsvMapping { columns: Vec::new(), names: Vec::new(), separator };
        let mut unknown: Vec<String> = Vec::new();
        let mut mapped = HashSet::new();
        for (i, header) in headers.into_iter().enumerate() {
            let name = clean_header(header.as_ref());
            let column = Column::from_name(name)
                .map_err(|reason| ImportError::Header(format!("column {} ({name}): {reason}", i + 1)))?;
            if column == Column::Ignored {
                // A nameless column (a trailing comma) is not worth reporting.
                if !name.is_empty() && !unknown.iter().any(|u| u == name) {
                    unknown.push(name.to_owned());
                }
            } else if !mapped.insert(column.clone()) {
                return Err(ImportError::Header(format!("column {} ({name}) repeats an earlier column", i + 1)));
            }
            mapping.columns.push(column);
            mapping.names.push(name.to_owned());
        }
        if !mapped.contains(&Column::UserId) {
            return Err(ImportError::Header("it has no user_id column".into()));
        }
        Ok((mapping, unknown))
    }

    /// The header's column names, as given to [`CsvMapping::from_header`] (trimmed): what a
    /// resumed import maps again.
    pub fn header(&self) -> &[String] {
        &self.names
    }

    /// How many fields every row must have.
    pub fn width(&self) -> usize {
        self.columns.len()
    }

    /// A row's user id and patch. Cells are trimmed. An empty cell leaves its field as it is
    /// (absent from the patch): a sparse export means "unknown here", never "remove". The
    /// token cells of a row, when any is filled, replace the profile's tokens, as in the API.
    fn patch(&self, record: &csv::ByteRecord) -> Result<(String, ProfilePatch), String> {
        let mut user_id = String::new();
        let mut patch = ProfilePatch::default();
        let mut attributes = BTreeMap::new();
        let mut tokens = Vec::new();
        for (i, (column, raw)) in self.columns.iter().zip(record.iter()).enumerate() {
            if *column == Column::Ignored {
                continue;
            }
            let cell = std::str::from_utf8(raw).map_err(|_| format!("{}: not valid UTF-8", self.names[i]))?.trim();
            if cell.is_empty() {
                continue;
            }
            match column {
                Column::Ignored => {}
                Column::UserId => user_id = cell.to_owned(),
                Column::Email => patch.email = Some(Some(cell.to_owned())),
                Column::Phone => patch.phone = Some(Some(cell.to_owned())),
                Column::Timezone => patch.timezone = Some(Some(cell.to_owned())),
                Column::Attribute(name) => {
                    let values: Vec<String> = cell
                        .split(self.separator)
                        .map(str::trim)
                        .filter(|v| !v.is_empty())
                        .map(str::to_owned)
                        .collect();
                    if !values.is_empty() {
                        attributes.insert(name.clone(), Some(values));
                    }
                }
                Column::Token(platform) => tokens.push(DeviceToken { token: cell.to_owned(), platform: *platform }),
            }
        }
        if !attributes.is_empty() {
            patch.attributes = Some(Some(attributes));
        }
        if !tokens.is_empty() {
            patch.device_tokens = Some(Some(tokens));
        }
        Ok((user_id, patch))
    }
}

struct CsvRows<R> {
    reader: csv::Reader<Feed<R>>,
    record: csv::ByteRecord,
    mapping: CsvMapping,
    unknown: Vec<String>,
    /// Where the reader started in the file: its positions are relative to this.
    base: ResumeAt,
    done: bool,
}

impl<R: BufRead> CsvRows<R> {
    fn with_header(reader: R, options: &CsvOptions) -> Result<Self, ImportError> {
        let mut reader = csv_reader(reader);
        let mut record = csv::ByteRecord::new();
        if read_record(&mut reader, &mut record, ResumeAt::START)?.is_none() {
            return Err(ImportError::Header("the file has no header row".into()));
        }
        let names = record
            .iter()
            .map(std::str::from_utf8)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| ImportError::Header("the header is not UTF-8 text".into()))?;
        let (mapping, unknown) = CsvMapping::from_header(names, options.multi_value_separator)?;
        Ok(Self { reader, record, mapping, unknown, base: ResumeAt::START, done: false })
    }

    /// Unknown columns were reported when the file started.
    fn resumed(reader: R, mapping: CsvMapping, base: ResumeAt) -> Self {
        let record = csv::ByteRecord::new();
        Self { reader: csv_reader(reader), record, mapping, unknown: Vec::new(), base, done: false }
    }

    fn next_row(&mut self) -> Option<Result<Row, ImportError>> {
        if self.done {
            return None;
        }
        let span = match read_record(&mut self.reader, &mut self.record, self.base) {
            Ok(Some(span)) => span,
            Ok(None) => {
                self.done = true;
                return None;
            }
            Err(e) => {
                self.done = true;
                return Some(Err(e));
            }
        };
        let (found, width) = (self.record.len(), self.mapping.width());
        if found != width {
            return Some(Ok(Err(span.error(format!("expected {width} fields as in the header, found {found}")))));
        }
        Some(Ok(span.row(self.mapping.patch(&self.record))))
    }

    fn position(&self) -> ResumeAt {
        let at = self.reader.position();
        ResumeAt {
            offset: self.base.offset + at.byte().min(self.reader.get_ref().delivered),
            line: self.base.line + at.line() - 1,
        }
    }
}

fn csv_reader<R: BufRead>(reader: R) -> csv::Reader<Feed<R>> {
    csv::ReaderBuilder::new()
        // The header is read as a record: blank lines before it are skipped alike, and a
        // resumed reader (which starts after it) needs no special case.
        .has_headers(false)
        // The field count is checked per row, so that a short row is that row's error.
        .flexible(true)
        // '\n' alone ends a record, so a CRLF record ends after its '\n' (not between '\r'
        // and '\n'): offsets land on line starts and the line count includes the record's
        // own end. The '\r' stays in the last field, which is trimmed.
        .terminator(csv::Terminator::Any(b'\n'))
        .from_reader(Feed {
            inner: reader,
            delivered: 0,
            record_start: 0,
            last: b'\n',
            ended: false,
            overflowed: false,
        })
}

/// Reads the next record that is not blank. A line holding only whitespace (such as "\r")
/// comes out as one blank field and is skipped like an empty line.
fn read_record<R: BufRead>(
    reader: &mut csv::Reader<Feed<R>>,
    record: &mut csv::ByteRecord,
    base: ResumeAt,
) -> Result<Option<Span>, ImportError> {
    loop {
        let start = reader.position().clone();
        reader.get_mut().record_start = start.byte();
        match reader.read_byte_record(record) {
            Ok(false) => return Ok(None),
            Ok(true) => {}
            Err(_) if reader.get_ref().overflowed => {
                return Err(ImportError::RecordTooLong { line: base.line + start.line() - 1, limit: MAX_RECORD_BYTES });
            }
            Err(e) => {
                let message = e.to_string();
                return Err(match e.into_kind() {
                    csv::ErrorKind::Io(e) => ImportError::Read(e),
                    _ => ImportError::Read(io::Error::other(message)),
                });
            }
        }
        if record.len() == 1 && record[0].trim_ascii().is_empty() {
            continue;
        }
        // Every record ends with a '\n' that the line count includes (`Feed` ends the input
        // with one), so the record's first line is its last one minus the newlines inside
        // its quoted fields. Blank lines skipped before it are thereby not counted in.
        let end = reader.position();
        let inner_newlines = record.as_slice().iter().filter(|&&b| b == b'\n').count() as u64;
        let first_line = end.line().saturating_sub(inner_newlines + 1).max(1);
        return Ok(Some(Span {
            line: base.line + first_line - 1,
            end: ResumeAt {
                // Never past the real input, should the last record end on the added '\n'.
                offset: base.offset + end.byte().min(reader.get_ref().delivered),
                line: base.line + end.line() - 1,
            },
        }));
    }
}

/// The input as the CSV reader sees it: always ending with '\n' (see [`read_record`]), and
/// cut off with an error when one record outgrows [`MAX_RECORD_BYTES`].
struct Feed<R> {
    inner: R,
    /// Bytes of the real input handed to the CSV reader (never the added newline).
    delivered: u64,
    /// The reader's byte position when it began the current record.
    record_start: u64,
    last: u8,
    ended: bool,
    overflowed: bool,
}

impl<R: Read> Read for Feed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.ended {
            return Ok(0);
        }
        // The CSV reader buffers a little ahead, so this bounds the record with some slack.
        if self.delivered.saturating_sub(self.record_start) > MAX_RECORD_BYTES {
            self.overflowed = true;
            return Err(io::Error::other("record too long"));
        }
        let n = self.inner.read(buf)?;
        if n > 0 {
            self.delivered += n as u64;
            self.last = buf[n - 1];
            return Ok(n);
        }
        self.ended = true;
        if self.last == b'\n' {
            return Ok(0);
        }
        buf[0] = b'\n';
        Ok(1)
    }
}

// ---------------------------------------------------------------------------------------
// JSON Lines and Pinpoint endpoint exports

struct JsonRows<R> {
    reader: R,
    format: Format,
    line: Vec<u8>,
    at: ResumeAt,
    done: bool,
}

impl<R: BufRead> JsonRows<R> {
    fn new(reader: R, format: Format, from: ResumeAt) -> Self {
        Self { reader, format, line: Vec::new(), at: from, done: false }
    }

    fn next_row(&mut self) -> Option<Result<Row, ImportError>> {
        while !self.done {
            let start = self.at;
            let (consumed, cut) = match read_line_capped(&mut self.reader, &mut self.line, MAX_RECORD_BYTES as usize) {
                Ok(read) => read,
                Err(e) => {
                    self.done = true;
                    return Some(Err(ImportError::Read(e)));
                }
            };
            if consumed == 0 {
                self.done = true;
                break;
            }
            self.at = ResumeAt { offset: start.offset + consumed as u64, line: start.line + 1 };
            let span = Span { line: start.line, end: self.at };
            if cut {
                // Unlike an unclosed CSV quote, the next line is a clean boundary.
                return Some(Ok(Err(span.error(format!("the line is longer than {MAX_RECORD_BYTES} bytes")))));
            }
            let mut bytes = self.line.as_slice();
            if start.offset == 0 {
                bytes = bytes.strip_prefix(BOM).unwrap_or(bytes);
            }
            let bytes = bytes.trim_ascii();
            if bytes.is_empty() {
                continue;
            }
            let parsed = match std::str::from_utf8(bytes) {
                Err(_) => Err("the line is not valid UTF-8".to_owned()),
                Ok(text) if self.format == Format::PinpointExport => endpoint_patch(text),
                Ok(text) => profile_patch(text),
            };
            return Some(Ok(span.row(parsed)));
        }
        None
    }
}

/// Reads one line (through its '\n') into `line`, keeping at most `cap` bytes of it but
/// consuming it all. Returns the bytes consumed and whether the line was cut.
fn read_line_capped<R: BufRead>(reader: &mut R, line: &mut Vec<u8>, cap: usize) -> io::Result<(usize, bool)> {
    line.clear();
    let (mut consumed, mut cut) = (0, false);
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok((consumed, cut));
        }
        let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
            Some(end) => (&available[..=end], true),
            None => (available, false),
        };
        let room = cap.saturating_sub(line.len());
        cut |= chunk.len() > room;
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let n = chunk.len();
        reader.consume(n);
        consumed += n;
        if done {
            return Ok((consumed, cut));
        }
    }
}

/// Serde's message, prefixed by the path to the faulty value when there is one.
fn describe_json(e: serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = e.path().to_string();
    if e.inner().is_syntax() || e.inner().is_eof() {
        format!("not a JSON object: {}", e.inner())
    } else if path == "." {
        e.inner().to_string()
    } else {
        format!("{path}: {}", e.inner())
    }
}

fn parse_json<'a, T: Deserialize<'a>>(text: &'a str) -> Result<T, String> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut de).map_err(describe_json)?;
    de.end().map_err(|e| e.to_string())?;
    Ok(value)
}

/// A line in Herald's own shape: `{"user_id": "...", ...the body of PUT /v1/users/{id}}`.
fn profile_patch(text: &str) -> Result<(String, ProfilePatch), String> {
    /// Second, cheap pass for the id: the patch accepts and ignores `user_id` (so that a
    /// profile read back from the API can be written as it is).
    #[derive(Deserialize)]
    struct UserIdOnly {
        user_id: Option<serde_json::Value>,
    }
    let patch: ProfilePatch = parse_json(text)?;
    let user_id = match serde_json::from_str::<UserIdOnly>(text).map_err(|e| e.to_string())?.user_id {
        Some(serde_json::Value::String(id)) => id,
        // Warehouse exports often write numeric ids.
        Some(serde_json::Value::Number(n)) if !n.is_f64() => n.to_string(),
        None | Some(serde_json::Value::Null) => return Err("user_id: missing; every line names its user".into()),
        Some(_) => return Err("user_id: must be a string".into()),
    };
    Ok((user_id, patch))
}

/// The fields of an exported Pinpoint endpoint that Herald uses; the others are ignored.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Endpoint {
    channel_type: Option<String>,
    address: Option<String>,
    opt_out: Option<String>,
    endpoint_status: Option<String>,
    attributes: Option<BTreeMap<String, Vec<String>>>,
    user: Option<EndpointUser>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EndpointUser {
    user_id: Option<String>,
    user_attributes: Option<BTreeMap<String, Vec<String>>>,
}

/// Where an endpoint's address goes in a profile.
enum Channel {
    Email,
    Sms,
    Push(Platform),
    /// A Pinpoint channel Herald has no contact for: the endpoint brings only attributes.
    Unsupported,
}

impl Channel {
    fn parse(channel_type: &str) -> Result<Channel, String> {
        Ok(match channel_type.to_ascii_uppercase().as_str() {
            "EMAIL" => Channel::Email,
            "SMS" => Channel::Sms,
            "APNS" => Channel::Push(Platform::Apns),
            "APNS_SANDBOX" => Channel::Push(Platform::ApnsSandbox),
            "GCM" => Channel::Push(Platform::Fcm),
            "VOICE" | "CUSTOM" | "ADM" | "BAIDU" | "APNS_VOIP" | "APNS_VOIP_SANDBOX" | "IN_APP" | "PUSH" => {
                Channel::Unsupported
            }
            _ => return Err(format!("unknown ChannelType {channel_type:?}")),
        })
    }
}

/// One exported endpoint as a patch of its user's profile.
fn endpoint_patch(text: &str) -> Result<(String, ProfilePatch), String> {
    let endpoint: Endpoint = parse_json(text)?;
    let channel = Channel::parse(endpoint.channel_type.as_deref().ok_or("no ChannelType")?)?;
    let user = endpoint.user.unwrap_or_default();
    let user_id = user.user_id.filter(|id| !id.is_empty()).ok_or("no User.UserId: Herald profiles are per user")?;

    let mut patch = ProfilePatch::default();
    // An opted-out or inactive endpoint must not become a live contact; its user and
    // attributes still migrate.
    let opted_out = endpoint.opt_out.as_deref().is_some_and(|o| o.eq_ignore_ascii_case("ALL"));
    let inactive = endpoint.endpoint_status.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("INACTIVE"));
    let address = endpoint.address.as_deref().map(str::trim).filter(|a| !a.is_empty());
    if let Some(address) = address
        && !opted_out
        && !inactive
    {
        let address = address.to_owned();
        match channel {
            Channel::Email => patch.email = Some(Some(address)),
            Channel::Sms => patch.phone = Some(Some(address)),
            Channel::Push(platform) => patch.device_tokens = Some(Some(vec![DeviceToken { token: address, platform }])),
            Channel::Unsupported => {}
        }
    }
    // Endpoint attributes first, user attributes over them: on a clash the user's win.
    // Empty lists are left out: an export never means "remove".
    let attributes: BTreeMap<String, Option<Vec<String>>> = endpoint
        .attributes
        .into_iter()
        .flatten()
        .chain(user.user_attributes.into_iter().flatten())
        .filter(|(_, values)| !values.is_empty())
        .map(|(name, values)| (name, Some(values)))
        .collect();
    if !attributes.is_empty() {
        patch.attributes = Some(Some(attributes));
    }
    Ok((user_id, patch))
}

// ---------------------------------------------------------------------------------------
// Folding rows by user

/// How two rows of one user in one file fold together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Combine {
    /// CSV and JSON Lines: each row is an update of the user, applied in file order, so
    /// the last row wins every field it gives and the fields it leaves empty keep what the
    /// earlier rows gave. The same result whether or not a flush falls between the rows.
    LastRowWins,
    /// Pinpoint: each endpoint holds part of the user (one contact, its attributes), so they
    /// add up. See [`UserPatches::add`].
    MergeEndpoints,
}

/// The rows read since the last flush, one per user, in the order users first appeared.
/// Bounded by the caller, who writes and [`drain`](UserPatches::drain)s it every so many
/// users.
///
/// A user whose rows straddle a flush is written twice, which gives the same profile: CSV
/// and JSON Lines rows compose in file order, and the importer adds a Pinpoint user's
/// contacts and attribute values to what is stored.
#[derive(Debug)]
pub struct UserPatches {
    rule: Combine,
    rows: Vec<ParsedRow>,
    /// How many rows went into each of `rows`.
    counts: Vec<u64>,
    index: HashMap<String, usize>,
}

impl UserPatches {
    pub fn new(rule: Combine) -> Self {
        Self { rule, rows: Vec::new(), counts: Vec::new(), index: HashMap::new() }
    }

    pub fn for_format(format: Format) -> Self {
        Self::new(format.combine_rule())
    }

    /// Adds a row, folding it into the one already held for its user. The folded row keeps
    /// the line and end of the latest row that went into it.
    pub fn add(&mut self, row: ParsedRow) {
        match self.index.get(&row.user_id) {
            Some(&at) => {
                self.counts[at] += 1;
                self.combine(at, row)
            }
            None => {
                self.index.insert(row.user_id.clone(), self.rows.len());
                self.rows.push(row);
                self.counts.push(1);
            }
        }
    }

    fn combine(&mut self, at: usize, later: ParsedRow) {
        let held = &mut self.rows[at];
        match self.rule {
            Combine::LastRowWins => compose(&mut held.patch, later.patch),
            Combine::MergeEndpoints => merge_endpoint(&mut held.patch, later.patch),
        }
        held.line = later.line;
        held.end_offset = later.end_offset;
        held.next_line = later.next_line;
    }

    /// Users held.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Hands over every user held, in the order they first appeared, and empties the
    /// accumulator.
    pub fn drain(&mut self) -> impl Iterator<Item = ParsedRow> + '_ {
        self.drain_counted().map(|(row, _)| row)
    }

    /// As [`drain`](UserPatches::drain), with how many rows went into each user.
    pub fn drain_counted(&mut self) -> impl Iterator<Item = (ParsedRow, u64)> + '_ {
        self.index.clear();
        self.rows.drain(..).zip(self.counts.drain(..))
    }
}

/// One patch with the effect of `held` then `later`: every field `later` gives replaces
/// `held`'s, and its attributes replace `held`'s name by name, as a merge would. (`held`
/// removing all attributes and `later` setting some composes to setting those only.)
fn compose(held: &mut ProfilePatch, later: ProfilePatch) {
    fn given<T>(held: &mut Option<T>, later: Option<T>) {
        if later.is_some() {
            *held = later;
        }
    }
    given(&mut held.email, later.email);
    given(&mut held.phone, later.phone);
    given(&mut held.timezone, later.timezone);
    given(&mut held.device_tokens, later.device_tokens);
    given(&mut held.external_channels, later.external_channels);
    match (&mut held.attributes, later.attributes) {
        (Some(Some(held)), Some(Some(later))) => held.extend(later),
        (held, later) => given(held, later),
    }
}

/// Folds a later endpoint of a user into what the earlier ones gave: email, phone and time
/// zone from the latest endpoint that has them; device tokens, channels and each
/// attribute's values added up (endpoint attributes describe one device; the user has them
/// all).
fn merge_endpoint(held: &mut ProfilePatch, later: ProfilePatch) {
    if later.email.is_some() {
        held.email = later.email;
    }
    if later.phone.is_some() {
        held.phone = later.phone;
    }
    if later.timezone.is_some() {
        held.timezone = later.timezone;
    }
    union_field(&mut held.device_tokens, later.device_tokens);
    union_field(&mut held.external_channels, later.external_channels);
    match (&mut held.attributes, later.attributes) {
        (Some(Some(held)), Some(Some(later))) => {
            for (name, values) in later {
                union_values(held.entry(name).or_insert(None), values);
            }
        }
        (held, Some(later)) => *held = Some(later),
        (_, None) => {}
    }
}

/// A Pinpoint user's patch made to add to `stored` rather than replace: its device tokens,
/// channels and each attribute's values joined with those the profile holds. A user whose
/// endpoints were written in two flushes (or two files) keeps every endpoint, and importing
/// the same export again changes nothing.
pub fn adding_to(stored: &crate::Profile, patch: ProfilePatch) -> ProfilePatch {
    let mut base = ProfilePatch::default();
    if patch.device_tokens.is_some() {
        base.device_tokens = Some(Some(stored.device_tokens.clone()));
    }
    if patch.external_channels.is_some() {
        base.external_channels = Some(Some(stored.external_channels.clone()));
    }
    if let Some(Some(given)) = &patch.attributes {
        let held = given
            .keys()
            .filter_map(|name| Some((name.clone(), Some(stored.attributes.get(name)?.iter().cloned().collect()))))
            .collect();
        base.attributes = Some(Some(held));
    }
    merge_endpoint(&mut base, patch);
    base
}

/// A patch's list field added up with a later one's; absent in the later patch changes nothing.
fn union_field<T: PartialEq>(held: &mut Option<Option<Vec<T>>>, later: Option<Option<Vec<T>>>) {
    if let Some(later) = later {
        match held {
            Some(held) => union_values(held, later),
            None => *held = Some(later),
        }
    }
}

/// Both lists' items, each once, earlier first; a `null` on either side gives the later.
fn union_values<T: PartialEq>(held: &mut Option<Vec<T>>, later: Option<Vec<T>>) {
    match (held, later) {
        (Some(held), Some(later)) => {
            for item in later {
                if !held.contains(&item) {
                    held.push(item);
                }
            }
        }
        (held, later) => *held = later,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const APNS: &str = "0000000000000000000000000000000000000000000000000000000000000001";
    const FCM: &str = "fcm-token_0123456789:abcdefghijklmnopqrstuvwxyz";

    fn read(format: Format, data: &[u8], options: &CsvOptions) -> Vec<Row> {
        rows(data, format, options).expect("the file opens").map(|item| item.expect("the file reads")).collect()
    }

    fn csv(data: &str) -> Vec<Row> {
        read(Format::Csv, data.as_bytes(), &CsvOptions::default())
    }

    fn jsonl(data: &str) -> Vec<Row> {
        read(Format::JsonLines, data.as_bytes(), &CsvOptions::default())
    }

    fn pinpoint(data: &str) -> Vec<Row> {
        read(Format::PinpointExport, data.as_bytes(), &CsvOptions::default())
    }

    /// ProfilePatch has private fields: built by editing the empty one.
    fn patch(edit: impl FnOnce(&mut ProfilePatch)) -> ProfilePatch {
        let mut patch = ProfilePatch::default();
        edit(&mut patch);
        patch
    }

    fn ok(rows: Vec<Row>) -> Vec<ParsedRow> {
        rows.into_iter().map(|row| row.expect("every row is valid")).collect()
    }

    fn lines(rows: &[Row]) -> Vec<(u64, bool)> {
        rows.iter().map(|row| row.as_ref().map_or_else(|e| (e.line, false), |r| (r.line, true))).collect()
    }

    fn attribute(row: &ParsedRow, name: &str) -> Vec<String> {
        let attributes = row.patch.attributes.clone().flatten().unwrap_or_default();
        attributes.get(name).cloned().flatten().unwrap_or_default()
    }

    fn folded(format: Format, rows: Vec<Row>) -> Vec<ParsedRow> {
        let mut users = UserPatches::for_format(format);
        for row in rows.into_iter().flatten() {
            users.add(row);
        }
        users.drain().collect()
    }

    // --- CSV ---

    #[test]
    fn csv_with_a_bom_and_crlf_reads_every_row_on_its_line() {
        let data = "\u{feff}user_id,email\r\nu1,a@example.com\r\nu2,b@example.com\r\n";
        let rows = ok(csv(data));
        assert_eq!(rows.iter().map(|r| (r.line, r.user_id.as_str())).collect::<Vec<_>>(), [(2, "u1"), (3, "u2")]);
        assert_eq!(rows[0].patch.email, Some(Some("a@example.com".into())));
        // The BOM counts in offsets, and each row ends after its '\n', on the next line's start.
        assert_eq!(rows[0].resume_at(), ResumeAt { offset: data.find("u2").unwrap() as u64, line: 3 });
        assert_eq!(rows[1].resume_at(), ResumeAt { offset: data.len() as u64, line: 4 });
    }

    #[test]
    fn csv_quoted_commas_and_newlines_stay_inside_the_field() {
        let rows = ok(csv("user_id,attr.note,email\nu1,\"a, b\nc\",a@example.com\n"));
        assert_eq!(attribute(&rows[0], "note"), ["a, b\nc"]);
        assert_eq!(rows[0].patch.email, Some(Some("a@example.com".into())));
    }

    #[test]
    fn csv_blank_lines_are_skipped_not_reported() {
        let rows = csv("\nuser_id,email\n\nu1,a@example.com\n\r\n   \nu2,b@example.com\n\n");
        assert_eq!(lines(&rows), [(4, true), (7, true)]);
    }

    #[test]
    fn csv_attribute_cells_split_on_the_multi_value_separator() {
        let rows = ok(csv("user_id,attr.tags\nu1, a ;b;;c \n"));
        assert_eq!(attribute(&rows[0], "tags"), ["a", "b", "c"]);

        let pipes = CsvOptions { multi_value_separator: '|' };
        let rows = ok(read(Format::Csv, b"user_id,attr.tags\nu1,x;y|z\n", &pipes));
        assert_eq!(attribute(&rows[0], "tags"), ["x;y", "z"]);
    }

    #[test]
    fn csv_empty_cells_leave_their_fields_out_of_the_patch() {
        let rows = ok(csv("user_id,email,phone,timezone,attr.plan,apns_token\nu1,,, ,;,\n"));
        assert_eq!(rows[0].patch, ProfilePatch::default());
    }

    #[test]
    fn csv_token_columns_become_the_rows_device_tokens() {
        let data = format!("user_id,apns_token,fcm_token,apns_sandbox_token\nu1,{APNS},{FCM},\n");
        let rows = ok(csv(&data));
        let expected = vec![
            DeviceToken { token: APNS.into(), platform: Platform::Apns },
            DeviceToken { token: FCM.into(), platform: Platform::Fcm },
        ];
        assert_eq!(rows[0].patch.device_tokens, Some(Some(expected)));
    }

    #[test]
    fn csv_header_names_are_trimmed_and_case_insensitive_and_attribute_names_keep_their_case() {
        let rows = ok(csv(" User.UserId , EMAIL ,ATTR.Plan,User.UserAttributes.Tier\nu1,a@example.com,pro,gold\n"));
        assert_eq!(rows[0].user_id, "u1");
        assert_eq!(rows[0].patch.email, Some(Some("a@example.com".into())));
        assert_eq!(
            (attribute(&rows[0], "Plan"), attribute(&rows[0], "Tier")),
            (vec!["pro".into()], vec!["gold".into()])
        );
    }

    #[test]
    fn csv_unknown_columns_are_reported_once_and_ignored() {
        let data = "user_id,Favourite Color,email,Segment,Favourite Color,\nu1,blue,a@example.com,vip,red,\n";
        let mut iter = rows(data.as_bytes(), Format::Csv, &CsvOptions::default()).unwrap();
        assert_eq!(iter.unknown_columns(), ["Favourite Color", "Segment"]);
        let row = iter.next().unwrap().unwrap().unwrap();
        assert_eq!(row.patch, patch(|p| p.email = Some(Some("a@example.com".into()))));
    }

    #[test]
    fn csv_without_a_user_id_column_is_a_file_error() {
        let error = rows(&b"email,phone\na@example.com,\n"[..], Format::Csv, &CsvOptions::default()).err();
        assert!(matches!(error, Some(ImportError::Header(reason)) if reason.contains("user_id")));
    }

    #[test]
    fn csv_with_a_repeated_column_is_a_file_error() {
        for header in ["user_id,Email,email\n", "user_id,attr.plan,User.UserAttributes.plan\n", "user_id,user.userid\n"]
        {
            let error = rows(header.as_bytes(), Format::Csv, &CsvOptions::default()).err();
            assert!(matches!(error, Some(ImportError::Header(reason)) if reason.contains("repeats")), "{header}");
        }
    }

    #[test]
    fn csv_a_row_with_the_wrong_number_of_fields_is_a_row_error_on_its_line() {
        let rows = csv("user_id,email\nu1,a@example.com\nu2\nu3,c@example.com,extra\nu4,d@example.com\n");
        assert_eq!(lines(&rows), [(2, true), (3, false), (4, false), (5, true)]);
        assert_eq!(rows[1].as_ref().unwrap_err().reason, "expected 2 fields as in the header, found 1");
        assert_eq!(rows[2].as_ref().unwrap_err().reason, "expected 2 fields as in the header, found 3");
    }

    #[test]
    fn csv_a_row_after_a_multiline_quoted_field_reports_its_own_line() {
        let rows = csv("user_id,attr.note\r\nu1,\"one\r\ntwo\r\nthree\"\r\nu2,x\r\nu3,\"x\",bad\r\n");
        assert_eq!(lines(&rows), [(2, true), (5, true), (6, false)]);
    }

    #[test]
    fn csv_invalid_values_are_row_errors_naming_each_field() {
        let rows = csv("user_id,email,timezone\nu/1,nope,Mars/Base\n");
        let reason = &rows[0].as_ref().unwrap_err().reason;
        let fields: Vec<&str> = reason.split("; ").map(|fault| fault.split(':').next().unwrap()).collect();
        assert_eq!(fields, ["user_id", "email", "timezone"], "{reason}");
    }

    #[test]
    fn csv_a_last_row_without_a_final_newline_keeps_its_line_and_ends_at_the_end() {
        let data = "user_id,email\nu1,a@example.com\nu2,b@example.com";
        let rows = ok(csv(data));
        assert_eq!((rows[1].line, rows[1].end_offset), (3, data.len() as u64));
        assert_eq!(lines(&csv("user_id,email\nu1,a@example.com\nu2")), [(2, true), (3, false)]);
    }

    #[test]
    fn csv_an_unclosed_quote_longer_than_the_record_limit_fails_the_file() {
        let data =
            format!("user_id,attr.note\nu1,x\nu2,\"{}", "runaway\n".repeat(MAX_RECORD_BYTES as usize / 8 + 1000));
        let items: Vec<_> = rows(data.as_bytes(), Format::Csv, &CsvOptions::default()).unwrap().collect();
        assert_eq!(items.len(), 2, "one good row, then the file error, then nothing");
        assert!(matches!(items[1], Err(ImportError::RecordTooLong { line: 3, .. })), "{:?}", items[1]);
    }

    #[test]
    fn csv_resuming_from_any_rows_end_offset_yields_exactly_the_remaining_rows() {
        let data = "\u{feff}user_id,email,attr.note\r\n\r\nu1,a@example.com,\"multi\r\nline\"\r\nu2,nope,x\r\n\
                    u3\r\nu1,c@example.com,\"a, b\"\r\n\r\nu4,d@example.com,last";
        let mut iter = rows(data.as_bytes(), Format::Csv, &CsvOptions::default()).unwrap();
        let mapping = iter.csv_mapping().cloned().unwrap();
        let all: Vec<Row> = iter.by_ref().map(Result::unwrap).collect();
        assert_eq!(lines(&all), [(3, true), (5, false), (6, false), (7, true), (9, true)]);
        for (i, row) in all.iter().enumerate() {
            let at = row.as_ref().map_or_else(RowError::resume_at, ParsedRow::resume_at);
            let rest: Vec<Row> = rows_after_header(&data.as_bytes()[at.offset as usize..], mapping.clone(), at)
                .map(Result::unwrap)
                .collect();
            assert_eq!(rest, all[i + 1..], "resuming after row {i} at {at:?}");
        }
    }

    /// Hands out one byte per read, as a slow network stream may.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.0.len()).min(1);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn a_stream_that_trickles_one_byte_at_a_time_reads_the_same_rows() {
        let data = "\u{feff}user_id,email,attr.note\r\nu1,a@example.com,\"multi\r\nline\"\r\n\r\nu2,b@example.com,x";
        let trickled = |format| -> Vec<Row> {
            let reader = io::BufReader::with_capacity(1, Trickle(data.as_bytes()));
            rows(reader, format, &CsvOptions::default()).unwrap().map(Result::unwrap).collect()
        };
        assert_eq!(trickled(Format::Csv), csv(data));
        let data = "\u{feff}{\"user_id\":\"u1\"}\r\n\r\n{\"user_id\":\"u2\"}";
        let reader = io::BufReader::with_capacity(1, Trickle(data.as_bytes()));
        let trickled: Vec<Row> =
            rows(reader, Format::JsonLines, &CsvOptions::default()).unwrap().map(Result::unwrap).collect();
        assert_eq!(trickled, jsonl(data));
    }

    // --- Folding rows by user ---

    #[test]
    fn user_patches_apply_a_users_rows_in_file_order_for_csv() {
        let rows = csv("user_id,email,phone\nu1,a@example.com,+14155550000\nu2,b@example.com,\nu1,,+14155552671\n");
        let users = folded(Format::Csv, rows);
        assert_eq!(users.iter().map(|u| (u.user_id.as_str(), u.line)).collect::<Vec<_>>(), [("u1", 4), ("u2", 3)]);
        assert_eq!(
            users[0].patch,
            patch(|p| {
                p.email = Some(Some("a@example.com".into()));
                p.phone = Some(Some("+14155552671".into()));
            })
        );
    }

    #[test]
    fn user_patches_replace_attributes_name_by_name_for_jsonl() {
        let rows = jsonl(
            "{\"user_id\":\"u1\",\"attributes\":{\"plan\":[\"free\"],\"tier\":[\"1\"]}}\n\
             {\"user_id\":\"u1\",\"attributes\":{\"plan\":[\"pro\"]}}\n",
        );
        let users = folded(Format::JsonLines, rows);
        assert_eq!(attribute(&users[0], "plan"), ["pro"]);
        assert_eq!(attribute(&users[0], "tier"), ["1"]);
    }

    #[test]
    fn user_patches_are_emptied_by_drain() {
        let mut users = UserPatches::for_format(Format::JsonLines);
        for row in ok(jsonl("{\"user_id\":\"u1\"}\n{\"user_id\":\"u1\"}\n{\"user_id\":\"u2\"}\n")) {
            users.add(row);
        }
        assert_eq!(users.len(), 2);
        assert_eq!(users.drain().count(), 2);
        assert!(users.is_empty());
    }

    // --- JSON Lines ---

    #[test]
    fn jsonl_lines_parse_into_the_apis_patches_with_null_meaning_remove() {
        let data = "\u{feff}{\"user_id\":\"u1\",\"email\":\"a@example.com\",\"attributes\":{\"plan\":[\"pro\"]}}\r\n\
                    \n{\"user_id\":42,\"phone\":null}";
        let rows = ok(jsonl(data));
        assert_eq!(rows.iter().map(|r| (r.line, r.user_id.as_str())).collect::<Vec<_>>(), [(1, "u1"), (3, "42")]);
        assert_eq!(rows[0].patch.email, Some(Some("a@example.com".into())));
        assert_eq!(attribute(&rows[0], "plan"), ["pro"]);
        assert_eq!((&rows[1].patch.phone, &rows[1].patch.email), (&Some(None), &None));
        assert_eq!(rows[1].end_offset, data.len() as u64);
    }

    #[test]
    fn jsonl_a_bad_line_is_a_row_error_with_the_path_and_the_rest_is_read() {
        let rows = jsonl(concat!(
            "{\"user_id\":\"u1\",\"attributes\":{\"plan\":\"pro\"}}\n",
            "{\"user_id\":\"u2\",\"emial\":\"a@example.com\"}\n",
            "not json\n",
            "{\"user_id\":\"u3\"}\n",
        ));
        assert_eq!(lines(&rows), [(1, false), (2, false), (3, false), (4, true)]);
        let reason = &rows[0].as_ref().unwrap_err().reason;
        assert!(reason.starts_with("attributes.plan: invalid type"), "{reason}");
        assert!(rows[1].as_ref().unwrap_err().reason.contains("unknown field `emial`"));
        assert!(rows[2].as_ref().unwrap_err().reason.starts_with("not a JSON object: "));
    }

    #[test]
    fn jsonl_a_line_without_user_id_is_a_row_error() {
        let rows = jsonl("{\"email\":\"a@example.com\"}\n");
        assert!(rows[0].as_ref().unwrap_err().reason.starts_with("user_id: missing"));
    }

    #[test]
    fn jsonl_values_are_validated_like_the_api() {
        let rows = jsonl("{\"user_id\":\"u1\",\"email\":\"nope\",\"attributes\":{\"\":[\"x\"]}}\n");
        let reason = &rows[0].as_ref().unwrap_err().reason;
        assert!(reason.starts_with("attributes.: ") && reason.contains("; email: "), "{reason}");
    }

    #[test]
    fn jsonl_resuming_from_any_rows_end_offset_yields_exactly_the_remaining_rows() {
        let data = "\u{feff}{\"user_id\":\"u1\"}\r\n\r\nnot json\n{\"user_id\":\"u2\",\"timezone\":\"UTC\"}";
        let all = jsonl(data);
        for (i, row) in all.iter().enumerate() {
            let at = row.as_ref().map_or_else(RowError::resume_at, ParsedRow::resume_at);
            let rest: Vec<Row> = json_rows_from(&data.as_bytes()[at.offset as usize..], Format::JsonLines, at)
                .unwrap()
                .map(Result::unwrap)
                .collect();
            assert_eq!(rest, all[i + 1..], "resuming after row {i} at {at:?}");
        }
    }

    // --- Pinpoint endpoint exports ---

    fn endpoint(channel: &str, address: &str, user: &str, extra: &str) -> String {
        let user = if user.is_empty() { String::new() } else { format!(",\"User\":{{\"UserId\":\"{user}\"}}") };
        format!(
            "{{\"ChannelType\":\"{channel}\",\"Address\":\"{address}\",\"Id\":\"e-{address}\",\"EffectiveDate\":\
             \"2024-01-01T00:00:00Z\",\"Location\":{{\"Country\":\"US\"}},\"Metrics\":{{}}{user}{extra}}}\n"
        )
    }

    #[test]
    fn pinpoint_email_and_apns_endpoints_of_one_user_combine_into_one_patch() {
        let data = [
            endpoint("EMAIL", "a@example.com", "u1", ""),
            endpoint("SMS", "+14155552671", "u2", ""),
            endpoint("APNS", APNS, "u1", ""),
        ]
        .concat();
        let users = folded(Format::PinpointExport, pinpoint(&data));
        assert_eq!(users.iter().map(|u| (u.user_id.as_str(), u.line)).collect::<Vec<_>>(), [("u1", 3), ("u2", 2)]);
        let expected = patch(|p| {
            p.email = Some(Some("a@example.com".into()));
            p.device_tokens = Some(Some(vec![DeviceToken { token: APNS.into(), platform: Platform::Apns }]));
        });
        assert_eq!(users[0].patch, expected);
    }

    #[test]
    fn pinpoint_opted_out_or_inactive_endpoints_keep_their_attributes_but_not_their_address() {
        let attributes = ",\"Attributes\":{\"interests\":[\"golf\"]}";
        let data = [
            endpoint("EMAIL", "a@example.com", "u1", &format!(",\"OptOut\":\"ALL\"{attributes}")),
            endpoint("GCM", FCM, "u2", &format!(",\"EndpointStatus\":\"INACTIVE\",\"OptOut\":\"NONE\"{attributes}")),
        ]
        .concat();
        for row in ok(pinpoint(&data)) {
            assert_eq!((row.patch.email.clone(), row.patch.device_tokens.clone()), (None, None));
            assert_eq!(attribute(&row, "interests"), ["golf"]);
        }
    }

    #[test]
    fn pinpoint_an_endpoint_without_a_user_id_is_a_row_error() {
        let rows = pinpoint(&endpoint("EMAIL", "a@example.com", "", ""));
        assert_eq!(rows[0].as_ref().unwrap_err().reason, "no User.UserId: Herald profiles are per user");
    }

    #[test]
    fn pinpoint_an_unknown_channel_type_is_a_row_error_and_a_channel_herald_lacks_brings_only_attributes() {
        let data = [
            endpoint("PIGEON", "coo", "u1", ""),
            endpoint("CUSTOM", "https://hook.example", "u2", ",\"Attributes\":{\"a\":[\"1\"]}"),
        ]
        .concat();
        let rows = pinpoint(&data);
        assert_eq!(rows[0].as_ref().unwrap_err().reason, "unknown ChannelType \"PIGEON\"");
        let custom = rows[1].as_ref().unwrap();
        assert_eq!((custom.patch.email.clone(), attribute(custom, "a")), (None, vec!["1".to_owned()]));
    }

    #[test]
    fn pinpoint_user_and_endpoint_attributes_merge_with_the_users_winning_a_clash() {
        let user = r#","User":{"UserId":"u1","UserAttributes":{"plan":["pro"]}}"#;
        let first = format!(
            r#"{{"ChannelType":"EMAIL","Address":"a@example.com","Attributes":{{"plan":["free"],"device":["ios"]}}{user}}}"#
        );
        let second =
            format!(r#"{{"ChannelType":"GCM","Address":"{FCM}","Attributes":{{"device":["android"]}}{user}}}"#);
        let users = folded(Format::PinpointExport, pinpoint(&format!("{first}\n{second}\n")));
        assert_eq!(attribute(&users[0], "plan"), ["pro"]);
        assert_eq!(attribute(&users[0], "device"), ["ios", "android"]);
    }

    // --- Sniffing ---

    fn sniffed(bytes: &[u8]) -> Option<Format> {
        let sniffed = sniff(bytes).expect("an import file");
        assert!(!sniffed.gzip);
        sniffed.format
    }

    #[test]
    fn sniff_sees_gzip_by_its_magic_bytes() {
        assert_eq!(sniff(&[0x1f, 0x8b, 0x08, 0x00]).unwrap(), Sniffed { gzip: true, format: None });
    }

    #[test]
    fn sniff_tells_json_lines_from_pinpoint_from_csv() {
        assert_eq!(sniffed(b"{\"user_id\":\"u1\",\"email\":\"a@example.com\"}\n{"), Some(Format::JsonLines));
        assert_eq!(sniffed(endpoint("EMAIL", "a@example.com", "u1", "").as_bytes()), Some(Format::PinpointExport));
        // A first line longer than the bytes sniffed still tells by its keys.
        assert_eq!(sniffed(b"  \n{\"ChannelType\":\"EMAIL\",\"Address\":\"a@ex"), Some(Format::PinpointExport));
        assert_eq!(sniffed("\u{feff}Email,USER_ID\r\na@example.com,u1\r\n".as_bytes()), Some(Format::Csv));
        assert_eq!(sniffed(b"\"User.UserId\",\"User.UserAttributes.plan\"\n"), Some(Format::Csv));
    }

    #[test]
    fn sniff_refuses_what_is_not_an_import_file() {
        let cases: [&[u8]; 9] = [
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
            b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n",
            b"PK\x03\x04\x14\x00\x06\x00",
            &[0x00, 0x01, 0x02, 0xfe, 0xff, 0x10],
            b"email,phone\na@example.com,\n",
            b"user_id;email\nu1;a@example.com\n",
            b"[{\"user_id\":\"u1\"}]\n",
            b"{\\rtf1\\ansi user_id}\n",
            b"",
        ];
        for bytes in cases {
            assert!(
                matches!(sniff(bytes), Err(ImportError::NotAnImportFile(_))),
                "{:?}: {:?}",
                String::from_utf8_lossy(bytes),
                sniff(bytes)
            );
        }
    }
}
