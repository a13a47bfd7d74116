//! The ops subcommands' side of the admin API: `iorelay status`, `reload`, `rooms`,
//! `sockets`, `emit` and `disconnect` ([`commands`]) send one HTTP/1.1 request to a
//! running daemon's admin listener and print the answer. The request goes through
//! hyper's HTTP/1.1 client on a single-threaded tokio runtime made for it (the command
//! line is otherwise synchronous), bounded in time and in size: the admin listener is
//! local and answers small JSON documents.

pub mod commands;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{ACCEPT, AUTHORIZATION, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

/// How long connecting may take, and then how long the answer may take (a reload waits
/// for the daemon's loop).
const TIMEOUT: Duration = Duration::from_secs(15);
/// Largest answer read.
const MAX_RESPONSE: usize = 16 << 20;

/// Why a request to the daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No daemon answered.
    #[error(
        "cannot reach the daemon's admin listener at {addr}: {source} (is iorelay running, and is server.admin_listen right?)"
    )]
    Connect {
        /// The address tried.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The admin listener is configured on port 0, so its address is unknown.
    #[error("server.admin_listen is {0}: pass the daemon's admin address with --admin")]
    UnknownPort(SocketAddr),
    /// The daemon took the connection but did not answer in time.
    #[error("the daemon at {addr} did not answer within {}s", .after.as_secs())]
    Timeout {
        /// The address asked.
        addr: SocketAddr,
        /// How long we waited.
        after: Duration,
    },
    /// The request could not be built (a method or path the caller got wrong).
    #[error("cannot build the request: {0}")]
    Request(#[from] hyper::http::Error),
    /// The answer was not HTTP, or the connection broke.
    #[error("unexpected answer from the daemon: {0}")]
    Http(#[from] hyper::Error),
    /// The body was larger than [`MAX_RESPONSE`].
    #[error("unexpected answer from the daemon: body over {MAX_RESPONSE} bytes")]
    TooLarge,
    /// The body was not JSON.
    #[error("unexpected answer from the daemon: status {status}, body is not JSON: {source}")]
    NotJson {
        /// The HTTP status that came with it.
        status: u16,
        /// Why it did not parse.
        source: serde_json::Error,
    },
    /// The client's runtime could not be started.
    #[error("cannot start the HTTP client: {0}")]
    Runtime(std::io::Error),
}

/// An answer: HTTP status and JSON body.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status code.
    pub status: u16,
    /// The JSON body.
    pub body: Value,
}

/// One request to the admin listener.
#[derive(Debug, Clone, PartialEq)]
pub struct Ask<'a> {
    /// `GET` or `POST`.
    pub method: &'a str,
    /// Path and query.
    pub path: &'a str,
    /// The bearer token, if any.
    pub token: Option<&'a str>,
    /// A JSON body, if any.
    pub body: Option<&'a Value>,
}

/// Send `ask` to the admin listener at `addr`.
pub fn request(addr: SocketAddr, ask: &Ask<'_>) -> Result<Answer, Error> {
    request_within(addr, ask, TIMEOUT)
}

fn request_within(addr: SocketAddr, ask: &Ask<'_>, timeout: Duration) -> Result<Answer, Error> {
    if addr.port() == 0 {
        return Err(Error::UnknownPort(addr));
    }
    let body = ask.body.map(Value::to_string).unwrap_or_default();
    let mut request = Request::builder()
        .method(Method::from_bytes(ask.method.as_bytes()).map_err(hyper::http::Error::from)?)
        .uri(ask.path)
        .header(HOST, addr.to_string())
        .header(ACCEPT, "application/json")
        .header(CONTENT_LENGTH, body.len())
        .header(CONNECTION, "close");
    if ask.body.is_some() {
        request = request.header(CONTENT_TYPE, "application/json");
    }
    if let Some(token) = ask.token {
        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request.body(Full::new(Bytes::from(body)))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(Error::Runtime)?;
    runtime.block_on(async {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(connected) => connected.map_err(|source| Error::Connect { addr, source })?,
            Err(_) => {
                let source = std::io::ErrorKind::TimedOut.into();
                return Err(Error::Connect { addr, source });
            }
        };
        tokio::time::timeout(timeout, exchange(stream, request))
            .await
            .map_err(|_| Error::Timeout {
                addr,
                after: timeout,
            })?
    })
}

