//! Engine.IO request errors and their official HTTP answers, in one place.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode, header};

/// Why an Engine.IO request was refused. Each maps to the reference server's status code
/// and JSON body (`{"code":N,"message":"…"}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// `transport` missing, unknown or not enabled.
    #[error("Transport unknown")]
    UnknownTransport,
    /// `sid` names no live session.
    #[error("Session ID unknown")]
    UnknownSid,
    /// A handshake must be a GET.
    #[error("Bad handshake method")]
    BadHandshakeMethod,
    /// Anything else malformed (wrong transport for the session, concurrent GETs, a body
    /// that does not parse, a WebSocket request without the upgrade headers).
    #[error("Bad request")]
    BadRequest,
    /// Refused by policy (origin, connection cap).
    #[error("Forbidden")]
    Forbidden,
    /// `EIO` other than 4.
    #[error("Unsupported protocol version")]
    UnsupportedProtocolVersion,
    /// A POST body larger than `max_payload`; the session survives.
    #[error("Payload too large")]
    PayloadTooLarge,
    /// The connection cap is reached.
    #[error("Too many connections")]
    Unavailable,
}

impl RequestError {
    /// The `code` field of the official error body.
    pub fn code(self) -> u8 {
        match self {
            RequestError::UnknownTransport => 0,
            RequestError::UnknownSid => 1,
            RequestError::BadHandshakeMethod => 2,
            RequestError::BadRequest | RequestError::PayloadTooLarge => 3,
            RequestError::Forbidden | RequestError::Unavailable => 4,
            RequestError::UnsupportedProtocolVersion => 5,
        }
    }

    /// The HTTP status.
    pub fn status(self) -> StatusCode {
        match self {
            RequestError::Forbidden => StatusCode::FORBIDDEN,
            RequestError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            RequestError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The full HTTP response.
    pub fn response(self) -> Response<Full<Bytes>> {
        let body = format!(r#"{{"code":{},"message":"{}"}}"#, self.code(), self);
        Response::builder()
            .status(self.status())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("static status and header are valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_have_official_bodies() {
        let r = RequestError::UnknownSid.response();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(RequestError::UnknownTransport.code(), 0);
        assert_eq!(RequestError::PayloadTooLarge.status().as_u16(), 413);
    }
}
