#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    herald_worker::run(herald_core::delivery::Channel::Push).await
}
