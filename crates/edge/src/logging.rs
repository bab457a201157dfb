//! Logs as Lambda's advanced logging controls ask for them.
//!
//! `lambda_runtime::tracing::init_default_subscriber` reads the same variables, but it
//! writes text unless `AWS_LAMBDA_LOG_FORMAT` is `JSON`, reads `RUST_LOG` as one level
//! only, and drops timestamps and targets. Herald's functions have always logged JSON
//! (the template sets no logging config, only `RUST_LOG` filters), so the format stays
//! JSON unless Lambda says `Text`, and `RUST_LOG` keeps its full filter syntax.

use tracing_subscriber::filter::{EnvFilter, LevelFilter};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Text,
}

/// How a function logs, from its environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub format: Format,
    /// `tracing_subscriber` filter directives.
    pub filter: String,
}

impl Settings {
    /// `AWS_LAMBDA_LOG_FORMAT` (`JSON` or `Text`; default JSON) and the level
    /// `AWS_LAMBDA_LOG_LEVEL` (which Lambda sets with the application log level; it wins),
    /// else the `RUST_LOG` filter, else `info`, Lambda's default level.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let set = |name: &str| lookup(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let format = match set("AWS_LAMBDA_LOG_FORMAT") {
            Some(format) if format.eq_ignore_ascii_case("text") => Format::Text,
            _ => Format::Json,
        };
        let filter = match set("AWS_LAMBDA_LOG_LEVEL") {
            // Lambda's levels are TRACE to FATAL; tracing has no FATAL.
            Some(level) if level.eq_ignore_ascii_case("fatal") => "error".to_owned(),
            Some(level) => level.to_ascii_lowercase(),
            None => set("RUST_LOG").unwrap_or_else(|| "info".to_owned()),
        };
        Self { format, filter }
    }

    fn env_filter(&self) -> EnvFilter {
        // Directives that do not parse are dropped; if none is left, `info` applies.
        EnvFilter::builder().with_default_directive(LevelFilter::INFO.into()).parse_lossy(&self.filter)
    }
}

/// Sets up the process's logs from its environment (see [`Settings::from_lookup`]).
/// Call it once, first thing in `main`.
pub fn init() {
    let settings = Settings::from_lookup(crate::config::process_env);
    let logs = tracing_subscriber::fmt().with_env_filter(settings.env_filter());
    match settings.format {
        Format::Json => logs.json().init(),
        Format::Text => logs.init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Settings {
        Settings::from_lookup(|name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_owned()))
    }

    #[test]
    fn json_unless_lambda_says_text() {
        assert_eq!(settings(&[]).format, Format::Json);
        assert_eq!(settings(&[("AWS_LAMBDA_LOG_FORMAT", "JSON")]).format, Format::Json);
        assert_eq!(settings(&[("AWS_LAMBDA_LOG_FORMAT", "Text")]).format, Format::Text);
    }

    #[test]
    fn lambdas_log_level_wins_over_rust_log() {
        assert_eq!(settings(&[]).filter, "info");
        assert_eq!(settings(&[("RUST_LOG", "herald_worker=debug,warn")]).filter, "herald_worker=debug,warn");
        let both = settings(&[("RUST_LOG", "trace"), ("AWS_LAMBDA_LOG_LEVEL", "WARN")]);
        assert_eq!(both.filter, "warn");
        assert_eq!(settings(&[("AWS_LAMBDA_LOG_LEVEL", "FATAL")]).filter, "error");
        assert_eq!(settings(&[("AWS_LAMBDA_LOG_LEVEL", "DEBUG")]).env_filter().to_string(), "debug");
        assert_eq!(settings(&[("RUST_LOG", "nonsense=level")]).env_filter().to_string(), "info");
    }
}
