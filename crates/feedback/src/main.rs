use herald_feedback::{FeedbackConfig, FeedbackHandler};

#[tokio::main]
async fn main() -> Result<(), herald_edge::Error> {
    herald_edge::logging::init();
    let config = FeedbackConfig::from_lookup(herald_edge::config::process_env)?;
    herald_edge::sqs::run(FeedbackHandler::connect(&config).await).await
}
