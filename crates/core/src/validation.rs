//! Field-level validation of contacts and attributes. Every check names the field at
//! fault, so that the API can answer with all of them at once.

use std::str::FromStr;

use serde::Serialize;

/// Pinpoint's limits on user attributes.
pub const MAX_ATTRIBUTES: usize = 250;
pub const MAX_ATTRIBUTE_NAME_CHARS: usize = 50;
pub const MAX_ATTRIBUTE_VALUE_CHARS: usize = 100;
pub const MAX_USER_ID_CHARS: usize = 128;
pub const MAX_DEVICE_TOKENS: usize = 50;
pub const MAX_EXTERNAL_CHANNELS: usize = 50;
/// Webhook and external channel URLs: long enough for any real hook, short enough that a
/// channel message of many recipients stays within SQS's message size.
pub const MAX_URL_CHARS: usize = 2048;
/// FCM registration tokens are opaque; real ones are ~150-200 characters of base64url
/// with a colon. We accept that alphabet within generous bounds.
pub const FCM_TOKEN_CHARS: std::ops::RangeInclusive<usize> = 32..=4096;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Where the fault is, e.g. `email`, `device_tokens[1].token`, `attributes.plan`.
    pub field: String,
    pub message: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, thiserror::Error)]
#[error("{} invalid field(s): {}", .0.len(), summary(.0))]
pub struct ValidationErrors(pub Vec<FieldError>);

fn summary(errors: &[FieldError]) -> String {
    errors.iter().map(|e| e.field.as_str()).collect::<Vec<_>>().join(", ")
}

impl ValidationErrors {
    pub fn single(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self(vec![FieldError { field: field.into(), message: message.into() }])
    }

    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError { field: field.into(), message: message.into() });
    }

    /// Records the outcome of one check under `field`.
    pub fn check(&mut self, field: impl Into<String>, outcome: Result<(), String>) {
        if let Err(message) = outcome {
            self.add(field, message);
        }
    }

    pub fn into_result(self) -> Result<(), ValidationErrors> {
        if self.0.is_empty() { Ok(()) } else { Err(self) }
    }
}

/// A user id as a field of a request.
pub fn check_user_id(id: &str) -> Result<(), ValidationErrors> {
    let mut errors = ValidationErrors::default();
    errors.check("user_id", user_id(id));
    errors.into_result()
}

pub fn user_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("must not be empty".into());
    }
    if id.chars().count() > MAX_USER_ID_CHARS {
        return Err(format!("must be at most {MAX_USER_ID_CHARS} characters"));
    }
    if id.chars().any(|c| c.is_control() || c == '/') {
        return Err("must not contain control characters or '/'".into());
    }
    Ok(())
}

pub fn email(address: &str) -> Result<(), String> {
    email_address::EmailAddress::from_str(address)
        .map(|_| ())
        .map_err(|e| format!("is not a valid email address ({e})"))
}

/// Parses a phone number in international format and returns its E.164 form.
pub fn phone_e164(number: &str) -> Result<String, String> {
    if !number.trim_start().starts_with('+') {
        return Err("must be in international format, starting with + and the country code".into());
    }
    if let Some(e164) = phone::valid_plain_e164(number) {
        return Ok(e164);
    }
    let parsed = phonenumber::parse(None, number).map_err(|e| format!("is not a phone number ({e})"))?;
    if !phone::is_valid(&parsed) {
        return Err("is not a valid phone number for its country".into());
    }
    Ok(parsed.format().mode(phonenumber::Mode::E164).to_string())
}

/// `phonenumber::is_valid`, and `phonenumber::parse` for numbers written `+` and digits
/// only, rule for rule over the same metadata, but with each regular expression compiled
/// once per thread and found by the address of its pattern: phonenumber's own look every
/// use up in a shared LRU cache of 100, hashing and comparing the whole pattern each time
/// (a third of an import's CPU went there). Their agreement with phonenumber is checked
/// over every example number of every region, their neighbours and their national-prefix
/// forms (`tests::phone_validity_agrees_with_phonenumber`,
/// `tests::plain_numbers_parse_as_phonenumber_parses_them`).
mod phone {
    use std::{borrow::Cow, cell::RefCell, collections::HashMap};

    use phonenumber::{
        Metadata, PhoneNumber,
        metadata::{DATABASE, Database, Descriptor},
    };

