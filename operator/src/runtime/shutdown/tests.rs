//! The shutdown hook's effects, with a real listener on 127.0.0.1.
use super::*;
use std::time::Duration;

#[test]
fn tokens_are_fresh_and_url_safe() {
    let a = mint_token().unwrap();
    let b = mint_token().unwrap();
    assert_ne!(a, b);
    assert_eq!(a.len(), 43);
    assert!(
        a.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    );
}

#[test]
fn answers_map_to_http() {
    assert_eq!(Answer::Confirmed.code(), 200);
    assert_eq!(Answer::AlreadyDone.code(), 200);
    assert_eq!(Answer::Refused.code(), 401);
    assert_eq!(Answer::Unknown("x".into()).code(), 404);
    assert_eq!(Answer::Malformed("x".into()).code(), 400);
}

#[tokio::test]
async fn a_callback_for_a_resource_without_a_hook_is_unknown() {
    let answer = Callbacks::default()
        .callback("sites.example.com", "ns", "db", br#"{"token": "t"}"#)
        .await;
    assert!(matches!(answer, Answer::Unknown(_)), "{answer:?}");
    assert_eq!(answer.code(), 404);
}

/// A one-shot HTTP server on 127.0.0.1 that answers `status` and hands over the request.
async fn serve_once(status: u16) -> (String, tokio::task::JoinHandle<String>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = s.read(&mut chunk).await.unwrap();
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some(i) = text.find("\r\n\r\n") {
                let len = text
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if buf.len() >= i + 4 + len {
                    break;
                }
            }
            if n == 0 {
                break;
            }
        }
        let answer =
            format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        s.write_all(answer.as_bytes()).await.unwrap();
        String::from_utf8_lossy(&buf).to_string()
    });
    (format!("http://{addr}/shutdown"), task)
}

#[tokio::test]
async fn calls_put_json_and_read_the_status() {
    let (url, seen) = serve_once(202).await;
    let body = json!({"token": "t"});
    assert_eq!(
        call(&url, &body, Duration::from_secs(5)).await,
        Called::Accepted(202)
    );
    let request = seen.await.unwrap();
    assert!(request.starts_with("PUT /shutdown HTTP/1.1"), "{request}");
    assert!(
        request
            .to_ascii_lowercase()
            .contains("content-type: application/json")
    );
    assert!(request.ends_with(r#"{"token":"t"}"#), "{request}");

    let (url, _) = serve_once(404).await;
    assert_eq!(
        call(&url, &body, Duration::from_secs(5)).await,
        Called::Gone
    );
}

#[tokio::test]
async fn an_unreachable_endpoint_is_a_failed_attempt() {
    // A port that was free a moment ago: nobody listens.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/shutdown");
    assert!(matches!(
        call(&url, &json!({}), Duration::from_secs(5)).await,
        Called::Failed(_)
    ));
    assert!(matches!(
        call("http://exa mple/", &json!({}), Duration::from_secs(5)).await,
        Called::Failed(_)
    ));
}
