//! Single sign-on with OpenID Connect (`[oidc]` in the configuration file; docs/console.md,
//! "Single sign-on").
//!
//! `GET /login/oidc` starts the authorization-code flow: PKCE (S256), `state` and `nonce`. The
//! pending flow is kept in the store ([`crate::store::sso`]), keyed by a hash of `state`, so any
//! node of a cluster can take the callback, and bound to this browser by a short-lived cookie
//! (`__Host-duress_oidc`, SameSite=Lax: it must come back on the provider's cross-site redirect)
//! whose hash the flow keeps. `GET /login/oidc/callback` takes the flow (single use, at most
//! [`FLOW_LIFETIME`] old), checks the browser, exchanges the code with the PKCE verifier and
//! has `openidconnect` verify the ID token (signature against the provider's keys, issuer,
//! audience, expiry, nonce), then the access-token hash when the token carries one. The role
//! comes from `role_claim` (a string or an array; from the ID token, else from the userinfo
//! endpoint), the account name from `username_claim`; the store decides the account
//! ([`crate::store::SsoOutcome`]) and creates the session exactly as a password sign-in does.
//! Every refusal is audited (`login.sso-refused`) and answered with a page that says why.
//! A client address starts at most [`FLOW_STARTS_PER_MINUTE`] flows a minute (each writes a
//! row); past that the button answers 429 before anything is written.
//!
//! The provider is discovered from the issuer URL at start, in the background: a provider that
//! cannot be reached does not stop the receiver; the button then answers "single sign-on
//! unavailable" and discovery is retried (logged once when it fails, once when it recovers).
//! Once discovered, the metadata and keys are re-read every [`REDISCOVER_EVERY`] so a key
//! rotation at the provider is picked up.
//!
//! The HTTP client is the receiver's own (`notify::http::client`: rustls with the OS trust
//! store plus `ca_cert`, no redirects, a timeout), handed to `openidconnect` through oauth2's
//! `AsyncHttpClient` closure interface; answers are read up to [`MAX_ANSWER`] bytes.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use askama::Template;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreClientAuthMethod,
    CoreErrorResponseType, CoreGenderClaim, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm, CoreProviderMetadata, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AccessTokenHash, AdditionalClaims, AuthType, AuthorizationCode, Client, ClientId, ClientSecret,
    CsrfToken, EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet, EndpointSet, HttpRequest,
    HttpResponse, IdTokenClaims, IdTokenFields, IssuerUrl, Nonce, OAuth2TokenResponse as _,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, StandardErrorResponse,
    StandardTokenResponse, TokenResponse as _, UserInfoClaims,
};
use serde::Deserialize;

use super::error::ConsoleResult;
use super::pages::render_status;
use super::{Console, accounts, sessions};
use crate::api::receiver_now;
use crate::config::OidcConfig;
use crate::ratelimit::FailureLimiter;
use crate::store::{NewOidcFlow, Role, SSO_REFUSED_ACTION, SsoOutcome, SsoSignIn};

/// A pending sign-in is good for this long (the provider's sign-in page included).
pub const FLOW_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// The browser-binding cookie.
pub const FLOW_COOKIE: &str = "__Host-duress_oidc";
/// How often a discovered provider's metadata and keys are read again.
pub const REDISCOVER_EVERY: Duration = Duration::from_secs(3600);
/// The longest answer read from the provider (discovery, keys, token, userinfo).
pub const MAX_ANSWER: usize = 1024 * 1024;
/// Retries of a failed discovery start this far apart and double up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(5);
const RETRY_MAX: Duration = Duration::from_secs(60);
/// A click on the button while the provider is unknown tries discovery again at most this often.
const ON_DEMAND_EVERY: Duration = Duration::from_secs(5);
/// Sign-ins one client address may start in a minute (an IPv6 client counts per /64). A whole
/// security office behind one address signs in far less often; past it `GET /login/oidc`
/// answers 429 with `Retry-After` and writes nothing.
pub const FLOW_STARTS_PER_MINUTE: u32 = 30;

/// Every claim outside the standard ones (the role claim is usually one: `groups`, `roles`).
#[derive(Debug, Clone, Default, serde::Serialize, Deserialize)]
#[serde(transparent)]
pub struct OtherClaims(serde_json::Map<String, serde_json::Value>);

