//! A JSON Lines or Pinpoint export import file (the first byte chooses which): every line
//! parsed into a profile patch or a row error, as the importer reads it.
#![no_main]

use herald_core::imports::parsing::{CsvOptions, Format, rows, sniff};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&choice, file)) = data.split_first() else { return };
    let _ = sniff(file);
    let format = if choice % 2 == 0 { Format::JsonLines } else { Format::PinpointExport };
    if let Ok(mut rows) = rows(file, format, &CsvOptions::default()) {
        for row in rows.by_ref() {
            if row.is_err() {
                break;
            }
        }
        let _ = rows.position();
    }
});
