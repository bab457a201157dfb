use super::*;
use crate::{
    imports::patches::*,
    profiles::{DeviceToken, Platform, ProfilePatch},
};
use std::io::{self, Read};

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
    assert_eq!((attribute(&rows[0], "Plan"), attribute(&rows[0], "Tier")), (vec!["pro".into()], vec!["gold".into()]));
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
    for header in ["user_id,Email,email\n", "user_id,attr.plan,User.UserAttributes.plan\n", "user_id,user.userid\n"] {
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
    let data = format!("user_id,attr.note\nu1,x\nu2,\"{}", "runaway\n".repeat(MAX_RECORD_BYTES as usize / 8 + 1000));
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
    let second = format!(r#"{{"ChannelType":"GCM","Address":"{FCM}","Attributes":{{"device":["android"]}}{user}}}"#);
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
