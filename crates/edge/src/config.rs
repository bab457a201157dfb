//! A function's configuration from its environment, with one error type for every function.
//!
//! Configuration is read through a lookup function rather than from the process
//! directly: the Lambda reads the process environment ([`process_env`]), the local stack
//! the template's resolved environment, tests a map.

/// Why a function's configuration cannot be read. It names the variable, never its value:
/// a value may be a secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("missing configuration: environment variable {0} is not set")]
    Missing(&'static str),
    #[error("invalid configuration: environment variable {name} is not valid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

impl ConfigError {
    /// `name` holds a value that is not valid; `reason` says what it must be (and must not
    /// repeat the value).
    pub fn invalid(name: &'static str, reason: impl Into<String>) -> Self {
        ConfigError::Invalid { name, reason: reason.into() }
    }
}

/// The process environment, as Lambda sets it from the function's configuration.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The variables of one function, through a lookup. A variable set to the empty string
/// counts as unset: templates often pass an empty parameter for "none".
#[derive(Clone, Copy)]
pub struct Env<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl<'a> Env<'a> {
    pub fn new(lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self { lookup }
    }

    /// The variable's value, if set and not empty.
    pub fn optional(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|v| !v.is_empty())
    }

    /// The variable's value, which must be set and not empty.
    pub fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.optional(name).ok_or(ConfigError::Missing(name))
    }

    /// The variable's value through `parse`, if set: a value `parse` refuses is an
    /// [`ConfigError::Invalid`] saying the value must be `expected`.
    pub fn parse<T>(
        &self,
        name: &'static str,
        expected: &str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<Option<T>, ConfigError> {
        match self.optional(name) {
            None => Ok(None),
            Some(value) => {
                parse(&value).map(Some).ok_or_else(|| ConfigError::invalid(name, format!("expected {expected}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(name: &str) -> Option<String> {
        match name {
            "TABLE" => Some("profiles".into()),
            "EMPTY" => Some(String::new()),
            "PARTS" => Some("0".into()),
            "SECRET" => Some("hunter2".into()),
            _ => None,
        }
    }

    #[test]
    fn empty_counts_as_unset() {
        let env = Env::new(&lookup);
        assert_eq!(env.optional("TABLE").as_deref(), Some("profiles"));
        assert_eq!(env.optional("EMPTY"), None);
        assert_eq!(env.required("EMPTY"), Err(ConfigError::Missing("EMPTY")));
        assert_eq!(env.required("TABLE").unwrap(), "profiles");
    }

    #[test]
    fn a_refused_value_names_the_variable_and_what_it_must_be_but_not_the_value() {
        let env = Env::new(&lookup);
        let parts = |v: &str| v.parse::<u32>().ok().filter(|p| (1..=64).contains(p));
        assert_eq!(env.parse("UNSET", "a number from 1 to 64", parts), Ok(None));
        let error = env.parse("PARTS", "a number from 1 to 64", parts).unwrap_err();
        assert!(matches!(error, ConfigError::Invalid { name: "PARTS", .. }));
        assert!(error.to_string().contains("PARTS") && error.to_string().contains("from 1 to 64"), "{error}");
        let error = env.parse("SECRET", "a number", |v| v.parse::<u32>().ok()).unwrap_err();
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }
}
