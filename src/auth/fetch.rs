//! The gateway's HTTP client toward identity providers and key sets, and the one way a
//! document (a JWKS, a discovery document) is fetched: bounded in time and in size.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use reqwest::header::{ACCEPT, HeaderMap};

use crate::http::error_chain;

/// Why the process's HTTP client could not be built (its TLS roots, most likely). Kept
/// by the `OnceLock`, so every later caller gets the same answer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot build the HTTP client: {source}")]
pub struct HttpClientError {
    #[source]
    source: Arc<reqwest::Error>,
}

/// The process's HTTP client for JWKS and IdP requests: TLS with the webpki roots, up to
/// three redirects.
pub fn http_client() -> Result<&'static reqwest::Client, HttpClientError> {
    static CLIENT: OnceLock<Result<reqwest::Client, HttpClientError>> = OnceLock::new();
    shared(&CLIENT, reqwest::redirect::Policy::limited(3))
}

/// [`http_client`] without redirects, for the IdP's token endpoint: a request carrying
/// the client secret and a code is never re-sent elsewhere.
pub fn http_client_without_redirects() -> Result<&'static reqwest::Client, HttpClientError> {
    static CLIENT: OnceLock<Result<reqwest::Client, HttpClientError>> = OnceLock::new();
    shared(&CLIENT, reqwest::redirect::Policy::none())
}

fn shared(
    client: &'static OnceLock<Result<reqwest::Client, HttpClientError>>,
    redirects: reqwest::redirect::Policy,
) -> Result<&'static reqwest::Client, HttpClientError> {
    client
        .get_or_init(|| {
            reqwest::Client::builder()
                .user_agent(concat!("fluxlit/", env!("CARGO_PKG_VERSION")))
                .redirect(redirects)
                .build()
                .map_err(|source| HttpClientError {
                    source: Arc::new(source),
                })
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// A document as fetched: its body and the answer's headers (for `Cache-Control`).
#[derive(Debug)]
pub struct Document {
    pub body: Vec<u8>,
    pub headers: HeaderMap,
}

/// Why a document could not be fetched. Each names the URL.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Client(#[from] HttpClientError),
    #[error("GET {url}: {}", error_chain(source))]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("GET {url}: status {status}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
    },
    #[error("GET {url}: the document is over {limit} bytes")]
    TooLarge { url: String, limit: usize },
}

/// GETs the JSON document at `url` within `timeout`, reading at most `limit` bytes of
/// it; anything but a 2xx answer is an error.
pub async fn fetch_document(
    url: &str,
    timeout: Duration,
    limit: usize,
) -> Result<Document, FetchError> {
    let request_failed = |source| FetchError::Request {
        url: url.to_owned(),
        source,
    };
    let mut response = http_client()?
        .get(url)
        // A JWKS may come as application/jwk-set+json; anything JSON is read as such.
        .header(ACCEPT, "application/json, */*;q=0.5")
        .timeout(timeout)
        .send()
        .await
        .map_err(request_failed)?;
    if !response.status().is_success() {
        return Err(FetchError::Status {
            url: url.to_owned(),
            status: response.status(),
        });
    }
    let headers = std::mem::take(response.headers_mut());
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(request_failed)? {
        body.extend_from_slice(&chunk);
        if body.len() > limit {
            return Err(FetchError::TooLarge {
                url: url.to_owned(),
                limit,
            });
        }
    }
    Ok(Document { body, headers })
}
