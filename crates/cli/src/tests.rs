//! The commands over in-memory stores: what each prints, and that no secret or hash is
//! printed where it should not be.

use std::collections::{BTreeMap, HashMap};

use herald_core::{
    keys::{ApiKeyStore, hash_secret, memory::MemoryApiKeys},
    signing::{KeyRingStore, memory::MemoryKeyRings},
};

use super::*;

const SECRET_ONE: &str = "tracking-secret-0123456789abcdef0123456789";

struct Memory {
    keys: Arc<MemoryApiKeys>,
    rings: Arc<MemoryKeyRings>,
}

impl Stores for Memory {
    fn keys(&self, table: &str) -> Arc<dyn ApiKeyCatalog> {
        assert_eq!(table, "keys-table", "the table is the stack's output");
        self.keys.clone()
    }

    fn rings(&self) -> Arc<dyn KeyRingWriter> {
        self.rings.clone()
    }
}

fn memory() -> Memory {
    let ring = format!(r#"{{"id":"k1","secret":"{SECRET_ONE}"}}"#);
    Memory {
        keys: Arc::default(),
        rings: Arc::new(MemoryKeyRings::new(HashMap::from([("arn:tracking".to_owned(), ring)]))),
    }
}

fn outputs() -> StackOutputs {
    let values = BTreeMap::from([
        (KEYS_TABLE_OUTPUT.to_owned(), "keys-table".to_owned()),
        ("TrackingKeysSecretArn".to_owned(), "arn:tracking".to_owned()),
    ]);
    StackOutputs { stack_name: "test".into(), values, endpoint: None }
}

fn now() -> DateTime<Utc> {
    "2026-12-01T12:00:00Z".parse().unwrap()
}

async fn herald(stores: &Memory, args: &str) -> Result<String, CliError> {
    let command = match Invocation::parse(format!("--stack test {args}").split_whitespace().map(str::to_owned)) {
        Ok(Invocation::Run { command, .. }) => command,
        other => panic!("{other:?}"),
    };
    let mut out = Vec::new();
    run(&command, &outputs(), stores, now(), &mut out).await?;
    Ok(String::from_utf8(out).unwrap())
}

/// The value of the `name: value` line of `text`.
fn line<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines().find_map(|l| l.strip_prefix(&format!("{name}: "))).unwrap_or_else(|| panic!("no {name}: in {text}"))
}

#[tokio::test]
async fn create_prints_the_id_and_on_a_line_of_its_own_the_secret_whose_hash_is_stored() {
    let stores = memory();
    let printed = herald(&stores, "keys create --name admin --scopes admin").await.unwrap();
    let secret = line(&printed, "secret");
    let stored = stores.keys.find(&hash_secret(secret)).await.unwrap().expect("stored");
    assert_eq!(line(&printed, "id"), stored.id());
    assert_eq!((line(&printed, "scopes"), line(&printed, "expires")), ("admin", "-"));
    assert!(!printed.contains(&stored.key_hash));
}

#[tokio::test]
async fn list_shows_every_key_with_its_state_and_never_a_hash() {
    let stores = memory();
    let kept = herald(&stores, "keys create --name ci --scopes profiles:read,events:write").await.unwrap();
    let gone =
        herald(&stores, "keys create --name old --scopes admin --expires-at 2027-01-01T00:00:00Z").await.unwrap();
    herald(&stores, &format!("keys revoke {}", line(&gone, "id"))).await.unwrap();
    let listed = herald(&stores, "keys list").await.unwrap();
    let rows: Vec<Vec<&str>> = listed.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0], ["ID", "NAME", "SCOPES", "CREATED", "EXPIRES", "REVOKED"]);
    let row = |id: &str| rows.iter().find(|r| r[0] == id).unwrap_or_else(|| panic!("{id} in {listed}")).clone();
    assert_eq!(row(line(&kept, "id"))[1..3], ["ci", "profiles:read,events:write"]);
    assert_eq!(row(line(&kept, "id"))[4..], ["-", "-"]);
    assert_eq!(row(line(&gone, "id"))[4..], ["2027-01-01T00:00:00Z", "2026-12-01T12:00:00Z"]);
    for key in stores.keys.list().await.unwrap() {
        assert!(!listed.contains(&key.key_hash), "{listed}");
    }
    assert!(!listed.contains(line(&kept, "secret")));
}

