use herald_core::channel::Channel;
use herald_worker::{WorkerConfig, WorkerHandler};

#[tokio::main]
async fn main() -> Result<(), herald_edge::Error> {
    herald_edge::logging::init();
    let config = WorkerConfig::from_lookup(herald_edge::config::process_env)?.for_channel(Channel::Email)?;
    herald_edge::sqs::run(WorkerHandler::connect(&config, herald_worker::senders::email).await?).await
}
