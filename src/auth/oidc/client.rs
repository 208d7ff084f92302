//! What a login asks of the IdP, through openidconnect: the authorization URL (state,
//! nonce, PKCE S256), the code exchange (server to server, with the gateway's HTTP
//! client: no redirects, bounded time and size), and the RP-initiated logout URL.

use std::fmt;
use std::time::Duration;

use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreErrorResponseType, CoreIdToken, CoreJsonWebKeySet,
};
use openidconnect::{
    AuthType, AuthorizationCode, ClientId, CsrfToken, EndpointNotSet, EndpointSet, LogoutRequest,
    Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, PostLogoutRedirectUrl,
    RefreshToken, RequestTokenError, Scope, TokenResponse,
};

use super::OidcProvider;
use super::discovery::Discovered;
use crate::http::error_chain;

/// Random bytes in a `state`, a `nonce`, a login cookie and an `auth_code` (base64url: 43
/// characters).
pub const SECRET_BYTES: u32 = 32;
/// How long the token endpoint has to answer.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest token endpoint answer read.
const MAX_TOKEN_RESPONSE_BYTES: usize = 1024 * 1024;

type OidcClient = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
    EndpointNotSet,
>;

/// A fresh random secret, base64url (256 bits from the OS-seeded CSPRNG).
pub fn random_secret() -> String {
    CsrfToken::new_random_len(SECRET_BYTES).secret().clone()
}

/// What the IdP's token endpoint gave for a code. (No `Debug`: never logged.)
pub struct IdpTokens {
    pub id_token: String,
    /// Only when the IdP gives one (`offline_access`): a session keeps it.
    pub refresh_token: Option<String>,
    /// How long the IdP's access token lives: a session renews its tokens then.
    pub expires_in: Option<std::time::Duration>,
}

/// What a refresh gave: a rotated refresh token and a new id_token when the IdP sends
/// them. (No `Debug`: never logged.)
pub struct RefreshedTokens {
    pub id_token: Option<String>,
    pub refresh_token: Option<String>,
    pub expires_in: Option<std::time::Duration>,
}

impl fmt::Debug for RefreshedTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshedTokens(redacted)")
    }
}

impl fmt::Debug for IdpTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdpTokens(redacted)")
    }
}

/// A login's request to the IdP, and the secrets the callback needs to finish it.
pub struct Authorization {
    /// Where the browser goes to log in (it carries the state and the nonce).
    pub url: url::Url,
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

impl fmt::Debug for Authorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Authorization(redacted)")
    }
}

/// Why the code could not be traded for an id_token. The token endpoint's answer may
/// hold tokens: it is never quoted, only the JSON path of a problem in it.
#[derive(Debug, thiserror::Error)]
pub enum CodeExchangeError {
    #[error("the identity provider's token endpoint refused the code ({error})")]
    Refused { error: String },
    #[error("the identity provider's token endpoint cannot be reached ({0})")]
    Unreachable(HttpError),
    #[error("the token endpoint's answer is not a valid token response (at {at})")]
    Malformed { at: String },
    #[error("the token endpoint's answer is not a token response")]
    NotATokenResponse,
    #[error("the token endpoint's answer has no id_token")]
    NoIdToken,
}

/// What went wrong at the token endpoint, for a code or a refresh token alike.
fn token_error(
    error: RequestTokenError<
        HttpError,
        openidconnect::StandardErrorResponse<CoreErrorResponseType>,
    >,
) -> CodeExchangeError {
    match error {
        RequestTokenError::ServerResponse(error) => CodeExchangeError::Refused {
            error: oauth_error_code(error.error().as_ref()),
        },
        RequestTokenError::Request(error) => CodeExchangeError::Unreachable(error),
        RequestTokenError::Parse(error, _body) => CodeExchangeError::Malformed {
            at: error.path().to_string(),
        },
        RequestTokenError::Other(_) => CodeExchangeError::NotATokenResponse,
    }
}

