//! Tracking links in email: an open pixel, click redirects and an unsubscribe link. Each
//! carries an HMAC-signed token naming its key, so a forged or altered link is refused and
//! changes nothing, and keys rotate without breaking links already sent.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::{
    channel::Channel,
    signing::{KeyRing, LEGACY_KEY_ID},
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "a", rename_all = "snake_case")]
pub enum Action {
    Open,
    Click { url: String },
    Unsubscribe { user_id: String, notification_type: String, channel: Channel },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    #[serde(rename = "d")]
    pub delivery_id: String,
    #[serde(flatten)]
    pub action: Action,
}

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any size")
}

/// Whether `signature` is the HMAC of `signed` under `secret` (in constant time).
fn signs(secret: &[u8], signed: &str, signature: &str) -> bool {
    let Ok(signature) = URL_SAFE_NO_PAD.decode(signature) else { return false };
    let mut m = mac(secret);
    m.update(signed.as_bytes());
    m.verify_slice(&signature).is_ok()
}

impl Token {
    /// `<kid>.<payload>.<signature>`, payload and signature base64url: safe in a URL path
    /// segment. Signed by the ring's current key, over `<kid>.<payload>`, so the key id
    /// cannot be swapped either.
    pub fn sign(&self, keys: &KeyRing) -> String {
        let key = keys.current();
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).expect("tokens serialize"));
        let signed = format!("{}.{payload}", key.id);
        let mut m = mac(key.secret());
        m.update(signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(m.finalize().into_bytes()))
    }

    /// The token, if `text` was signed by the ring's key it names and not altered. A token
    /// of before key ids (`<payload>.<signature>`, in links already sent) verifies only
    /// with the ring's `legacy` key, if the operator put one in.
    pub fn verify(text: &str, keys: &KeyRing) -> Option<Token> {
        let mut parts = text.split('.');
        let (payload, verified) = match (parts.next()?, parts.next()?, parts.next(), parts.next()) {
            (payload, signature, None, None) => (payload, signs(keys.get(LEGACY_KEY_ID)?.secret(), payload, signature)),
            (kid, payload, Some(signature), None) => {
                (payload, signs(keys.get(kid)?.secret(), &format!("{kid}.{payload}"), signature))
            }
            _ => return None,
        };
        if !verified {
            return None;
        }
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
    }
}

/// Where a click link may redirect: an http(s) URL without control characters, in the
/// ASCII form (percent-encoded, punycode) a `Location` header can carry. None refuses it.
pub fn redirect_target(url: &str) -> Option<String> {
    if url.chars().any(char::is_control) {
        return None;
    }
    let parsed = url::Url::parse(url).ok()?;
    matches!(parsed.scheme(), "http" | "https").then(|| parsed.into())
}

/// What an email needs to carry tracking: where the API is, and the tracking keys.
pub struct EmailTracking<'a> {
    pub base_url: &'a str,
    pub keys: &'a KeyRing,
    pub delivery_id: &'a str,
    /// Set for users (unsubscribe sets their preference); None for direct addresses.
    pub user_id: Option<&'a str>,
    pub notification_type: &'a str,
}

