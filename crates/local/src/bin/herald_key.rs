//! `herald-key --table <keys table> --name <name> --scopes <scopes> [--expires-at <RFC 3339>]`:
//! stores a new API key and prints its secret, once. AWS credentials, region and
//! `AWS_ENDPOINT_URL` come from the environment, as for the AWS CLI.

use std::process::ExitCode;

use herald_aws::DynamoApiKeyStore;
use herald_core::keys::{self, ApiKeyStore};
use herald_local::key_command::{KeyRequest, USAGE};

#[tokio::main]
async fn main() -> ExitCode {
    let request = match KeyRequest::parse(std::env::args().skip(1)) {
        Ok(request) => request,
        Err(fault) => {
            eprintln!("herald-key: {fault}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let secret = keys::generate_secret();
    let store = DynamoApiKeyStore::new(aws_sdk_dynamodb::Client::new(&herald_aws::sdk_config().await), &request.table);
    if let Err(e) = store.put(&request.key(&secret)).await {
        eprintln!("herald-key: the key was not stored: {e}");
        return ExitCode::FAILURE;
    }
    println!("{secret}");
    ExitCode::SUCCESS
}