impl AdditionalClaims for OtherClaims {}

type SsoIdTokenFields = IdTokenFields<
    OtherClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type SsoTokenResponse = StandardTokenResponse<SsoIdTokenFields, CoreTokenType>;
/// The client as discovery builds it: authorization endpoint set, token and userinfo endpoints
/// as the provider announced them.
type SsoClient = Client<
    OtherClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    SsoTokenResponse,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// Why talking to the provider failed (what `openidconnect` reports as the client's error).
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    Request(#[from] reqwest::Error),
    #[error("the answer is larger than {MAX_ANSWER} bytes")]
    TooLarge,
    #[error("building the answer: {0}")]
    Http(#[from] openidconnect::http::Error),
}

async fn send(client: &reqwest::Client, request: HttpRequest) -> Result<HttpResponse, HttpError> {
    let (parts, body) = request.into_parts();
    let mut answer = client
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await?;
    let status = answer.status();
    let headers = answer.headers().clone();
    let mut bytes = Vec::new();
    while let Some(chunk) = answer.chunk().await? {
        if bytes.len() + chunk.len() > MAX_ANSWER {
            return Err(HttpError::TooLarge);
        }
        bytes.extend_from_slice(&chunk);
    }
    let mut response = openidconnect::http::Response::builder()
        .status(status)
        .body(bytes)?;
    *response.headers_mut() = headers;
    Ok(response)
}

/// A discovery failure is logged once, until discovery works again.
#[derive(Debug, Default)]
struct DiscoveryState {
    last_attempt: Option<Instant>,
    failing: bool,
}

/// Single sign-on as configured (`Console::sso`).
pub struct Sso {
    config: OidcConfig,
    secret: crate::config::Secret,
    redirect: RedirectUrl,
    issuer: IssuerUrl,
    http: reqwest::Client,
    client: tokio::sync::RwLock<Option<Arc<SsoClient>>>,
    discovery: Mutex<DiscoveryState>,
    /// Serialises discovery attempts (the background task and on-demand ones).
    discovering: tokio::sync::Mutex<()>,
    /// Flows started per client address: each start writes a pending flow to the store, so
    /// one address may not turn the button into a write load ([`FLOW_STARTS_PER_MINUTE`]).
    starts: FailureLimiter,
}

impl std::fmt::Debug for Sso {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sso")
            .field("issuer", &self.config.issuer)
            .field("client_id", &self.config.client_id)
            .finish_non_exhaustive()
    }
}

/// The role `values` (a claim's value: a string or an array of strings) map to: admin when one
/// is in `admin_values`, else officer when one is in `officer_values`, else none.
pub fn role_from_claim(value: &serde_json::Value, config: &OidcConfig) -> Option<Role> {
    let values: Vec<&str> = match value {
        serde_json::Value::String(s) => vec![s.as_str()],
        serde_json::Value::Array(items) => items.iter().filter_map(|v| v.as_str()).collect(),
        _ => Vec::new(),
    };
    let has = |wanted: &[String]| values.iter().any(|v| wanted.iter().any(|w| w == v));
    if has(&config.admin_values) {
        Some(Role::Admin)
    } else if has(&config.officer_values) {
        Some(Role::Officer)
    } else {
        None
    }
}

/// The claims a sign-in needs, from the ID token or the userinfo answer.
#[derive(Debug, Default)]
struct Found {
    username: Option<String>,
    role_value: Option<serde_json::Value>,
}

fn standard_text(
    name: &str,
    subject: &str,
    preferred_username: Option<&str>,
    email: Option<&str>,
    other: &OtherClaims,
) -> Option<String> {
    match name {
        "preferred_username" => preferred_username.map(str::to_owned),
        "email" => email.map(str::to_owned),
        "sub" => Some(subject.to_owned()),
        _ => other
            .0
            .get(name)
            .and_then(|v| v.as_str())
            .map(str::to_owned),
    }
}

