//! The command line: `herald (--stack <name> | --outputs <file>) <command>`, parsed by
//! hand (a few subcommands with a flag or two each need no parser crate).

use std::{collections::BTreeSet, path::PathBuf};

use chrono::{DateTime, Duration, Utc};
use herald_core::keys::Scope;

pub const USAGE: &str = "\
usage: herald (--stack <name> | --outputs <file>) <command>

  --stack <name>     a deployed stack: its resources from its CloudFormation outputs
  --outputs <file>   outputs saved as `aws cloudformation describe-stacks` prints them, or
                     written by herald-local (which adds its AWS endpoint)

commands:
  keys create --name <name> --scopes <scope,scope...> [--expires-at <RFC 3339>]
  keys list
  keys revoke <key id>
  keys rotate <key id> [--grace <duration, e.g. 24h, 30m, 7d; default 24h>]
  secrets list <tracking|webhook>
  secrets rotate <tracking|webhook>          (a new key that verifies; promote it later)
  secrets promote <tracking|webhook> <kid>   (the key signs from then on)
  secrets retire <tracking|webhook> <kid>";

/// Where the stack's resources are named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A deployed stack, read with DescribeStacks.
    Stack(String),
    /// A file of outputs (herald-local's, or a saved DescribeStacks answer).
    OutputsFile(PathBuf),
}

/// One of the stack's two key rings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ring {
    Tracking,
    Webhook,
}

impl Ring {
    fn parse(word: &str) -> Result<Self, String> {
        match word {
            "tracking" => Ok(Ring::Tracking),
            "webhook" => Ok(Ring::Webhook),
            other => Err(format!("unknown key ring {other} (tracking or webhook)")),
        }
    }

