//! The ops subcommands' side of the admin API: `iorelay status`, `reload` and `rooms` send
//! one HTTP/1.1 request to a running daemon's admin listener and print the answer. A tiny
//! blocking client (the admin listener is local and answers small JSON documents).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

/// How long a request to the daemon may take (a reload waits for the daemon's loop).
const TIMEOUT: Duration = Duration::from_secs(15);
/// Largest answer read.
const MAX_RESPONSE: u64 = 16 << 20;

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
    /// The answer was not HTTP or not JSON.
    #[error("unexpected answer from the daemon: {0}")]
    Protocol(String),
}

/// An answer: HTTP status and JSON body.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status code.
    pub status: u16,
    /// The JSON body.
    pub body: Value,
}

/// Send `method path` to the admin listener at `addr`.
pub fn request(addr: SocketAddr, method: &str, path: &str) -> Result<Answer, Error> {
    if addr.port() == 0 {
        return Err(Error::UnknownPort(addr));
    }
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)
        .map_err(|source| Error::Connect { addr, source })?;
    let io = |e: std::io::Error| Error::Protocol(e.to_string());
    stream.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .map_err(io)?;
    let mut raw = Vec::new();
    stream
        .take(MAX_RESPONSE)
        .read_to_end(&mut raw)
        .map_err(io)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| Error::Protocol("no HTTP header".into()))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::Protocol(format!("bad status line: {head:.60}")))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    let body = serde_json::from_str(&body)
        .map_err(|e| Error::Protocol(format!("status {status}, body is not JSON: {e}")))?;
    Ok(Answer { status, body })
}

/// Undo chunked transfer encoding (tolerantly: this is our own daemon's answer).
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
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
                    r["room"].as_str().unwrap_or("?")
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dechunks() {
        assert_eq!(dechunk("4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n"), "{\"a\":1}");
    }

    #[test]
    fn renders_rooms() {
        let body = serde_json::json!({"ok":true,"namespaces":{"/":[{"room":"lobby","count":2}]}});
        assert_eq!(render_rooms(&body), "/ (1 rooms)\n       2  lobby\n");
    }
}
