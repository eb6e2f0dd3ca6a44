//! Real nginx on loopback with a self-signed certificate, the shipped site in front of
//! (a) upstreams that echo what nginx forwarded and (b) the real services.

use privatehub_testkit::StackOptions;
use privatehub_testkit::nginx::{NginxFront, NginxPlan};

use crate::fake_upstream::{self, header};
use crate::support::{https_client, next_text, ping, tls_connect, wss_connect};

/// nginx in front of two echoing upstreams.
async fn front_with_fake_upstreams() -> NginxFront {
    let app = fake_upstream::start("app").await;
    let media = fake_upstream::start("media").await;
    NginxPlan::new().start_for_upstreams(app, media)
}

#[tokio::test]
async fn https_sites_route_by_name_and_forward_the_client() {
    let front = front_with_fake_upstreams().await;
    let client = https_client();
    let response = client
        .get(format!("{}/some/page?x=1", front.app_url))
        .header("X-Forwarded-For", "6.6.6.6")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    let echoed = response.text().await.unwrap();
    assert!(
        echoed.starts_with("upstream=app\nget /some/page?x=1 http/1.1"),
        "{echoed}"
    );
    assert_eq!(header(&echoed, "host"), Some("127.0.0.1"));
    assert_eq!(header(&echoed, "x-forwarded-proto"), Some("https"));
    assert_eq!(
        header(&echoed, "x-forwarded-for"),
        Some("127.0.0.1"),
        "the client's own X-Forwarded-For must be replaced, not appended to"
    );
    assert_eq!(header(&echoed, "x-real-ip"), Some("127.0.0.1"));
    for name in [
        "strict-transport-security",
        "x-content-type-options",
        "x-frame-options",
        "referrer-policy",
        "permissions-policy",
    ] {
        assert!(headers.contains_key(name), "missing security header {name}");
    }
    assert!(
        headers
            .get("server")
            .is_some_and(|server| server == "nginx"),
        "server_tokens off hides the version: {:?}",
        headers.get("server")
    );

    // What browser tests pass to Chromium: the certificate's public-key hash.
    let args = front.chromium_args();
    let spki = args[0]
        .strip_prefix("--ignore-certificate-errors-spki-list=")
        .unwrap();
    assert_eq!(spki.len(), 44, "base64 of a SHA-256: {args:?}");

    let media = client
        .get(format!("{}/healthz", front.media_url))
        .send()
        .await
        .unwrap();
    let echoed = media.text().await.unwrap();
    assert!(
        echoed.starts_with("upstream=media\nget /healthz"),
        "{echoed}"
    );
    assert_eq!(header(&echoed, "host"), Some("localhost"));
}

#[tokio::test]
async fn websocket_upgrades_pass_on_both_sites() {
    let front = front_with_fake_upstreams().await;
    let port = front.plan.https_port;
    for (name, upstream) in [("127.0.0.1", "app"), ("localhost", "media")] {
        let mut socket = wss_connect(port, name, "/ws", &front.app_url)
            .await
            .unwrap_or_else(|error| panic!("upgrade on {name}: {error}"));
        let echoed = next_text(&mut socket).await;
        assert!(
            echoed.starts_with(&format!("upstream={upstream}\nget /ws")),
            "{echoed}"
        );
        assert_eq!(header(&echoed, "upgrade"), Some("websocket"));
        assert_eq!(header(&echoed, "connection"), Some("upgrade"));
        assert_eq!(header(&echoed, "origin"), Some(front.app_url.as_str()));
        assert_eq!(header(&echoed, "x-forwarded-proto"), Some("https"));
    }
}

