//! `GET <callback>?code&state`: where the IdP sends the browser back. The login's state
//! comes from the browser's sealed login cookie, and is used up once opened, whatever the
//! answer; a login that passes every step ends on `next` with a one-time
//! `auth_code`, and the code cookie that binds the code to this browser.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header::{self, HeaderValue};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{MethodRouter, get};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{
    LoginState, Params, PendingToken, Refusal, RequestId, code_key, cookie, page, store_key,
    unix_now, usable,
};
use crate::auth::claims::Claims;
use crate::auth::oidc::OidcProvider;
use crate::auth::oidc::client::{IdpTokens, oauth_error_code, random_secret};
use crate::auth::oidc::discovery::Discovered;
use crate::auth::oidc::id_token::{self, Expected, IdTokenError};
use crate::auth::oidc::redirect::location;
use crate::auth::oidc::session::{SessionError, SessionRecord};
use crate::auth::oidc::store::Slot;
use crate::auth::token::Minter;
use crate::http;

pub(super) fn route() -> MethodRouter<Arc<OidcProvider>> {
    // GET only: a HEAD would use the state up for nothing.
    let use_get = super::use_get;
    get(callback).head(use_get).fallback(use_get)
}

/// What the IdP sends back: `code` and `state`, or `error` (its `error_description` and
/// anything else are not read).
#[derive(Deserialize)]
struct CallbackParams {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
}

async fn callback(
    State(provider): State<Arc<OidcProvider>>,
    request_id: RequestId,
    headers: HeaderMap,
    Params(params): Params<CallbackParams>,
) -> Response {
    let Some(state) = usable(params.state.as_deref()) else {
        let message = "login failed: the callback has no state";
        return page(StatusCode::BAD_REQUEST, message, &request_id);
    };
    let key = store_key(state);
    let callback = Callback {
        provider: &provider,
        state_key: &key,
    };
    let mut response = match callback.finish(&headers, &params).await {
        Ok(response) => response,
        Err(refusal) => refusal.page(&request_id),
    };
    // Whatever the answer, the login's cookie is cleared: a login is tried once.
    let clear = cookie::login_cookie(&provider, &key, None);
    response.headers_mut().append(header::SET_COOKIE, clear);
    response
}

/// A callback for the login whose state hashes to `state_key`.
struct Callback<'a> {
    provider: &'a OidcProvider,
    state_key: &'a str,
}

