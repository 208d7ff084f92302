//! One request's account: counted in the metrics and handed to the access log when its
//! response body ends or is dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Method, Uri};

use super::RouteMetrics;

/// The status logged and counted for a request whose client went away before the
/// response was ready (nginx's convention).
const CLIENT_CLOSED: u16 = 499;

/// A request in flight. Created when the request head arrives; finished when dropped.
#[derive(Debug)]
pub struct RequestRecord {
    started: Instant,
    route: Arc<RouteMetrics>,
    /// 0 until the response exists.
    status: u16,
    body_bytes: u64,
    /// What the access log needs; `None` when it is off or filtered out. Boxed: the
    /// record lives inline in the response body, which is moved about.
    access: Option<Box<AccessEntry>>,
}

#[derive(Debug)]
struct AccessEntry {
    method: Method,
    /// Cheap to clone (shared bytes); redacted only when the line is written.
    uri: Uri,
    request_id: Option<HeaderValue>,
    peer: SocketAddr,
}

impl RequestRecord {
    /// Starts the account of a request, counted under `route` until [`Self::set_route`]
    /// says otherwise. `access_log` is the config's switch; without an access log
    /// installed (the log filter drops `fluxlit::access`) the method and target are not
    /// copied.
    pub fn start<B>(
        route: &Arc<RouteMetrics>,
        request: &http::Request<B>,
        peer: SocketAddr,
        access_log: bool,
    ) -> Self {
        Self {
            started: Instant::now(),
            route: Arc::clone(route),
            status: 0,
            body_bytes: 0,
            access: (access_log && crate::access_log::enabled()).then(|| {
                Box::new(AccessEntry {
                    method: request.method().clone(),
                    uri: request.uri().clone(),
                    request_id: None,
                    peer,
                })
            }),
        }
    }

    pub fn set_route(&mut self, route: Arc<RouteMetrics>) {
        self.route = route;
    }

    pub fn set_request_id(&mut self, request_id: &HeaderValue) {
        if let Some(access) = &mut self.access {
            access.request_id = Some(request_id.clone());
        }
    }

    pub fn set_status(&mut self, status: http::StatusCode) {
        self.status = status.as_u16();
    }

    /// Response body bytes sent.
    pub fn add_body_bytes(&mut self, bytes: usize) {
        self.body_bytes += bytes as u64;
    }
}

impl Drop for RequestRecord {
    fn drop(&mut self) {
        let elapsed = self.started.elapsed();
        let status = match self.status {
            0 => CLIENT_CLOSED,
            status => status,
        };
        self.route.count(status, elapsed.as_secs_f64());
        if let Some(access) = &self.access {
            let path = access
                .uri
                .path_and_query()
                .map_or("/", |path_and_query| path_and_query.as_str());
            let request_id = access
                .request_id
                .as_ref()
                .and_then(|id| id.to_str().ok())
                .unwrap_or("-");
            // Never headers: they carry `Authorization` and `Cookie`. The query is logged
            // with its credentials redacted.
            crate::access_log::record(&crate::access_log::Line {
                method: access.method.as_str(),
                path: &super::redact::path_and_query(path),
                route: self.route.name(),
                status,
                duration: elapsed,
                bytes: self.body_bytes,
                request_id,
                peer: access.peer,
            });
        }
    }
}
