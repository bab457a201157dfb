//! CSV files: the header maps columns to profile fields and attributes; each record is one
//! row, read through a capped feed so an unclosed quote cannot swallow the file.

use std::{
    collections::{BTreeMap, HashSet},
    io::{self, BufRead, Read},
};

use crate::{
    profiles::{DeviceToken, Platform, ProfilePatch},
    validation,
};

use super::*;

/// What one CSV column holds.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum Column {
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
    pub(super) fn from_name(name: &str) -> Result<Column, String> {
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
pub(super) fn clean_header(name: &str) -> &str {
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

pub(super) struct CsvRows<R> {
    reader: csv::Reader<Feed<R>>,
    record: csv::ByteRecord,
    pub(super) mapping: CsvMapping,
    pub(super) unknown: Vec<String>,
    /// Where the reader started in the file: its positions are relative to this.
    base: ResumeAt,
    done: bool,
}

impl<R: BufRead> CsvRows<R> {
    pub(super) fn with_header(reader: R, options: &CsvOptions) -> Result<Self, ImportError> {
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
    pub(super) fn resumed(reader: R, mapping: CsvMapping, base: ResumeAt) -> Self {
        let record = csv::ByteRecord::new();
        Self { reader: csv_reader(reader), record, mapping, unknown: Vec::new(), base, done: false }
    }

    pub(super) fn next_row(&mut self) -> Option<Result<Row, ImportError>> {
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

    pub(super) fn position(&self) -> ResumeAt {
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
