//! Herald's benchmarks. Each figure is one line, `name: value unit`. Figures "per core"
//! run on a single-threaded runtime; figures "local" run against the local stack on the
//! moto endpoint in AWS_ENDPOINT_URL (scripts/bench starts one). An argument runs only
//! the groups whose name contains it.

mod campaigns;
mod chaos;
mod client;
mod cost;
mod feedback;
mod import;
mod runtime;
mod segments;
mod segments_local;
mod worker;

use herald_local::{LocalStack, Options, repo_root};

/// A local stack of its own on the moto endpoint scripts/bench started, its AWS requests
/// counted by `request_counter` if given.
pub async fn local_stack(request_counter: Option<herald_aws::RequestCounter>) -> LocalStack {
    let endpoint =
        std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL names the moto server (scripts/bench starts it)");
    LocalStack::start(Options {
        endpoint: Some(endpoint),
        port: 0,
        admin_key: None,
        stack_name: format!("bench{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
        template: repo_root().join("infra/template.yaml"),
        worker_environment: Default::default(),
        dispatcher_environment: Default::default(),
        timeout_scale: 1.0,
        provider_endpoint: None,
        request_counter,
        worker_random_timeout_share: 0.0,
        parameters: Default::default(),
        functions: Default::default(),
    })
    .await
    .expect("the local stack starts")
}

fn main() {
    let only = std::env::args().nth(1);
    if only.as_deref() == Some(import::STUBBED_IMPORT) {
        import::million_rows_stubbed();
        return;
    }
    if only.as_deref() == Some(campaigns::STUBBED_FANOUT) {
        campaigns::million_recipients_stubbed();
        return;
    }
    let wanted = |name: &str| only.as_deref().is_none_or(|o| name.contains(o));
    let multi_threaded = || tokio::runtime::Runtime::new().expect("a runtime");
    if wanted("worker") {
        worker::deliveries_per_second_per_core();
        multi_threaded().block_on(worker::local_delivery_costs());
    }
    if wanted("cost") {
        multi_threaded().block_on(cost::infra_costs());
    }
    if wanted("import") {
        in_own_process(import::STUBBED_IMPORT);
        multi_threaded().block_on(import::hundred_thousand_rows_local());
    }
    if wanted("campaigns") {
        in_own_process(campaigns::STUBBED_FANOUT);
    }
    if wanted("segments") {
        segments::evaluate_change_against_1000_segments();
        segments::backfill_profiles_per_second_per_core();
        multi_threaded().block_on(segments_local::local_segment_figures());
    }
    if wanted("feedback") {
        feedback::feedback_events_per_second_per_core();
        feedback::sms_feedback_events_per_second_per_core();
        multi_threaded().block_on(feedback::engagement_event_lag());
    }
    if wanted("client") {
        client::client_figures();
    }
    if wanted("chaos") {
        multi_threaded().block_on(chaos::chaos_figures());
    }
    if wanted("runtime") {
        multi_threaded().block_on(runtime::runtime_figures());
    }
}

/// Runs this binary again with `argument`: a process of its own, whose CPU time and peak
/// memory are the benchmark's alone, not what earlier groups left running or resident.
fn in_own_process(argument: &str) {
    let status = std::process::Command::new(std::env::current_exe().expect("the bench binary"))
        .arg(argument)
        .status()
        .expect("the benchmark process runs");
    assert!(status.success(), "{argument} failed");
}

/// Posts a notification to the local stack's API as its admin and answers its id; a
/// notification not accepted ends the benchmark.
async fn notify(http: &reqwest::Client, stack: &herald_local::LocalStack, body: &serde_json::Value) -> String {
    let answer: serde_json::Value = http
        .post(format!("{}/v1/notifications", stack.api_url))
        .bearer_auth(&stack.admin_key)
        .json(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["notification_id"].as_str().unwrap_or_else(|| panic!("not accepted: {answer}")).to_owned()
}
