//! A tracking link's token, as anyone on the internet can send it: verified, and a click's
//! target checked as the redirect would be.
#![no_main]

use herald_core::delivery::tracking::{Action, Token, redirect_target};
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"fuzz-secret-of-at-least-32-bytes!";

/// The API's verification of a token (the one line to change when its signature changes).
fn verify(text: &str) -> Option<Token> {
    Token::verify(text, SECRET)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Some(Token { action: Action::Click { url }, .. }) = verify(text) {
        let _ = redirect_target(&url);
    }
    // A forged token never verifies, so reach the redirect check directly as well.
    let _ = redirect_target(text);
});