#[tokio::test]
async fn revoke_marks_the_key_and_says_when_the_api_refuses_it() {
    let stores = memory();
    let created = herald(&stores, "keys create --name ci --scopes admin").await.unwrap();
    let printed = herald(&stores, &format!("keys revoke {}", line(&created, "id"))).await.unwrap();
    assert_eq!(line(&printed, "revoked"), format!("{} at 2026-12-01T12:00:00Z", line(&created, "id")));
    assert!(printed.contains("within 10 s"));
    let stored = stores.keys.find(&hash_secret(line(&created, "secret"))).await.unwrap().unwrap();
    assert_eq!(stored.revoked_at, Some(now()));
}

#[tokio::test]
async fn rotate_prints_the_new_secret_and_the_old_keys_end() {
    let stores = memory();
    let created = herald(&stores, "keys create --name ci --scopes admin").await.unwrap();
    let printed = herald(&stores, &format!("keys rotate {} --grace 2h", line(&created, "id"))).await.unwrap();
    assert_ne!(line(&printed, "secret"), line(&created, "secret"));
    assert_eq!(line(&printed, "old"), format!("{} expires 2026-12-01T14:00:00Z", line(&created, "id")));
    let new = stores.keys.find(&hash_secret(line(&printed, "secret"))).await.unwrap().unwrap();
    assert_eq!((new.name.as_str(), line(&printed, "id")), ("ci", new.id().as_str()));
}

#[tokio::test]
async fn an_unknown_key_id_fails_naming_it() {
    let error = herald(&memory(), "keys revoke key_0000000000000000").await.unwrap_err();
    assert_eq!(error.to_string(), "no key has the id key_0000000000000000");
}

#[tokio::test]
async fn secrets_list_shows_the_ids_in_order_and_never_a_value() {
    let stores = memory();
    herald(&stores, "secrets rotate tracking").await.unwrap();
    let listed = herald(&stores, "secrets list tracking").await.unwrap();
    assert_eq!(listed, "KID  ROLE\nk1   signs and verifies\nk2   verifies\n");
    let ring = stores.rings.key_ring("arn:tracking").await.unwrap();
    for key in ring.keys() {
        assert!(!listed.contains(std::str::from_utf8(key.secret()).unwrap()));
    }
}

#[tokio::test]
async fn secrets_rotate_adds_a_key_that_verifies_while_the_old_one_signs_and_never_prints_a_value() {
    let stores = memory();
    let printed = herald(&stores, "secrets rotate tracking").await.unwrap();
    let ring = stores.rings.key_ring("arn:tracking").await.unwrap();
    assert_eq!((ring.current().id.as_str(), ring.current().secret()), ("k1", SECRET_ONE.as_bytes()));
    let added = ring.get("k2").expect("the new key verifies");
    assert!(printed.contains("`secrets promote tracking k2`"), "{printed}");
    assert!(!printed.contains(SECRET_ONE) && !printed.contains(std::str::from_utf8(added.secret()).unwrap()));
}

#[tokio::test]
async fn secrets_promote_makes_a_key_sign_and_refuses_an_unknown_one() {
    let stores = memory();
    herald(&stores, "secrets rotate tracking").await.unwrap();
    let printed = herald(&stores, "secrets promote tracking k2").await.unwrap();
    assert!(printed.starts_with("KID  ROLE\nk2   signs and verifies\nk1   verifies\n"), "{printed}");
    assert_eq!(stores.rings.key_ring("arn:tracking").await.unwrap().current().id, "k2");
    let refused = herald(&stores, "secrets promote tracking k9").await.unwrap_err();
    assert_eq!(refused.to_string(), "the ring has no key k9");
}

#[tokio::test]
async fn secrets_retire_refuses_the_signing_key_and_removes_an_old_one() {
    let stores = memory();
    let refused = herald(&stores, "secrets retire tracking k1").await.unwrap_err();
    assert_eq!(refused.to_string(), "k1 is the ring's last key");
    herald(&stores, "secrets rotate tracking").await.unwrap();
    herald(&stores, "secrets promote tracking k2").await.unwrap();
    let refused = herald(&stores, "secrets retire tracking k2").await.unwrap_err();
    assert!(refused.to_string().starts_with("k2 is the key that signs"), "{refused}");
    let printed = herald(&stores, "secrets retire tracking k1").await.unwrap();
    assert_eq!(printed, "KID  ROLE\nk2   signs and verifies\n");
}

#[tokio::test]
async fn a_ring_the_stack_does_not_output_is_named() {
    let error = herald(&memory(), "secrets list webhook").await.unwrap_err();
    assert!(error.to_string().contains("no output WebhookSigningKeysSecretArn"), "{error}");
}
