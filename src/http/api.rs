//! The server API's HTTP side: every `/api/v1/` request of the admin listener comes
//! through [`serve`], which refuses what a browser sends (any `Origin` header: 403, so
//! that no web page can drive the API with a user's loopback access), checks the bearer
//! token (401 with `WWW-Authenticate`), reads a bounded JSON body (413, 400 for
//! unknown fields), and turns the route into an [`api::Call`] for the daemon's
//! [`Control`], or into the ops routes (status, reload) and the OpenAPI document.
//!
//! The routes and their bodies are those of the committed OpenAPI document
//! (`src/api/openapi.json`); `tests/node/test/api.test.mjs` runs schemathesis against it.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, header};
use parking_lot::RwLock;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::control::Control;
use super::host::Hosts;
use crate::api::{self, Call, Emit, MAX_ROOM, Reply, Tokens};
use crate::config::Config;

/// Who may use the admin listener — the `Host` names it answers to, the API's tokens —
/// and how much they may send (swapped on reload), and the count of what was asked.
#[derive(Debug, Default)]
pub struct Access {
    state: RwLock<Settings>,
    /// `iorelay_api_requests_total{route,status}`, when registered.
    requests: Option<prometheus::IntCounterVec>,
    /// `iorelay_admin_host_refused_total{route}`, when registered.
    host_refused: Option<prometheus::IntCounterVec>,
}

impl Access {
    /// The `[api]` section of `config`, its token file read now: checked before a
    /// reload applies anything, put in force with [`Access::install`] after.
    pub fn load(config: &Config) -> Result<Settings, api::tokens::Error> {
        let tokens = Tokens::load(&config.api.tokens, config.api.token_file.as_deref())?;
        let limit = usize::try_from(config.api.max_body.bytes()).unwrap_or(usize::MAX);
        // Validation refused a bad name already; none is the safe reading of one anyway.
        let hosts = Hosts::parse(&config.admin.allowed_hosts).unwrap_or_default();
        Ok(Settings(tokens, limit, hosts))
    }

    /// Access as `settings` say, from the next request on.
    pub fn install(&self, settings: Settings) {
        *self.state.write() = settings;
    }

    /// Whether a request to `route` (a label of `iorelay_admin_host_refused_total`) with
    /// the `Host` `host` may be answered; a refusal is logged and counted.
    pub fn admits_host(&self, route: &'static str, host: Option<&[u8]>) -> bool {
        if self.state.read().2.admits(host) {
            return true;
        }
        // A browser on the host can send these at will: DEBUG, the counter is the signal.
        tracing::debug!(
            route,
            host = %String::from_utf8_lossy(host.unwrap_or_default()),
            "admin request refused: its Host is not this listener's (DNS rebinding?)"
        );
        if let Some(refused) = &self.host_refused {
            refused.with_label_values(&[route]).inc();
        }
        false
    }

    /// Access as `config` says (at start), counting requests in `requests`; logs what
    /// the API accepts.
    pub fn configured(
        config: &Config,
        requests: prometheus::IntCounterVec,
        host_refused: prometheus::IntCounterVec,
    ) -> Result<Access, api::tokens::Error> {
        let access = Access {
            requests: Some(requests),
            host_refused: Some(host_refused),
            ..Access::default()
        };
        access.install(Access::load(config)?);
        let tokens = access.tokens();
        if tokens.is_empty() {
            tracing::warn!(
                "the server API has no tokens (api.tokens, api.token_file): every /api/v1/ request is refused"
            );
        } else if tokens.has_development_token() {
            tracing::warn!(
                token = api::tokens::DEVELOPMENT,
                "the server API accepts the well-known development token; give production its own (api.token_file)"
            );
        }
        Ok(access)
    }

    /// The tokens in force, for the start-up log.
    pub fn tokens(&self) -> Tokens {
        self.state.read().0.clone()
    }
}

/// The `[admin]` and `[api]` settings of a config, loaded and checked: the tokens, the
/// body limit, the allowed `Host` names.
#[derive(Debug, Default)]
pub struct Settings(Tokens, usize, Hosts);

/// `POST /api/v1/sockets/{id}/join|leave`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Placement {
    #[serde(default = "root")]
    namespace: String,
    room: String,
}

/// `POST /api/v1/sockets/{id}/disconnect`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SocketRef {
    #[serde(default = "root")]
    namespace: String,
}

/// `POST /api/v1/disconnect`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoomsBody {
    #[serde(default = "root")]
    namespace: String,
    /// Required, so that the whole namespace is never disconnected by accident: `[]`
    /// says so.
    rooms: Vec<String>,
}

fn root() -> String {
    "/".to_owned()
}

/// The status of a request whose `Host` is not this listener's: 421 Misdirected Request
/// ("this server does not answer for that authority", RFC 9110 §15.5.20) says exactly
/// that, and keeps it apart from 401 (token) and 403 (Origin) for an operator who finds
/// a misnamed proxy or scraper in the log. No browser reads a 421 answer's body as the
/// rebound page's content any more than a 403's.
pub const MISDIRECTED: u16 = 421;
/// Its error text.
pub const MISDIRECTED_TEXT: &str =
    "the Host header names neither an IP address, localhost nor admin.allowed_hosts";