fn found_in_id_token(
    claims: &IdTokenClaims<OtherClaims, CoreGenderClaim>,
    config: &OidcConfig,
) -> Found {
    let other = claims.additional_claims();
    Found {
        username: standard_text(
            &config.username_claim,
            claims.subject().as_str(),
            claims.preferred_username().map(|u| u.as_str()),
            claims.email().map(|e| e.as_str()),
            other,
        ),
        role_value: other.0.get(&config.role_claim).cloned(),
    }
}

fn found_in_userinfo(
    claims: &UserInfoClaims<OtherClaims, CoreGenderClaim>,
    config: &OidcConfig,
) -> Found {
    let other = claims.additional_claims();
    Found {
        username: standard_text(
            &config.username_claim,
            claims.subject().as_str(),
            claims.preferred_username().map(|u| u.as_str()),
            claims.email().map(|e| e.as_str()),
            other,
        ),
        role_value: other.0.get(&config.role_claim).cloned(),
    }
}

impl Sso {
    /// Single sign-on from `[oidc]`: reads `client_secret_file` and builds the HTTP client now
    /// (a mistake there stops the start); the provider is discovered later ([`Sso::run`]).
    pub fn new(config: &OidcConfig, public_url: Option<&str>) -> Result<Arc<Self>, String> {
        let secret = config.secret()?;
        let redirect = config
            .redirect_url(public_url)
            .ok_or_else(|| "oidc: set redirect_url (or public_url)".to_owned())?;
        let redirect = RedirectUrl::new(redirect).map_err(|e| format!("oidc.redirect_url: {e}"))?;
        let issuer =
            IssuerUrl::new(config.issuer.clone()).map_err(|e| format!("oidc.issuer: {e}"))?;
        let http = crate::notify::http::client(config.ca_cert.as_deref())
            .map_err(|e| format!("oidc: {e}"))?;
        Ok(Arc::new(Sso {
            config: config.clone(),
            secret,
            redirect,
            issuer,
            http,
            client: tokio::sync::RwLock::new(None),
            discovery: Mutex::new(DiscoveryState::default()),
            discovering: tokio::sync::Mutex::new(()),
            starts: FailureLimiter::new(FLOW_STARTS_PER_MINUTE, Duration::from_secs(60)),
        }))
    }

    fn discovery_state(&self) -> std::sync::MutexGuard<'_, DiscoveryState> {
        self.discovery
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One discovery: the provider's metadata and keys; on success the client is replaced.
    async fn discover(&self) -> bool {
        let _one = self.discovering.lock().await;
        self.discovery_state().last_attempt = Some(Instant::now());
        let http_client = self.http_client();
        match CoreProviderMetadata::discover_async(self.issuer.clone(), &http_client).await {
            Ok(metadata) => {
                // client_secret_basic unless the provider announces only client_secret_post.
                let post_only = metadata
                    .token_endpoint_auth_methods_supported()
                    .is_some_and(|methods| {
                        !methods.contains(&CoreClientAuthMethod::ClientSecretBasic)
                            && methods.contains(&CoreClientAuthMethod::ClientSecretPost)
                    });
                let client: SsoClient = Client::from_provider_metadata(
                    metadata,
                    ClientId::new(self.config.client_id.clone()),
                    Some(ClientSecret::new(self.secret.expose().to_owned())),
                )
                .set_redirect_uri(self.redirect.clone())
                .set_auth_type(if post_only {
                    AuthType::RequestBody
                } else {
                    AuthType::BasicAuth
                });
                *self.client.write().await = Some(Arc::new(client));
                let mut state = self.discovery_state();
                if state.failing {
                    tracing::info!(issuer = %self.config.issuer, "single sign-on: the provider is reachable again");
                }
                state.failing = false;
                true
            }
            Err(e) => {
                let mut state = self.discovery_state();
                if !state.failing {
                    tracing::warn!(issuer = %self.config.issuer, error = %e,
                        "single sign-on unavailable: OpenID Connect discovery failed; retrying in the background");
                }
                state.failing = true;
                false
            }
        }
    }

    /// The background discovery: until it works (retries 5 s apart, doubling up to a
    /// minute), then again every [`REDISCOVER_EVERY`] (a failure then keeps the last one).
    pub async fn run(self: Arc<Self>) {
        let mut wait = RETRY_FIRST;
        loop {
            if self.discover().await {
                wait = RETRY_FIRST;
                tokio::time::sleep(REDISCOVER_EVERY).await;
            } else {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(RETRY_MAX);
            }
        }
    }

