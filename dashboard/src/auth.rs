//! The optional bearer token in front of every route but the probes.
//!
//! A client shows the token as `Authorization: Bearer <token>` (API clients, scrapers), or once
//! as `?token=<token>` (a browser): that answers with a redirect to the same URL without the
//! token and sets an HTTP-only, same-site cookie that carries it from then on. Without it, the
//! answer is `401` with a small sign-in form.
//!
//! # Guarantees
//! The token is compared in constant time; it never appears in a redirect's URL, and pages are
//! served with `Referrer-Policy: no-referrer`, so it does not leak through links.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};

use crate::pages::layout;

/// Paths that stay open (liveness and readiness probes).
const OPEN_PATHS: [&str; 2] = ["/healthz", "/readyz"];
/// The cookie that carries the token (hex-encoded).
const COOKIE: &str = "operon_token";

#[derive(Clone)]
struct Secret {
    token: Arc<str>,
    cookie: Arc<str>,
}

/// Requires `token` on every route of `router` but `/healthz` and `/readyz`; without a token,
/// returns `router` unchanged. Apply it to the whole listener's router, last.
pub fn protect(router: Router, token: Option<&str>) -> Router {
    match token.filter(|t| !t.is_empty()) {
        None => router,
        Some(token) => router.layer(middleware::from_fn_with_state(
            Secret {
                token: token.into(),
                cookie: hex(token).into(),
            },
            check,
        )),
    }
}

async fn check(State(secret): State<Secret>, request: Request, next: Next) -> Response {
    if OPEN_PATHS.contains(&request.uri().path())
        || bearer(request.headers()).is_some_and(|t| same(t, &secret.token))
        || cookie(request.headers()).is_some_and(|c| same(c, &secret.cookie))
    {
        return next.run(request).await;
    }
    let (given, rest) = split_token(request.uri().query().unwrap_or_default());
    match given {
        Some(given) if same(&given, &secret.token) => {
            let path = request.uri().path();
            // `//host` would be a protocol-relative URL: never redirect off this origin.
            let path = if path.starts_with("//") { "/" } else { path };
            let location = if rest.is_empty() {
                path.to_owned()
            } else {
                format!("{path}?{rest}")
            };
            let cookie = format!(
                "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
                secret.cookie
            );
            let mut response = StatusCode::SEE_OTHER.into_response();
            let headers = response.headers_mut();
            if let Ok(location) = HeaderValue::from_str(&location) {
                headers.insert(header::LOCATION, location);
            }
            if let Ok(cookie) = HeaderValue::from_str(&cookie) {
                headers.insert(header::SET_COOKIE, cookie);
            }
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        given => unauthorized(given.is_some()),
    }
}

fn unauthorized(wrong: bool) -> Response {
    let notice = if wrong {
        "<p class=\"notice bad\" role=\"alert\">That token is not the right one.</p>"
    } else {
        ""
    };
    let body = format!(
        "<main id=\"main\" class=\"signin\"><h1>Operon</h1>\
         <p>This dashboard needs an access token (<code>--dashboard-token</code>).</p>{notice}\
         <form method=\"get\" class=\"filters\"><label for=\"token\">Access token</label>\
         <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" \
         required autofocus><button type=\"submit\">Sign in</button></form></main>"
    );
    let mut response = (
        StatusCode::UNAUTHORIZED,
        Html(layout::document("Sign in", &body)),
    )
        .into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"operon\""),
    );
    layout::secure_headers(headers);
    response
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// The decoded `token` parameter of a query, and the query without it (still encoded).
fn split_token(query: &str) -> (Option<String>, String) {
    let mut token = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("token", value)) => token = Some(percent_decode(value)),
            _ if pair == "token" => token = Some(String::new()),
            _ => rest.push(pair),
        }
    }
    (token, rest.join("&"))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let digit = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (digit(bytes[i + 1]), digit(bytes[i + 2])) {
                (Some(high), Some(low)) => {
                    out.push(high * 16 + low);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Constant-time equality (for equal lengths; the length itself is not secret).
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_parameter_is_split_off_the_query() {
        assert_eq!(
            split_token("a=1&token=s%20e+c%2Fr&b=2"),
            (Some("s e c/r".to_owned()), "a=1&b=2".to_owned())
        );
        assert_eq!(split_token("a=1"), (None, "a=1".to_owned()));
        assert_eq!(split_token(""), (None, String::new()));
        assert_eq!(split_token("token"), (Some(String::new()), String::new()));
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn bearer_and_cookie_are_read_from_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer abc"),
        );
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("x=1; operon_token=6162"),
        );
        assert_eq!(bearer(&headers), Some("abc"));
        assert_eq!(cookie(&headers), Some("6162"));
        assert_eq!(hex("ab"), "6162");
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }
}