impl OidcProvider {
    /// A fresh login at the IdP: random state and nonce, a PKCE S256 challenge, this
    /// provider's scopes.
    pub fn authorization(&self, discovered: &Discovered) -> Authorization {
        let state = CsrfToken::new_random_len(SECRET_BYTES);
        let nonce = Nonce::new_random_len(SECRET_BYTES);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (state_secret, nonce_secret) = (state.secret().clone(), nonce.secret().clone());
        let scopes = self
            .settings
            .scopes
            .iter()
            .map(|scope| Scope::new(scope.clone()));
        let (url, _, _) = self
            .client(discovered)
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                move || state,
                move || nonce,
            )
            .add_scopes(scopes)
            .set_pkce_challenge(challenge)
            .url();
        Authorization {
            url,
            state: state_secret,
            nonce: nonce_secret,
            pkce_verifier: verifier.secret().clone(),
        }
    }

    /// Trades the code (with the PKCE verifier) for the IdP's tokens, server to server.
    pub async fn exchange_code(
        &self,
        discovered: &Discovered,
        code: &str,
        pkce_verifier: String,
    ) -> Result<IdpTokens, CodeExchangeError> {
        let client = self.client(discovered);
        let request = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier));
        let response = request.request_async(&send).await.map_err(token_error)?;
        let id_token = response
            .id_token()
            .map(ToString::to_string)
            .ok_or(CodeExchangeError::NoIdToken)?;
        Ok(IdpTokens {
            id_token,
            refresh_token: response.refresh_token().map(|token| token.secret().clone()),
            expires_in: response.expires_in(),
        })
    }

    /// Trades a session's refresh token for fresh tokens (RFC 6749 §6), server to
    /// server. `Refused` means the IdP will not renew the session (revoked, expired, the
    /// user disabled); anything else is a failure to ask.
    pub async fn refresh(
        &self,
        discovered: &Discovered,
        refresh_token: &str,
    ) -> Result<RefreshedTokens, CodeExchangeError> {
        let client = self.client(discovered);
        let token = RefreshToken::new(refresh_token.to_owned());
        let response = client
            .exchange_refresh_token(&token)
            .request_async(&send)
            .await
            .map_err(token_error)?;
        Ok(RefreshedTokens {
            id_token: response.id_token().map(ToString::to_string),
            refresh_token: response.refresh_token().map(|token| token.secret().clone()),
            expires_in: response.expires_in(),
        })
    }

    /// The IdP's logout URL (RP-initiated logout) that comes back to `next`, when the IdP
    /// has an `end_session_endpoint`. `id_token` is the ended session's: as
    /// `id_token_hint` it tells the IdP whose session to end, without which many IdPs
    /// ask the user to confirm or ignore the redirect back.
    pub fn end_session_url(&self, next: &str, id_token: Option<&str>) -> Option<String> {
        let endpoint = self.discovery.current()?.end_session_endpoint.clone()?;
        let mut logout = LogoutRequest::from(endpoint)
            .set_client_id(ClientId::new(self.settings.client_id.clone()));
        // The id_token was verified at the login; one that no longer parses (a record
        // written by another version) only costs the hint.
        if let Some(hint) = id_token.and_then(|raw| raw.parse::<CoreIdToken>().ok()) {
            logout = logout.set_id_token_hint(&hint);
        }
        let back = format!("{}{next}", self.settings.public_base);
        if let Ok(back) = PostLogoutRedirectUrl::new(back) {
            logout = logout.set_post_logout_redirect_uri(back);
        }
        Some(logout.http_get_url().to_string())
    }

    /// The openidconnect client for this login: discovered endpoints, this config's
    /// client credentials and redirect URI. (Its own id_token verifier, and so its key
    /// set, is never used: [`super::id_token::verify`] checks the id_token.)
    fn client(&self, discovered: &Discovered) -> OidcClient {
        let auth_type = if discovered.client_secret_post {
            AuthType::RequestBody
        } else {
            AuthType::BasicAuth
        };
        CoreClient::new(
            ClientId::new(self.settings.client_id.clone()),
            discovered.issuer_url.clone(),
            CoreJsonWebKeySet::default(),
        )
        .set_client_secret(openidconnect::ClientSecret::new(
            self.settings.client_secret.0.clone(),
        ))
        .set_auth_uri(discovered.authorization_endpoint.clone())
        .set_token_uri(discovered.token_endpoint.clone())
        .set_redirect_uri(self.settings.redirect_uri.clone())
        .set_auth_type(auth_type)
    }
}

/// An OAuth error code as it may be shown: its `error` characters only, bounded.
pub fn oauth_error_code(text: &str) -> String {
    let code: String = text
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(64)
        .collect();
    if code.is_empty() {
        "an error".to_owned()
    } else {
        code
    }
}

/// Sends a request of the openidconnect client with the gateway's HTTP client (no
/// redirects, bounded time and size).
async fn send(
    request: openidconnect::HttpRequest,
) -> Result<openidconnect::HttpResponse, HttpError> {
    let client = crate::auth::http_client_without_redirects()
        .map_err(|error| HttpError(error.to_string()))?;
    let request = reqwest::Request::try_from(request)
        .map_err(|err| HttpError(format!("bad request: {err}")))?;
    let mut response = tokio::time::timeout(TOKEN_TIMEOUT, client.execute(request))
        .await
        .map_err(|_| HttpError(format!("no answer within {TOKEN_TIMEOUT:?}")))?
        .map_err(|err| HttpError(error_chain(&err)))?;
    let mut builder = http::Response::builder().status(response.status());
    for (name, value) in response.headers() {
        builder = builder.header(name, value);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|err| HttpError(error_chain(&err)))?
    {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_TOKEN_RESPONSE_BYTES {
            return Err(HttpError("the answer is too large".to_owned()));
        }
    }
    builder.body(body).map_err(|err| HttpError(err.to_string()))
}

/// Why the token endpoint could not be asked or did not answer.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oauth_error_codes_are_shown_tame() {
        assert_eq!(oauth_error_code("access_denied"), "access_denied");
        assert_eq!(oauth_error_code("<script>"), "script");
        assert_eq!(oauth_error_code("\r\n"), "an error");
    }
}