    thread_local! {
        static COMPILED: RefCell<HashMap<usize, regex::Regex>> = RefCell::new(HashMap::new());
    }

    /// `with` the compiled form of the pattern `source` (one of the database's, which lives
    /// as long as the process).
    fn with_regex<T>(source: &'static str, with: impl FnOnce(&regex::Regex) -> T) -> T {
        COMPILED.with(|compiled| {
            let mut compiled = compiled.borrow_mut();
            let regex = compiled.entry(source.as_ptr() as usize).or_insert_with(|| {
                // As phonenumber's database builds them.
                regex::RegexBuilder::new(source)
                    .ignore_whitespace(true)
                    .build()
                    .expect("phonenumber's patterns compile")
            });
            with(regex)
        })
    }

    /// Whether `source` matches `value` as phonenumber asks: a match starting at its start.
    fn matches_at_start(source: &'static str, value: &str) -> bool {
        with_regex(source, |regex| regex.find(value).is_some_and(|m| m.start() == 0))
    }

    /// `Descriptor::is_match`.
    fn descriptor_matches(descriptor: &'static Descriptor, value: &str) -> bool {
        let lengths = descriptor.possible_length();
        (lengths.is_empty() || lengths.contains(&(value.len() as u16)))
            && matches_at_start(descriptor.national_number().as_str(), value)
    }

    /// `validator::number_type(meta, value) != Type::Unknown`.
    fn has_a_type(meta: &'static Metadata, value: &str) -> bool {
        let d = meta.descriptors();
        descriptor_matches(d.general(), value)
            && [
                d.premium_rate(),
                d.toll_free(),
                d.shared_cost(),
                d.voip(),
                d.personal_number(),
                d.pager(),
                d.uan(),
                d.voicemail(),
                d.fixed_line(),
                d.mobile(),
            ]
            .into_iter()
            .flatten()
            .any(|descriptor| descriptor_matches(descriptor, value))
    }

