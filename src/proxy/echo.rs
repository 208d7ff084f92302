//! The built-in `echo` upstream: answers with the request as an upstream would receive
//! it, after the header policy. It is how users see their policy at work.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response};
use http_body_util::BodyExt;
use serde_json::{Map, Value, json};

use super::body::ProxyBody;
use super::limits::{BodyError, LimitedBody};
use super::route::Route;

pub async fn respond(
    route: &Route,
    method: &Method,
    path_and_query: &str,
    headers: HeaderMap,
    mut body: LimitedBody,
    request_id: &HeaderValue,
) -> Response<ProxyBody> {
    // Count the body without keeping it: an echo must not buffer an upload.
    let mut body_bytes: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => body_bytes += frame.data_ref().map_or(0, |data| data.len() as u64),
            Err(BodyError::TooLarge { .. }) => return super::errors::too_large(route, request_id),
            Err(error) => {
                tracing::debug!(%error, "client body ended early");
                break;
            }
        }
    }

    let mut header_object = Map::new();
    for name in headers.keys() {
        let values: Vec<Value> = headers
            .get_all(name)
            .iter()
            .map(|v| Value::from(String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let value = match <[Value; 1]>::try_from(values) {
            Ok([single]) => single,
            Err(many) => Value::Array(many),
        };
        header_object.insert(name.as_str().to_owned(), value);
    }
    let (path, query) = match path_and_query.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path_and_query, None),
    };
    let description = json!({
        "route": &*route.name,
        "upstream": &*route.upstream.name,
        "method": method.as_str(),
        "path": path,
        "query": query,
        "headers": header_object,
        "body_bytes": body_bytes,
    });
    let mut text = serde_json::to_vec_pretty(&description).unwrap_or_default();
    text.push(b'\n');
    let mut response = Response::new(ProxyBody::full(Bytes::from(text)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
