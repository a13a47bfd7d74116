//! The ops subcommands as the command line sees them: their arguments ([`Command`]),
//! the request each makes ([`Call`]), the token it sends ([`token`]), and how it prints
//! the answer. `main.rs` hands a parsed [`Command`] to [`run`].

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};

use super::{Answer, Ask, request};
use crate::api::Emit;
use crate::config::{self, Config, diff};
use crate::daemon::exit;

/// The variable that carries the server API token for the ops subcommands.
pub const TOKEN_VAR: &str = "IORELAY_TOKEN";

/// The token file the deb generates, tried last (an operator's shell does not select the
/// production profile that names it).
pub const INSTALLED_TOKEN_FILE: &str = "/etc/iorelay/api-token";

/// How to reach a running daemon.
#[derive(Debug, Clone, clap::Args)]
pub struct OpsArgs {
    /// The daemon's admin listener [default: server.admin_listen from the config]
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<SocketAddr>,
    /// Server API token [default: $IORELAY_TOKEN, else the first of api.token_file (when
    /// readable), of api.tokens, of /etc/iorelay/api-token (when readable)]
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Print the daemon's JSON answer as is.
    #[arg(long)]
    pub json: bool,
}

/// The subcommands that talk to a running daemon through its admin listener.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Show a running daemon's state.
    Status(OpsArgs),
    /// Make a running daemon reload its config, as SIGHUP does, and show the outcome.
    Reload(OpsArgs),
    /// List a running daemon's rooms with their member counts.
    Rooms {
        #[command(flatten)]
        ops: OpsArgs,
        /// Only this namespace (for example "/chat").
        #[arg(long, short = 'n')]
        namespace: Option<String>,
    },
    /// List the connected sockets (id, namespace, user, rooms, transport, address).
    Sockets {
        #[command(flatten)]
        ops: OpsArgs,
        /// Only this namespace.
        #[arg(long, short = 'n')]
        namespace: Option<String>,
        /// Only the members of this room.
        #[arg(long, short = 'r')]
        room: Option<String>,
    },
    /// Emit an event to the sockets of a namespace, of rooms, or single sockets.
    ///
    /// Each ARG is a JSON value ('{"a":1}', 42, '"text"'); one that is not valid JSON is
    /// sent as a string.
    Emit {
        #[command(flatten)]
        ops: OpsArgs,
        /// The namespace.
        #[arg(long, short = 'n', default_value = "/")]
        namespace: String,
        /// To the members of this room (repeatable); none and no --socket: everyone.
        #[arg(long, short = 'r', value_name = "ROOM")]
        room: Vec<String>,
        /// To this socket id (repeatable).
        #[arg(long, value_name = "ID")]
        socket: Vec<String>,
        /// Leave out the members of this room, or this socket id (repeatable).
        #[arg(long, value_name = "ROOM_OR_ID")]
        except: Vec<String>,
        /// The event name.
        event: String,
        /// Its arguments.
        args: Vec<String>,
    },
    /// Disconnect one socket, or every socket of rooms.
    Disconnect {
        #[command(flatten)]
        ops: OpsArgs,
        /// The namespace.
        #[arg(long, short = 'n', default_value = "/")]
        namespace: String,
        /// Every socket of this room (repeatable).
        #[arg(long, short = 'r', value_name = "ROOM", conflicts_with = "socket")]
        room: Vec<String>,
        /// Every socket of the namespace.
        #[arg(long, conflicts_with_all = ["room", "socket"])]
        all: bool,
        /// The socket id.
        #[arg(required_unless_present_any = ["room", "all"])]
        socket: Option<String>,
    },
}