    /// The ring's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Ring::Tracking => "tracking",
            Ring::Webhook => "webhook",
        }
    }

    /// The stack output holding the ring's secret ARN.
    pub fn output(self) -> &'static str {
        match self {
            Ring::Tracking => "TrackingKeysSecretArn",
            Ring::Webhook => "WebhookSigningKeysSecretArn",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    CreateKey { name: String, scopes: BTreeSet<Scope>, expires_at: Option<DateTime<Utc>> },
    ListKeys,
    RevokeKey { id: String },
    RotateKey { id: String, grace: Duration },
    ListRing(Ring),
    RotateRing(Ring),
    PromoteRingKey(Ring, String),
    RetireRingKey(Ring, String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invocation {
    Help,
    Run { target: Target, command: Command },
}

/// How long an old key works after `keys rotate` unless told.
pub const DEFAULT_GRACE: Duration = Duration::hours(24);

impl Invocation {
    /// The arguments without the program name; the first fault is named.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut words = Vec::new();
        let mut flags: Vec<(String, String)> = Vec::new();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            if arg == "-h" || arg == "--help" || (words.is_empty() && arg == "help") {
                return Ok(Invocation::Help);
            }
            if arg.starts_with("--") {
                let value = args.next().ok_or_else(|| format!("{arg} needs a value"))?;
                if flags.iter().any(|(f, _)| *f == arg) {
                    return Err(format!("{arg} is given twice"));
                }
                flags.push((arg, value));
            } else {
                words.push(arg);
            }
        }
        let mut take = |name: &str| flags.iter().position(|(f, _)| f == name).map(|i| flags.remove(i).1);
        let target = match (take("--stack"), take("--outputs")) {
            (Some(stack), None) => Target::Stack(stack),
            (None, Some(file)) => Target::OutputsFile(PathBuf::from(file)),
            (Some(_), Some(_)) => return Err("give --stack or --outputs, not both".into()),
            (None, None) => return Err("--stack <name> or --outputs <file> is required".into()),
        };
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let command = match words.as_slice() {
            ["keys", "create"] => Command::CreateKey {
                name: take("--name").ok_or("keys create needs --name")?,
                scopes: parse_scopes(&take("--scopes").ok_or("keys create needs --scopes")?)?,
                expires_at: take("--expires-at").map(|at| parse_instant(&at)).transpose()?,
            },
            ["keys", "list"] => Command::ListKeys,
            ["keys", "revoke", id] => Command::RevokeKey { id: id.to_string() },
            ["keys", "rotate", id] => Command::RotateKey {
                id: id.to_string(),
                grace: take("--grace").map(|g| parse_duration(&g)).transpose()?.unwrap_or(DEFAULT_GRACE),
            },
            ["secrets", "list", ring] => Command::ListRing(Ring::parse(ring)?),
            ["secrets", "rotate", ring] => Command::RotateRing(Ring::parse(ring)?),
            ["secrets", "promote", ring, kid] => Command::PromoteRingKey(Ring::parse(ring)?, kid.to_string()),
            ["secrets", "retire", ring, kid] => Command::RetireRingKey(Ring::parse(ring)?, kid.to_string()),
            [] => return Err("no command given".into()),
            other => return Err(format!("unknown command: {}", other.join(" "))),
        };
        if let Some((flag, _)) = flags.first() {
            return Err(format!("{flag} is not an option of this command"));
        }
        Ok(Invocation::Run { target, command })
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

fn parse_instant(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|e| format!("--expires-at is not an RFC 3339 instant: {e}"))
}

/// `90s`, `30m`, `24h`, `7d`: a whole number and its unit.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let refused = || format!("--grace {text:?} is not a duration like 90s, 30m, 24h or 7d");
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(refused)?;
    let number: i64 = text[..split].parse().map_err(|_| refused())?;
    let duration = match &text[split..] {
        "s" => Duration::try_seconds(number),
        "m" => Duration::try_minutes(number),
        "h" => Duration::try_hours(number),
        "d" => Duration::try_days(number),
        _ => None,
    };
    duration.ok_or_else(refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &str) -> Result<Invocation, String> {
        Invocation::parse(args.split_whitespace().map(str::to_owned))
    }

    fn command(args: &str) -> Command {
        match parse(args).unwrap() {
            Invocation::Run { command, .. } => command,
            Invocation::Help => panic!("help"),
        }
    }

    #[test]
    fn a_key_takes_its_name_scopes_and_expiry() {
        let created = command(
            "--stack s keys create --name ci --scopes profiles:read,events:write --expires-at 2027-06-30T02:00:00+02:00",
        );
        assert_eq!(
            created,
            Command::CreateKey {
                name: "ci".into(),
                scopes: BTreeSet::from([Scope::ProfilesRead, Scope::EventsWrite]),
                expires_at: Some("2027-06-30T00:00:00Z".parse().unwrap()),
            }
        );
    }

    #[test]
    fn the_target_is_a_stack_or_an_outputs_file_given_anywhere() {
        let stack = parse("keys list --stack prod").unwrap();
        assert_eq!(stack, Invocation::Run { target: Target::Stack("prod".into()), command: Command::ListKeys });
        let file = parse("--outputs o.json keys list").unwrap();
        assert!(
            matches!(file, Invocation::Run { target: Target::OutputsFile(p), .. } if p == std::path::Path::new("o.json"))
        );
        assert_eq!(parse("keys list"), Err("--stack <name> or --outputs <file> is required".into()));
        assert_eq!(parse("--stack a --outputs b keys list"), Err("give --stack or --outputs, not both".into()));
    }

    #[test]
    fn an_unknown_scope_is_refused_by_name() {
        assert_eq!(
            parse("--stack s keys create --name n --scopes admin,everything"),
            Err("unknown scope everything".into())
        );
    }

    #[test]
    fn an_expiry_without_a_time_zone_is_refused() {
        let refused = parse("--stack s keys create --name n --scopes admin --expires-at 2027-06-30T00:00:00");
        assert!(refused.unwrap_err().starts_with("--expires-at is not an RFC 3339 instant"));
    }

    #[test]
    fn a_rotation_keeps_the_old_key_a_day_unless_told() {
        assert_eq!(
            command("--stack s keys rotate key_1"),
            Command::RotateKey { id: "key_1".into(), grace: DEFAULT_GRACE }
        );
        assert_eq!(DEFAULT_GRACE, Duration::hours(24));
        let told = command("--stack s keys rotate key_1 --grace 90m");
        assert_eq!(told, Command::RotateKey { id: "key_1".into(), grace: Duration::minutes(90) });
        assert_eq!(
            command("--stack s keys rotate k --grace 0s"),
            Command::RotateKey { id: "k".into(), grace: Duration::zero() }
        );
        assert!(parse("--stack s keys rotate k --grace 1w").unwrap_err().contains("not a duration"));
        assert!(parse("--stack s keys rotate k --grace h").unwrap_err().contains("not a duration"));
    }

    #[test]
    fn the_rings_are_tracking_and_webhook() {
        assert_eq!(command("--stack s secrets list tracking"), Command::ListRing(Ring::Tracking));
        assert_eq!(command("--stack s secrets rotate webhook"), Command::RotateRing(Ring::Webhook));
        assert_eq!(
            command("--stack s secrets promote webhook k2"),
            Command::PromoteRingKey(Ring::Webhook, "k2".into())
        );
        assert_eq!(
            command("--stack s secrets retire tracking k1"),
            Command::RetireRingKey(Ring::Tracking, "k1".into())
        );
        assert_eq!(parse("--stack s secrets list email"), Err("unknown key ring email (tracking or webhook)".into()));
    }

    #[test]
    fn an_option_of_another_command_is_refused() {
        assert_eq!(parse("--stack s keys list --grace 1h"), Err("--grace is not an option of this command".into()));
        assert_eq!(parse("--stack s keys revoke"), Err("unknown command: keys revoke".into()));
    }

    #[test]
    fn help_is_asked_for() {
        assert_eq!(parse("--help"), Ok(Invocation::Help));
        assert_eq!(parse("help"), Ok(Invocation::Help));
    }
}
