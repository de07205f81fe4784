//! The operator dashboard at `/ui` (`[server] ui = true`, the default):
//! server-rendered HTML over the same functions and the same account
//! authorization as the JSON API (`crate::admin`, `AppState`), with its
//! CSS and one small script embedded in the binary.
//!
//! Files: `session` (sign-in, cookie, CSRF), `html` (escaping, layout,
//! security headers), one file per page (`overview`, `events`,
//! `endpoints`, `plugins`), `tail` (live tail over server-sent events) and
//! `assets/` (the CSS and script).
//!
//! Routing checks, in this order: a session (else the sign-in page), the
//! CSRF token of every POST (else 403), the account in the URL against the
//! session's token (`session::authorize`, else 404 as in the API).

pub mod endpoints;
pub mod events;
pub mod html;
pub mod overview;
pub mod plugins;
pub mod session;
pub mod tail;

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::api::{ApiError, Body};
use crate::state::AppState;
use html::{Ctx, esc};
use session::Session;

/// What the dashboard answers: a whole body, or the live tail's stream.
pub type Served = http_body_util::Either<Body, tail::TailBody>;

const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// Largest form body accepted (plugin configs included).
const MAX_FORM: usize = 64 * 1024;

fn whole(r: Response<Body>) -> Response<Served> {
    r.map(http_body_util::Either::Left)
}

/// Routes `/ui/…`; `rest` is the path after `ui`.
pub async fn route(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    rest: &[&str],
) -> Response<Served> {
    // The one streaming route.
    if req.method() == Method::GET {
        if let ["a", account, "tail", "stream"] = rest {
            return match signed_in(state, &req, account) {
                Ok((sid, s)) => tail::stream(state.clone(), &req, &sid, &s, account),
                Err(r) => whole(r),
            };
        }
    }
    whole(route_whole(state, req, rest).await)
}

async fn route_whole(state: &AppState, req: Request<Incoming>, rest: &[&str]) -> Response<Body> {
    let method = req.method().clone();
    let secure_cookie = behind_tls(req.headers());
    // Defence in depth beside the CSRF token (and the only check on the
    // sign-in form): a browser's cross-site POST names another origin.
    if method == Method::POST && !same_origin(req.headers()) {
        return forbidden("The form was sent from another site.");
    }
    match (&method, rest) {
        (&Method::GET, ["static", "app.js"]) => {
            return asset("text/javascript; charset=utf-8", APP_JS);
        }
        (&Method::GET, ["static", "app.css"]) => return asset("text/css; charset=utf-8", APP_CSS),
        (&Method::GET, ["login"]) => return login_page(None),
        (&Method::POST, ["login"]) => {
            let form = match read_form(state, req).await {
                Ok(f) => f,
                Err(e) => return login_page(Some(&e.detail)),
            };
            let token = crate::admin::param(&form, "token").unwrap_or("");
            return match session::sign_in(state, token) {
                Some((sid, s)) => html::redirect(
                    &format!("/ui/a/{}", html::url(&s.home)),
                    Some(session::set_cookie(&sid, secure_cookie)),
                ),
                None => {
                    let mut r = login_page(Some(
                        "that token is neither an account's token nor the admin token",
                    ));
                    *r.status_mut() = StatusCode::UNAUTHORIZED;
                    r
                }
            };
        }
        _ => {}
    }
    let Some((sid, s)) = session::current(req.headers()) else {
        return if method == Method::GET {
            html::redirect("/ui/login", None)
        } else {
            forbidden("Your session has ended; sign in again.")
        };
    };
    // Every POST below changes state: the session's CSRF token is required.
    let form = if method == Method::POST {
        let form = match read_form(state, req).await {
            Ok(f) => f,
            Err(e) => return error_page(&e),
        };
        if !session::csrf_ok(&s, &form) {
            return forbidden("The form has no valid CSRF token (reload the page and try again).");
        }
        form
    } else {
        let q = crate::admin::query(&req);
        drop(req);
        q
    };
    match (&method, rest) {
        (&Method::POST, ["logout"]) => {
            session::sign_out(&sid);
            html::redirect("/ui/login", Some(session::clear_cookie(secure_cookie)))
        }
        (&Method::GET, [] | [""]) => html::redirect(&format!("/ui/a/{}", html::url(&s.home)), None),
        (&Method::GET, ["switch"]) => {
            let account = crate::admin::param(&form, "account").unwrap_or(&s.home);
            html::redirect(&format!("/ui/a/{}", html::url(account)), None)
        }
        (&Method::GET, ["plugins"]) => {
            if !session::is_admin(state, &s) {
                return error_page(&ApiError::not_found("page"));
            }
            let ctx = Ctx {
                state,
                session: &s,
                sid: &sid,
                account: s.home.clone(),
            };
            plugins::page(&ctx)
        }
        (_, ["a", account, page @ ..]) => {
            if let Err(e) = session::authorize(state, &s, account) {
                return error_page(&e);
            }
            let ctx = Ctx {
                state,
                session: &s,
                sid: &sid,
                account: account.to_string(),
            };
            let r = match (&method, page) {
                (&Method::GET, []) => overview::page(&ctx).await,
                (&Method::GET, ["events"]) => events::list(&ctx, &form).await,
                (&Method::GET, ["events", id]) => events::detail(&ctx, id, None).await,
                (&Method::POST, ["events", id, "retry"]) => events::retry(&ctx, id, &form).await,
                (&Method::GET, ["endpoints"]) => endpoints::list(&ctx, None).await,
                (&Method::POST, ["endpoints"]) => endpoints::create(&ctx, &form).await,
                (&Method::GET, ["endpoints", id]) => endpoints::detail(&ctx, id, None).await,
                (&Method::POST, ["endpoints", id, action]) => {
                    endpoints::action(&ctx, id, action, &form).await
                }
                (&Method::GET, ["tail"]) => tail::page(&ctx).await,
                _ => Err(ApiError::not_found("page")),
            };
            r.unwrap_or_else(|e| error_page(&e))
        }
        _ => error_page(&ApiError::not_found("page")),
    }
}

