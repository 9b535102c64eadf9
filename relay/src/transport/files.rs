//! A directory of static files served at `/`: the built demo page (`demo-web/dist`) or whatever
//! `--web-dir` names. Without one, `/` is the built-in page.
//!
//! Only plain relative paths are served: no `..`, no hidden files, no percent-escapes, so a
//! request can never leave the directory. Anything not found answers 404 with an empty body, like
//! every other unknown path of the relay.

use std::path::{Path, PathBuf};

use axum::Router;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::config::Config;
use crate::state::AppState;

/// Where `runwire demo` finds its page when no `--web-dir` is given, relative to the working
/// directory (the repository root for `cargo run`).
pub const DEMO_WEB_DIR: &str = "demo-web/dist";

/// The directory to serve at `/`, if any: `--web-dir`, or with `--demo` the built demo page when
/// it exists (looked up from the working directory, then from the source tree the relay was built
/// in).
pub fn web_dir(config: &Config) -> Option<PathBuf> {
    if let Some(dir) = &config.web_dir {
        return Some(dir.clone());
    }
    if !config.demo {
        return None;
    }
    [
        PathBuf::from(DEMO_WEB_DIR),
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(DEMO_WEB_DIR),
    ]
    .into_iter()
    .find(|d| d.join("index.html").is_file())
}

/// Routes serving `dir`: `/` is its `index.html`, other paths its files.
pub fn routes(dir: PathBuf) -> Router<AppState> {
    let index_dir = dir.clone();
    Router::new()
        .route(
            "/",
            get(move || {
                let dir = index_dir.clone();
                async move { serve(&dir, "index.html").await }
            }),
        )
        .fallback(move |uri: Uri| {
            let dir = dir.clone();
            async move {
                match relative_path(uri.path()) {
                    Some(rel) => serve(&dir, &rel).await,
                    None => StatusCode::NOT_FOUND.into_response(),
                }
            }
        })
}

/// The file path a request path names inside the directory, or `None` when it could escape it
/// or names nothing servable.
fn relative_path(path: &str) -> Option<String> {
    let rel = path.strip_prefix('/')?;
    if rel.is_empty() || rel.len() > 512 {
        return None;
    }
    let ok = rel.split('/').all(|seg| {
        !seg.is_empty()
            && !seg.starts_with('.')
            && seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'@'))
    });
    ok.then(|| rel.to_owned())
}

async fn serve(dir: &Path, rel: &str) -> Response {
    let path = dir.join(rel);
    // Pages are small; reading one whole file on the blocking pool keeps the runtime free.
    let read = tokio::task::spawn_blocking(move || {
        if std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            std::fs::read(&path).ok()
        } else {
            None
        }
    });
    let Ok(Some(body)) = read.await else {
        return StatusCode::NOT_FOUND.into_response();
    };
    // Bundlers put content-hashed names under assets/: those never change. Everything else
    // (index.html above all) is revalidated, so a rebuilt page shows up on reload.
    let cache = if rel.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(content_type(rel)),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body,
    )
        .into_response()
}

