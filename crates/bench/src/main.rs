//! Herald's benchmarks. Each figure is one line, `name: value unit`. Figures "per core"
//! run on a single-threaded runtime; figures "local" run against the local stack on the
//! moto endpoint in AWS_ENDPOINT_URL (scripts/bench starts one). An argument runs only
//! the groups whose name contains it.

mod segments;
mod segments_local;
mod worker;

fn main() {
    let only = std::env::args().nth(1);
    let wanted = |name: &str| only.as_deref().is_none_or(|o| name.contains(o));
    let multi_threaded = || tokio::runtime::Runtime::new().expect("a runtime");
    if wanted("worker") {
        worker::deliveries_per_second_per_core();
        multi_threaded().block_on(worker::local_delivery_costs());
    }
    if wanted("segments") {
        segments::evaluate_change_against_1000_segments();
        segments::backfill_profiles_per_second_per_core();
        multi_threaded().block_on(segments_local::local_segment_figures());
    }
}
