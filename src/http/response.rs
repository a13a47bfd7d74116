//! Responses every listener builds the same way. A leaf: the routing in `http` and the
//! sites under it ([`admin`](super::admin), [`files`](super::files)) import it, it
//! imports none of them, so that no arrow between those files points back.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode, header};

/// A short text response.
pub fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("static response is valid")
}
