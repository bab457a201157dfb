use herald_dispatcher::{DispatcherConfig, DispatcherHandler};

#[tokio::main]
async fn main() -> Result<(), herald_edge::Error> {
    herald_edge::logging::init();
    let config = DispatcherConfig::from_lookup(herald_edge::config::process_env)?;
    herald_edge::sqs::run(DispatcherHandler::connect(&config).await).await
}