    /// `validator::source_for`, resolved to its metadata as `is_valid_with` does.
    fn metadata_for(database: &'static Database, code: u16, national: &str) -> Option<&'static Metadata> {
        let regions = database.region(&code)?;
        if regions.len() == 1 {
            return if regions[0] == "001" {
                database.by_code(&code).and_then(|m| m.into_iter().next())
            } else {
                regions[0].parse::<phonenumber::country::Id>().ok().and_then(|id| database.by_id(id.as_ref()))
            };
        }
        for region in regions {
            let meta = database.by_id(region)?;
            let chosen = match meta.leading_digits() {
                Some(pattern) => matches_at_start(pattern.as_str(), national),
                None => has_a_type(meta, national),
            };
            if chosen {
                return region.parse::<phonenumber::country::Id>().ok().and_then(|id| database.by_id(id.as_ref()));
            }
        }
        None
    }

    /// `phonenumber::is_valid`.
    pub(super) fn is_valid(number: &PhoneNumber) -> bool {
        is_valid_national(number.country().code(), &number.national().to_string())
    }

    fn is_valid_national(code: u16, national: &str) -> bool {
        metadata_for(&DATABASE, code, national).is_some_and(|meta| has_a_type(meta, national))
    }

    /// The E.164 form of `number` when it is written `+` and digits only (as exports and
    /// most APIs write numbers) and is valid: what `phonenumber::parse(None, number)`,
    /// `is_valid` and the E.164 format give, step for step. `None` for any other number,
    /// or one that parse refuses or is not valid: the caller takes phonenumber's whole way,
    /// and its error.
    pub(super) fn valid_plain_e164(number: &str) -> Option<String> {
        const MIN_LENGTH_FOR_NSN: usize = 2;
        const MAX_LENGTH_FOR_NSN: usize = 17;
        let digits = number.strip_prefix('+')?;
        if digits.len() <= MIN_LENGTH_FOR_NSN || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let database: &'static Database = &DATABASE;
        // The shortest prefix that is a country calling code (`helper::country_code`).
        let (code, national) = (1..=3).find_map(|len| {
            let code: u16 = digits[..len].parse().ok()?;
            database.by_code(&code).is_some().then(|| (code, &digits[len..]))
        })?;
        // Without a region for the number, parse keeps it as it is.
        let national = match metadata_for(database, code, national.trim_start_matches('0')) {
            Some(meta) => without_national_prefix(meta, national),
            None => Cow::Borrowed(national),
        };
        if !(MIN_LENGTH_FOR_NSN..=MAX_LENGTH_FOR_NSN).contains(&national.len()) {
            return None;
        }
        // `NationalNumber`: leading zeros apart, the value fits in 56 bits.
        let value: u64 = national.trim_start_matches('0').parse().ok()?;
        if value >= 1 << 56 || !is_valid_national(code, &national) {
            return None;
        }
        Some(format!("+{code}{national}"))
    }

    /// The national significant number of `national` in `meta`'s region: its national
    /// prefix (and carrier code) taken off as phonenumber's parse does, unless what is left
    /// would be too short.
    fn without_national_prefix<'a>(meta: &'static Metadata, national: &'a str) -> Cow<'a, str> {
        let mut potential = national_number(meta, national);
        if let Some(prefix) = meta.national_prefix()
            && potential.starts_with(prefix)
        {
            potential = Cow::Owned(potential[prefix.len()..].to_owned());
        }
        // `validator::length(meta, _, Type::Unknown) != Validation::TooShort`.
        let general = meta.descriptors().general();
        let length = potential.len() as u16;
        let too_short = general
            .possible_length()
            .first()
            .is_some_and(|&minimum| !general.possible_local_length().contains(&length) && length < minimum);
        if too_short { Cow::Borrowed(national) } else { potential }
    }

    /// `parser::helper::national_number`, the carrier code left out. (Where a match at the
    /// start has no transform rule, phonenumber takes it off whatever is left, unlike
    /// libphonenumber; so does this.)
    fn national_number<'a>(meta: &'static Metadata, national: &'a str) -> Cow<'a, str> {
        let Some(parsing) = meta.national_prefix_for_parsing() else {
            return match meta.national_prefix() {
                Some(prefix) if national.starts_with(prefix) => Cow::Borrowed(&national[prefix.len()..]),
                _ => Cow::Borrowed(national),
            };
        };
        let (end, transformed) = match with_regex(parsing.as_str(), |parsing| {
            let found = parsing.find(national).filter(|m| m.start() == 0)?;
            let last = parsing.captures(national).and_then(|c| c.get(c.len() - 1));
            let rule = meta.national_prefix_transform_rule().filter(|_| last.is_some());
            Some((found.end(), rule.map(|rule| parsing.replace(national, rule).into_owned())))
        }) {
            Some(stripped) => stripped,
            None => return Cow::Borrowed(national),
        };
        match transformed {
            None => Cow::Borrowed(&national[end..]),
            Some(transformed) => {
                let general = meta.descriptors().general();
                if descriptor_matches(general, national) && !descriptor_matches(general, &transformed) {
                    Cow::Borrowed(national)
                } else {
                    Cow::Owned(transformed)
                }
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// Every example number of every region, each with its last digit changed, one
        /// digit more and one less: numbers valid and invalid, across every country code.
        fn numbers() -> Vec<String> {
            let mut numbers = Vec::new();
            for code in 1..1000u16 {
                for meta in DATABASE.by_code(&code).unwrap_or_default() {
                    let d = meta.descriptors();
                    let descriptors = [
                        Some(d.general()),
                        d.fixed_line(),
                        d.mobile(),
                        d.toll_free(),
                        d.premium_rate(),
                        d.shared_cost(),
                        d.personal_number(),
                        d.voip(),
                        d.pager(),
                        d.uan(),
                        d.voicemail(),
                    ];
                    for example in descriptors.into_iter().flatten().filter_map(Descriptor::example) {
                        let (head, _) = example.split_at(example.len() - 1);
                        numbers.push(format!("+{code}{example}"));
                        // Written with the national prefix, as people do.
                        if let Some(prefix) = meta.national_prefix() {
                            numbers.push(format!("+{code}{prefix}{example}"));
                        }
                        numbers.push(format!("+{code}{example}5"));
                        numbers.push(format!("+{code}{head}"));
                        for digit in [0, 3, 7] {
                            numbers.push(format!("+{code}{head}{digit}"));
                        }
                    }
                }
            }
            numbers
        }

        #[test]
        fn phone_validity_agrees_with_phonenumber() {
            let (mut valid, mut invalid) = (0, 0);
            for number in numbers() {
                let Ok(parsed) = phonenumber::parse(None, &number) else { continue };
                let expected = phonenumber::is_valid(&parsed);
                assert_eq!(is_valid(&parsed), expected, "{number}");
                if expected { valid += 1 } else { invalid += 1 }
            }
            // Both answers were checked, many times over.
            assert!(valid > 2000 && invalid > 2000, "{valid} valid, {invalid} invalid");
        }

        /// phonenumber's whole way: parse, validate, format.
        fn phonenumber_e164(number: &str) -> Option<String> {
            let parsed = phonenumber::parse(None, number).ok()?;
            phonenumber::is_valid(&parsed).then(|| parsed.format().mode(phonenumber::Mode::E164).to_string())
        }

        #[test]
        fn plain_numbers_parse_as_phonenumber_parses_them() {
            let (mut taken, mut left) = (0, 0);
            let odd = ["+", "+1", "+12", "+000", "+0441234", "+999123456", "+1 415 555 0100", "+1-415-555-0100"];
            for number in numbers().iter().map(String::as_str).chain(odd) {
                match valid_plain_e164(number) {
                    Some(e164) => {
                        assert_eq!(Some(&e164), phonenumber_e164(number).as_ref(), "{number}");
                        taken += 1;
                    }
                    None => {
                        // Left to phonenumber: only what it refuses, or what is not `+` and digits.
                        let plain = number[1..].bytes().all(|b| b.is_ascii_digit());
                        assert!(!plain || phonenumber_e164(number).is_none(), "{number}");
                        left += 1;
                    }
                }
            }
            assert!(taken > 2000 && left > 2000, "{taken} taken, {left} left");
        }
    }
}

pub fn timezone(name: &str) -> Result<(), String> {
    name.parse::<chrono_tz::Tz>().map(|_| ()).map_err(|_| "is not an IANA time zone name such as Europe/Paris".into())
}

/// APNs device tokens are 32 bytes, written as 64 hexadecimal characters.
pub fn apns_token(token: &str) -> Result<(), String> {
    if token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err("an APNs token must be 64 hexadecimal characters".into())
    }
}

pub fn fcm_token(token: &str) -> Result<(), String> {
    let well_formed = FCM_TOKEN_CHARS.contains(&token.len())
        && token.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b':'));
    if well_formed {
        Ok(())
    } else {
        Err(format!(
            "an FCM token must be {} to {} characters of A-Z, a-z, 0-9, '-', '_' and ':'",
            FCM_TOKEN_CHARS.start(),
            FCM_TOKEN_CHARS.end()
        ))
    }
}

