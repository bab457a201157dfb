//! `herald-key`: creates an API key in a keys table (a deployment's or the local stack's),
//! with its scopes and, optionally, the instant it expires. The secret is printed once;
//! only its hash is stored.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use herald_core::keys::{self, ApiKey, Scope};

pub const USAGE: &str = "usage: herald-key --table <keys table> --name <name> --scopes <scope,scope…> \
[--expires-at <RFC 3339, e.g. 2027-06-30T00:00:00Z>]";

/// What to create, as the command line says it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRequest {
    pub table: String,
    pub name: String,
    pub scopes: BTreeSet<Scope>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl KeyRequest {
    /// The command's arguments (without the program name); the first fault is named.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let (mut table, mut name, mut scopes, mut expires_at) = (None, None, None, None);
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--table" => table = Some(value),
                "--name" => name = Some(value),
                "--scopes" => scopes = Some(parse_scopes(&value)?),
                "--expires-at" => {
                    let at = DateTime::parse_from_rfc3339(&value)
                        .map_err(|e| format!("--expires-at is not an RFC 3339 instant: {e}"))?;
                    expires_at = Some(at.with_timezone(&Utc));
                }
                other => return Err(format!("unknown argument {other}")),
            }
        }
        Ok(Self {
            table: table.ok_or("--table is required")?,
            name: name.ok_or("--name is required")?,
            scopes: scopes.ok_or("--scopes is required")?,
            expires_at,
        })
    }

    /// The record to store for `secret`.
    pub fn key(&self, secret: &str) -> ApiKey {
        let key = keys::new_key(secret, &self.name, self.scopes.iter().copied());
        match self.expires_at {
            Some(at) => key.expiring_at(at),
            None => key,
        }
    }
}

fn parse_scopes(list: &str) -> Result<BTreeSet<Scope>, String> {
    let scopes = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|_| format!("unknown scope {s}"))
        })
        .collect::<Result<BTreeSet<Scope>, String>>()?;
    if scopes.is_empty() {
        return Err("--scopes names no scope".into());
    }
    Ok(scopes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<KeyRequest, String> {
        KeyRequest::parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn a_key_takes_its_table_name_scopes_and_expiry() {
        let request = parse(&[
            "--table",
            "t",
            "--name",
            "ci",
            "--scopes",
            "profiles:read, events:write",
            "--expires-at",
            "2027-06-30T02:00:00+02:00",
        ])
        .unwrap();
        assert_eq!(request.scopes, BTreeSet::from([Scope::ProfilesRead, Scope::EventsWrite]));
        assert_eq!(request.expires_at, Some("2027-06-30T00:00:00Z".parse().unwrap()));
        assert_eq!(request.key("hk_s").expires_at, request.expires_at);
    }

    #[test]
    fn a_key_without_an_expiry_never_expires() {
        let request = parse(&["--table", "t", "--name", "ci", "--scopes", "admin"]).unwrap();
        assert_eq!(request.key("hk_s").expires_at, None);
    }

    #[test]
    fn an_unknown_scope_is_refused_by_name() {
        assert_eq!(
            parse(&["--table", "t", "--name", "n", "--scopes", "admin,everything"]),
            Err("unknown scope everything".into())
        );
    }

    #[test]
    fn an_expiry_without_a_time_zone_is_refused() {
        let refused =
            parse(&["--table", "t", "--name", "n", "--scopes", "admin", "--expires-at", "2027-06-30T00:00:00"]);
        assert!(refused.unwrap_err().starts_with("--expires-at is not an RFC 3339 instant"));
    }

    #[test]
    fn the_table_is_required() {
        assert_eq!(parse(&["--name", "n", "--scopes", "admin"]), Err("--table is required".into()));
    }
}