impl Command {
    /// The request it makes, and how to reach the daemon.
    pub fn call(self) -> (Call, OpsArgs) {
        match self {
            Command::Status(ops) => (Call::Status, ops),
            Command::Reload(ops) => (Call::Reload, ops),
            Command::Rooms { ops, namespace } => (Call::Rooms { namespace }, ops),
            Command::Sockets {
                ops,
                namespace,
                room,
            } => (Call::Sockets { namespace, room }, ops),
            Command::Emit {
                ops,
                namespace,
                room,
                socket,
                except,
                event,
                args,
            } => {
                let emit = Emit {
                    namespace,
                    event,
                    args: args.iter().map(|a| json_or_string(a)).collect(),
                    rooms: room,
                    sockets: socket,
                    except,
                    binary: Vec::new(),
                };
                (Call::Emit(emit), ops)
            }
            Command::Disconnect {
                ops,
                namespace,
                room,
                socket: Some(socket),
                ..
            } if room.is_empty() => (Call::Kick { namespace, socket }, ops),
            Command::Disconnect {
                ops,
                namespace,
                room,
                ..
            } => (
                Call::Disconnect {
                    namespace,
                    rooms: room,
                },
                ops,
            ),
        }
    }
}

/// A command-line argument as a JSON value: itself when it parses, else a string.
fn json_or_string(arg: &str) -> Value {
    serde_json::from_str(arg).unwrap_or_else(|_| Value::String(arg.to_owned()))
}

/// The token to send: `--token`, else `IORELAY_TOKEN`, else the first token of the
/// config's token file when this user can read it, else its first inline token, else the
/// first of [`INSTALLED_TOKEN_FILE`] when readable.
pub fn token(given: Option<String>, var: Option<String>, config: &Config) -> Option<String> {
    token_from(given, var, config, Path::new(INSTALLED_TOKEN_FILE))
}

fn token_from(
    given: Option<String>,
    var: Option<String>,
    config: &Config,
    installed: &Path,
) -> Option<String> {
    if let Some(token) = given.or(var).filter(|t| !t.is_empty()) {
        return Some(token);
    }
    let first_of = |file: &Path| {
        let text = std::fs::read_to_string(file).ok()?;
        text.lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
    };
    config
        .api
        .token_file
        .as_deref()
        .and_then(first_of)
        .or_else(|| config.api.tokens.first().cloned())
        .or_else(|| first_of(installed))
}

/// Run an ops subcommand against the daemon the config (or `--admin`) names; exit 0 when
/// it said yes, 1 when it said no, 69 when it could not be reached.
pub fn run(loaded: &config::Loaded, command: Command) -> ExitCode {
    let (call, args) = command.call();
    let addr = args.admin.unwrap_or(loaded.config.server.admin_listen);
    let token = token(args.token, std::env::var(TOKEN_VAR).ok(), &loaded.config);
    let body = call.body();
    let path = call.path();
    let ask = Ask {
        method: call.method(),
        path: &path,
        token: token.as_deref(),
        body: body.as_ref(),
    };
    let answer = match request(addr, &ask) {
        Ok(a) => a,
        Err(err) => {
            eprintln!("iorelay: {err}");
            return ExitCode::from(exit::UNAVAILABLE);
        }
    };
    match call.render(&answer) {
        _ if args.json => println!("{}", answer.body),
        Printed::Out(text) => print!("{text}"),
        Printed::Err(text) => eprint!("{text}"),
    }
    if (200..300).contains(&answer.status) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// What a query value keeps unescaped: RFC 3986's unreserved characters, and `/` (a
/// namespace reads better with it).
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// What a path segment keeps unescaped: RFC 3986's unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// One ops request: what it asks the daemon, and how it shows the answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// `iorelay status`: `GET /api/v1/status`.
    Status,
    /// `iorelay reload`: `POST /api/v1/reload`.
    Reload,
    /// `iorelay rooms [-n NS]`: `GET /api/v1/rooms[?namespace=NS]`.
    Rooms {
        /// Only this namespace.
        namespace: Option<String>,
    },
    /// `iorelay sockets`: `GET /api/v1/sockets`.
    Sockets {
        /// Only this namespace.
        namespace: Option<String>,
        /// Only this room's members.
        room: Option<String>,
    },
    /// `iorelay emit`: `POST /api/v1/emit`.
    Emit(Emit),
    /// `iorelay disconnect ID`: `POST /api/v1/sockets/{id}/disconnect`.
    Kick {
        /// The namespace.
        namespace: String,
        /// The socket.
        socket: String,
    },
    /// `iorelay disconnect --room R`: `POST /api/v1/disconnect`.
    Disconnect {
        /// The namespace.
        namespace: String,
        /// The rooms (none: the whole namespace).
        rooms: Vec<String>,
    },
}

