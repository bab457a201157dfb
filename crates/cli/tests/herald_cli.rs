//! The herald binary as an operator runs it against the local stack (herald-local, in
//! process, with its outputs file): a key it creates works on the API over real HTTP
//! until it is revoked, then is refused; a rotated key's successor works and the old one
//! ends with its grace; a key ring rotates, lists, promotes and retires, its values never printed;
//! and `--stack` finds the keys table in a CloudFormation stack's outputs (on moto).

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use herald_local::{LocalStack, Options};

struct Stack {
    stack: LocalStack,
    outputs: PathBuf,
}

/// A local stack of this test's own (on `scripts/test`'s moto, or one it starts) and its
/// outputs file, as herald-local writes it.
async fn stack() -> Stack {
    let mut options = Options::from_env().expect("options");
    options.port = 0;
    options.stack_name = format!("cli{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let stack = LocalStack::start(options).await.expect("the local stack starts");
    let outputs = std::env::temp_dir().join(format!("admin-{}.outputs.json", stack.deployment.stack_name));
    stack.write_outputs(&outputs).unwrap();
    Stack { stack, outputs }
}

impl Stack {
    /// Runs `herald --outputs <file> <args>`: (success, stdout, stderr). The endpoint comes
    /// from the file alone, as for an operator's shell without AWS variables.
    async fn herald(&self, args: &str) -> (bool, String, String) {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
            .arg("--outputs")
            .arg(&self.outputs)
            .args(args.split_whitespace())
            .env_remove("AWS_ENDPOINT_URL")
            .output()
            .await
            .unwrap();
        let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap();
        (output.status.success(), text(output.stdout), text(output.stderr))
    }

    /// What `herald` printed on stdout, which must succeed.
    async fn ok(&self, args: &str) -> String {
        let (ok, stdout, stderr) = self.herald(args).await;
        assert!(ok, "herald {args}: {stderr}");
        stdout
    }

    /// The API's status for `GET /v1/imports` with `secret`.
    async fn status(&self, secret: &str) -> (u16, String) {
        let answer = reqwest::Client::new()
            .get(format!("{}/v1/imports", self.stack.api_url))
            .bearer_auth(secret)
            .send()
            .await
            .unwrap();
        let status = answer.status().as_u16();
        let body: serde_json::Value = answer.json().await.unwrap_or_default();
        (status, body["detail"].as_str().unwrap_or_default().to_owned())
    }

    async fn stop(self) {
        let _ = std::fs::remove_file(&self.outputs);
        self.stack.stop().await;
    }
}

/// The value of the `name: value` line of `text`.
fn line<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines().find_map(|l| l.strip_prefix(&format!("{name}: "))).unwrap_or_else(|| panic!("no {name}: in {text}"))
}

