//! Checks on the raw body of an HTTP JSON-RPC request that jsonrpsee does not make, so that every
//! malformed request gets the JSON-RPC 2.0 error the spec names, as geth answers it:
//!
//! - a body that is not JSON (`{`, `hello`, nothing): HTTP 200 with -32700 "parse error" (jsonrpsee
//!   answers some of these 200 and others 400);
//! - a request whose `id` is not a string, an integer or null (an object, an array, `1.5`), or a
//!   body that is JSON but neither a request nor a batch (`123`): -32600 "invalid request" with a
//!   null id (jsonrpsee takes such a request for a notification, answers `null` and runs nothing).
//!
//! Such requests are rewritten into `{"id":null}`, which jsonrpsee itself answers with -32600, so
//! that a bad entry of a batch keeps its place in the batch's answer.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http_body_util::{BodyExt, LengthLimitError, Limited};
use jsonrpsee::{
    core::BoxError,
    server::{
        HttpBody, HttpRequest, HttpResponse,
        http::{content_type_is_json, response},
        ws::is_upgrade_request,
    },
};
use serde::Deserialize;
use serde_json::value::RawValue;

/// What jsonrpsee answers with -32600 "invalid request" and a null id.
const INVALID_REQUEST: &[u8] = br#"{"id":null}"#;
/// geth's answer to a body that is not JSON.
const PARSE_ERROR: &str =
    r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error"}}"#;

/// The layer that puts [`RequestGuard`] in front of the JSON-RPC service.
#[derive(Debug, Clone, Copy)]
pub struct RequestGuardLayer {
    /// Largest body read, as the server's own limit.
    pub max_request_bytes: u32,
}

impl<S> tower::Layer<S> for RequestGuardLayer {
    type Service = RequestGuard<S>;
    fn layer(&self, inner: S) -> RequestGuard<S> {
        RequestGuard {
            inner,
            max_request_bytes: self.max_request_bytes,
        }
    }
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct RequestGuard<S> {
    inner: S,
    max_request_bytes: u32,
}

impl<S, B> tower::Service<HttpRequest<B>> for RequestGuard<S>
where
    S: tower::Service<HttpRequest<HttpBody>, Response = HttpResponse, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = HttpResponse;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: HttpRequest<B>) -> Self::Future {
        // The clone that was made ready serves this request; a fresh clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limit = self.max_request_bytes;
        Box::pin(async move {
            if request.method() != http::Method::POST
                || is_upgrade_request(&request)
                || !content_type_is_json(&request)
            {
                return inner.call(request.map(HttpBody::new)).await;
            }
            let (mut parts, body) = request.into_parts();
            let bytes = match Limited::new(body, limit as usize).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(e) if e.is::<LengthLimitError>() => return Ok(response::too_large(limit)),
                Err(e) => return Err(e),
            };
            let body = match checked_body(&bytes) {
                Checked::NotJson => return Ok(response::ok_response(PARSE_ERROR)),
                Checked::Unchanged => bytes.to_vec(),
                Checked::Rewritten(body) => {
                    parts.headers.remove(http::header::CONTENT_LENGTH);
                    body
                }
            };
            inner
                .call(HttpRequest::from_parts(parts, HttpBody::from(body)))
                .await
        })
    }
}

/// What [`checked_body`] found.
#[derive(Debug, PartialEq, Eq)]
enum Checked {
    NotJson,
    Unchanged,
    Rewritten(Vec<u8>),
}

/// Whether a request's `id` is one JSON-RPC allows (a string, an integer or null; jsonrpsee's
/// ids are unsigned 64-bit). Anything but an object is left to jsonrpsee's own answer.
fn id_is_valid(request: &RawValue) -> bool {
    #[derive(Deserialize)]
    struct IdOnly<'a> {
        #[serde(borrow)]
        id: Option<&'a RawValue>,
    }
    match serde_json::from_str::<IdOnly<'_>>(request.get()) {
        Ok(IdOnly { id: Some(id) }) => {
            let id = id.get();
            id.starts_with('"') || id.parse::<u64>().is_ok()
        }
        _ => true,
    }
}

fn checked_body(body: &[u8]) -> Checked {
    let Ok(value) = serde_json::from_slice::<&RawValue>(body) else {
        return Checked::NotJson;
    };
    match value.get().as_bytes().first() {
        Some(b'{') if id_is_valid(value) => Checked::Unchanged,
        Some(b'[') => {
            let Ok(requests) = serde_json::from_str::<Vec<&RawValue>>(value.get()) else {
                return Checked::NotJson;
            };
            if requests.iter().all(|r| id_is_valid(r)) {
                return Checked::Unchanged;
            }
            let entries: Vec<&[u8]> = requests
                .iter()
                .map(|r| {
                    if id_is_valid(r) {
                        r.get().as_bytes()
                    } else {
                        INVALID_REQUEST
                    }
                })
                .collect();
            let mut out = b"[".to_vec();
            out.extend_from_slice(&entries.join(&b","[..]));
            out.push(b']');
            Checked::Rewritten(out)
        }
        _ => Checked::Rewritten(INVALID_REQUEST.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(body: &str) -> String {
        match checked_body(body.as_bytes()) {
            Checked::Rewritten(out) => String::from_utf8(out).unwrap(),
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn requests_with_ids_json_rpc_does_not_allow_are_marked_invalid() {
        for body in ["{", "hello", "", "[1,"] {
            assert_eq!(checked_body(body.as_bytes()), Checked::NotJson, "{body}");
        }
        for body in [
            r#"{"jsonrpc":"2.0","id":1,"method":"m"}"#,
            r#"{"jsonrpc":"2.0","id":"a","method":"m"}"#,
            r#"{"jsonrpc":"2.0","id":null,"method":"m"}"#,
            r#"{"jsonrpc":"2.0","method":"m"}"#,
            r#"[{"id":2,"method":"m"}]"#,
        ] {
            assert_eq!(checked_body(body.as_bytes()), Checked::Unchanged, "{body}");
        }
        for id in ["{}", "[1]", "1.5", "-1", "true"] {
            let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"m"}}"#);
            assert_eq!(rewritten(&body), r#"{"id":null}"#);
        }
        assert_eq!(rewritten("123"), r#"{"id":null}"#);
        assert_eq!(
            rewritten(r#"[{"id":1,"method":"m"},{"id":{},"method":"m"}]"#),
            r#"[{"id":1,"method":"m"},{"id":null}]"#
        );
    }
}