/// A rendered answer, for standard output or standard error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Printed {
    /// For stdout.
    Out(String),
    /// For stderr (a refusal the daemon explained).
    Err(String),
}

impl Call {
    /// The HTTP method of the request.
    pub fn method(&self) -> &'static str {
        match self {
            Call::Status | Call::Rooms { .. } | Call::Sockets { .. } => "GET",
            _ => "POST",
        }
    }

    /// The request's path and query.
    pub fn path(&self) -> String {
        let query = |pairs: &[(&str, &Option<String>)]| {
            let set: Vec<String> = pairs
                .iter()
                .filter_map(|(k, v)| {
                    v.as_ref()
                        .map(|v| format!("{k}={}", utf8_percent_encode(v, QUERY_VALUE)))
                })
                .collect();
            if set.is_empty() {
                String::new()
            } else {
                format!("?{}", set.join("&"))
            }
        };
        match self {
            Call::Status => "/api/v1/status".to_owned(),
            Call::Reload => "/api/v1/reload".to_owned(),
            Call::Rooms { namespace } => {
                format!("/api/v1/rooms{}", query(&[("namespace", namespace)]))
            }
            Call::Sockets { namespace, room } => format!(
                "/api/v1/sockets{}",
                query(&[("namespace", namespace), ("room", room)])
            ),
            Call::Emit(_) => "/api/v1/emit".to_owned(),
            Call::Kick { socket, .. } => format!(
                "/api/v1/sockets/{}/disconnect",
                utf8_percent_encode(socket, SEGMENT)
            ),
            Call::Disconnect { .. } => "/api/v1/disconnect".to_owned(),
        }
    }

    /// The JSON body, for the calls that send one.
    pub fn body(&self) -> Option<Value> {
        match self {
            Call::Status | Call::Rooms { .. } | Call::Sockets { .. } => None,
            Call::Reload => None,
            Call::Emit(emit) => Some(json!(emit)),
            Call::Kick { namespace, .. } => Some(json!({ "namespace": namespace })),
            Call::Disconnect { namespace, rooms } => {
                Some(json!({ "namespace": namespace, "rooms": rooms }))
            }
        }
    }

    /// The answer as the subcommand prints it (an error document as it came).
    pub fn render(&self, answer: &Answer) -> Printed {
        let body = &answer.body;
        if answer.status == 401 {
            return Printed::Err(format!(
                "iorelay: the daemon refused the token ({}): pass --token, set {TOKEN_VAR}, or make api.token_file readable\n",
                body["error"].as_str().unwrap_or("unauthorized")
            ));
        }
        match self {
            Call::Reload => match diff::render_report(body) {
                diff::Outcome::Applied(text) => Printed::Out(text),
                diff::Outcome::Rejected(text) => Printed::Err(text),
            },
            _ if answer.status != 200 => Printed::Err(format!("{body}\n")),
            Call::Status => Printed::Out(render_status(body)),
            Call::Rooms { .. } => Printed::Out(render_rooms(body)),
            Call::Sockets { .. } => Printed::Out(render_sockets(body)),
            Call::Emit(_) => Printed::Out(format!("delivered to {} sockets\n", body["recipients"])),
            Call::Kick { socket, .. } => Printed::Out(format!("disconnected {socket}\n")),
            Call::Disconnect { .. } => {
                Printed::Out(format!("disconnected {} sockets\n", body["disconnected"]))
            }
        }
    }
}

