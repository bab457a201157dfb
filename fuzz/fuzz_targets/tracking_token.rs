//! A tracking link's token, as anyone on the internet can send it: verified, and a click's
//! target checked as the redirect would be.
#![no_main]

use std::sync::LazyLock;

use herald_core::delivery::tracking::{Action, Token, redirect_target};
use herald_core::signing::KeyRing;
use libfuzzer_sys::fuzz_target;

/// A ring with a current key and a `legacy` one, so both token forms (`kid.payload.sig`
/// and the two-part form of before key ids) reach their verification.
static KEYS: LazyLock<KeyRing> = LazyLock::new(|| {
    KeyRing::new([("k1", "fuzz-secret-of-at-least-32-bytes!"), ("legacy", "fuzz-legacy-secret-of-32-bytes-or-more")])
        .expect("a valid ring")
});

/// The API's verification of a token.
fn verify(text: &str) -> Option<Token> {
    Token::verify(text, &KEYS)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Some(Token { action: Action::Click { url }, .. }) = verify(text) {
        let _ = redirect_target(&url);
    }
    // A forged token never verifies, so reach the redirect check directly as well.
    let _ = redirect_target(text);
});