/// The API's answers can lag a revocation by its key cache (`KNOWN_KEY_TTL`, 10 s): asks
/// again until `want` or 15 s have passed.
async fn status_within_15_s(stack: &Stack, secret: &str, want: u16) -> (u16, String) {
    let start = Instant::now();
    loop {
        let answer = stack.status(secret).await;
        if answer.0 == want || start.elapsed() > Duration::from_secs(15) {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn a_created_key_works_on_the_api_until_revoked_and_is_then_refused() {
    let stack = stack().await;
    let created = stack.ok("keys create --name ci --scopes imports:read").await;
    let (id, secret) = (line(&created, "id"), line(&created, "secret"));
    assert_eq!(stack.status(secret).await.0, 200, "the new key works at once");

    let revoked = stack.ok(&format!("keys revoke {id}")).await;
    assert!(revoked.starts_with(&format!("revoked: {id} at ")), "{revoked}");
    assert_eq!(status_within_15_s(&stack, secret, 401).await, (401, "Revoked API key".to_owned()));

    let listed = stack.ok("keys list").await;
    let row = listed.lines().find(|l| l.starts_with(id)).expect("the revoked key is listed");
    assert!(!row.ends_with(" -"), "its revocation instant is shown: {row}");
    assert!(!listed.contains(secret));
    stack.stop().await;
}

#[tokio::test]
async fn a_rotated_keys_successor_works_and_the_old_key_ends_with_its_grace() {
    let stack = stack().await;
    let kept = stack.ok("keys create --name kept --scopes imports:read").await;
    let ended = stack.ok("keys create --name ended --scopes imports:read").await;

    let rotated = stack.ok(&format!("keys rotate {} --grace 1h", line(&kept, "id"))).await;
    assert_eq!(stack.status(line(&rotated, "secret")).await.0, 200);
    assert_eq!(stack.status(line(&kept, "secret")).await.0, 200, "the old key works through its grace");

    let rotated = stack.ok(&format!("keys rotate {} --grace 0s", line(&ended, "id"))).await;
    assert_eq!(stack.status(line(&rotated, "secret")).await.0, 200);
    // An expiry is checked on every request, cached key or not: no wait.
    assert_eq!(stack.status(line(&ended, "secret")).await, (401, "Expired API key".to_owned()));
    stack.stop().await;
}

#[tokio::test]
async fn a_key_ring_rotates_lists_promotes_and_retires_and_its_values_are_never_printed() {
    let stack = stack().await;
    let secret_arn = stack.stack.outputs()["WebhookSigningKeysSecretArn"].clone();
    let value = async || {
        let answer = stack.stack.clients.secretsmanager().get_secret_value().secret_id(&secret_arn).send().await;
        answer.unwrap().secret_string().unwrap().to_owned()
    };
    let first = value().await;

    let rotated = stack.ok("secrets rotate webhook").await;
    assert!(rotated.starts_with("KID  ROLE\nk1   signs and verifies\nk2   verifies\n"), "{rotated}");
    assert!(rotated.contains("`secrets promote webhook k2`"), "{rotated}");
    let ring = herald_core::signing::KeyRing::parse(&value().await).unwrap();
    assert_eq!(ring.get("k1"), herald_core::signing::KeyRing::parse(&first).unwrap().get("k1"), "k1 is kept as it was");
    assert_eq!(stack.ok("secrets list webhook").await, "KID  ROLE\nk1   signs and verifies\nk2   verifies\n");

    let promoted = stack.ok("secrets promote webhook k2").await;
    assert!(promoted.starts_with("KID  ROLE\nk2   signs and verifies\nk1   verifies\n"), "{promoted}");

    let (refused, stdout, stderr) = stack.herald("secrets retire webhook k2").await;
    assert!(!refused && stderr.contains("k2 is the key that signs"), "{stdout}{stderr}");
    assert_eq!(stack.ok("secrets retire webhook k1").await, "KID  ROLE\nk2   signs and verifies\n");

    let everything_printed = [rotated, promoted, stdout, stderr].concat();
    for key in ring.keys() {
        assert!(!everything_printed.contains(std::str::from_utf8(key.secret()).unwrap()), "a value was printed");
    }
    stack.stop().await;
}

#[tokio::test]
async fn with_stack_the_resources_are_found_in_the_deployed_stacks_outputs() {
    let stack = stack().await;
    // A CloudFormation stack on moto whose only outputs name the local stack's keys table.
    let name = format!("{}-cfn", stack.stack.deployment.stack_name);
    let body = format!(
        "Resources:\n  Marker: {{Type: AWS::SQS::Queue, Properties: {{QueueName: {name}}}}}\n\
         Outputs:\n  ApiKeysTableName: {{Value: {}}}\n",
        stack.stack.outputs()["ApiKeysTableName"]
    );
    let config = herald_aws::local_sdk_config(&stack.stack.endpoint).await;
    let cloudformation = aws_sdk_cloudformation::Client::new(&config);
    cloudformation.create_stack().stack_name(&name).template_body(body).send().await.expect("the stack is created");

    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["--stack", &name, "keys", "create", "--name", "deployed", "--scopes", "imports:read"])
        .env("AWS_ENDPOINT_URL", &stack.stack.endpoint)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let created = String::from_utf8(output.stdout).unwrap();
    assert_eq!(stack.status(line(&created, "secret")).await.0, 200, "the key is in the stack's table");
    stack.stop().await;
}
