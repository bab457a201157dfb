use herald_edge::sqs::{Invocation, deadline};
use herald_feedback::{FeedbackConfig, FeedbackHandler};
use lambda_runtime::{LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), herald_edge::Error> {
    herald_edge::logging::init();
    let config = FeedbackConfig::from_lookup(herald_edge::config::process_env)?;
    let handler = FeedbackHandler::connect(&config).await;
    let handler = &handler;
    // Invoked by its queue (SES's events) and by CloudWatch Logs (SNS's SMS status).
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| async move {
        let invocation = Invocation { deadline: Some(deadline(&event.context)) };
        handler.invoke(event.payload, invocation).await.map_err(herald_edge::Error::from)
    }))
    .await
}
