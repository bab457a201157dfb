//! An HTTPS webhook receiver on loopback with a self-signed certificate, recording every
//! POST it gets. Webhook URLs must be https, so the test receiver is too.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, Uri},
};
use axum_server::tls_rustls::RustlsConfig;

#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: String,
}

pub struct WebhookSink {
    /// The base URL, e.g. `https://localhost:4321`.
    pub url: String,
    /// The certificate to trust (PEM), handed to the workers as WEBHOOK_ROOT_CA_PEM.
    pub ca_pem: String,
    pub received: Arc<Mutex<Vec<Received>>>,
    handle: axum_server::Handle<SocketAddr>,
}

impl WebhookSink {
    /// Starts a receiver that answers each POST with the next status of `statuses`
    /// (then 200).
    pub async fn start(statuses: Vec<u16>) -> Self {
        Self::start_per_path(vec![("", statuses)]).await
    }

    /// Starts a receiver that answers each POST to a path with the next status scripted
    /// for that path (`""` for any other path), then 200.
    pub async fn start_per_path(scripts: Vec<(&str, Vec<u16>)>) -> Self {
        // Both rustls providers are linked into the test binary: name the one to use.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let ca_pem = certified.cert.pem();
        let config =
            RustlsConfig::from_pem(ca_pem.clone().into_bytes(), certified.signing_key.serialize_pem().into_bytes())
                .await
                .unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let scripts = scripts.into_iter().map(|(path, statuses)| (path.to_owned(), statuses.into_iter())).collect();
        let state = (received.clone(), Arc::new(Mutex::new(scripts)));
        let app = axum::Router::new().fallback(record).with_state(state);
        let handle = axum_server::Handle::<SocketAddr>::new();
        let server = axum_server::bind_rustls("127.0.0.1:0".parse().unwrap(), config).handle(handle.clone());
        tokio::spawn(server.serve(app.into_make_service()));
        let address = handle.listening().await.unwrap();
        Self { url: format!("https://localhost:{}", address.port()), ca_pem, received, handle }
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn stop(&self) {
        self.handle.shutdown();
    }
}

type SinkState = (Arc<Mutex<Vec<Received>>>, Arc<Mutex<HashMap<String, std::vec::IntoIter<u16>>>>);

/// Answers with the next status; a redirect points at `/redirected` on this receiver, so
/// a client that follows it shows up as a second POST.
async fn record(
    State((received, scripts)): State<SinkState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let path = uri.path().to_owned();
    let next = {
        let mut scripts = scripts.lock().unwrap();
        let key = if scripts.contains_key(&path) { path.clone() } else { String::new() };
        scripts.get_mut(&key).and_then(Iterator::next).unwrap_or(200)
    };
    received.lock().unwrap().push(Received { path, headers, body: String::from_utf8_lossy(&body).into_owned() });
    let status = axum::http::StatusCode::from_u16(next).unwrap();
    if status.is_redirection() {
        return (status, [(axum::http::header::LOCATION, "/redirected")]).into_response();
    }
    status.into_response()
}
