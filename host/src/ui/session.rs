//! Dashboard sessions: a token (account or admin) is exchanged once for a
//! random session id in an `HttpOnly; SameSite=Strict` cookie (`Secure`
//! behind a TLS proxy) that expires after [`TTL`]; each session has its own
//! CSRF token, required on every state-changing form.
//!
//! The session keeps the token in memory (never in the cookie) and every
//! request re-authorizes it with the API's own `AppState::authorize_account`,
//! so a session sees exactly what its token may see through the API, and a
//! token removed from `router.toml` ends its sessions at the next request.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use http::HeaderMap;

use crate::api::{ApiError, Principal};
use crate::signing::constant_time_eq;
use crate::state::AppState;

/// The session cookie's name (path `/ui`).
pub const COOKIE: &str = "switchyard_session";
/// How long a session lasts after sign-in.
pub const TTL: Duration = Duration::from_secs(8 * 3600);
/// Sessions kept at most (expired ones are dropped first; past this the
/// oldest goes).
const MAX_SESSIONS: usize = 10_000;

/// One signed-in browser.
#[derive(Clone)]
pub struct Session {
    token: String,
    /// The CSRF token of this session's forms.
    pub csrf: String,
    /// Signed in with the admin token (every account, account switcher).
    pub admin: bool,
    /// The account signed in to (for the admin: the first account).
    pub home: String,
    expires: Instant,
    /// A one-shot message shown on the next page (after a redirect).
    pub flash: Option<String>,
    /// A secret shown once on the next page (after create or rotate).
    pub secret: Option<String>,
}

static SESSIONS: LazyLock<Mutex<HashMap<String, Session>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn sessions() -> std::sync::MutexGuard<'static, HashMap<String, Session>> {
    SESSIONS.lock().unwrap_or_else(|p| p.into_inner())
}

fn random_hex() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// Exchanges a token for a new session: `(session id, session)`, or `None`
/// when the token is neither the admin token nor an account's token.
pub fn sign_in(state: &AppState, token: &str) -> Option<(String, Session)> {
    let token = token.trim();
    if token.is_empty() {
        return None;
    }
    let snap = state.registry.snapshot();
    let config = state.config();
    let admin = config
        .server
        .admin_token
        .as_deref()
        .is_some_and(|a| constant_time_eq(a, token));
    let home = if admin {
        let mut ids: Vec<&String> = snap.accounts.keys().collect();
        ids.sort();
        ids.first().map(|s| s.to_string()).unwrap_or_default()
    } else {
        // Compare with every account so the time does not tell which matched.
        let mut found = None;
        for a in snap.accounts.values() {
            if constant_time_eq(&a.token, token) {
                found = Some(a.id.clone());
            }
        }
        found?
    };
    let session = Session {
        token: token.to_string(),
        csrf: random_hex(),
        admin,
        home,
        expires: Instant::now() + TTL,
        flash: None,
        secret: None,
    };
    let id = random_hex();
    let mut all = sessions();
    let now = Instant::now();
    all.retain(|_, s| s.expires > now);
    if all.len() >= MAX_SESSIONS {
        if let Some(oldest) = all
            .iter()
            .min_by_key(|(_, s)| s.expires)
            .map(|(k, _)| k.clone())
        {
            all.remove(&oldest);
        }
    }
    all.insert(id.clone(), session.clone());
    Some((id, session))
}

/// The session id in a request's cookies, if any.
pub fn cookie_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The live session of a request: `(id, session)`; takes its flash message.
pub fn current(headers: &HeaderMap) -> Option<(String, Session)> {
    let id = cookie_id(headers)?;
    let mut all = sessions();
    let s = all.get_mut(&id)?;
    if s.expires <= Instant::now() {
        all.remove(&id);
        return None;
    }
    let out = s.clone();
    s.flash = None;
    s.secret = None;
    Some((id, out))
}

/// Leaves a message for the session's next page.
pub fn flash(id: &str, message: String) {
    if let Some(s) = sessions().get_mut(id) {
        s.flash = Some(message);
    }
}

/// Leaves a message and a secret for the session's next page only (the
/// secret stays in server memory until that page is rendered).
pub fn flash_secret(id: &str, message: String, secret: String) {
    if let Some(s) = sessions().get_mut(id) {
        s.flash = Some(message);
        s.secret = Some(secret);
    }
}

/// Whether a session still exists and has not expired (the live tail
/// checks while it streams).
pub fn alive(id: &str) -> bool {
    sessions()
        .get(id)
        .is_some_and(|s| s.expires > Instant::now())
}

pub fn sign_out(id: &str) {
    sessions().remove(id);
}

/// The `Set-Cookie` value of a new session.
pub fn set_cookie(id: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{}",
        TTL.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

/// Whether a form's `csrf` field is this session's token (constant time).
pub fn csrf_ok(session: &Session, form: &[(String, String)]) -> bool {
    crate::admin::param(form, "csrf").is_some_and(|t| constant_time_eq(t, &session.csrf))
}

/// Authorizes the session for `account` exactly as the API authorizes its
/// token (`AppState::authorize_account`): another account is 404.
pub fn authorize(
    state: &AppState,
    session: &Session,
    account: &str,
) -> Result<Principal, ApiError> {
    let mut headers = HeaderMap::new();
    let value = http::HeaderValue::from_str(&format!("Bearer {}", session.token))
        .map_err(|_| ApiError::unauthorized("the session's token is not valid"))?;
    headers.insert(http::header::AUTHORIZATION, value);
    let snap = state.registry.snapshot();
    state.authorize_account(&headers, &snap, account)
}

/// Whether the session's token is still the admin token (admin pages).
pub fn is_admin(state: &AppState, session: &Session) -> bool {
    session.admin
        && state
            .config()
            .server
            .admin_token
            .as_deref()
            .is_some_and(|a| constant_time_eq(a, &session.token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_parsing() {
        let id = "a".repeat(64);
        let mut h = HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            format!("x=1; {COOKIE}={id}; y=2").parse().unwrap(),
        );
        assert_eq!(cookie_id(&h), Some(id));
        h.insert(
            http::header::COOKIE,
            format!("{COOKIE}=short").parse().unwrap(),
        );
        assert_eq!(cookie_id(&h), None);
        let c = set_cookie("abc", true);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Secure"));
        assert!(!set_cookie("abc", false).contains("Secure"));
    }
}
