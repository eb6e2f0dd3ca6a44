use privatehub_protocol::{LiveId, MediaRole, MediaTokenError, verify_media_token};
use serde_json::{Value, json};

use crate::helpers::{MEDIA_URL, assert_error, client, spawn_app};

async fn token(app: &crate::helpers::TestApp, client: &reqwest::Client, channel: &str) -> Value {
    let response = app
        .post(client, &format!("/api/lives/{channel}/token"), &json!({}))
        .await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn owner_publishes_everyone_else_watches() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let live = app.start_live(&alice, "show").await;
    let live_id = LiveId(live["id"].as_i64().unwrap());

    let owner = token(&app, &alice, "alice").await;
    assert_eq!(owner["role"], "publish");
    assert_eq!(owner["media_url"], MEDIA_URL);
    assert_eq!(owner["live_id"], live_id.0);
    let claims =
        verify_media_token(owner["token"].as_str().unwrap(), app.secret.as_bytes()).unwrap();
    assert_eq!(claims.live_id, live_id);
    assert_eq!(claims.channel, "alice");
    assert_eq!(claims.sub, "alice");
    assert_eq!(claims.role, MediaRole::Publish);
    assert_eq!(
        claims.exp - claims.iat,
        300,
        "MEDIA_TOKEN_TTL_SECONDS default"
    );

    let viewer = token(&app, &bob, "ALICE").await;
    assert_eq!(viewer["role"], "watch");
    let claims =
        verify_media_token(viewer["token"].as_str().unwrap(), app.secret.as_bytes()).unwrap();
    assert_eq!(
        (claims.role, claims.sub.as_str(), claims.live_id),
        (MediaRole::Watch, "bob", live_id)
    );

    // Signed-out viewers get a watch token with a random anonymous subject.
    let first = token(&app, &client(), "alice").await;
    let second = token(&app, &client(), "alice").await;
    let first =
        verify_media_token(first["token"].as_str().unwrap(), app.secret.as_bytes()).unwrap();
    let second =
        verify_media_token(second["token"].as_str().unwrap(), app.secret.as_bytes()).unwrap();
    assert_eq!(first.role, MediaRole::Watch);
    assert!(first.sub.starts_with("anon:") && second.sub.starts_with("anon:"));
    assert_ne!(first.sub, second.sub);

    // The token is bound to the shared secret.
    assert_eq!(
        verify_media_token(
            owner["token"].as_str().unwrap(),
            b"some-other-secret-some-other-secret"
        ),
        Err(MediaTokenError::BadSignature)
    );
}

#[tokio::test]
async fn no_token_without_a_current_live() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let anonymous = client();
    assert_error(
        app.post(&anonymous, "/api/lives/alice/token", &json!({}))
            .await,
        404,
        "not_live",
    )
    .await;
    assert_error(
        app.post(&anonymous, "/api/lives/ghost/token", &json!({}))
            .await,
        404,
        "user_not_found",
    )
    .await;
    app.start_live(&alice, "x").await;
    app.post(&alice, "/api/lives/stop", &json!({})).await;
    assert_error(
        app.post(&alice, "/api/lives/alice/token", &json!({})).await,
        404,
        "not_live",
    )
    .await;
    // Token requests are POSTs: the CSRF check applies.
    let response = anonymous
        .post(app.url("/api/lives/alice/token"))
        .send()
        .await
        .unwrap();
    assert_error(response, 403, "csrf_origin_missing").await;
}

#[tokio::test]
async fn tokens_carry_turn_credentials_when_a_relay_is_configured() {
    let secret = b"turn-secret-for-the-api-test".to_vec();
    let turn = privatehub_protocol::TurnConfig::new(
        vec![
            "turn:turn.example:3478?transport=udp".into(),
            "turns:turn.example:443?transport=tcp".into(),
            "stun:turn.example:3478".into(),
        ],
        Some(secret.clone()),
        3600,
    )
    .unwrap();
    let app = crate::helpers::spawn_app_with(|settings| settings.turn = Some(turn)).await;
    let alice = app.user("alice").await;
    let live = app.start_live(&alice, "show").await;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let body = token(&app, &client(), "alice").await;
    let servers = body["ice_servers"].as_array().expect("ice_servers");
    assert_eq!(servers.len(), 2, "{body}");
    assert_eq!(
        servers[0]["urls"],
        json!([
            "turn:turn.example:3478?transport=udp",
            "turns:turn.example:443?transport=tcp"
        ])
    );
    assert_eq!(servers[1], json!({"urls": ["stun:turn.example:3478"]}));
    // The username is `expiry:label`, valid for the configured hour, and the credential
    // is what coturn computes from its static-auth-secret.
    let username = servers[0]["username"].as_str().unwrap();
    let (expiry, label) = username.split_once(':').unwrap();
    let expiry: u64 = expiry.parse().unwrap();
    assert!(
        (before + 3600..=before + 3605).contains(&expiry),
        "{username}"
    );
    let prefix = format!("watch-live{}-", live["id"]);
    assert!(
        label.starts_with(&prefix) && label.len() == prefix.len() + 8,
        "the role, the live and a tag of its own: {label}"
    );
    let other = token(&app, &client(), "alice").await;
    assert_ne!(other["ice_servers"][0]["username"], servers[0]["username"]);
    let (_, expected) =
        privatehub_protocol::turn_credentials::turn_rest_credential(&secret, expiry, label);
    assert_eq!(servers[0]["credential"], expected.as_str());
    // Never the secret itself, and a fresh credential per token.
    assert!(!body.to_string().contains("turn-secret-for-the-api-test"));

    // Without TURN_URLS the list is empty.
    let plain = spawn_app().await;
    let bob = plain.user("bob").await;
    plain.start_live(&bob, "show").await;
    assert_eq!(
        token(&plain, &client(), "bob").await["ice_servers"],
        json!([])
    );
}
