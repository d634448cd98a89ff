//! The application's side of the handshake: minting tokens and calling its endpoint.

use std::time::Duration;

use base64::Engine as _;
use http_body_util::Full;
use hyper::body::Bytes;
use serde_json::Value;

use super::Called;

/// Minting a token failed.
#[derive(Debug, thiserror::Error)]
#[error("the system's random generator failed")]
pub(crate) struct NoRandomness;

/// A fresh token: 32 random bytes, base64url.
///
/// # Errors
/// When the system's random generator fails.
pub(crate) fn mint_token() -> Result<String, NoRandomness> {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| NoRandomness)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// `PUT url` with the JSON `body`, within `timeout`.
pub(crate) async fn call(url: &str, body: &Value, timeout: Duration) -> Called {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let request = match hyper::Request::put(url)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
    {
        Ok(r) => r,
        Err(err) => return Called::Failed(format!("invalid URL {url:?}: {err}")),
    };
    match tokio::time::timeout(timeout, client.request(request)).await {
        Err(_) => Called::Failed(format!("no answer within {timeout:?}")),
        Ok(Err(err)) => Called::Failed(format!("{err}")),
        Ok(Ok(response)) if response.status() == hyper::StatusCode::NOT_FOUND => Called::Gone,
        Ok(Ok(response)) => Called::Accepted(response.status().as_u16()),
    }
}
