use std::process::ExitCode;

use std::path::PathBuf;

use herald_local::{LocalStack, Options};
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .init();
    let stack = match Options::from_env() {
        Ok(options) => LocalStack::start(options).await,
        Err(e) => Err(e),
    };
    let stack = match stack {
        Ok(stack) => stack,
        Err(e) => {
            eprintln!("herald-local: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("herald-local: API listening on {}", stack.api_url);
    println!("herald-local: AWS endpoint {}", stack.endpoint);
    println!("herald-local: admin key {}", stack.admin_key);
    // For `herald --outputs <file>`: the stack's outputs and endpoint, as a deployed
    // stack's DescribeStacks gives them.
    let outputs =
        std::env::var_os("HERALD_OUTPUTS_FILE").filter(|v| !v.is_empty()).map(PathBuf::from).unwrap_or_else(|| {
            herald_local::repo_root()
                .join("target/herald-local")
                .join(format!("{}.outputs.json", stack.deployment.stack_name))
        });
    match stack.write_outputs(&outputs) {
        Ok(()) => println!("herald-local: stack outputs in {}", outputs.display()),
        Err(e) => eprintln!("herald-local: {e}"),
    }
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    println!("herald-local: stopping");
    stack.stop().await;
    ExitCode::SUCCESS
}
