//! Starts moto's server on a free loopback port and stops it when dropped.

use std::{net::TcpListener, path::PathBuf, process::Stdio, time::Duration};

use tokio::process::{Child, Command};

use crate::errors::LocalError;

pub struct MotoServer {
    child: Child,
    pub endpoint: String,
}

/// Where moto_server is: `HERALD_MOTO_SERVER`, else `scripts/moto-server` (the repo's
/// venv, made by scripts/dev and scripts/test, with scripts/moto_patches.py applied),
/// else the PATH.
fn moto_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("HERALD_MOTO_SERVER") {
        return path.into();
    }
    let root = crate::repo_root();
    if root.join(".venv/bin/python").exists() { root.join("scripts/moto-server") } else { "moto_server".into() }
}

impl MotoServer {
    pub async fn start() -> Result<Self, LocalError> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| LocalError::Moto(format!("no free port: {e}")))?
            .port();
        let binary = moto_binary();
        let child = Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                LocalError::Moto(format!("cannot start {} ({e}); run scripts/dev once to install it", binary.display()))
            })?;
        let mut server = Self { child, endpoint: format!("http://127.0.0.1:{port}") };
        server.wait_until_ready(port).await?;
        Ok(server)
    }

    async fn wait_until_ready(&mut self, port: u16) -> Result<(), LocalError> {
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait().map_err(|e| LocalError::Moto(e.to_string()))? {
                return Err(LocalError::Moto(format!("moto_server exited at start: {status}")));
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(LocalError::Moto("moto_server did not listen within 30 s".into()))
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
