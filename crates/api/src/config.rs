//! The API function's configuration, from the environment the template sets.

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub profiles_table: String,
    pub api_keys_table: String,
    pub event_bus_name: String,
}

#[derive(Debug, thiserror::Error)]
#[error("missing configuration: environment variable {0} is not set")]
pub struct MissingVariable(pub &'static str);

impl Config {
    pub fn from_env() -> Result<Self, MissingVariable> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the variables through `lookup`, so the local stack can pass the values it
    /// resolved from the template without touching the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, MissingVariable> {
        let get = |name: &'static str| lookup(name).filter(|v| !v.is_empty()).ok_or(MissingVariable(name));
        Ok(Self {
            profiles_table: get("PROFILES_TABLE")?,
            api_keys_table: get("API_KEYS_TABLE")?,
            event_bus_name: get("EVENT_BUS_NAME")?,
        })
    }
}