/// External channel platforms are short lowercase names such as `slack` or `teams`.
pub fn channel_platform(name: &str) -> Result<(), String> {
    let ok = (1..=32).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'));
    if ok { Ok(()) } else { Err("must be 1 to 32 characters of a-z, 0-9, '_' and '-'".into()) }
}

/// Webhook targets must be absolute https URLs with a host: a push never travels in clear.
pub fn https_url(raw: &str) -> Result<(), String> {
    if raw.len() > MAX_URL_CHARS {
        return Err(format!("must be at most {MAX_URL_CHARS} characters"));
    }
    let url = url::Url::parse(raw).map_err(|e| format!("is not a URL ({e})"))?;
    if url.scheme() != "https" {
        return Err("must be an https URL".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("must name a host".into());
    }
    Ok(())
}

pub fn attribute_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("attribute names must not be empty".into());
    }
    if name.chars().count() > MAX_ATTRIBUTE_NAME_CHARS {
        return Err(format!("attribute names must be at most {MAX_ATTRIBUTE_NAME_CHARS} characters"));
    }
    if name.chars().any(char::is_control) {
        return Err("attribute names must not contain control characters".into());
    }
    Ok(())
}

pub fn attribute_value(value: &str) -> Result<(), String> {
    if value.chars().count() > MAX_ATTRIBUTE_VALUE_CHARS {
        return Err(format!("attribute values must be at most {MAX_ATTRIBUTE_VALUE_CHARS} characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_table(check: fn(&str) -> Result<(), String>, valid: &[&str], invalid: &[&str]) {
        for v in valid {
            assert!(check(v).is_ok(), "expected {v:?} to be valid: {:?}", check(v));
        }
        for v in invalid {
            assert!(check(v).is_err(), "expected {v:?} to be invalid");
        }
    }

    #[test]
    fn emails() {
        assert_table(
            email,
            &["ana@example.com", "first.last+tag@sub.example.co.uk", "x@y.io"],
            &["", "ana", "ana@", "@example.com", "ana@@example.com", "ana example@example.com", "ana@exa mple.com"],
        );
    }

    #[test]
    fn phones_are_normalised_to_e164() {
        let cases = [
            ("+14155552671", "+14155552671"),
            ("+1 (415) 555-2671", "+14155552671"),
            ("+44 20 7946 0958", "+442079460958"),
            ("+33 6 12 34 56 78", "+33612345678"),
        ];
        for (input, e164) in cases {
            assert_eq!(phone_e164(input).as_deref(), Ok(e164), "{input}");
        }
    }

    #[test]
    fn phones_that_are_not_international_or_not_valid_are_refused() {
        for input in ["4155552671", "", "+", "+1 555", "+999 123456789", "call me", "+1415555267199999"] {
            assert!(phone_e164(input).is_err(), "expected {input:?} to be invalid");
        }
    }

    #[test]
    fn apns_tokens() {
        let good = "a".repeat(64);
        let upper = "0123456789ABCDEF".repeat(4);
        let short = "a".repeat(63);
        let long = "a".repeat(65);
        let non_hex = format!("{}g", "a".repeat(63));
        assert_table(apns_token, &[&good, &upper], &[&short, &long, &non_hex, ""]);
    }

    #[test]
    fn fcm_tokens() {
        let real_shape = format!("dGVzdC10b2tlbi0x:APA91b{}", "Hx_y-Z0".repeat(20));
        let minimal = "a".repeat(32);
        let too_short = "a".repeat(31);
        let too_long = "a".repeat(4097);
        let bad_char = format!("{} {}", "a".repeat(20), "b".repeat(20));
        assert_table(fcm_token, &[&real_shape, &minimal], &[&too_short, &too_long, &bad_char, ""]);
    }

    #[test]
    fn urls_longer_than_the_limit_are_refused() {
        let base = "https://hooks.example.com/";
        assert!(https_url(&format!("{base}{}", "a".repeat(MAX_URL_CHARS - base.len()))).is_ok());
        assert!(https_url(&format!("{base}{}", "a".repeat(MAX_URL_CHARS - base.len() + 1))).is_err());
    }

    #[test]
    fn external_channel_urls_are_https_only() {
        assert_table(
            https_url,
            &["https://hooks.slack.com/services/T000/B000/XXXX", "https://example.com:8443/hook?x=1"],
            &["http://hooks.slack.com/services/T000", "ftp://example.com", "not a url", "https://", "/relative", ""],
        );
    }

    #[test]
    fn channel_platforms() {
        assert_table(channel_platform, &["slack", "ms-teams", "discord_2"], &["", "Slack", "slack!", &"a".repeat(33)]);
    }

    #[test]
    fn timezones() {
        assert_table(timezone, &["Europe/Paris", "America/New_York", "UTC"], &["", "Mars/Olympus", "GMT+25"]);
    }

    #[test]
    fn user_ids() {
        let longest = "u".repeat(MAX_USER_ID_CHARS);
        let too_long = "u".repeat(MAX_USER_ID_CHARS + 1);
        assert_table(user_id, &["u-1", "ana@example.com", &longest, "ünïcödé"], &["", &too_long, "a/b", "a\nb"]);
    }

    #[test]
    fn attribute_limits_count_characters_not_bytes() {
        assert!(attribute_name(&"é".repeat(MAX_ATTRIBUTE_NAME_CHARS)).is_ok());
        assert!(attribute_name(&"é".repeat(MAX_ATTRIBUTE_NAME_CHARS + 1)).is_err());
        assert!(attribute_name("").is_err());
        assert!(attribute_value(&"é".repeat(MAX_ATTRIBUTE_VALUE_CHARS)).is_ok());
        assert!(attribute_value(&"é".repeat(MAX_ATTRIBUTE_VALUE_CHARS + 1)).is_err());
        assert!(attribute_value("").is_ok());
    }
}