/// One request on a fresh connection, and its answer read whole.
async fn exchange(stream: TcpStream, request: Request<Full<Bytes>>) -> Result<Answer, Error> {
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // The connection future does the reading and writing; a failure there reaches us
    // through `send_request` or the body, so its own result says nothing new.
    tokio::spawn(connection);
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    // Read frame by frame, so that the bound and the connection's failure are told
    // apart by type, not by downcasting a boxed error.
    let mut incoming = response.into_body();
    let mut body = Vec::new();
    while let Some(frame) = incoming.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue; // trailers
        };
        if body.len() + data.len() > MAX_RESPONSE {
            return Err(Error::TooLarge);
        }
        body.extend_from_slice(&data);
    }
    let body = serde_json::from_slice(&body).map_err(|source| Error::NotJson { status, source })?;
    Ok(Answer { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    use serde_json::json;

    fn get(path: &str) -> Ask<'_> {
        Ask {
            method: "GET",
            path,
            token: None,
            body: None,
        }
    }

    fn post<'a>(path: &'a str, body: Option<&'a Value>) -> Ask<'a> {
        Ask {
            method: "POST",
            path,
            token: Some("0123456789abcdef"),
            body,
        }
    }

    /// A one-shot daemon stand-in on 127.0.0.1:0: reads one request head, writes
    /// `answer` verbatim (unless `None`: then it keeps the connection silent until the
    /// client leaves). Returns its address and the request head it received.
    fn daemon(answer: Option<&'static str>) -> (SocketAddr, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(&stream);
            let mut head = String::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                head.push_str(&line);
                if line == "\r\n" || line.is_empty() {
                    break;
                }
            }
            match answer {
                Some(answer) => (&stream).write_all(answer.as_bytes()).unwrap(),
                None => {
                    let mut rest = String::new();
                    let _ = reader.read_line(&mut rest);
                }
            }
            head
        });
        (addr, handle)
    }

    #[test]
    fn reads_a_chunked_answer() {
        let (addr, server) = daemon(Some(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n\
             4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n",
        ));
        let answer = request(addr, &get("/api/v1/status")).unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, serde_json::json!({"a": 1}));
        let head = server.join().unwrap().to_ascii_lowercase();
        assert!(
            head.starts_with("get /api/v1/status http/1.1\r\n"),
            "{head}"
        );
        assert!(head.contains(&format!("host: {addr}\r\n")), "{head}");
        assert!(head.contains("accept: application/json\r\n"), "{head}");
    }

    #[test]
    fn keeps_an_error_status_with_its_body() {
        let (addr, server) = daemon(Some(
            "HTTP/1.1 409 Conflict\r\ncontent-length: 27\r\nconnection: close\r\n\r\n\
             {\"ok\":false,\"error\":\"busy\"}",
        ));
        let answer = request(addr, &post("/api/v1/reload", Some(&json!({"a": 1})))).unwrap();
        assert_eq!(answer.status, 409);
        assert_eq!(answer.body["error"], "busy");
        let head = server.join().unwrap().to_ascii_lowercase();
        assert!(
            head.starts_with("post /api/v1/reload http/1.1\r\n"),
            "{head}"
        );
        assert!(head.contains("content-length: 7\r\n"), "{head}");
        assert!(
            head.contains("content-type: application/json\r\n"),
            "{head}"
        );
        assert!(
            head.contains("authorization: bearer 0123456789abcdef\r\n"),
            "{head}"
        );
    }

    #[test]
    fn a_body_that_is_not_json_is_named_with_its_status() {
        let (addr, _server) = daemon(Some(
            "HTTP/1.1 502 Bad Gateway\r\ncontent-length: 4\r\n\r\noops",
        ));
        let err = request(addr, &get("/api/v1/status")).unwrap_err();
        assert!(matches!(err, Error::NotJson { status: 502, .. }), "{err:?}");
    }

    #[test]
    fn an_answer_cut_short_is_an_http_error() {
        let (addr, _server) = daemon(Some(
            "HTTP/1.1 200 OK\r\ncontent-length: 100\r\nconnection: close\r\n\r\n{\"ok\"",
        ));
        let err = request(addr, &get("/api/v1/status")).unwrap_err();
        assert!(matches!(err, Error::Http(_)), "{err:?}");
    }

    #[test]
    fn an_answer_over_the_bound_is_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            // The request first: closing with it unread would reset the connection.
            let mut request = [0u8; 1024];
            let _ = std::io::Read::read(&mut stream, &mut request);
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
                2 * MAX_RESPONSE
            );
            let chunk = vec![b' '; 64 << 10];
            // Twice the bound, or until the client stops reading.
            let _ = stream.write_all(head.as_bytes()).and_then(|()| {
                (0..2 * MAX_RESPONSE / chunk.len()).try_for_each(|_| stream.write_all(&chunk))
            });
        });
        let err = request(addr, &get("/api/v1/status")).unwrap_err();
        assert!(matches!(err, Error::TooLarge), "{err:?}");
    }

    #[test]
    fn garbage_is_not_http() {
        let (addr, _server) = daemon(Some("SSH-2.0-OpenSSH\r\n\r\n"));
        let err = request(addr, &get("/api/v1/status")).unwrap_err();
        assert!(matches!(err, Error::Http(_)), "{err:?}");
    }

    #[test]
    fn a_silent_daemon_times_out() {
        let (addr, _server) = daemon(None);
        let err = request_within(addr, &get("/"), Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    }

    #[test]
    fn nobody_listening_is_a_connect_error() {
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let err = request(addr, &get("/")).unwrap_err();
        assert!(matches!(err, Error::Connect { .. }), "{err:?}");
        assert!(err.to_string().contains("is iorelay running"));
        let zero = "127.0.0.1:0".parse().unwrap();
        assert!(matches!(
            request(zero, &get("/")),
            Err(Error::UnknownPort(_))
        ));
    }
}
