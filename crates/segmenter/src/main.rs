use herald_segmenter::{SegmenterConfig, SegmenterHandler};

#[tokio::main]
async fn main() -> Result<(), herald_edge::Error> {
    herald_edge::logging::init();
    let config = SegmenterConfig::from_lookup(herald_edge::config::process_env)?;
    herald_edge::sqs::run(SegmenterHandler::connect(&config).await).await
}
