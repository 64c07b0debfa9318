//! Serving the node's HTTP APIs with limits, so that slow or numerous clients cannot take the
//! node down: HTTP/1.1 with hyper's header-read timeout (a connection that sends nothing, or never
//! finishes its request head, is closed, which also ends idle keep-alive connections), a cap on
//! open connections, and a process file-descriptor limit raised as far as the system allows.
//!
//! `axum::serve` sets none of these (it gives hyper no timer, so hyper's own header timeout never
//! runs); this is the same hyper-util connection builder with them set.

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    extract::Request,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto::Builder,
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tower::ServiceExt;

/// Limits of an HTTP listener.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// How long a client may take to send a request's head, and how long an idle keep-alive
    /// connection stays open.
    pub header_read_timeout: Duration,
    /// Most connections open at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 512,
        }
    }
}

/// Serves `app` on `listener` under `limits` until the task is dropped.
pub async fn serve(listener: TcpListener, app: Router, limits: HttpLimits) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    // HTTP/1.1 only (no upgrades are served): the automatic builder would first read the bytes
    // that tell HTTP/1 from HTTP/2 with no timeout, so a client stalling inside HTTP/2's preface
    // could hold a connection for ever.
    let mut builder = Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: wait for connections to close rather than spin.
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!(
                limit = limits.max_connections,
                "connection refused: too many open connections"
            );
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = app
            .clone()
            .map_request(|request: Request<Incoming>| request.map(Body::new));
        let builder = builder.clone();
        let first_byte = limits.header_read_timeout;
        tokio::spawn(async move {
            // hyper's header timer starts with the first byte: a client that sends nothing is
            // given the same time to start.
            let mut byte = [0u8; 1];
            if !matches!(
                tokio::time::timeout(first_byte, stream.peek(&mut byte)).await,
                Ok(Ok(1))
            ) {
                return;
            }
            let connection =
                builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
}

/// A listen address given as `HOST:PORT`, the host an IP address or a name such as
/// `localhost` (its first address).
pub fn listen_addr(text: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    text.to_socket_addrs()
        .map_err(|e| format!("{text:?} is not HOST:PORT ({e})"))?
        .next()
        .ok_or_else(|| format!("{text:?} names no address"))
}

/// Makes every error of `router` a JSON `{"error": "..."}`, as the API promises: an unknown
/// path (404) or method (405), and the plain-text refusals of axum's extractors.
pub fn with_json_errors(router: Router) -> Router {
    router
        .fallback(|| async { json_error(StatusCode::NOT_FOUND, "no such path".into()) })
        .layer(axum::middleware::map_response(to_json_error))
}

fn json_error(status: StatusCode, message: String) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

/// A response as is, unless it is an error whose body is not JSON: that body becomes the
/// message of a JSON error with the same status.
async fn to_json_error(response: Response) -> Response {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let status = response.status();
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let text = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_lowercase()
    } else {
        text
    };
    json_error(status, message)
}

/// Raises this process's open-file limit to the most the system allows, so that many client
/// connections do not run the whole node (store, both listeners) out of file descriptors.
pub fn raise_fd_limit() {
    #[cfg(unix)]
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        let mut limit = std::mem::zeroed::<libc::rlimit>();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                tracing::debug!("cannot raise the open-file limit");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use axum::routing::get;
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpStream,
    };

    use super::*;

    async fn start(limits: HttpLimits) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/", get(|| async { "ok" }));
        let task = tokio::spawn(async move {
            let _ = serve(listener, app, limits).await;
        });
        (addr, task)
    }

    /// Reads until the server closes the connection (or 20 s pass: then the test fails).
    async fn closed_by_server(stream: &mut TcpStream) -> Vec<u8> {
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut out))
            .await
            .expect("the server closes the connection")
            .ok();
        out
    }

    async fn get_ok(addr: SocketAddr) -> bool {
        let Ok(mut stream) = TcpStream::connect(addr).await else {
            return false;
        };
        let request = b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
        if stream.write_all(request).await.is_err() {
            return false;
        }
        String::from_utf8_lossy(&closed_by_server(&mut stream).await).ends_with("ok")
    }

    #[tokio::test]
    async fn half_sent_requests_are_cut_off_and_cannot_lock_others_out() {
        let limits = HttpLimits {
            header_read_timeout: Duration::from_millis(300),
            max_connections: 3,
        };
        let (addr, task) = start(limits).await;
        // Half a request head, nothing at all, and part of HTTP/2's preface.
        let mut stalled = Vec::new();
        for bytes in [&b"GET / HTTP/1.1\r\nhost:"[..], b"", b"PRI * HTTP/2.0"] {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.write_all(bytes).await.unwrap();
            stalled.push(stream);
        }
        // Each stalled request is closed by the server, not left open for ever.
        for stream in &mut stalled {
            closed_by_server(stream).await;
        }
        // With their connections gone, others are served.
        assert!(get_ok(addr).await);
        task.abort();
    }

    #[tokio::test]
    async fn every_error_is_json() {
        use axum::routing::post;
        let app = with_json_errors(Router::new().route(
            "/n/{n}",
            post(|axum::extract::Path(n): axum::extract::Path<u8>| async move { n.to_string() }),
        ));
        for (method, uri, status) in [
            ("GET", "/nope", StatusCode::NOT_FOUND),
            ("GET", "/n/1", StatusCode::METHOD_NOT_ALLOWED),
            ("POST", "/n/x", StatusCode::BAD_REQUEST),
        ] {
            let request = Request::builder()
                .method(method)
                .uri(uri)
                .body(Body::empty())
                .unwrap();
            let response = app.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status(), status);
            let body = axum::body::to_bytes(response.into_body(), 1 << 16)
                .await
                .unwrap();
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert!(
                json["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{json}"
            );
        }
    }

    #[tokio::test]
    async fn connections_over_the_limit_are_closed_at_once() {
        let limits = HttpLimits {
            header_read_timeout: Duration::from_secs(30),
            max_connections: 1,
        };
        let (addr, task) = start(limits).await;
        let mut holder = TcpStream::connect(addr).await.unwrap();
        holder.write_all(b"GET / HTTP/1.1\r\nhost:").await.unwrap();
        // The one connection allowed is held, so the next is closed without an answer.
        let mut refused = TcpStream::connect(addr).await.unwrap();
        let _ = refused
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await;
        assert!(closed_by_server(&mut refused).await.is_empty());
        drop(holder);
        // Once it closes, a new connection is served (the server may take a moment to notice).
        let mut served = false;
        for _ in 0..100 {
            if get_ok(addr).await {
                served = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(served);
        task.abort();
    }
}
