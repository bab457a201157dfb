use std::process::ExitCode;

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
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    println!("herald-local: stopping");
    stack.stop().await;
    ExitCode::SUCCESS
}