/// Human-readable `iorelay status`.
pub fn render_status(body: &Value) -> String {
    let mut out = String::new();
    let about = &body["about"];
    out.push_str(&format!(
        "iorelay {} ({}), pid {}, up {}s, {}\n",
        about["version"].as_str().unwrap_or("?"),
        about["environment"].as_str().unwrap_or("?"),
        body["pid"],
        body["uptime_seconds"],
        if body["serving"] == Value::Bool(true) {
            "serving"
        } else {
            "not serving"
        }
    ));
    out.push_str(&format!("sessions: {}\n", body["sessions"]));
    if let Some(namespaces) = body["namespaces"].as_object() {
        for (name, ns) in namespaces {
            out.push_str(&format!(
                "namespace {name}: {} connections, {} rooms\n",
                ns["connections"], ns["rooms"]
            ));
        }
    }
    out
}

/// Human-readable `iorelay rooms`.
pub fn render_rooms(body: &Value) -> String {
    let mut out = String::new();
    if let Some(namespaces) = body["namespaces"].as_object() {
        for (name, rooms) in namespaces {
            let rooms = rooms.as_array().map(Vec::as_slice).unwrap_or_default();
            out.push_str(&format!("{name} ({} rooms)\n", rooms.len()));
            for r in rooms {
                out.push_str(&format!(
                    "  {:>6}  {}\n",
                    r["count"].as_u64().unwrap_or(0),
                    printable(r["room"].as_str().unwrap_or("?"))
                ));
            }
        }
    }
    out
}

