//! The herald-key binary as an operator runs it against a keys table: it prints a secret
//! whose hash is stored with the scopes and the expiry given.

use aws_sdk_dynamodb::types::{AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType};
use herald_aws::DynamoApiKeyStore;
use herald_core::keys::{ApiKey, ApiKeyStore, Scope, hash_secret};
use herald_local::MotoServer;

/// The endpoint `scripts/test` started, or a moto of our own.
async fn endpoint() -> (Option<MotoServer>, String) {
    match std::env::var("AWS_ENDPOINT_URL").ok().filter(|v| !v.is_empty()) {
        Some(endpoint) => (None, endpoint),
        None => {
            let moto = MotoServer::start().await.expect("moto starts");
            let endpoint = moto.endpoint.clone();
            (Some(moto), endpoint)
        }
    }
}

/// A keys table shaped as the template's `ApiKeysTable`.
async fn keys_table(client: &aws_sdk_dynamodb::Client) -> String {
    let table = format!("keys{}", uuid::Uuid::new_v4().simple());
    client
        .create_table()
        .table_name(&table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("key_hash")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(KeySchemaElement::builder().attribute_name("key_hash").key_type(KeyType::Hash).build().unwrap())
        .send()
        .await
        .unwrap();
    table
}

/// Runs herald-key with `args` against `table`; the stored key of the secret it printed.
async fn create(endpoint: &str, client: &aws_sdk_dynamodb::Client, table: &str, args: &[&str]) -> ApiKey {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald-key"))
        .args(["--table", table])
        .args(args)
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let secret = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert!(secret.starts_with("hk_"), "{secret}");
    DynamoApiKeyStore::new(client.clone(), table).find(&hash_secret(&secret)).await.unwrap().expect("the key is stored")
}

#[tokio::test]
async fn herald_key_stores_the_hash_of_the_secret_it_prints_with_its_scopes_and_expiry() {
    let (moto, endpoint) = endpoint().await;
    let client = aws_sdk_dynamodb::Client::new(&herald_aws::local_sdk_config(&endpoint).await);
    let table = keys_table(&client).await;
    let args = ["--name", "ci", "--scopes", "profiles:read,events:write", "--expires-at", "2027-06-30T00:00:00Z"];
    let key = create(&endpoint, &client, &table, &args).await;
    assert_eq!((key.name.as_str(), key.scopes.len()), ("ci", 2));
    assert!(key.allows(Scope::EventsWrite) && !key.allows(Scope::ProfilesWrite));
    assert_eq!(key.expires_at, Some("2027-06-30T00:00:00Z".parse().unwrap()));
    if let Some(moto) = moto {
        moto.stop().await;
    }
}

#[tokio::test]
async fn herald_key_without_an_expiry_stores_a_key_that_never_expires() {
    let (moto, endpoint) = endpoint().await;
    let client = aws_sdk_dynamodb::Client::new(&herald_aws::local_sdk_config(&endpoint).await);
    let table = keys_table(&client).await;
    let key = create(&endpoint, &client, &table, &["--name", "forever", "--scopes", "admin"]).await;
    assert_eq!(key.expires_at, None);
    if let Some(moto) = moto {
        moto.stop().await;
    }
}
