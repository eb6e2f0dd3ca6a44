use serde_json::json;

use crate::helpers::{client, spawn_app};

async fn html(response: reqwest::Response, status: u16) -> String {
    assert_eq!(response.status().as_u16(), status);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    response.text().await.unwrap()
}

/// Every `<script` tag loads a file: no inline code (the CSP forbids it anyway).
fn assert_no_inline_scripts(page: &str) {
    for tag in page.split("<script").skip(1) {
        let open_tag = &tag[..tag.find('>').unwrap()];
        assert!(
            open_tag.contains("src=\"/static/"),
            "inline script: <script{open_tag}>"
        );
    }
}

#[tokio::test]
async fn home_lists_who_is_live_escaping_titles() {
    let app = spawn_app().await;
    let page = html(app.get(&client(), "/").await, 200).await;
    assert!(page.contains("Nobody is live"));

    let alice = app.user("alice").await;
    app.start_live(&alice, "<script>alert(1)</script> & friends")
        .await;
    let page = html(app.get(&client(), "/").await, 200).await;
    assert!(page.contains("href=\"/alice/live\""));
    assert!(
        page.contains("&#60;script&#62;alert(1)&#60;/script&#62; &#38; friends"),
        "{page}"
    );
    assert!(!page.contains("<script>alert(1)"));
    assert_no_inline_scripts(&page);
    // Signed-in navigation.
    let page = html(app.get(&alice, "/").await, 200).await;
    assert!(page.contains("href=\"/alice/start-live\"") && page.contains("data-action=\"logout\""));
}

#[tokio::test]
async fn account_pages_render_forms_wired_to_the_api() {
    let app = spawn_app().await;
    let signup = html(app.get(&client(), "/signup").await, 200).await;
    assert!(signup.contains("data-endpoint=\"/api/auth/signup\""));
    let login = html(app.get(&client(), "/login").await, 200).await;
    assert!(login.contains("data-endpoint=\"/api/auth/login\""));
    assert_no_inline_scripts(&signup);
    assert_no_inline_scripts(&login);
}

#[tokio::test]
async fn live_page_shows_state_and_mount_point() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let page = html(app.get(&client(), "/alice/live").await, 200).await;
    assert!(page.contains("id=\"player\"") && page.contains("data-state=\"offline\""));
    assert!(page.contains("src=\"/static/live-page.js\""));
    let live = app.start_live(&alice, "Show").await;
    let page = html(app.get(&client(), "/Alice/live").await, 200).await;
    assert!(page.contains(&format!("data-live-id=\"{}\"", live["id"])));
    assert!(page.contains("data-live=\"true\""));
    assert_no_inline_scripts(&page);
    html(app.get(&client(), "/ghost/live").await, 404).await;
    html(app.get(&client(), "/api-x!/live").await, 404).await;
}

#[tokio::test]
async fn start_live_page_is_for_its_owner_only() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;

    let response = app.get(&client(), "/alice/start-live").await;
    assert_eq!(response.status(), 303);
    assert_eq!(
        response.headers()["location"],
        "/login?next=/alice/start-live"
    );

    html(app.get(&bob, "/alice/start-live").await, 403).await;

    let page = html(app.get(&alice, "/alice/start-live").await, 200).await;
    assert!(
        page.contains("id=\"broadcast-page\"")
            && page.contains("src=\"/static/broadcast-page.js\"")
    );
    assert_no_inline_scripts(&page);
}

#[tokio::test]
async fn security_headers_everywhere() {
    let app = spawn_app().await;
    for path in ["/", "/login", "/api/lives", "/nope", "/healthz"] {
        let response = app.get(&client(), path).await;
        let headers = response.headers();
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"));
        assert!(
            csp.contains("http://media.privatehub.test:5050")
                && csp.contains("ws://media.privatehub.test:5050")
        );
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(headers["referrer-policy"], "same-origin");
    }
    // Also on refusals produced by middleware.
    let response = client()
        .post(app.url("/api/lives/start"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert!(response.headers().contains_key("content-security-policy"));
}

#[tokio::test]
async fn static_files_and_html_404() {
    let app = spawn_app().await;
    for (path, kind) in [
        ("/static/app.css", "text/css"),
        ("/static/app.js", "text/javascript"),
        ("/static/live-page.js", "text/javascript"),
        ("/static/broadcast-page.js", "text/javascript"),
        ("/static/chat-client.js", "text/javascript"),
        ("/static/media-client.js", "text/javascript"),
    ] {
        let response = app.get(&client(), path).await;
        assert_eq!(response.status(), 200, "{path}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind)
        );
    }
    html(app.get(&client(), "/static/missing.js").await, 404).await;
    html(app.get(&client(), "/static/../Cargo.toml").await, 404).await;
    html(app.get(&client(), "/a/b/c").await, 404).await;
    // Pages and probes answer HEAD too.
    for path in ["/", "/login", "/healthz", "/static/app.css"] {
        let response = client().head(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "HEAD {path}");
    }
}
