//! The gateway's own short answers (plain text, JSON, a page naming the request id, a
//! redirect, HTML escaping for the few HTML pages) and the one formatter of error
//! chains. A leaf: it knows nothing of the
//! gateway, and any body made from [`Bytes`] (axum's, the proxy's) can carry its answers.

use ::http::HeaderMap;
use ::http::header::{self, HeaderValue};
use ::http::{Response, StatusCode};
use bytes::Bytes;

pub const TEXT: &str = "text/plain; charset=utf-8";
pub const JSON: &str = "application/json";

/// `body` with its status and `Content-Type`.
pub fn answer<B: From<Bytes>>(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<B> {
    let mut response = Response::new(B::from(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Plain UTF-8 text.
pub fn text<B: From<Bytes>>(status: StatusCode, body: impl Into<Bytes>) -> Response<B> {
    answer(status, TEXT, body)
}

/// A JSON document, already serialised.
pub fn json<B: From<Bytes>>(status: StatusCode, body: impl Into<Bytes>) -> Response<B> {
    answer(status, JSON, body)
}

/// A short plain-text page that says what failed and the request id, so a user can
/// quote it and an operator can find the log line. Never cached.
pub fn page<B: From<Bytes>>(status: StatusCode, message: &str, request_id: &str) -> Response<B> {
    let reason = status.canonical_reason().unwrap_or("Error");
    let body = format!(
        "{} {reason}\n{message}\nrequest id: {request_id}\n",
        status.as_u16()
    );
    let mut response = text(status, body);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `text` safe to put in HTML, as element content or a quoted attribute value: `&`,
/// `<`, `>`, `"` and `'` as character references.
pub fn html_escape(text: &str) -> String {
    Html(text).to_string()
}

/// `text` escaped as [`html_escape`] does, written straight into whatever it is
/// formatted into (`write!(page, "<td>{}</td>", Html(name))`): no `String` of its own.
#[derive(Debug, Clone, Copy)]
pub struct Html<'a>(pub &'a str);

impl std::fmt::Display for Html<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = self.0;
        let mut clean = 0;
        // The characters escaped are ASCII: a byte search finds them, and the runs
        // between them (most of the text) go out whole.
        for (at, byte) in text.bytes().enumerate() {
            let reference = match byte {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                b'\'' => "&#39;",
                _ => continue,
            };
            f.write_str(&text[clean..at])?;
            f.write_str(reference)?;
            clean = at + 1;
        }
        f.write_str(&text[clean..])
    }
}

/// `302 Found` to `target` (to `/` if `target` cannot be a header value), never cached.
pub fn redirect<B: From<Bytes>>(target: &str) -> Response<B> {
    let mut response = Response::new(B::from(Bytes::new()));
    *response.status_mut() = StatusCode::FOUND;
    let location = HeaderValue::from_str(target).unwrap_or_else(|_| HeaderValue::from_static("/"));
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, location);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The error and its causes on one line (`what: why: root cause`), for logs and pages.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The value of the first cookie named `name` in the request's `Cookie` headers.
pub fn request_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| key.trim() == name)
        .map(|(_, value)| value.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_is_read_by_its_exact_name() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("fluxlit-session-ab=x1; other=2"),
        );
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("fluxlit-session-abc=y2;fluxlit-session-abc=z3"),
        );
        assert_eq!(request_cookie(&headers, "fluxlit-session-ab"), Some("x1"));
        assert_eq!(request_cookie(&headers, "fluxlit-session-abc"), Some("y2"));
        assert_eq!(request_cookie(&headers, "fluxlit-session-a"), None);
        assert_eq!(request_cookie(&headers, "other"), Some("2"));
    }

    #[derive(Debug)]
    struct Chained(&'static str, Option<Box<Chained>>);

    impl std::fmt::Display for Chained {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Chained {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|cause| cause as _)
        }
    }

    #[test]
    fn an_error_chain_is_one_line() {
        let error = Chained("GET x", Some(Box::new(Chained("refused", None))));
        assert_eq!(error_chain(&error), "GET x: refused");
    }

    #[test]
    fn a_page_names_the_status_and_the_request_id() {
        let page: Response<Bytes> = page(StatusCode::BAD_REQUEST, "no state", "r-1");
        assert_eq!(page.status(), StatusCode::BAD_REQUEST);
        assert_eq!(page.headers()[header::CONTENT_TYPE], TEXT);
        assert_eq!(page.headers()[header::CACHE_CONTROL], "no-store");
        assert_eq!(
            page.body(),
            &Bytes::from_static(b"400 Bad Request\nno state\nrequest id: r-1\n")
        );
    }

    #[test]
    fn html_escaping_leaves_no_markup_and_no_way_out_of_an_attribute() {
        assert_eq!(
            html_escape(r#"<a href="x" onclick='y'>&amp;</a>"#),
            "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;amp;&lt;/a&gt;"
        );
        assert_eq!(html_escape("ada@example.com"), "ada@example.com");
        assert_eq!(html_escape("«é»<ü>&"), "«é»&lt;ü&gt;&amp;");
        assert_eq!(html_escape(""), "");
    }

    #[test]
    fn a_redirect_that_cannot_be_a_header_goes_home() {
        let redirect: Response<Bytes> = redirect("/a\nb");
        assert_eq!(redirect.status(), StatusCode::FOUND);
        assert_eq!(redirect.headers()[header::LOCATION], "/");
        assert!(redirect.body().is_empty());
    }
}