/// What a route asks for.
enum Route {
    Call(Call),
    Status,
    Reload,
    OpenApi,
}

/// Serve one `/api/v1/` request.
pub async fn serve(
    control: &dyn Control,
    access: &Access,
    serving: bool,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let route = route_label(req.method(), req.uri().path());
    let response = match answer(control, access, serving, req).await {
        Ok(response) => response,
        Err(reply) => respond(&reply),
    };
    if let Some(requests) = &access.requests {
        requests
            .with_label_values(&[route, response.status().as_str()])
            .inc();
    }
    response
}

/// The route's name for the requests metric: a bounded set (never an id or a room).
fn route_label(method: &Method, path: &str) -> &'static str {
    let segments: Vec<&str> = path
        .strip_prefix("/api/v1/")
        .unwrap_or("")
        .split('/')
        .collect();
    match (method, segments.as_slice()) {
        (_, ["emit"]) => "emit",
        (_, ["rooms"]) => "rooms",
        (_, ["rooms", _, "members"]) => "members",
        (_, ["rooms", _, "history"]) => "history",
        (_, ["sockets"]) => "sockets",
        (_, ["sockets", _, "join"]) => "join",
        (_, ["sockets", _, "leave"]) => "leave",
        (_, ["sockets", _, "disconnect"]) => "disconnect_socket",
        (_, ["disconnect"]) => "disconnect",
        (_, ["status"]) => "status",
        (_, ["reload"]) => "reload",
        (_, ["openapi.json"]) => "openapi",
        _ => "other",
    }
}

async fn answer(
    control: &dyn Control,
    access: &Access,
    serving: bool,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Reply> {
    let (head, incoming) = req.into_parts();
    let path = head.uri.path();
    let host = head
        .headers
        .get(header::HOST)
        .map(header::HeaderValue::as_bytes);
    if !access.admits_host("api", host) {
        return Err(Reply::error(MISDIRECTED, MISDIRECTED_TEXT));
    }
    if head.headers.contains_key(header::ORIGIN) {
        tracing::warn!(
            path,
            "server API request from a web page (Origin header) refused"
        );
        return Err(Reply::error(
            403,
            "requests from web pages (with an Origin header) are refused",
        ));
    }
    let (admitted, limit) = {
        let state = access.state.read();
        let authorization = head.headers.get(header::AUTHORIZATION);
        (state.0.admit(authorization.map(|v| v.as_bytes())), state.1)
    };
    if !admitted {
        tracing::info!(path, "server API request without a valid token refused");
        let reply = Reply::error(
            401,
            "a valid bearer token is required (Authorization: Bearer …)",
        );
        let mut response = respond(&reply);
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"iorelay\""),
        );
        return Ok(response);
    }
    let body = Body { incoming, limit };
    let route = match route(&head, body).await {
        Ok(route) => route,
        Err(Refused::Reply(reply)) => return Err(reply),
        Err(Refused::Method(allowed)) => {
            let mut response = respond(&Reply::error(405, format!("use {allowed}")));
            let allow = header::HeaderValue::from_str(allowed.as_str())
                .expect("a method name is a valid header value");
            response.headers_mut().insert(header::ALLOW, allow);
            return Ok(response);
        }
    };
    let reply = match route {
        Route::Call(call) => control.call(call).await,
        Route::Status => {
            let mut status = control.status().await;
            status["ok"] = Value::Bool(true);
            status["serving"] = Value::Bool(serving);
            Reply {
                status: 200,
                body: status,
            }
        }
        Route::Reload => {
            let report = control.reload().await;
            let status = if report["ok"] == Value::Bool(true) {
                200
            } else {
                422
            };
            Reply {
                status,
                body: report,
            }
        }
        Route::OpenApi => {
            return Ok(Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from_static(api::OPENAPI.as_bytes())))
                .expect("static response is valid"));
        }
    };
    if reply.status >= 500 {
        tracing::warn!(path, status = reply.status, error = %reply.body["error"], "server API request failed");
    }
    Ok(respond(&reply))
}

/// A request's body, read only by the routes that take one.
struct Body {
    incoming: Incoming,
    limit: usize,
}

impl Body {
    /// Read the JSON body (at most the configured size) and parse it. The content type
    /// is not looked at: the body is JSON whatever it says (`curl -d` says form data).
    async fn json<T: DeserializeOwned>(self) -> Result<T, Reply> {
        let limit = self.limit;
        let bytes = Limited::new(self.incoming, limit)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<LengthLimitError>() {
                    Reply::error(
                        413,
                        format!("the body is over api.max_body ({limit} bytes)"),
                    )
                } else {
                    Reply::error(400, format!("the body could not be read: {e}"))
                }
            })?
            .to_bytes();
        if bytes.is_empty() {
            return Err(Reply::error(400, "a JSON body is required"));
        }
        serde_json::from_slice(&bytes).map_err(|e| Reply::error(400, format!("invalid body: {e}")))
    }
}

