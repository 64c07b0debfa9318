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
//!
//! - a notification (a request without an `id`): run, and not answered, as the spec and geth do
//!   (jsonrpsee answers `null` and runs nothing). It is given a marker id, and its answer is taken
//!   out of the response; a body of notifications alone gets an empty 200.

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
            let (body, notifications) = match checked_body(&bytes) {
                Checked::NotJson => return Ok(response::ok_response(PARSE_ERROR)),
                Checked::Unchanged => (bytes.to_vec(), false),
                Checked::Rewritten {
                    body,
                    notifications,
                } => {
                    parts.headers.remove(http::header::CONTENT_LENGTH);
                    (body, notifications)
                }
            };
            let answer = inner
                .call(HttpRequest::from_parts(parts, HttpBody::from(body)))
                .await?;
            if !notifications {
                return Ok(answer);
            }
            without_notification_answers(answer).await
        })
    }
}

/// The id a notification is run under, so that its answer can be found and dropped.
const NOTIFICATION_ID: &str = r#""openledger:notification""#;

/// `answer` without the answers to notifications: the batch's other answers, or an empty body.
async fn without_notification_answers(answer: HttpResponse) -> Result<HttpResponse, BoxError> {
    let (mut parts, body) = answer.into_parts();
    let bytes = body.collect().await?.to_bytes();
    let kept: Vec<&RawValue> = match serde_json::from_slice::<Vec<&RawValue>>(&bytes) {
        Ok(answers) => answers
            .into_iter()
            .filter(|a| !matches!(classify(a), Entry::Notification))
            .collect(),
        Err(_) => Vec::new(),
    };
    let body = if kept.is_empty() {
        Vec::new()
    } else {
        serde_json::to_vec(&kept)?
    };
    parts.headers.remove(http::header::CONTENT_LENGTH);
    Ok(HttpResponse::from_parts(parts, HttpBody::from(body)))
}

/// What [`checked_body`] found.
#[derive(Debug, PartialEq, Eq)]
enum Checked {
    NotJson,
    Unchanged,
    Rewritten {
        body: Vec<u8>,
        /// Whether notifications were given [`NOTIFICATION_ID`].
        notifications: bool,
    },
}

/// What one request (or one answer) of a body is, by its `id`.
enum Entry {
    /// A string, an integer or null id (jsonrpsee's ids are unsigned 64-bit), or not an object
    /// at all: left to jsonrpsee's own answer.
    Valid,
    /// An id JSON-RPC does not allow.
    BadId,
    /// No id; or, in an answer, the id notifications are run under.
    Notification,
}

fn classify(request: &RawValue) -> Entry {
    /// A present `id`, `null` included (serde reads a `null` into an absent `Option`).
    fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
        <&RawValue>::deserialize(d).map(Some)
    }
    #[derive(Deserialize)]
    struct IdOnly<'a> {
        #[serde(borrow, default, deserialize_with = "present")]
        id: Option<&'a RawValue>,
        #[serde(borrow, default)]
        method: Option<&'a RawValue>,
    }
    match serde_json::from_str::<IdOnly<'_>>(request.get()) {
        Ok(IdOnly { id: Some(id), .. }) => match id.get() {
            NOTIFICATION_ID => Entry::Notification,
            id if id.starts_with('"') || id == "null" || id.parse::<u64>().is_ok() => Entry::Valid,
            _ => Entry::BadId,
        },
        Ok(IdOnly {
            id: None,
            method: Some(_),
        }) => Entry::Notification,
        _ => Entry::Valid,
    }
}

/// `request` as jsonrpsee should see it, and whether it is a notification.
fn rewrite(request: &RawValue) -> (std::borrow::Cow<'_, [u8]>, bool) {
    let raw = request.get().as_bytes();
    match classify(request) {
        Entry::Valid => (raw.into(), false),
        Entry::BadId => (INVALID_REQUEST.into(), false),
        Entry::Notification => {
            // An object with a method has a key after its brace: the id goes before it.
            let mut out = format!("{{\"id\":{NOTIFICATION_ID},").into_bytes();
            out.extend_from_slice(&raw[1..]);
            (out.into(), true)
        }
    }
}

fn checked_body(body: &[u8]) -> Checked {
    let Ok(value) = serde_json::from_slice::<&RawValue>(body) else {
        return Checked::NotJson;
    };
    let requests = match value.get().as_bytes().first() {
        Some(b'{') => vec![value],
        Some(b'[') => match serde_json::from_str::<Vec<&RawValue>>(value.get()) {
            Ok(requests) => requests,
            Err(_) => return Checked::NotJson,
        },
        _ => {
            return Checked::Rewritten {
                body: INVALID_REQUEST.to_vec(),
                notifications: false,
            };
        }
    };
    if requests.iter().all(|r| matches!(classify(r), Entry::Valid)) {
        return Checked::Unchanged;
    }
    let entries: Vec<(std::borrow::Cow<'_, [u8]>, bool)> =
        requests.iter().map(|r| rewrite(r)).collect();
    let notifications = entries.iter().any(|(_, n)| *n);
    let joined = entries
        .iter()
        .map(|(e, _)| e.as_ref())
        .collect::<Vec<_>>()
        .join(&b","[..]);
    let body = if value.get().starts_with('[') {
        [b"[".as_slice(), &joined, b"]"].concat()
    } else {
        joined
    };
    Checked::Rewritten {
        body,
        notifications,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(body: &str) -> (String, bool) {
        match checked_body(body.as_bytes()) {
            Checked::Rewritten {
                body,
                notifications,
            } => (String::from_utf8(body).unwrap(), notifications),
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
            r#"[{"id":2,"method":"m"}]"#,
        ] {
            assert_eq!(checked_body(body.as_bytes()), Checked::Unchanged, "{body}");
        }
        for id in ["{}", "[1]", "1.5", "-1", "true"] {
            let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"m"}}"#);
            assert_eq!(rewritten(&body), (r#"{"id":null}"#.into(), false));
        }
        assert_eq!(rewritten("123"), (r#"{"id":null}"#.into(), false));
        assert_eq!(
            rewritten(r#"[{"id":1,"method":"m"},{"id":{},"method":"m"}]"#),
            (r#"[{"id":1,"method":"m"},{"id":null}]"#.into(), false)
        );
    }

    #[test]
    fn notifications_are_run_under_the_marker_id() {
        let marked = format!(r#"{{"id":{NOTIFICATION_ID},"jsonrpc":"2.0","method":"m"}}"#);
        assert_eq!(
            rewritten(r#"{"jsonrpc":"2.0","method":"m"}"#),
            (marked.clone(), true)
        );
        assert_eq!(
            rewritten(r#"[{"id":1,"method":"m"},{"jsonrpc":"2.0","method":"m"}]"#),
            (format!(r#"[{{"id":1,"method":"m"}},{marked}]"#), true)
        );
        let answer = format!(r#"{{"jsonrpc":"2.0","id":{NOTIFICATION_ID},"result":1}}"#);
        let answer: &RawValue = serde_json::from_str(&answer).unwrap();
        assert!(matches!(classify(answer), Entry::Notification));
    }
}
