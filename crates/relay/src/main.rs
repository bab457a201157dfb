use herald_relay::{RelayConfig, RelayHandler};

#[tokio::main]
async fn main() -> Result<(), herald_edge::Error> {
    herald_edge::logging::init();
    let config = RelayConfig::from_lookup(herald_edge::config::process_env)?;
    RelayHandler::connect(&config).await.run().await
}