/// Why a route was not taken.
enum Refused {
    /// Answered with this.
    Reply(Reply),
    /// The route takes only this method (405 with `Allow`).
    Method(Method),
}

impl From<Reply> for Refused {
    fn from(reply: Reply) -> Refused {
        Refused::Reply(reply)
    }
}

/// The call a request makes, its body read and checked.
async fn route(head: &hyper::http::request::Parts, body: Body) -> Result<Route, Refused> {
    let path = head.uri.path().strip_prefix("/api/v1/").unwrap_or("");
    let segments: Vec<String> = path
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let query = |name: &str| {
        form_urlencoded::parse(head.uri.query().unwrap_or("").as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    let expect = |m: Method| {
        if head.method == m {
            Ok(())
        } else {
            Err(Refused::Method(m))
        }
    };
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    match segments.as_slice() {
        ["status"] => expect(Method::GET).map(|()| Route::Status),
        ["reload"] => expect(Method::POST).map(|()| Route::Reload),
        ["openapi.json"] => expect(Method::GET).map(|()| Route::OpenApi),
        ["rooms"] => {
            expect(Method::GET)?;
            Ok(Route::Call(Call::Rooms {
                namespace: query("namespace"),
            }))
        }
        ["rooms", room, "members"] if !room.is_empty() => {
            expect(Method::GET)?;
            Ok(Route::Call(Call::Members {
                namespace: query("namespace").unwrap_or_else(root),
                room: (*room).to_owned(),
            }))
        }
        ["rooms", room, "history"] if !room.is_empty() => {
            expect(Method::GET)?;
            // Any count is a valid limit (the namespace's history.size caps it): one too
            // large for this machine's integers means "all".
            let limit = match query("limit") {
                Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                    Some(n.parse::<usize>().unwrap_or(usize::MAX))
                }
                Some(n) => {
                    return Err(Refused::Reply(Reply::error(
                        400,
                        format!("limit {n:?} is not a count of events"),
                    )));
                }
                None => None,
            };
            Ok(Route::Call(Call::History {
                namespace: query("namespace").unwrap_or_else(root),
                room: (*room).to_owned(),
                since: query("since"),
                limit,
            }))
        }
        ["sockets"] => {
            expect(Method::GET)?;
            Ok(Route::Call(Call::Sockets {
                namespace: query("namespace"),
                room: query("room"),
            }))
        }
        ["emit"] => {
            expect(Method::POST)?;
            let emit: Emit = body.json().await?;
            check_emit(&emit)?;
            Ok(Route::Call(Call::Emit(emit)))
        }
        ["sockets", id, action @ ("join" | "leave")] if !id.is_empty() => {
            expect(Method::POST)?;
            let p: Placement = body.json().await?;
            check_room(&p.room)?;
            let (socket, namespace, room) = ((*id).to_owned(), p.namespace, p.room);
            Ok(Route::Call(if *action == "join" {
                Call::Join {
                    socket,
                    namespace,
                    room,
                }
            } else {
                Call::Leave {
                    socket,
                    namespace,
                    room,
                }
            }))
        }
        ["sockets", id, "disconnect"] if !id.is_empty() => {
            expect(Method::POST)?;
            let r: SocketRef = body.json().await?;
            Ok(Route::Call(Call::Kick {
                socket: (*id).to_owned(),
                namespace: r.namespace,
            }))
        }
        ["disconnect"] => {
            expect(Method::POST)?;
            let r: RoomsBody = body.json().await?;
            for room in &r.rooms {
                check_room(room)?;
            }
            Ok(Route::Call(Call::Disconnect {
                namespace: r.namespace,
                rooms: r.rooms,
            }))
        }
        _ => Err(Reply::error(
            404,
            "no such route (the routes are in /api/v1/openapi.json)",
        )
        .into()),
    }
}

fn check_room(room: &str) -> Result<(), Reply> {
    api::check_room_name(room).map_err(|why| Reply::error(400, why))
}

fn check_emit(emit: &Emit) -> Result<(), Reply> {
    api::check_event_name(&emit.event).map_err(|why| Reply::error(400, why))?;
    for room in &emit.rooms {
        check_room(room)?;
    }
    for (list, names) in [("sockets", &emit.sockets), ("except", &emit.except)] {
        if names
            .iter()
            .any(|n| n.is_empty() || n.chars().count() > MAX_ROOM)
        {
            return Err(Reply::error(
                400,
                format!("every entry of {list} has 1 to {MAX_ROOM} characters"),
            ));
        }
    }
    for (i, data) in emit.binary.iter().enumerate() {
        if api::decode_binary(data).is_none() {
            return Err(Reply::error(400, format!("binary[{i}] is not base64")));
        }
    }
    Ok(())
}

/// The reply as an HTTP response.
pub fn respond(reply: &Reply) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Full::new(Bytes::from(reply.body.to_string())))
        .expect("static header is valid")
}