fn content_type(rel: &str) -> &'static str {
    match rel.rsplit_once('.').map_or("", |(_, ext)| ext) {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        // WebAssembly.instantiateStreaming insists on this type.
        "wasm" => "application/wasm",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use axum::body::{Body, to_bytes};
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;
    use crate::auth::Clock;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    /// A directory with a small built page, removed on drop.
    struct Page(PathBuf);

    impl Page {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("runwire-files-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("assets")).unwrap();
            std::fs::write(
                dir.join("index.html"),
                "<!doctype html><title>built page</title>",
            )
            .unwrap();
            std::fs::write(dir.join("assets/app-1a2b.js"), "console.log(1)").unwrap();
            std::fs::write(dir.join("assets/sdk_bg.wasm"), b"\0asm\x01\0\0\0").unwrap();
            std::fs::write(dir.join(".secret"), "no").unwrap();
            Self(dir)
        }
    }

    impl Drop for Page {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn relay(web_dir: Option<&Path>, demo: bool) -> Router {
        let mut config = Config::with_secret(SECRET);
        config.web_dir = web_dir.map(Path::to_path_buf);
        config.demo = demo;
        crate::app(AppState::new(config, Clock::System).unwrap())
    }

    async fn get(
        app: &Router,
        path: &str,
    ) -> (StatusCode, Option<String>, Option<String>, Vec<u8>) {
        let res = app
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let header = |h| {
            res.headers()
                .get(h)
                .map(|v: &HeaderValue| v.to_str().unwrap().to_owned())
        };
        let (ct, cache) = (header(header::CONTENT_TYPE), header(header::CACHE_CONTROL));
        let status = res.status();
        let body = to_bytes(res.into_body(), 1 << 20).await.unwrap().to_vec();
        (status, ct, cache, body)
    }

    #[tokio::test]
    async fn web_dir_replaces_the_built_in_page() {
        let page = Page::new("serve");
        let app = relay(Some(&page.0), false);

        let (status, ct, cache, body) = get(&app, "/").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ct.as_deref(), Some("text/html; charset=utf-8"));
        assert_eq!(cache.as_deref(), Some("no-cache"));
        assert_eq!(body, b"<!doctype html><title>built page</title>");

        let (status, ct, cache, body) = get(&app, "/assets/app-1a2b.js").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ct.as_deref(), Some("text/javascript; charset=utf-8"));
        assert_eq!(
            cache.as_deref(),
            Some("public, max-age=31536000, immutable")
        );
        assert_eq!(body, b"console.log(1)");

        let (status, ct, _, _) = get(&app, "/assets/sdk_bg.wasm").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ct.as_deref(), Some("application/wasm"));

        // Missing files, hidden files, directories and escapes: 404 with an empty body.
        for path in [
            "/assets/missing.js",
            "/.secret",
            "/assets",
            "/assets/../index.html",
            "/%2e%2e/x",
        ] {
            let (status, _, _, body) = get(&app, path).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            assert!(body.is_empty(), "{path}");
        }

        // The relay's own routes are untouched.
        let (status, _, _, body) = get(&app, "/health").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            String::from_utf8(body)
                .unwrap()
                .contains("\"status\":\"ok\"")
        );
    }

    #[tokio::test]
    async fn without_a_web_dir_the_built_in_page_stays() {
        let app = relay(None, false);
        let (status, ct, _, body) = get(&app, "/").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ct.as_deref(), Some("text/html; charset=utf-8"));
        assert_eq!(body, include_bytes!("../../static/index.html"));
        let (status, _, _, body) = get(&app, "/assets/app.js").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.is_empty());
    }

    #[test]
    fn a_web_dir_without_index_html_is_refused() {
        let page = Page::new("refuse");
        let mut config = Config::with_secret(SECRET);
        config.web_dir = Some(page.0.join("assets"));
        let err = config.validate().unwrap_err().to_string();
        assert!(err.starts_with("--web-dir "), "{err}");
        config.web_dir = Some(page.0.clone());
        assert!(config.validate().is_ok());
    }

    #[test]
    fn an_explicit_web_dir_wins_and_serve_has_none_by_default() {
        let mut config = Config::with_secret(SECRET);
        assert_eq!(web_dir(&config), None);
        config.web_dir = Some(PathBuf::from("/srv/page"));
        config.demo = true;
        assert_eq!(web_dir(&config), Some(PathBuf::from("/srv/page")));
    }

    #[test]
    fn relative_paths_stay_inside() {
        assert_eq!(
            relative_path("/assets/index-3f2a.js").as_deref(),
            Some("assets/index-3f2a.js")
        );
        assert_eq!(
            relative_path("/favicon.svg").as_deref(),
            Some("favicon.svg")
        );
        for bad in [
            "/",
            "/../secret",
            "/assets/../../etc/passwd",
            "/.env",
            "/assets//x.js",
            "/a%2e%2e/x",
            "/a\\b",
            "relative",
        ] {
            assert_eq!(relative_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn wasm_and_scripts_get_their_types() {
        assert_eq!(content_type("assets/x_bg.wasm"), "application/wasm");
        assert_eq!(
            content_type("assets/index.js"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("LICENSE"), "application/octet-stream");
    }
}
