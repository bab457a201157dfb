//! The herald-local binary as a new user runs it: it starts moto itself, writes its stack
//! outputs for `herald --outputs`, serves the README's walkthrough as written, and stops
//! moto when it gets SIGTERM.

use std::{process::Stdio, time::Duration};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Command,
};

const ADMIN_KEY: &str = "hk_dev";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn herald_local_runs_the_readme_walkthrough_and_stops_its_moto_on_sigterm() {
    let port = free_port();
    let outputs = std::env::temp_dir().join(format!("herald-local-{port}.outputs.json"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald-local"))
        .env_remove("AWS_ENDPOINT_URL")
        .env("HERALD_OUTPUTS_FILE", &outputs)
        .env("HERALD_PORT", port.to_string())
        .env("HERALD_ADMIN_KEY", ADMIN_KEY)
        .env("HERALD_STACK", format!("bin{}", &uuid::Uuid::new_v4().simple().to_string()[..8]))
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("herald-local starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    let read_banner = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let done = line.contains("stack outputs in");
            printed.push(line);
            if done {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read_banner).await.expect("herald-local printed its banner in time");
    assert!(printed.iter().any(|l| l.contains(&format!("API listening on http://127.0.0.1:{port}"))), "{printed:?}");
    assert!(printed.iter().any(|l| l.ends_with(&format!("admin key {ADMIN_KEY}"))), "{printed:?}");
    let moto = printed
        .iter()
        .find_map(|l| l.split("AWS endpoint http://").nth(1))
        .expect("the endpoint is printed")
        .to_owned();
    assert!(printed.iter().any(|l| l.ends_with(&format!("stack outputs in {}", outputs.display()))), "{printed:?}");
    let written: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&outputs).unwrap()).unwrap();
    let _ = std::fs::remove_file(&outputs);
    assert_eq!(written["Endpoint"], format!("http://{moto}"));
    let output = |key: &str| {
        let all = written["Stacks"][0]["Outputs"].as_array().expect("outputs as DescribeStacks lists them");
        all.iter().find(|o| o["OutputKey"] == key).map(|o| o["OutputValue"].as_str().unwrap().to_owned())
    };
    assert_eq!(output("ApiUrl"), Some(format!("http://127.0.0.1:{port}")));
    assert!(output("ApiKeysTableName").is_some_and(|t| t.ends_with("-ApiKeysTable")), "{written}");
    assert!(output("TrackingKeysSecretArn").is_some_and(|a| a.starts_with("arn:aws:secretsmanager:")), "{written}");

    let walkthrough = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &herald_local::readme_walkthrough().unwrap()])
        .env("HERALD_URL", format!("http://127.0.0.1:{port}"))
        .env("HERALD_KEY", ADMIN_KEY)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&walkthrough.stdout);
    assert!(
        walkthrough.status.success(),
        "walkthrough failed: {stdout}\n{}",
        String::from_utf8_lossy(&walkthrough.stderr)
    );
    assert!(stdout.contains(r#""phone":"+14155552671""#), "{stdout}");
    assert!(stdout.contains(r#""plan":["pro"]"#), "{stdout}");
    assert!(stdout.contains(r#""notification_id":"n_"#), "{stdout}");
    assert!(stdout.contains(r#""deliveries":[{"#), "{stdout}");
    assert!(stdout.trim_end().ends_with("404"), "{stdout}");

    let pid = child.id().unwrap().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().await.unwrap().success());
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait()).await.expect("stops in time").unwrap();
    assert!(status.success(), "{status:?}");
    assert!(tokio::net::TcpStream::connect(&moto).await.is_err(), "moto still listens on {moto}");
}