/// Whether the request came through a TLS-terminating proxy (the router
/// itself serves plain HTTP): the cookie is then `Secure`.
fn behind_tls(h: &http::HeaderMap) -> bool {
    h.get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// Whether a request's `Origin` (sent by browsers with every POST), if
/// any, is this host.
fn same_origin(h: &http::HeaderMap) -> bool {
    let Some(origin) = h.get(http::header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = h
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let bare = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("");
    !host.is_empty() && bare.eq_ignore_ascii_case(host)
}

/// The signed-in session of a GET to an account page (the tail stream).
fn signed_in(
    state: &AppState,
    req: &Request<Incoming>,
    account: &str,
) -> Result<(String, Session), Response<Body>> {
    let (sid, s) =
        session::current(req.headers()).ok_or_else(|| html::redirect("/ui/login", None))?;
    session::authorize(state, &s, account).map_err(|e| error_page(&e))?;
    Ok((sid, s))
}

fn asset(content_type: &'static str, body: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    html::secure(r)
}

/// Reads an `application/x-www-form-urlencoded` body.
async fn read_form(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<Vec<(String, String)>, ApiError> {
    let ct = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if !ct.starts_with("application/x-www-form-urlencoded") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "Unsupported media type",
            "the dashboard's forms are sent as application/x-www-form-urlencoded",
        ));
    }
    let limit = MAX_FORM.min(state.config().server.max_body.max(MAX_FORM));
    let body = crate::api::read_body(req, limit).await?;
    Ok(crate::admin::parse_query(&String::from_utf8_lossy(&body)))
}

fn login_page(error: Option<&str>) -> Response<Body> {
    let err = error
        .map(|e| format!("<div class=\"error\" role=\"alert\">{}</div>", esc(e)))
        .unwrap_or_default();
    html::html(
        StatusCode::OK,
        html::bare(
            "Sign in",
            &format!(
                "{err}<form method=\"post\" action=\"/ui/login\" class=\"card narrow\">\
<p>Sign in with an account's token (that account only) or the admin token (every account).</p>\
<label for=\"token\">Token</label><input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required autofocus>\
<button type=\"submit\">Sign in</button></form>"
            ),
        ),
    )
}

fn forbidden(detail: &str) -> Response<Body> {
    html::html(
        StatusCode::FORBIDDEN,
        html::bare(
            "Forbidden",
            &format!(
                "<div class=\"error\" role=\"alert\">{}</div><p><a href=\"/ui/login\">Sign in</a></p>",
                esc(detail)
            ),
        ),
    )
}

/// An error answered as a page with the API's status (404 for another
/// account's resources, as in the API).
pub fn error_page(e: &ApiError) -> Response<Body> {
    html::html(
        e.status,
        html::bare(
            &e.title,
            &format!(
                "{}<p><a href=\"/ui\">Back to the dashboard</a></p>",
                html::error_notice(e)
            ),
        ),
    )
}
