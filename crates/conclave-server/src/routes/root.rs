//! `/`: until the web app is built into the binary, a short page saying the API is up.

use axum::response::Html;

pub async fn index() -> Html<&'static str> {
    Html(concat!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Conclave</title>",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        "<style>body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;color:#1f2328}",
        "code{background:#f3f4f6;padding:.1rem .3rem;border-radius:4px}</style></head><body>",
        "<h1>Conclave is running</h1>",
        "<p>The API is up (version ", env!("CARGO_PKG_VERSION"), "). The web app is not part of this build yet.</p>",
        "<ul><li>API description: <a href=\"/api/v1/openapi.json\"><code>/api/v1/openapi.json</code></a></li>",
        "<li>Health: <a href=\"/healthz\"><code>/healthz</code></a>, readiness: <a href=\"/readyz\"><code>/readyz</code></a></li>",
        "<li>Getting started: the project's <code>README.md</code> shows how to sign up, create an agent and talk to it with curl.</li></ul>",
        "</body></html>"
    ))
}
