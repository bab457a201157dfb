#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    herald_dispatcher::run().await
}
