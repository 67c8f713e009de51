//! The dashboard's files, compiled into the binary (`server/dashboard/`), and the headers every
//! answer of the API listener carries.
//!
//! Any path outside `/api/` and `/assets/` answers the page itself, so every page has a URL
//! that reloads (`/nodes/samos/SIM001`, `/sql?q=…`); the page's script routes on it. Files are
//! revalidated by ETag (`Cache-Control: no-cache`), so an upgraded server never serves a stale
//! script. The Content Security Policy allows scripts, styles and connections from this origin
//! only: no inline script, no CDN, no framing.

use std::sync::LazyLock;

use axum::extract::Path as UrlPath;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        bytes: include_bytes!("../../dashboard/index.html"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../dashboard/app.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../dashboard/app.css"),
    },
    Asset {
        name: "uPlot.iife.min.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../dashboard/vendor/uPlot.iife.min.js"),
    },
    Asset {
        name: "uPlot.min.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../dashboard/vendor/uPlot.min.css"),
    },
    Asset {
        name: "LICENSE-uPlot",
        content_type: "text/plain; charset=utf-8",
        bytes: include_bytes!("../../dashboard/vendor/LICENSE-uPlot"),
    },
];

/// Each asset's ETag: a hash of its bytes (FNV-1a, 64 bits), quoted.
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| {
            let hash = a.bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
            });
            format!("\"{hash:016x}\"")
        })
        .collect()
});

fn serve(name: &str, headers: &HeaderMap) -> Response {
    let Some(i) = ASSETS.iter().position(|a| a.name == name) else {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    };
    let etag = &ETAGS[i];
    let cached = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == etag);
    let common = [
        (header::ETAG, etag.clone()),
        (header::CACHE_CONTROL, "no-cache".to_string()),
    ];
    if cached {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [(header::CONTENT_TYPE, ASSETS[i].content_type)],
        ASSETS[i].bytes,
    )
        .into_response()
}

/// `GET /assets/{file}`.
pub(super) async fn asset(UrlPath(name): UrlPath<String>, headers: HeaderMap) -> Response {
    serve(&name, &headers)
}

/// Every other GET outside `/api/`: the page, which routes on its URL.
pub(super) async fn page(uri: axum::http::Uri, headers: HeaderMap) -> Response {
    if uri.path().starts_with("/api/") {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({"error": format!("no API endpoint {}", uri.path())})),
        )
            .into_response();
    }
    serve("index.html", &headers)
}

/// Adds the security headers to every answer of the API listener.
pub(super) async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
             frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_revalidate_by_etag() {
        let first = serve("app.js", &HeaderMap::new());
        assert_eq!(first.status(), StatusCode::OK);
        let etag = first.headers()[header::ETAG].clone();
        let mut again = HeaderMap::new();
        again.insert(header::IF_NONE_MATCH, etag);
        assert_eq!(serve("app.js", &again).status(), StatusCode::NOT_MODIFIED);
        assert_eq!(
            serve("../Cargo.toml", &HeaderMap::new()).status(),
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn the_first_load_stays_under_300_kb() {
        let first_load: usize = [
            "index.html",
            "app.js",
            "app.css",
            "uPlot.iife.min.js",
            "uPlot.min.css",
        ]
        .iter()
        .map(|n| ASSETS.iter().find(|a| a.name == *n).unwrap().bytes.len())
        .sum();
        assert!(first_load < 300 * 1024, "{first_load} bytes");
    }
}