impl EmailTracking<'_> {
    fn link(&self, action: Action) -> String {
        let token = Token { delivery_id: self.delivery_id.to_owned(), action }.sign(self.keys);
        format!("{}/v1/t/{token}", self.base_url.trim_end_matches('/'))
    }

    /// The unsubscribe link, for users only.
    pub fn unsubscribe_link(&self) -> Option<String> {
        let user_id = self.user_id?;
        Some(self.link(Action::Unsubscribe {
            user_id: user_id.to_owned(),
            notification_type: self.notification_type.to_owned(),
            channel: Channel::Email,
        }))
    }

    /// Rewrites each link's `href` (of `<a>` elements only, however the attribute is
    /// written) to a click redirect, then puts the unsubscribe link and the open pixel at
    /// the end of `<body>` (or of `<html>`, or of the document, for HTML without them).
    /// lol_html parses the HTML as a browser does, so a stylesheet's `href` is no click,
    /// and single-quoted, unquoted or upper-case attributes are found.
    pub fn decorate_html(&self, html: &str) -> String {
        use std::{cell::Cell, rc::Rc};

        use lol_html::{RewriteStrSettings, element, end, end_tag, html_content::ContentType, rewrite_str};

        let mut footer = String::new();
        if let Some(link) = self.unsubscribe_link() {
            footer.push_str(&format!("<p style=\"font-size:12px\"><a href=\"{link}\">Unsubscribe</a></p>"));
        }
        footer.push_str(&format!("<img src=\"{}\" width=\"1\" height=\"1\" alt=\"\">", self.link(Action::Open)));
        let footer = Rc::new(footer);
        let placed = Rc::new(Cell::new(false));
        // Before `</body>`, else before `</html>`: end tag handlers run only for end tags
        // the HTML writes.
        let place_before_end = |element: &mut lol_html::html_content::Element| {
            let (footer, placed) = (footer.clone(), placed.clone());
            element.on_end_tag(end_tag!(move |end| {
                if !placed.replace(true) {
                    end.before(&footer, ContentType::Html);
                }
                Ok(())
            }))
        };
        let settings = RewriteStrSettings::new()
            .append_element_content_handler(element!("a[href]", |a| {
                let raw = a.get_attribute("href").unwrap_or_default();
                // The attribute's character references (`&amp;`) are undone for the stored
                // URL. A link no redirect can carry is left as written.
                let target = html_escape::decode_html_entities(&raw).into_owned();
                if redirect_target(&target).is_some() {
                    a.set_attribute("href", &self.link(Action::Click { url: target }))?;
                }
                Ok(())
            }))
            .append_element_content_handler(element!("body", place_before_end))
            .append_element_content_handler(element!("html", place_before_end))
            .append_document_content_handler(end!(|end| {
                if !placed.replace(true) {
                    end.append(&footer, ContentType::Html);
                }
                Ok(())
            }));
        // Rewriting fails past a memory limit (none is set) and, in lol_html's strict mode,
        // on the rare non-conforming HTML it cannot tokenize without ambiguity (`<xmp>` in
        // a `<select>`): the email then goes with its links as written, the footer at the end.
        rewrite_str(html, settings).unwrap_or_else(|_| format!("{html}{footer}"))
    }

    pub fn decorate_text(&self, text: &str) -> String {
        match self.unsubscribe_link() {
            Some(link) => format!("{text}\n\nUnsubscribe: {link}"),
            None => text.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S1: &str = "0123456789abcdef0123456789abcdef-one";
    const S2: &str = "0123456789abcdef0123456789abcdef-two";
    const OLD: &str = "the signing secret of before key ids";

    fn ring(keys: &[(&str, &str)]) -> KeyRing {
        KeyRing::new(keys.iter().copied()).unwrap()
    }

    fn keys() -> &'static KeyRing {
        static KEYS: std::sync::OnceLock<KeyRing> = std::sync::OnceLock::new();
        KEYS.get_or_init(|| ring(&[("k1", S1)]))
    }

    fn open() -> Token {
        Token { delivery_id: "d_1".into(), action: Action::Open }
    }

    /// A token as signed before key ids: `<payload>.<HMAC of payload>`.
    fn legacy_token(token: &Token, secret: &str) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(token).unwrap());
        let mut m = mac(secret.as_bytes());
        m.update(payload.as_bytes());
        format!("{payload}.{}", URL_SAFE_NO_PAD.encode(m.finalize().into_bytes()))
    }

    fn tracking() -> EmailTracking<'static> {
        EmailTracking {
            base_url: "https://api.example/",
            keys: keys(),
            delivery_id: "d_1",
            user_id: Some("u1"),
            notification_type: "news",
        }
    }

    fn tokens_in(html: &str) -> Vec<Token> {
        html.split("/v1/t/")
            .skip(1)
            .map(|rest| Token::verify(&rest[..rest.find('"').unwrap()], keys()).unwrap())
            .collect()
    }

    #[test]
    fn a_signed_token_names_the_current_key_and_verifies_to_itself() {
        let token = Token { delivery_id: "d_1".into(), action: Action::Click { url: "https://x.example/?a=1".into() } };
        let signed = token.sign(keys());
        assert!(signed.starts_with("k1."), "{signed}");
        assert_eq!(signed.split('.').count(), 3);
        assert_eq!(Token::verify(&signed, keys()), Some(token));
    }

    #[test]
    fn an_altered_or_foreign_token_is_refused() {
        let signed = open().sign(keys());
        let [kid, payload, signature]: [&str; 3] = signed.split('.').collect::<Vec<_>>().try_into().unwrap();
        let forged_payload = URL_SAFE_NO_PAD.encode(br#"{"d":"d_2","a":"open"}"#);
        assert_eq!(Token::verify(&format!("{kid}.{forged_payload}.{signature}"), keys()), None);
        assert_eq!(Token::verify(&format!("{kid}.{payload}.{}", &signature[1..]), keys()), None);
        assert_eq!(Token::verify(&signed, &ring(&[("k1", S2)])), None);
        assert_eq!(Token::verify("garbage", keys()), None);
        assert_eq!(Token::verify(&format!("{signed}.extra"), keys()), None);
    }

    #[test]
    fn a_token_naming_a_key_the_ring_lacks_is_refused() {
        let signed = open().sign(&ring(&[("k9", S1)]));
        assert_eq!(Token::verify(&signed, keys()), None);
    }

    #[test]
    fn the_key_id_is_signed_too() {
        let both = ring(&[("k1", S1), ("k2", S1)]);
        let signed = open().sign(&both);
        assert_eq!(Token::verify(&signed.replacen("k1.", "k2.", 1), &both), None);
    }

    #[test]
    fn a_verify_only_key_still_verifies_what_it_signed() {
        let before = open().sign(&ring(&[("k1", S1)]));
        let rotated = ring(&[("k2", S2), ("k1", S1)]);
        assert_eq!(Token::verify(&before, &rotated), Some(open()));
        assert!(open().sign(&rotated).starts_with("k2."));
    }

    #[test]
    fn a_token_of_before_key_ids_verifies_only_with_a_legacy_key() {
        let old = legacy_token(&open(), OLD);
        assert_eq!(Token::verify(&old, &ring(&[("k1", S1)])), None);
        assert_eq!(Token::verify(&old, &ring(&[("k1", OLD)])), None, "only the key named legacy");
        assert_eq!(Token::verify(&old, &ring(&[("k1", S1), (LEGACY_KEY_ID, OLD)])), Some(open()));
        assert_eq!(Token::verify(&legacy_token(&open(), S1), &ring(&[("k1", S1), (LEGACY_KEY_ID, OLD)])), None);
    }

    #[test]
    fn links_become_click_redirects_and_the_pixel_and_unsubscribe_are_added() {
        let html = tracking()
            .decorate_html(r#"<a href="https://shop.example/?a=1&amp;b=2">Shop</a> <a href="mailto:x@y.z">m</a>"#);
        assert!(html.contains(r#"href="mailto:x@y.z""#));
        let actions: Vec<Action> = tokens_in(&html).into_iter().map(|t| t.action).collect();
        assert_eq!(
            actions,
            [
                Action::Click { url: "https://shop.example/?a=1&b=2".into() },
                Action::Unsubscribe { user_id: "u1".into(), notification_type: "news".into(), channel: Channel::Email },
                Action::Open,
            ]
        );
        assert!(html.contains("https://api.example/v1/t/"));
    }

    #[test]
    fn a_url_with_a_control_character_is_no_redirect_target() {
        assert_eq!(redirect_target("https://shop.example/a\u{7}b"), None);
        assert_eq!(redirect_target("https://shop.example/\r\nSet-Cookie: x"), None);
        assert_eq!(redirect_target("javascript:alert(1)"), None);
        assert_eq!(redirect_target("https://shop.example/ü?a=1").as_deref(), Some("https://shop.example/%C3%BC?a=1"));
    }

    #[test]
    fn a_link_with_a_control_character_is_left_as_written() {
        let html = tracking().decorate_html("<a href=\"https://shop.example/\u{1}\">x</a>");
        assert!(html.contains("href=\"https://shop.example/\u{1}\""));
    }

    fn clicks_in(html: &str) -> Vec<String> {
        tokens_in(html)
            .into_iter()
            .filter_map(|t| match t.action {
                Action::Click { url } => Some(url),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_stylesheet_link_is_no_click() {
        let html = tracking().decorate_html(r#"<link rel="stylesheet" href="https://cdn.example/a.css"><p>hi</p>"#);
        assert!(html.contains(r#"href="https://cdn.example/a.css""#), "{html}");
        assert_eq!(clicks_in(&html), Vec::<String>::new());
    }

    #[test]
    fn links_written_in_single_quotes_unquoted_or_upper_case_are_clicks() {
        let html = tracking().decorate_html(
            "<a href='https://a.example/'>a</a> <a href=https://b.example/>b</a> <A HREF=\"https://c.example/\">c</A>",
        );
        assert_eq!(clicks_in(&html), ["https://a.example/", "https://b.example/", "https://c.example/"]);
    }

    #[test]
    fn character_references_in_a_link_are_undone_for_the_redirect() {
        let html = tracking().decorate_html(r#"<a href="https://shop.example/?a=1&#38;b=2&amp;c=3">x</a>"#);
        assert_eq!(clicks_in(&html), ["https://shop.example/?a=1&b=2&c=3"]);
    }

    #[test]
    fn the_pixel_and_the_unsubscribe_link_go_inside_the_body() {
        let html = tracking().decorate_html("<html><body><p>hi</p></body></html>");
        let (inside, after) = html.split_once("</body>").unwrap();
        assert_eq!(after, "</html>");
        assert!(inside.contains("Unsubscribe") && inside.contains("<img src="), "{html}");
        assert_eq!(tokens_in(&html).len(), 2, "one unsubscribe link and one pixel: {html}");
    }

    #[test]
    fn without_a_body_end_tag_the_pixel_goes_before_the_end_of_html() {
        let html = tracking().decorate_html("<html><body><p>hi</html>");
        assert!(html.ends_with("\"></html>"), "{html}");
        assert_eq!(tokens_in(&html).len(), 2, "{html}");
    }

    #[test]
    fn html_too_ambiguous_to_rewrite_keeps_its_links_and_gets_the_footer_at_its_end() {
        let ambiguous = r#"<select><xmp><a href="https://x.example/">x</a></xmp></select>"#;
        let html = tracking().decorate_html(ambiguous);
        assert!(html.starts_with(ambiguous), "{html}");
        assert_eq!(clicks_in(&html), Vec::<String>::new());
        assert_eq!(tokens_in(&html).len(), 2, "the unsubscribe link and the pixel: {html}");
    }

    #[test]
    fn direct_addresses_get_no_unsubscribe_link() {
        let t = EmailTracking { user_id: None, ..tracking() };
        assert_eq!(t.decorate_text("hi"), "hi");
        assert!(!t.decorate_html("<p>hi</p>").contains("Unsubscribe"));
    }
}