#[tokio::test]
async fn http2_redirects_acme_and_body_limits() {
    let front = front_with_fake_upstreams().await;
    let tls = tls_connect(front.plan.https_port, "127.0.0.1", &[b"h2", b"http/1.1"]).await;
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "HTTP/2 offered"
    );

    let client = https_client();
    let redirect = client
        .get(format!("{}/alice/live?x=1", front.http_url))
        .send()
        .await
        .unwrap();
    assert_eq!(redirect.status(), 301);
    assert_eq!(
        redirect.headers()["location"],
        format!("{}/alice/live?x=1", front.app_url).as_str()
    );

    let challenge = front.acme_webroot.join(".well-known/acme-challenge");
    std::fs::create_dir_all(&challenge).unwrap();
    std::fs::write(challenge.join("token123"), "proof").unwrap();
    let acme = client
        .get(format!(
            "{}/.well-known/acme-challenge/token123",
            front.http_url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        acme.status(),
        200,
        "ACME challenges are served over plain HTTP"
    );
    assert_eq!(acme.text().await.unwrap(), "proof");

    let too_big = client
        .post(format!("{}/api/auth/login", front.app_url))
        .body(vec![b'x'; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(too_big.status(), 413, "app body limit");
    let too_big = client
        .post(format!("{}/anything", front.media_url))
        .body(vec![b'x'; 128 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(too_big.status(), 413, "media body limit");
}

/// The real services behind nginx: health over HTTPS, the media signaling socket and
/// the app's socket upgraded through nginx.
#[tokio::test]
async fn real_services_over_https() {
    let (stack, front) = NginxFront::start_stack(StackOptions::default());
    let client = https_client();
    let app = client
        .get(format!("{}/healthz", front.app_url))
        .send()
        .await
        .unwrap();
    assert_eq!(app.status(), 200, "{}", front.error_log());
    assert!(app.headers().contains_key("strict-transport-security"));
    let media = client
        .get(format!("{}/healthz", front.media_url))
        .send()
        .await
        .unwrap();
    assert_eq!(media.status(), 200, "{}", front.error_log());
    let health: serde_json::Value = media.json().await.unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["announced_ip"], "127.0.0.1");

    // A state-changing request through nginx: the CSRF check accepts the nginx origin
    // and the session cookie is Secure.
    let signup = client
        .post(format!("{}/api/auth/signup", front.app_url))
        .header("Origin", &front.app_url)
        .json(&serde_json::json!({"username": "opsuser", "password": "correct-horse-battery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(signup.status(), 201, "{}", stack.app.log_tail(20));
    let cookie = signup.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("Secure"), "{cookie}");
    let forged = client
        .post(format!("{}/api/auth/logout", front.app_url))
        .header("Origin", "https://evil.example")
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        forged.status(),
        403,
        "a foreign Origin is refused by the app"
    );

    let port = front.plan.https_port;
    let mut signaling = wss_connect(port, "localhost", "/ws", &front.app_url)
        .await
        .expect("media signaling upgrade through nginx");
    let pong: serde_json::Value = serde_json::from_str(&ping(&mut signaling).await).unwrap();
    assert_eq!(pong["type"], "pong");

    // A foreign Origin: refused at the handshake or with an error message and a close.
    if let Ok(mut foreign) = wss_connect(port, "localhost", "/ws", "https://evil.example").await {
        let answer: serde_json::Value = serde_json::from_str(&ping(&mut foreign).await).unwrap();
        assert_eq!(answer["type"], "error", "{answer}");
        assert_eq!(answer["code"], "forbidden", "{answer}");
    }

    // The app's real-time socket through nginx: its own origin upgrades, another is
    // refused by the app (403), not lost in nginx.
    let app_socket = wss_connect(port, "127.0.0.1", "/ws", &front.app_url).await;
    assert!(
        app_socket.is_ok(),
        "app /ws through nginx: {:?}\n{}\n{}",
        app_socket.err(),
        front.error_log(),
        stack.app.log_tail(20)
    );
    let foreign = wss_connect(port, "127.0.0.1", "/ws", "https://evil.example").await;
    assert_eq!(foreign.err().as_deref(), Some("HTTP 403 Forbidden"));
}

/// Real-looking names for the two sites, resolved to loopback by the client.
#[tokio::test]
async fn named_sites_with_client_side_resolution() {
    let app = fake_upstream::start("app").await;
    let media = fake_upstream::start("media").await;
    let front = NginxPlan::new()
        .with_domains("app.privatehub.test", "sfu.privatehub.test")
        .start_for_upstreams(app, media);
    assert_eq!(
        front.app_url,
        format!("https://app.privatehub.test:{}", front.plan.https_port)
    );
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], front.plan.https_port));
    let client = reqwest::Client::builder()
        .no_proxy()
        .danger_accept_invalid_certs(true)
        .resolve("app.privatehub.test", loopback)
        .resolve("sfu.privatehub.test", loopback)
        .build()
        .unwrap();
    for (url, upstream) in [(&front.app_url, "app"), (&front.media_url, "media")] {
        let echoed = client
            .get(format!("{url}/healthz"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            echoed.starts_with(&format!("upstream={upstream}\n")),
            "{echoed}"
        );
    }
    let args = front.chromium_args();
    assert!(
        args.contains(&"--host-resolver-rules=MAP app.privatehub.test 127.0.0.1,MAP sfu.privatehub.test 127.0.0.1".to_owned()),
        "{args:?}"
    );
}
