use herald_api::{App, Config};
use lambda_http::Error;

#[tokio::main]
async fn main() -> Result<(), Error> {
    herald_edge::logging::init();
    let config = Config::from_env()?;
    let clients = herald_aws::Clients::new(&herald_aws::function_sdk_config());
    clients.warm_up(&config.profiles_table, Some(&config.event_bus_name)).await;
    let app = App::from_aws(&clients, &config).await?;
    // The runtime's http-axum shape: lambda_http serves the router (on the raw path).
    lambda_http::run(app.service()).await
}