    /// The discovered client; when there is none yet, one more discovery first (at most every
    /// few seconds, so a stream of clicks does not hammer a provider that is down).
    async fn client(&self) -> Option<Arc<SsoClient>> {
        if let Some(c) = self.client.read().await.clone() {
            return Some(c);
        }
        let due = self
            .discovery_state()
            .last_attempt
            .is_none_or(|at| at.elapsed() >= ON_DEMAND_EVERY);
        if due && self.discover().await {
            return self.client.read().await.clone();
        }
        None
    }

    fn http_client(
        &self,
    ) -> impl Fn(
        HttpRequest,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<HttpResponse, HttpError>> + Send>,
    > {
        let http = self.http.clone();
        move |request: HttpRequest| {
            let http = http.clone();
            Box::pin(async move { send(&http, request).await })
        }
    }
}

#[derive(Debug, Template)]
#[template(path = "sso_notice.html")]
struct Notice<'a> {
    title: &'a str,
    message: &'a str,
    /// After a sign-in: where the page goes on by itself (a same-site navigation, so the
    /// SameSite=Strict session cookie is sent; the callback itself came from the provider).
    continue_to: Option<&'a str>,
}

fn notice(status: StatusCode, title: &str, message: &str) -> Response {
    let mut r = render_status(
        status,
        &Notice {
            title,
            message,
            continue_to: None,
        },
    );
    r.headers_mut()
        .append(header::SET_COOKIE, clear_flow_cookie());
    r
}