impl Callback<'_> {
    /// The login's steps in order; the first that fails ends it.
    async fn finish(
        &self,
        headers: &HeaderMap,
        params: &CallbackParams,
    ) -> Result<Response, Refusal> {
        let LoginState {
            verifier,
            nonce,
            next,
            expires_at,
        } = self.login_state(headers)?;
        self.use_state(expires_at).await?;
        let code = self.authorization_code(params)?;
        let discovered = self.discovered()?;
        let (claims, tokens) = self
            .verified_claims(&discovered, code, verifier, &nonce)
            .await?;
        let session_cookie = self.start_session(&claims, tokens).await?;
        // A token for the app's server, when the provider mints one.
        let issued = match &self.provider.settings.minter {
            Some(minter) => {
                let token = self.mint(minter, &claims)?;
                Some(self.issue_auth_code(&token).await?)
            }
            None => None,
        };
        tracing::info!(
            provider = %self.provider.name,
            session = session_cookie.is_some(),
            auth_code = issued.is_some(),
            "OIDC login succeeded",
        );
        let mut response = redirect_to_next(self.provider, &next, issued.as_ref());
        if let Some(cookie) = session_cookie {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
        Ok(response)
    }

    /// Before anything reaches the IdP: the login's state, from the login cookie of the
    /// browser that started this login. Another browser has no such cookie, or one
    /// sealed for another login — else an attacker's half-done login could be finished
    /// in a victim's browser (login CSRF).
    fn login_state(&self, headers: &HeaderMap) -> Result<LoginState, Refusal> {
        let name = cookie::login_cookie_name(self.provider, self.state_key);
        let presented = cookie::request_cookie(headers, &name);
        let opened =
            presented.and_then(|sealed| LoginState::open(self.provider, self.state_key, sealed));
        if let Some(login) = opened {
            return Ok(login);
        }
        let cookie = if presented.is_some() {
            "mismatch"
        } else {
            "missing"
        };
        tracing::info!(provider = %self.provider.name, check = "browser", cookie, "OIDC callback refused: no login cookie sealed for this state");
        Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "login failed (browser): this login was started in another browser (or its \
             login cookie is missing or expired); start the login again in this browser",
        ))
    }

    /// Uses the state up, once: a replayed callback (with the cookie, which the browser
    /// was told to drop) is refused before its code reaches the IdP. The mark is kept
    /// until the login would have expired; only a callback with a genuine login cookie
    /// writes one, so the store grows no faster than logins are started.
    async fn use_state(&self, expires_at: u64) -> Result<(), Refusal> {
        let provider = self.provider;
        let refused = |message: &'static str, reason: &'static str| {
            tracing::info!(provider = %provider.name, check = "state", reason, "OIDC callback refused");
            Refusal::new(StatusCode::BAD_REQUEST, message)
        };
        let left = expires_at.saturating_sub(unix_now());
        if left == 0 {
            return Err(refused(
                "login failed (state): this login has expired; start the login again",
                "expired",
            ));
        }
        let used = provider
            .store
            .put_once(
                Slot::UsedState,
                self.state_key,
                Vec::new(),
                Duration::from_secs(left),
            )
            .await;
        match used {
            Ok(true) => Ok(()),
            Ok(false) => Err(refused(
                "login failed (state): this login was already used; start the login again",
                "used",
            )),
            Err(error) => Err(Refusal::store(provider, "callback", &error)),
        }
    }

    /// The authorization code, unless the IdP sent an error instead.
    fn authorization_code<'p>(&self, params: &'p CallbackParams) -> Result<&'p str, Refusal> {
        if let Some(error) = &params.error {
            let error = oauth_error_code(error);
            tracing::info!(provider = %self.provider.name, check = "authorization", error, "the identity provider did not log the user in");
            let message = format!("login failed: the identity provider answered {error}");
            return Err(Refusal::new(StatusCode::FORBIDDEN, message));
        }
        usable(params.code.as_deref()).ok_or_else(|| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "login failed: the callback has no code",
            )
        })
    }

    fn discovered(&self) -> Result<Arc<Discovered>, Refusal> {
        self.provider.discovery.current().ok_or_else(|| {
            Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "login is not available: the identity provider's settings have not been loaded",
            )
        })
    }

    /// Trades the code for the IdP's tokens and checks the id_token: its claims, and
    /// the tokens.
    async fn verified_claims(
        &self,
        discovered: &Discovered,
        code: &str,
        verifier: String,
        nonce: &str,
    ) -> Result<(Claims, IdpTokens), Refusal> {
        let provider = self.provider;
        let tokens = match provider.exchange_code(discovered, code, verifier).await {
            Ok(tokens) => tokens,
            Err(error) => {
                tracing::warn!(provider = %provider.name, check = "token_endpoint", reason = %error, "OIDC login refused");
                let message = format!("login failed: {error}");
                return Err(Refusal::new(StatusCode::BAD_GATEWAY, message));
            }
        };
        let expected = Expected {
            client_id: &provider.settings.client_id,
            nonce,
            leeway: provider.settings.leeway,
        };
        let claims = id_token::verify(&tokens.id_token, discovered, &expected)
            .await
            .map_err(|error| match error {
                IdTokenError::KeysUnavailable(reason) => {
                    tracing::warn!(provider = %provider.name, check = "keys", %reason, "OIDC login refused");
                    Refusal::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "login failed: the identity provider's signing keys are not available; \
                         try again shortly",
                    )
                }
                error => {
                    tracing::warn!(
                        provider = %provider.name,
                        check = error.check(),
                        reason = error.reason(),
                        "OIDC login refused: the id_token failed a check",
                    );
                    let message = format!(
                        "login failed: the id_token failed the {} check ({})",
                        error.check(),
                        error.reason()
                    );
                    Refusal::new(StatusCode::FORBIDDEN, message)
                }
            })?;
        Ok((claims, tokens))
    }

    /// Starts the browser session of this login (when routes name the provider): the
    /// `Set-Cookie` that hands the browser its id.
    async fn start_session(
        &self,
        claims: &Claims,
        tokens: IdpTokens,
    ) -> Result<Option<HeaderValue>, Refusal> {
        let provider = self.provider;
        let Some(settings) = provider.settings.sessions else {
            return Ok(None);
        };
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let mut kept = Map::new();
        for name in &provider.settings.session_claims {
            if let Some(value) = claims.get(name) {
                kept.insert(name.clone(), value.clone());
            }
        }
        let mut record = SessionRecord::new(sub, kept, settings);
        record.id_token = Some(tokens.id_token);
        record.keep_refresh_token(tokens.refresh_token, tokens.expires_in);
        match provider.start_session(&record).await {
            Ok(id) => Ok(Some(provider.session_cookie(Some(&id)))),
            Err(SessionError::Store(error)) => Err(Refusal::store(provider, "callback", &error)),
            Err(SessionError::Sealing) => {
                tracing::error!(provider = %provider.name, "cannot seal a session record");
                Err(Refusal::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "login failed: the session cannot be started",
                ))
            }
        }
    }

    /// The first-party access token: `sub` and the claims the provider copies, signed
    /// with its `mint` provider's key.
    fn mint(&self, minter: &Minter, claims: &Claims) -> Result<PendingToken, Refusal> {
        let provider = self.provider;
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let mut extra = Map::new();
        for name in &provider.settings.claims {
            if let Some(value @ Value::String(_)) = claims.get(name) {
                extra.insert(name.clone(), value.clone());
            }
        }
        match minter.mint(sub, provider.settings.access_token_ttl, extra) {
            Ok(minted) => Ok(PendingToken {
                access_token: minted.token,
                expires_at: minted.expires_at,
            }),
            Err(error) => {
                tracing::error!(provider = %provider.name, %error, "cannot mint the access token");
                Err(Refusal::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "login failed: the access token cannot be signed",
                ))
            }
        }
    }

    /// Stores the token for `auth_code_ttl` under a fresh one-time auth code bound to a
    /// fresh browser binding (both 256 random bits): the two.
    async fn issue_auth_code(&self, token: &PendingToken) -> Result<IssuedCode, Refusal> {
        let provider = self.provider;
        let failed = || Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "login failed");
        let issued = IssuedCode {
            auth_code: random_secret(),
            binding: random_secret(),
        };
        let value = serde_json::to_vec(token).map_err(|_| failed())?;
        let key = code_key(&issued.auth_code, &issued.binding);
        let ttl = provider.settings.auth_code_ttl;
        match provider
            .store
            .put_once(Slot::AuthCode, &key, value, ttl)
            .await
        {
            Ok(true) => Ok(issued),
            Ok(false) => Err(failed()),
            Err(error) => Err(Refusal::store(provider, "callback", &error)),
        }
    }
}

/// A one-time auth code, and the binding the browser it is issued to gets in its code
/// cookie. (No `Debug`: never logged.)
struct IssuedCode {
    auth_code: String,
    binding: String,
}

/// To `next` (under the base path), with the auth code in its query and its code cookie
/// set in the browser when there is one. The code is in the URL: the page it lands on
/// sends no `Referer`.
fn redirect_to_next(provider: &OidcProvider, next: &str, issued: Option<&IssuedCode>) -> Response {
    let base_path = &provider.settings.base_path;
    let param = issued.map(|issued| ("auth_code", issued.auth_code.as_str()));
    let mut response = http::redirect(&location(base_path, next, param));
    let headers = response.headers_mut();
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if let Some(issued) = issued {
        let code_hash = store_key(&issued.auth_code);
        headers.append(
            header::SET_COOKIE,
            cookie::code_cookie(provider, &code_hash, &issued.binding),
        );
    }
    response
}
