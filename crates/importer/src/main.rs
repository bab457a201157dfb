use herald_importer::{ImporterConfig, ImporterHandler};

#[tokio::main]
async fn main() -> Result<(), herald_edge::Error> {
    herald_edge::logging::init();
    let config = ImporterConfig::from_lookup(herald_edge::config::process_env)?;
    herald_edge::sqs::run(ImporterHandler::connect(&config).await).await
}
