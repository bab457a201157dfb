//! `herald (--stack <name> | --outputs <file>) <command>`: see `herald --help`. AWS
//! credentials and region come from the environment as for the AWS CLI, and so does
//! `AWS_ENDPOINT_URL`; an outputs file of herald-local's names its endpoint itself.

use std::process::ExitCode;

use herald_cli::{AwsStores, CliError, Invocation, StackOutputs, Target, USAGE};

#[tokio::main]
async fn main() -> ExitCode {
    let (target, command) = match Invocation::parse(std::env::args().skip(1)) {
        Ok(Invocation::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Invocation::Run { target, command }) => (target, command),
        Err(fault) => {
            eprintln!("herald: {fault}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let done = async {
        let (outputs, config) = match &target {
            Target::Stack(name) => {
                let config = herald_aws::sdk_config().await;
                (StackOutputs::describe(&aws_sdk_cloudformation::Client::new(&config), name).await?, config)
            }
            Target::OutputsFile(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| CliError::Outputs(format!("cannot read {}: {e}", path.display())))?;
                let outputs = StackOutputs::parse(&text)?;
                // The environment's endpoint wins, as everywhere in the SDK.
                let config = match (&outputs.endpoint, std::env::var_os("AWS_ENDPOINT_URL")) {
                    (Some(endpoint), None) => herald_aws::local_sdk_config(endpoint).await,
                    _ => herald_aws::sdk_config().await,
                };
                (outputs, config)
            }
        };
        let stores = AwsStores {
            dynamodb: aws_sdk_dynamodb::Client::new(&config),
            secretsmanager: aws_sdk_secretsmanager::Client::new(&config),
        };
        herald_cli::run(&command, &outputs, &stores, chrono::Utc::now(), &mut std::io::stdout().lock()).await
    };
    match done.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herald: {e}");
            ExitCode::FAILURE
        }
    }
}