fn flow_cookie(value: &str) -> HeaderValue {
    let cookie = format!(
        "{FLOW_COOKIE}={value}; HttpOnly; Secure; SameSite=Lax; Path=/; Max-Age={}",
        FLOW_LIFETIME.as_secs()
    );
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn clear_flow_cookie() -> HeaderValue {
    HeaderValue::from_static(
        "__Host-duress_oidc=; HttpOnly; Secure; SameSite=Lax; Path=/; Max-Age=0",
    )
}

fn not_configured() -> Response {
    super::pages::error_page(
        StatusCode::NOT_FOUND,
        "Single sign-on is not set up",
        "This console has no single sign-on. Sign in with your console account.",
    )
}

fn unavailable() -> Response {
    let mut r = notice(
        StatusCode::SERVICE_UNAVAILABLE,
        "Single sign-on unavailable",
        "The sign-in provider cannot be reached right now. Try again in a minute; an administrator can still sign in with a local account.",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
    r
}

fn too_many_starts(retry_after: Duration) -> Response {
    let mut r = notice(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many sign-in attempts",
        "This address has started many sign-ins in the last minute. Wait a little and try again.",
    );
    if let Ok(v) = HeaderValue::from_str(&retry_after.as_secs().max(1).to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// `GET /login/oidc`: a new pending flow, then off to the provider.
pub async fn start(
    State(console): State<Arc<Console>>,
    ConnectInfo(client_addr): ConnectInfo<SocketAddr>,
) -> ConsoleResult {
    let Some(sso) = console.sso.clone() else {
        return Ok(not_configured());
    };
    // Counted before anything is written: every start counts, whatever becomes of it.
    let now = Instant::now();
    if let Err(retry_after) = sso.starts.check(client_addr.ip(), now) {
        return Ok(too_many_starts(retry_after));
    }
    sso.starts.record_failure(client_addr.ip(), now);
    let Some(client) = sso.client().await else {
        return Ok(unavailable());
    };
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = client.authorize_url(
        CoreAuthenticationFlow::AuthorizationCode,
        CsrfToken::new_random,
        Nonce::new_random,
    );
    for scope in &sso.config.scopes {
        request = request.add_scope(Scope::new(scope.clone()));
    }
    let (url, state, nonce) = request.set_pkce_challenge(challenge).url();
    let browser = sessions::random_secret();
    let now = receiver_now();
    console
        .store
        .put_oidc_flow(NewOidcFlow {
            state_hash: sessions::hash_id(state.secret()),
            browser_hash: sessions::hash_id(&browser),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
            created_at: now,
            expires_at: now + FLOW_LIFETIME,
        })
        .await?;
    let mut response = Redirect::to(url.as_str()).into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, flow_cookie(&browser));
    Ok(response)
}

/// What the provider sends back.
#[derive(Debug, Deserialize)]
pub struct Callback {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

/// A refusal: audited (`login.sso-refused`, by the client's address), then a page saying why.
async fn refuse(
    console: &Console,
    actor: &str,
    subject: &str,
    detail: &str,
    status: StatusCode,
    title: &str,
    message: &str,
) -> ConsoleResult {
    tracing::warn!(client = %actor, user = %subject, reason = %detail, "single sign-on refused");
    console
        .store
        .record_audit(actor, SSO_REFUSED_ACTION, subject, detail)
        .await?;
    Ok(notice(status, title, message))
}

/// The first 200 characters of a message from outside, for the audit log.
fn clip(text: &str) -> String {
    text.chars().take(200).collect()
}

/// `GET /login/oidc/callback`.
pub async fn callback(
    State(console): State<Arc<Console>>,
    ConnectInfo(client_addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(answer): Query<Callback>,
) -> ConsoleResult {
    let Some(sso) = console.sso.clone() else {
        return Ok(not_configured());
    };
    let actor = format!("ip:{}", client_addr.ip());
    let again = "Start again from the sign-in page.";
    let Some(state) = answer.state.filter(|s| !s.is_empty() && s.len() <= 512) else {
        return refuse(
            &console,
            &actor,
            "",
            "callback without state",
            StatusCode::BAD_REQUEST,
            "Sign-in not completed",
            again,
        )
        .await;
    };
    // Single use: taken (deleted) whatever happens next.
    let Some(flow) = console
        .store
        .take_oidc_flow(&sessions::hash_id(&state), receiver_now())
        .await?
    else {
        return refuse(&console, &actor, "", "unknown, used or expired state", StatusCode::BAD_REQUEST,
            "Sign-in not completed",
            "This sign-in was already used, has expired, or did not start here. Start again from the sign-in page.").await;
    };
    let browser = sessions::cookie_value(&headers, FLOW_COOKIE).unwrap_or_default();
    if browser.is_empty() || sessions::hash_id(&browser) != flow.browser_hash {
        return refuse(&console, &actor, "", "state from another browser", StatusCode::BAD_REQUEST,
            "Sign-in not completed",
            "This sign-in was started in another browser (or its cookie was lost). Start again from the sign-in page in this browser.").await;
    }
    if let Some(error) = answer.error {
        let detail = format!("the provider answered {}", clip(&error));
        return refuse(&console, &actor, "", &detail, StatusCode::UNAUTHORIZED,
            "Sign-in refused by the provider",
            "The sign-in provider did not sign you in. Start again from the sign-in page, or ask an administrator.").await;
    }
    let Some(code) = answer.code.filter(|c| !c.is_empty()) else {
        return refuse(
            &console,
            &actor,
            "",
            "callback without code",
            StatusCode::BAD_REQUEST,
            "Sign-in not completed",
            again,
        )
        .await;
    };
    let Some(client) = sso.client().await else {
        return Ok(unavailable());
    };
    let http_client = sso.http_client();
    let exchange = match client.exchange_code(AuthorizationCode::new(code)) {
        Ok(request) => {
            request
                .set_pkce_verifier(PkceCodeVerifier::new(flow.pkce_verifier.clone()))
                .request_async(&http_client)
                .await
        }
        Err(e) => {
            tracing::error!(error = %e, "single sign-on: the provider announced no token endpoint");
            return Ok(unavailable());
        }
    };
    let tokens = match exchange {
        Ok(tokens) => tokens,
        Err(e) => {
            let detail = format!("code exchange failed: {}", clip(&e.to_string()));
            return refuse(&console, &actor, "", &detail, StatusCode::BAD_GATEWAY,
                "Sign-in not completed",
                "The sign-in provider did not confirm this sign-in. Start again from the sign-in page.").await;
        }
    };
    let Some(id_token) = tokens.id_token() else {
        return refuse(&console, &actor, "", "no ID token in the provider's answer", StatusCode::BAD_GATEWAY,
            "Sign-in not completed", "The sign-in provider sent no identity. Ask an administrator to check the provider's settings.").await;
    };
    let verifier = client.id_token_verifier();
    let nonce = Nonce::new(flow.nonce.clone());
    let claims = match id_token.claims(&verifier, &nonce) {
        Ok(claims) => claims,
        Err(e) => {
            let detail = format!("ID token refused: {}", clip(&e.to_string()));
            return refuse(&console, &actor, "", &detail, StatusCode::UNAUTHORIZED,
                "Sign-in refused",
                "The identity the provider sent did not pass the console's checks. Start again from the sign-in page.").await;
        }
    };
    if let Some(expected) = claims.access_token_hash() {
        let matches = id_token
            .signing_alg()
            .ok()
            .zip(id_token.signing_key(&verifier).ok())
            .and_then(|(alg, key)| {
                AccessTokenHash::from_token(tokens.access_token(), alg, key).ok()
            })
            .is_some_and(|actual| actual == *expected);
        if !matches {
            return refuse(&console, &actor, "", "access token hash mismatch", StatusCode::UNAUTHORIZED,
                "Sign-in refused",
                "The identity the provider sent did not pass the console's checks. Start again from the sign-in page.").await;
        }
    }
    let issuer = claims.issuer().as_str().to_owned();
    let subject = claims.subject().as_str().to_owned();
    let mut found = found_in_id_token(claims, &sso.config);
    // Claims missing from the ID token: the userinfo endpoint (some providers put groups only
    // there), for the same subject.
    if found.role_value.is_none() || found.username.is_none() {
        let info = match client.user_info(
            tokens.access_token().clone(),
            Some(claims.subject().clone()),
        ) {
            Ok(request) => request
                .request_async::<OtherClaims, _, CoreGenderClaim>(&http_client)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match info {
            Ok(info) => {
                let more = found_in_userinfo(&info, &sso.config);
                found.username = found.username.or(more.username);
                found.role_value = found.role_value.or(more.role_value);
            }
            Err(e) => {
                tracing::warn!(error = %e, "single sign-on: userinfo not read");
            }
        }
    }
    let Some(username) = found.username else {
        let detail = format!(
            "no {} claim (sub={})",
            sso.config.username_claim,
            clip(&subject)
        );
        return refuse(&console, &actor, "", &detail, StatusCode::FORBIDDEN,
            "Sign-in refused",
            "The sign-in provider did not say which account this is. Ask an administrator to check the provider's settings.").await;
    };
    if accounts::check_username(&username).is_err() {
        let detail = format!(
            "username claim {:?} is not a console account name",
            clip(&username)
        );
        return refuse(&console, &actor, "", &detail, StatusCode::FORBIDDEN,
            "Sign-in refused",
            "Your name at the sign-in provider cannot be a console account name (letters, digits, . _ - @; at most 64). Ask an administrator.").await;
    }
    let Some(role) = found
        .role_value
        .as_ref()
        .and_then(|v| role_from_claim(v, &sso.config))
    else {
        let detail = format!(
            "no officer or admin value in claim {}",
            sso.config.role_claim
        );
        return refuse(&console, &actor, &username, &detail, StatusCode::FORBIDDEN,
            "Not allowed to use the console",
            "You signed in at the provider, but your account is not in a group that may use the security console. Ask an administrator to add you.").await;
    };
    let (cookie, session) = sessions::new_session(&username, &console.settings);
    let outcome = console
        .store
        .sso_sign_in(SsoSignIn {
            username: username.clone(),
            issuer: issuer.clone(),
            subject: subject.clone(),
            role,
            provision: sso.config.provision,
            placeholder_hash: super::auth::DUMMY_HASH.clone(),
            session,
            detail: format!("{actor} method=oidc"),
        })
        .await?;
    match outcome {
        SsoOutcome::SignedIn { username, created, role_changed } => {
            if created {
                tracing::info!(user = %username, role = role.as_str(), "single sign-on: account created at first sign-in");
            }
            if let Some(was) = role_changed {
                tracing::info!(user = %username, from = was.as_str(), to = role.as_str(), "single sign-on: role updated from the provider's claims");
            }
            let mut response = render_status(
                StatusCode::OK,
                &Notice {
                    title: "Signed in",
                    message: "Signed in with single sign-on. Opening the board…",
                    continue_to: Some("/"),
                },
            );
            let h = response.headers_mut();
            h.append(header::SET_COOKIE, sessions::set_cookie(&cookie, &console.settings));
            h.append(header::SET_COOKIE, clear_flow_cookie());
            Ok(response)
        }
        SsoOutcome::Disabled { username } => {
            refuse(&console, &actor, &username, "account disabled", StatusCode::FORBIDDEN,
                "Account disabled",
                "This console account is disabled. Ask an administrator.").await
        }
        SsoOutcome::LocalAccount { username } => {
            let detail = format!("a local account has this name (sso {issuer} sub={})", clip(&subject));
            refuse(&console, &actor, &username, &detail, StatusCode::FORBIDDEN,
                "Account name taken by a local account",
                "A console account with a password has the same name as your single sign-on account, and single sign-on never signs in to a password account. Ask an administrator.").await
        }
        SsoOutcome::OtherSubject { username } => {
            let detail = format!("the account belongs to another subject (sso {issuer} sub={})", clip(&subject));
            refuse(&console, &actor, &username, &detail, StatusCode::FORBIDDEN,
                "Account belongs to someone else",
                "This console account is linked to another single sign-on identity. Ask an administrator.").await
        }
        SsoOutcome::NotProvisioned { username } => {
            refuse(&console, &actor, &username, "no such account (provision = false)", StatusCode::FORBIDDEN,
                "No console account",
                "There is no console account for you yet. Ask an administrator to create it as a single sign-on account.").await
        }
    }
}

/// An admin creates a single sign-on account before its first sign-in (audited as `actor`).
/// Its stored password hash is of a random password nobody is told; password sign-in refuses
/// it anyway.
pub async fn add_sso_account(
    store: &dyn crate::store::Store,
    username: &str,
    role: Role,
    actor: &str,
) -> anyhow::Result<()> {
    accounts::check_username(username)?;
    let placeholder =
        tokio::task::spawn_blocking(|| accounts::hash_password(&sessions::random_secret()))
            .await??;
    store
        .add_sso_user(username, role, &placeholder, receiver_now(), actor)
        .await?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config() -> OidcConfig {
        crate::config::ReceiverConfig::parse(
            "public_url = \"https://d.example.edu\"\n[oidc]\nissuer = \"https://idp.example.edu\"\nclient_id = \"c\"\nclient_secret = \"s3cret-oidc\"\nrole_claim = \"groups\"\nofficer_values = [\"security-officers\"]\nadmin_values = [\"security-admins\"]\n",
        )
        .unwrap()
        .oidc
        .unwrap()
    }

    #[test]
    fn roles_map_from_a_string_or_an_array_and_admin_wins() {
        let c = config();
        let role = |v: serde_json::Value| role_from_claim(&v, &c);
        assert_eq!(
            role(serde_json::json!("security-officers")),
            Some(Role::Officer)
        );
        assert_eq!(
            role(serde_json::json!([
                "staff",
                "security-officers",
                "security-admins"
            ])),
            Some(Role::Admin)
        );
        assert_eq!(role(serde_json::json!(["staff"])), None);
        assert_eq!(
            role(serde_json::json!("Security-Officers")),
            None,
            "exact values"
        );
        assert_eq!(role(serde_json::json!({"security-admins": true})), None);
        assert_eq!(role(serde_json::json!(7)), None);
    }

    #[test]
    fn the_flow_cookie_comes_back_on_the_providers_redirect_but_never_in_clear() {
        let v = flow_cookie("abc");
        let v = v.to_str().unwrap();
        assert!(v.starts_with("__Host-duress_oidc=abc;"), "{v}");
        for attr in [
            "; Secure",
            "; Path=/",
            "; HttpOnly",
            "; SameSite=Lax",
            "; Max-Age=600",
        ] {
            assert!(v.contains(attr), "{v}");
        }
    }

    #[test]
    fn the_secret_is_not_in_debug_output() {
        let sso = Sso::new(&config(), Some("https://d.example.edu")).unwrap();
        let debug = format!("{sso:?}");
        assert!(!debug.contains("s3cret-oidc"), "{debug}");
        assert!(debug.contains("idp.example.edu"), "{debug}");
    }
}
