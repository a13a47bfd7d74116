//! Static files: the built-in demo page, or a configured `static_dir`. Paths are resolved
//! component by component; anything that could leave the directory is a 404.
//!
//! A URL path is percent-decoded as a whole (`percent-encoding`), never split at `&`,
//! `=` or `+`: those are ordinary characters in a file name (`a&b.txt`, `c++.html`).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
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
/// Decoding comes first, so that `%2e%2e` and `%2f` are judged as the `..` and `/` they
/// stand for. The decoded bytes name the file as they are (Unix file names are bytes).
fn resolve(dir: &Path, path: &str) -> Option<PathBuf> {
    let decoded: Vec<u8> = percent_encoding::percent_decode_str(path).collect();
    if decoded.contains(&0) {
        // No file name holds a NUL; the OS would refuse it anyway.
        return None;
    }
    let mut out = dir.to_path_buf();
    for part in Path::new(OsStr::from_bytes(&decoded)).components() {
        match part {
            Component::Normal(p) => out.push(p),
            // The leading `/` of every URL path, and `.`.
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
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
        assert_eq!(resolve(d, "/a/%2e%2E%2fx"), None);
        assert_eq!(resolve(d, "/a%00.txt"), None);
    }

    #[test]
    fn names_are_decoded_whole() {
        let d = Path::new("/srv");
        let file = |name: &str| Some(PathBuf::from(format!("/srv/{name}")));
        // `&`, `=` and `+` are part of the name, not query syntax.
        assert_eq!(resolve(d, "/a&b.txt"), file("a&b.txt"));
        assert_eq!(resolve(d, "/a%26b.txt"), file("a&b.txt"));
        assert_eq!(resolve(d, "/k=v&x=y"), file("k=v&x=y"));
        assert_eq!(resolve(d, "/c++.html"), file("c++.html"));
        assert_eq!(resolve(d, "/a%20b%2Fc"), file("a b/c"));
        // A malformed escape stays as written.
        assert_eq!(resolve(d, "/100%.txt"), file("100%.txt"));
        assert_eq!(resolve(d, "/caf%C3%A9"), file("café"));
    }

    /// A directory under the system temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("iorelay-files-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    async fn body_of(response: Response<Full<Bytes>>) -> (StatusCode, Bytes) {
        use http_body_util::BodyExt;
        let status = response.status();
        (
            status,
            response.into_body().collect().await.unwrap().to_bytes(),
        )
    }

    #[tokio::test]
    async fn a_file_with_an_ampersand_is_served() {
        let dir = TempDir::new("amp");
        std::fs::write(dir.0.join("a&b.txt"), "both\n").unwrap();
        for path in ["/a&b.txt", "/a%26b.txt"] {
            let (status, body) = body_of(serve(Some(&dir.0), path).await).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(&body[..], b"both\n", "{path}");
        }
        let (status, _) = body_of(serve(Some(&dir.0), "/a").await).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}
