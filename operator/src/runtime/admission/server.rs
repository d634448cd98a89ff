//! The HTTPS listener of the admission webhooks: `POST <path>/<handler id>` (or `<path>/` for
//! every handler of the resource) with an AdmissionReview, answered with an AdmissionReview.
//!
//! # Guarantees
//! Bad input never takes the core down and changes nothing: a body that is not a review is 400
//! with the reason as text, a resource without handlers 404, another method 405, a body over
//! 16 MiB 413, a review before the handlers are known 503; a failed TLS handshake or connection
//! is logged at debug level and dropped.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::BodyExt as _;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use super::{Routes, call};
use crate::core::admission::{self, Review};

/// The largest review accepted (the API server's requests are limited to 3 MiB per object;
/// a review holds two).
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Accepts connections until the task is aborted.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    routes: Arc<Routes>,
    path: String,
) {
    let path = Arc::new(path);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!(error = %err, "Cannot accept an admission connection.");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let routes = Arc::clone(&routes);
        let path = Arc::clone(&path);
        tokio::spawn(async move {
            let tls = match acceptor.accept(stream).await {
                Ok(tls) => tls,
                Err(err) => {
                    tracing::debug!(peer = %peer, error = %err, "Admission TLS handshake failed.");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |request| {
                let routes = Arc::clone(&routes);
                let path = Arc::clone(&path);
                async move { Ok::<_, Infallible>(handle(request, &routes, &path).await) }
            });
            if let Err(err) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(peer = %peer, error = %err, "Admission connection ended with an error.");
            }
        });
    }
}

fn text(status: StatusCode, message: impl Into<String>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(message.into())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

async fn handle(request: Request<Incoming>, routes: &Routes, root: &str) -> Response<Full<Bytes>> {
    if request.method() != Method::POST {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "Admission webhooks accept POST only.\n",
        );
    }
    let Some(rest) = request.uri().path().strip_prefix(root) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("No webhooks outside {root}/.\n"),
        );
    };
    let Ok(hint) = admission::serving::handler_in_path(rest) else {
        return text(
            StatusCode::BAD_REQUEST,
            "The webhook path is not a percent-encoded handler id.\n",
        );
    };
    let headers: HashMap<String, String> = request
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let body = match http_body_util::Limited::new(request.into_body(), MAX_BODY)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(err) => {
            let too_large = err
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            return if too_large {
                text(StatusCode::PAYLOAD_TOO_LARGE, "The review is too large.\n")
            } else {
                text(
                    StatusCode::BAD_REQUEST,
                    format!("Cannot read the review: {err}\n"),
                )
            };
        }
    };
    let review = match Review::parse(&body) {
        Ok(review) => review,
        Err(err) => {
            tracing::warn!(error = %err, "A malformed admission review was refused.");
            return text(
                StatusCode::BAD_REQUEST,
                format!("Malformed admission review: {err}.\n"),
            );
        }
    };
    let sink = routes.sink();
    let Some(routes) = routes.get() else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "The admission handlers are not known yet (the handler services are being described).\n",
        );
    };
    let Some(route) = routes.iter().find(|r| {
        r.served.resource.group == review.group && r.served.resource.plural == review.plural
    }) else {
        return text(
            StatusCode::NOT_FOUND,
            format!(
                "The resource has no admission handlers: {}/{} {}.\n",
                review.group, review.version, review.plural
            ),
        );
    };
    let handlers: Vec<_> = route.handlers.iter().map(|b| b.handler.clone()).collect();
    let selected = admission::select(&handlers, &review, hint.as_deref());
    let calls = selected.iter().map(|h| {
        let bound = route
            .handlers
            .iter()
            .find(|b| b.handler.id == h.id && b.handler.kind == h.kind)
            .expect("selected from these handlers");
        call(bound, &route.served, &review, &headers, sink)
    });
    let replies = futures_util::future::join_all(calls).await;
    let replies: Vec<_> = selected.into_iter().zip(replies).collect();
    for (handler, reply) in &replies {
        if let admission::Reply::Failed(why) = reply {
            tracing::warn!(handler = %handler.id, uid = %review.uid, ignored = handler.ignore_failures, error = %why, "Admission handler failed.");
        }
    }
    let decision = admission::decide(&review, &replies);
    tracing::debug!(uid = %review.uid, operation = review.operation.as_str(), resource = %review.plural, handlers = replies.len(), allowed = decision.allowed, "Admission review answered.");
    let answer = admission::response(&review, &decision);
    let mut response = Response::new(Full::new(Bytes::from(answer.to_string())));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::admission::tls;
    use rustls_pki_types::pem::PemObject as _;

    /// A listener on a free port with a generated certificate; a TLS client trusting its CA.
    async fn start(routes: Arc<Routes>) -> (std::net::SocketAddr, tokio_rustls::TlsConnector) {
        let material = tls::generate(&["127.0.0.1".into()]).unwrap();
        let config = tls::server_config(&material).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(
            listener,
            tokio_rustls::TlsAcceptor::from(config),
            routes,
            String::new(),
        ));
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls_pki_types::CertificateDer::from_pem_slice(&material.ca_pem).unwrap())
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (addr, tokio_rustls::TlsConnector::from(Arc::new(client)))
    }

    async fn send(
        addr: std::net::SocketAddr,
        connector: &tokio_rustls::TlsConnector,
        method: Method,
        path: &str,
        body: &str,
    ) -> (StatusCode, String) {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let tls = connector.connect(name, tcp).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(connection);
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1")
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    const REVIEW: &str = r#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u", "operation": "CREATE", "userInfo": {}, "object": {},
                    "resource": {"group": "kopf.dev", "version": "v1", "resource": "kopfexamples"}}}"#;

    #[tokio::test]
    async fn bad_input_gets_clear_errors_and_the_listener_lives_on() {
        let routes = Arc::new(Routes::default());
        let (addr, connector) = start(Arc::clone(&routes)).await;

        let (status, text) = send(addr, &connector, Method::POST, "/validate1", REVIEW).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{text}");
        routes.set(Vec::new());

        let (status, text) = send(addr, &connector, Method::POST, "/validate1", "{not json").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            text.starts_with("Malformed admission review: the body is not JSON"),
            "{text}"
        );
        let (status, text) = send(addr, &connector, Method::POST, "/", r#"{"kind": "Pod"}"#).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(text.contains("not an AdmissionReview"), "{text}");
        let (status, _) = send(addr, &connector, Method::GET, "/validate1", "").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        let (status, _) = send(addr, &connector, Method::POST, "/bad%zz", REVIEW).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, text) = send(addr, &connector, Method::POST, "/validate1", REVIEW).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(text.contains("kopf.dev/v1 kopfexamples"), "{text}");

        // A client that does not speak TLS is dropped; the listener still answers.
        {
            use tokio::io::AsyncWriteExt as _;
            let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
            raw.write_all(b"POST / HTTP/1.1\r\n\r\n").await.unwrap();
        }
        let (status, _) = send(addr, &connector, Method::POST, "/", "[]").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
}