/// A client-chosen name (room, user) as the terminal may see it: control characters
/// (ANSI and OSC escapes, newlines) are shown escaped, never sent to the terminal.
pub fn printable(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Human-readable `iorelay sockets`: one line each.
pub fn render_sockets(body: &Value) -> String {
    let sockets = body["sockets"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut out = format!("{} sockets\n", sockets.len());
    for s in sockets {
        let rooms: Vec<&str> = s["rooms"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        out.push_str(&format!(
            "  {}  {}  {}  {}  {}  since {}  rooms: {}\n",
            s["id"].as_str().unwrap_or("?"),
            s["namespace"].as_str().unwrap_or("?"),
            printable(s["user"].as_str().unwrap_or("-")),
            s["transport"].as_str().unwrap_or("?"),
            s["address"].as_str().unwrap_or("?"),
            s["connected_at"].as_str().unwrap_or("?"),
            printable(&rooms.join(", "))
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_rooms() {
        let body = json!({"ok":true,"namespaces":{"/":[{"room":"lobby","count":2}]}});
        assert_eq!(render_rooms(&body), "/ (1 rooms)\n       2  lobby\n");
    }

    #[test]
    fn client_chosen_names_cannot_drive_the_terminal() {
        let body =
            json!({"ok":true,"namespaces":{"/":[{"room":"a\u{1b}]0;pwned\u{7}\nb","count":1}]}});
        let out = render_rooms(&body);
        assert!(!out.contains('\u{1b}') && !out.contains('\u{7}'), "{out:?}");
        assert!(out.contains("a\\u{1b}]0;pwned\\u{7}\\nb"), "{out:?}");
        assert_eq!(
            out.lines().count(),
            2,
            "no line break from the name: {out:?}"
        );
    }

    #[test]
    fn calls_name_their_route() {
        assert_eq!(Call::Status.path(), "/api/v1/status");
        assert_eq!(Call::Reload.method(), "POST");
        let rooms = Call::Rooms {
            namespace: Some("/chat room&x".to_owned()),
        };
        assert_eq!(rooms.path(), "/api/v1/rooms?namespace=/chat%20room%26x");
        let sockets = Call::Sockets {
            namespace: None,
            room: Some("a b".to_owned()),
        };
        assert_eq!(sockets.path(), "/api/v1/sockets?room=a%20b");
        assert_eq!(sockets.method(), "GET");
        let refused = Answer {
            status: 404,
            body: json!({"ok": false, "error": "no namespace"}),
        };
        assert_eq!(
            rooms.render(&refused),
            Printed::Err("{\"ok\":false,\"error\":\"no namespace\"}\n".to_owned())
        );
    }

    fn parse(args: &[&str]) -> Command {
        #[derive(Debug, clap::Parser)]
        struct Cli {
            #[command(subcommand)]
            command: Command,
        }
        let argv = std::iter::once("iorelay").chain(args.iter().copied());
        <Cli as clap::Parser>::try_parse_from(argv)
            .map(|c| c.command)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    #[test]
    fn emit_takes_json_arguments_and_targets() {
        let (call, _) = parse(&[
            "emit",
            "-n",
            "/chat",
            "--room",
            "a",
            "--room",
            "b",
            "--except",
            "c",
            "news",
            r#"{"x":1}"#,
            "42",
            "plain words",
        ])
        .call();
        let Call::Emit(emit) = &call else {
            panic!("{call:?}")
        };
        assert_eq!(emit.namespace, "/chat");
        assert_eq!(emit.rooms, ["a", "b"]);
        assert_eq!(emit.except, ["c"]);
        assert_eq!(
            emit.args,
            [json!({"x": 1}), json!(42), json!("plain words")]
        );
        assert_eq!(call.path(), "/api/v1/emit");
        let body = call.body().unwrap();
        assert_eq!(body["event"], "news");
        let answer = Answer {
            status: 200,
            body: json!({"ok": true, "recipients": 3}),
        };
        assert_eq!(
            call.render(&answer),
            Printed::Out("delivered to 3 sockets\n".into())
        );
    }

    #[test]
    fn disconnect_is_one_socket_or_rooms() {
        let (call, _) = parse(&["disconnect", "abc/d"]).call();
        assert_eq!(call.path(), "/api/v1/sockets/abc%2Fd/disconnect");
        assert_eq!(call.body(), Some(json!({"namespace": "/"})));
        let (call, _) = parse(&["disconnect", "-n", "/x", "--room", "r"]).call();
        assert_eq!(call.path(), "/api/v1/disconnect");
        assert_eq!(
            call.body(),
            Some(json!({"namespace": "/x", "rooms": ["r"]}))
        );
        let (call, _) = parse(&["disconnect", "--all"]).call();
        assert_eq!(call.body(), Some(json!({"namespace": "/", "rooms": []})));
    }

    #[test]
    fn the_token_comes_from_the_flag_the_variable_the_file_or_the_config() {
        let mut config = Config::default();
        assert_eq!(token(None, None, &config), None);
        config.api.tokens = vec!["inline-token-0123456789".into()];
        assert_eq!(
            token(None, None, &config).as_deref(),
            Some("inline-token-0123456789")
        );
        let dir = std::env::temp_dir().join(format!("iorelay-ops-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("api-token");
        std::fs::write(&file, "# comment\nfile-token-0123456789\n").unwrap();
        config.api.token_file = Some(file);
        assert_eq!(
            token(None, None, &config).as_deref(),
            Some("file-token-0123456789")
        );
        assert_eq!(
            token(None, Some("var".into()), &config).as_deref(),
            Some("var")
        );
        assert_eq!(
            token(Some("flag".into()), Some("var".into()), &config).as_deref(),
            Some("flag")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_refused_token_says_how_to_give_one() {
        let answer = Answer {
            status: 401,
            body: json!({"ok": false, "error": "a valid bearer token is required"}),
        };
        let Printed::Err(text) = Call::Status.render(&answer) else {
            panic!("an error")
        };
        assert!(
            text.contains("--token") && text.contains(TOKEN_VAR),
            "{text}"
        );
    }
}
