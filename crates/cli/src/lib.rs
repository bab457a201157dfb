//! `herald`, the admin CLI: API keys (create, list, revoke, rotate) and the stack's two
//! signing key rings (list, rotate, promote, retire), found through the stack's CloudFormation
//! outputs or a file of them (herald-local writes one). Secrets are printed once, by
//! `keys create` and `keys rotate`, and never appear in an error; a ring's values are
//! never printed at all.

pub mod args;
pub mod outputs;

use std::{io::Write, sync::Arc};

use chrono::{DateTime, SecondsFormat, Utc};
use herald_core::{
    keys::{ApiKey, ApiKeyCatalog, CreatedKey, KeyAdmin, KeyAdminError, Scope},
    signing::{
        KeyRing, KeyRingError, KeyRingWriter,
        admin::{RingChangeError, promote_key, retire_key, rotate_ring},
    },
};

pub use crate::{
    args::{Command, Invocation, Ring, Target, USAGE},
    outputs::StackOutputs,
};

/// The stack output naming the API keys table.
pub const KEYS_TABLE_OUTPUT: &str = "ApiKeysTableName";

/// Why a command failed. Names keys by id and rings by purpose; never a secret.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Outputs(String),
    #[error("{0}")]
    Stack(String),
    #[error(transparent)]
    Keys(#[from] KeyAdminError),
    #[error(transparent)]
    Ring(#[from] RingChangeError),
    #[error(transparent)]
    ReadRing(#[from] KeyRingError),
    #[error("cannot write the answer: {0}")]
    Output(#[from] std::io::Error),
}

/// The stores a command works on, given the names the stack's outputs hold.
pub trait Stores {
    fn keys(&self, table: &str) -> Arc<dyn ApiKeyCatalog>;
    fn rings(&self) -> Arc<dyn KeyRingWriter>;
}

/// The stores of an AWS account (or of herald-local's endpoint).
pub struct AwsStores {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub secretsmanager: aws_sdk_secretsmanager::Client,
}

impl Stores for AwsStores {
    fn keys(&self, table: &str) -> Arc<dyn ApiKeyCatalog> {
        Arc::new(herald_aws::DynamoApiKeyStore::new(self.dynamodb.clone(), table))
    }

    fn rings(&self) -> Arc<dyn KeyRingWriter> {
        Arc::new(herald_aws::SecretsManagerKeyRings::new(self.secretsmanager.clone()))
    }
}

/// Runs `command` on the stack `outputs` describe, writing its answer to `out`.
pub async fn run(
    command: &Command,
    outputs: &StackOutputs,
    stores: &dyn Stores,
    now: DateTime<Utc>,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let keys = || outputs.get(KEYS_TABLE_OUTPUT).map(|table| stores.keys(table));
    match command {
        Command::CreateKey { name, scopes, expires_at } => {
            let catalog = keys()?;
            let created = KeyAdmin::new(&*catalog).create(name, scopes, *expires_at).await?;
            write_created(out, &created)?;
            writeln!(out, "The secret is shown this once: only its hash is stored.")?;
        }
        Command::ListKeys => {
            let catalog = keys()?;
            write_keys(out, &KeyAdmin::new(&*catalog).list().await?)?;
        }
        Command::RevokeKey { id } => {
            let catalog = keys()?;
            let key = KeyAdmin::new(&*catalog).revoke(id, now).await?;
            writeln!(out, "revoked: {} at {}", key.id(), instant(key.revoked_at))?;
            writeln!(out, "The API refuses it within 10 s: each API environment trusts a key it read for 10 s.")?;
        }
        Command::RotateKey { id, grace } => {
            let catalog = keys()?;
            let rotated = KeyAdmin::new(&*catalog).rotate(id, *grace, now).await?;
            write_created(out, &rotated.new)?;
            writeln!(out, "old: {} expires {}", rotated.old.id(), instant(rotated.old.expires_at))?;
            writeln!(out, "The new secret is shown this once; the old one works until it expires.")?;
        }
        Command::ListRing(ring) => {
            let rings = stores.rings();
            write_ring(out, &rings.key_ring(outputs.get(ring.output())?).await?)?;
        }
        Command::RotateRing(ring) => {
            let rings = stores.rings();
            let rotated = rotate_ring(&*rings, outputs.get(ring.output())?).await?;
            write_ring(out, &rotated)?;
            let added = rotated.keys().get(1).map_or("", |k| k.id.as_str());
            writeln!(
                out,
                "{added} verifies in every function environment started after this. Once every function \
                 has restarted, `secrets promote {} {added}` makes it sign.",
                ring.name()
            )?;
        }
        Command::PromoteRingKey(ring, kid) => {
            let rings = stores.rings();
            write_ring(out, &promote_key(&*rings, outputs.get(ring.output())?, kid).await?)?;
            writeln!(out, "{kid} signs in every function environment started after this.")?;
        }
        Command::RetireRingKey(ring, kid) => {
            let rings = stores.rings();
            write_ring(out, &retire_key(&*rings, outputs.get(ring.output())?, kid).await?)?;
        }
    }
    Ok(())
}

/// `id:` and `secret:` each on its own line, what scripts/deploy reads.
fn write_created(out: &mut dyn Write, created: &CreatedKey) -> std::io::Result<()> {
    let key = &created.key;
    writeln!(out, "id: {}", key.id())?;
    writeln!(out, "name: {}", key.name)?;
    writeln!(out, "scopes: {}", scopes(key))?;
    writeln!(out, "expires: {}", instant(key.expires_at))?;
    writeln!(out, "secret: {}", created.secret)
}

fn scopes(key: &ApiKey) -> String {
    let name = |s: &Scope| serde_json::to_value(s).ok().and_then(|v| v.as_str().map(str::to_owned));
    key.scopes.iter().filter_map(name).collect::<Vec<_>>().join(",")
}

fn instant(at: Option<DateTime<Utc>>) -> String {
    at.map_or_else(|| "-".to_owned(), |at| at.to_rfc3339_opts(SecondsFormat::Secs, true))
}

/// One key a line under a header, columns aligned; never a hash or a secret.
fn write_keys(out: &mut dyn Write, keys: &[ApiKey]) -> std::io::Result<()> {
    let mut rows = vec![["ID", "NAME", "SCOPES", "CREATED", "EXPIRES", "REVOKED"].map(str::to_owned)];
    rows.extend(keys.iter().map(|k| {
        [k.id(), k.name.clone(), scopes(k), instant(Some(k.created_at)), instant(k.expires_at), instant(k.revoked_at)]
    }));
    write_table(out, &rows)
}

/// The ring's key ids in order, the signing one first; never a value.
fn write_ring(out: &mut dyn Write, ring: &KeyRing) -> std::io::Result<()> {
    let mut rows = vec![["KID", "ROLE"].map(str::to_owned)];
    rows.extend(
        ring.keys()
            .iter()
            .enumerate()
            .map(|(i, k)| [k.id.clone(), if i == 0 { "signs and verifies" } else { "verifies" }.to_owned()]),
    );
    write_table(out, &rows)
}

fn write_table<const N: usize>(out: &mut dyn Write, rows: &[[String; N]]) -> std::io::Result<()> {
    let widths: Vec<usize> = (0..N).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    for row in rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        writeln!(out, "{}", cells.join("  ").trim_end())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
