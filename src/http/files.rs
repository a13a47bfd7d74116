//! Static files: the built-in demo page, or a configured `static_dir`. Paths are resolved
//! component by component; anything that could leave the directory is a 404.

use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode, header};

use super::response::plain;

/// The built-in demo chat page, served at `/` when no `static_dir` is configured.
const DEMO_PAGE: &str = include_str!("../../static/index.html");

/// Largest static file served, so that a stray big file cannot exhaust memory.
const MAX_FILE: u64 = 16 << 20;

/// Serve `path` from `dir`, or the demo page when `dir` is `None`.
pub async fn serve(dir: Option<&Path>, path: &str) -> Response<Full<Bytes>> {
    let Some(dir) = dir else {
        return match path {
            "/" | "/index.html" => file_response(
                "text/html; charset=utf-8",
                Bytes::from_static(DEMO_PAGE.as_bytes()),
            ),
            _ => plain(StatusCode::NOT_FOUND, "not found\n"),
        };
    };
    let Some(mut file) = resolve(dir, path) else {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    };
    if tokio::fs::metadata(&file).await.is_ok_and(|m| m.is_dir()) {
        file.push("index.html");
    }
    match tokio::fs::metadata(&file).await {
        Ok(m) if m.is_file() && m.len() <= MAX_FILE => {}
        _ => return plain(StatusCode::NOT_FOUND, "not found\n"),
    }
    match tokio::fs::read(&file).await {
        Ok(bytes) => file_response(content_type(&file), Bytes::from(bytes)),
        Err(err) => {
            tracing::debug!(file = %file.display(), error = %err, "static file unreadable");
            plain(StatusCode::NOT_FOUND, "not found\n")
        }
    }
}

/// Map a URL path onto `dir`, refusing `..`, absolute parts and percent-escapes of them.
fn resolve(dir: &Path, path: &str) -> Option<PathBuf> {
    let decoded = crate::engine::server::parse_query(&format!("p={}", path.replace('+', "%2B")))
        .remove("p")?;
    let mut out = dir.to_path_buf();
    for part in Path::new(decoded.trim_start_matches('/')).components() {
        match part {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

fn content_type(file: &Path) -> &'static str {
    match file.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "application/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "ico" => "image/x-icon",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn file_response(ctype: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    Response::builder()
        .header(header::CONTENT_TYPE, ctype)
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Full::new(body))
        .expect("static response is valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside() {
        let d = Path::new("/srv");
        assert_eq!(resolve(d, "/a/b.js"), Some(PathBuf::from("/srv/a/b.js")));
        assert_eq!(resolve(d, "/"), Some(PathBuf::from("/srv")));
        assert_eq!(resolve(d, "/../etc/passwd"), None);
        assert_eq!(resolve(d, "/%2e%2e/etc/passwd"), None);
        assert_eq!(resolve(d, "/a/../../x"), None);
    }
}
