//! A directory of static files served at `/`: the built demo page (`demo-web/dist`) or whatever
//! `--web-dir` names. Without one, `/` is the built-in page.
//!
//! tower-http's [`ServeDir`] does the serving (types, `HEAD`, ranges, `Last-Modified` and 304s,
//! streaming). In front of it, only plain relative paths are let through: no `..`, no hidden
//! files, no percent-escapes, so a request can never leave the directory, whatever the file
//! server would decode. Anything not found answers 404 with an empty body, like every other
//! unknown path of the relay.

use std::path::{Path, PathBuf};

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower::ServiceExt as _;
use tower_http::services::{ServeDir, ServeFile};

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
    let index = ServeFile::new(dir.join("index.html"));
    // Directories are not listed nor mapped to an index.html of their own: 404.
    let files = ServeDir::new(dir).append_index_html_on_directories(false);
    Router::new()
        .route(
            "/",
            get(move |request: Request| serve(index.clone(), request)),
        )
        .fallback(move |request: Request| {
            let servable = matches!(*request.method(), Method::GET | Method::HEAD)
                && relative_path(request.uri().path()).is_some();
            let files = files.clone();
            async move {
                if servable {
                    serve(files, request).await
                } else {
                    StatusCode::NOT_FOUND.into_response()
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

/// Serves `request` from `files`, with the relay's caching and type headers on what is found.
async fn serve<S>(files: S, request: Request) -> Response
where
    S: tower::Service<Request, Error = std::convert::Infallible>,
    S::Response: IntoResponse,
{
    // Bundlers put content-hashed names under assets/: those never change. Everything else
    // (index.html above all) is revalidated, so a rebuilt page shows up on reload.
    let cache = if request.uri().path().starts_with("/assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let Ok(response) = files.oneshot(request).await;
    let mut response = response.into_response();
    let status = response.status();
    if !(status.is_success() || status == StatusCode::NOT_MODIFIED) {
        return response;
    }
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // The page's text files are UTF-8; saying so spares browsers a guess.
    if let Some(with_charset) = h
        .get(header::CONTENT_TYPE)
        .and_then(|t| t.to_str().ok())
        .filter(|t| t.starts_with("text/") && !t.contains(';'))
        .and_then(|t| HeaderValue::try_from(format!("{t}; charset=utf-8")).ok())
    {
        h.insert(header::CONTENT_TYPE, with_charset);
    }
    response
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

    #[tokio::test]
    async fn wasm_and_scripts_get_their_types() {
        let page = Page::new("types");
        std::fs::write(page.0.join("LICENSE"), "MIT").unwrap();
        std::fs::write(page.0.join("assets/style.css"), "p{}").unwrap();
        let app = relay(Some(&page.0), false);
        for (path, expected) in [
            ("/assets/sdk_bg.wasm", "application/wasm"),
            ("/assets/app-1a2b.js", "text/javascript; charset=utf-8"),
            ("/assets/style.css", "text/css; charset=utf-8"),
            ("/index.html", "text/html; charset=utf-8"),
            ("/LICENSE", "application/octet-stream"),
        ] {
            let (status, ct, _, _) = get(&app, path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(ct.as_deref(), Some(expected), "{path}");
        }
    }

    #[tokio::test]
    async fn revalidation_and_methods() {
        let page = Page::new("revalidate");
        let app = relay(Some(&page.0), false);
        let path = "/assets/app-1a2b.js";
        let send = |request: axum::http::request::Builder| {
            app.clone().oneshot(request.body(Body::empty()).unwrap())
        };
        let res = send(Request::get(path)).await.unwrap();
        let modified = res.headers()[header::LAST_MODIFIED].clone();
        let res = send(Request::get(path).header(header::IF_MODIFIED_SINCE, modified))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(
            res.headers()[header::CACHE_CONTROL],
            "public, max-age=31536000, immutable"
        );
        // Files are read, never written: other methods find nothing there.
        let res = send(Request::post(path)).await.unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
    }
}
