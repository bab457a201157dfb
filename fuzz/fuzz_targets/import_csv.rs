//! A CSV import file, as the importer reads it from the bucket: sniffed, then every row
//! parsed into a profile patch or a row error. Panics are crashes; errors are answers.
#![no_main]

use herald_core::imports::parsing::{CsvOptions, Format, rows, sniff};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sniff(data);
    // Past the sniffer too: rows of a file whatever its first line says.
    if let Ok(mut file) = rows(data, Format::Csv, &CsvOptions::default()) {
        for row in file.by_ref() {
            if row.is_err() {
                break;
            }
        }
        let _ = (file.unknown_columns(), file.position());
    }
});
