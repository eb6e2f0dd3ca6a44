use privatehub_protocol::LiveId;
use serde_json::{Value, json};

use crate::helpers::{assert_error, client, spawn_app};

#[tokio::test]
async fn live_lifecycle_start_list_get_stop_history() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;

    // Start: 201, then starting again returns the same live with 200.
    let response = app
        .post(
            &alice,
            "/api/lives/start",
            &json!({"title": "  Morning show "}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let live: Value = response.json().await.unwrap();
    assert_eq!(live["title"], "Morning show");
    assert_eq!(live["username"], "alice");
    assert_eq!(live["viewers"], 0);
    let id = live["id"].as_i64().unwrap();

    let response = app
        .post(
            &alice,
            "/api/lives/start",
            &json!({"title": "Another title"}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let again: Value = response.json().await.unwrap();
    assert_eq!(again["id"], id);
    assert_eq!(
        again["title"], "Morning show",
        "the running live keeps its title"
    );
    assert_eq!(app.count("lives"), 1);

    // Listed, with the documented fields.
    let list: Value = app.get(&client(), "/api/lives").await.json().await.unwrap();
    let entries = list.as_array().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["username"], "alice");
    assert_eq!(entries[0]["title"], "Morning show");
    assert_eq!(entries[0]["viewers"], 0);
    assert_eq!(entries[0]["started_at"], live["started_at"]);
    assert!(entries[0].get("ended_at").is_none());

    // One user's live, by name in any case.
    let one: Value = app
        .get(&client(), "/api/lives/ALICE")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one["id"], id);

    // The viewer-count hook the chat issue will drive.
    app.state.viewers.set(LiveId(id), 7);
    app.state.viewers.set(LiveId(id), 4);
    let one: Value = app
        .get(&client(), "/api/lives/alice")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one["viewers"], 4);

    // Stop.
    let response = app.post(&alice, "/api/lives/stop", &json!({})).await;
    assert_eq!(response.status(), 200);
    let stopped: Value = response.json().await.unwrap();
    assert_eq!(stopped["id"], id);
    assert!(stopped["ended_at"].is_string());
    assert_eq!(stopped["peak_viewers"], 7);

    assert_error(
        app.get(&client(), "/api/lives/alice").await,
        404,
        "not_live",
    )
    .await;
    let list: Value = app.get(&client(), "/api/lives").await.json().await.unwrap();
    assert_eq!(list, json!([]));
    assert_error(
        app.post(&alice, "/api/lives/stop", &json!({})).await,
        409,
        "not_live",
    )
    .await;

    // History.
    let second = app.start_live(&alice, "Evening show").await;
    assert_ne!(second["id"], id, "a new live after the old one ended");
    let history: Value = app
        .get(&client(), "/api/users/alice/lives")
        .await
        .json()
        .await
        .unwrap();
    let past = history.as_array().unwrap();
    assert_eq!(past.len(), 1, "only ended lives: {history}");
    assert_eq!(past[0]["id"], id);
    assert_eq!(past[0]["title"], "Morning show");
    assert_eq!(past[0]["started_at"], live["started_at"]);
    assert_eq!(past[0]["ended_at"], stopped["ended_at"]);
    assert_eq!(past[0]["peak_viewers"], 7);
}

#[tokio::test]
async fn default_title_and_several_broadcasters() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let live = app.start_live(&alice, "").await;
    assert_eq!(live["title"], "alice's live");
    app.start_live(&bob, "Bob's cooking").await;
    let list: Value = app.get(&client(), "/api/lives").await.json().await.unwrap();
    let mut names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["username"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["alice", "bob"]);
}

#[tokio::test]
async fn concurrent_starts_create_one_live() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let body = json!({"title": "race"});
    let starts = (0..6).map(|_| app.post(&alice, "/api/lives/start", &body));
    let responses = futures_util::future::join_all(starts).await;
    let mut ids = Vec::new();
    for response in responses {
        assert!(response.status().is_success());
        let body: Value = response.json().await.unwrap();
        ids.push(body["id"].as_i64().unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(app.count("lives"), 1);
}

#[tokio::test]
async fn lives_need_a_session_and_known_users() {
    let app = spawn_app().await;
    let anonymous = client();
    assert_error(
        app.post(&anonymous, "/api/lives/start", &json!({})).await,
        401,
        "unauthenticated",
    )
    .await;
    assert_error(
        app.post(&anonymous, "/api/lives/stop", &json!({})).await,
        401,
        "unauthenticated",
    )
    .await;
    assert_eq!(app.count("lives"), 0);
    assert_error(
        app.get(&anonymous, "/api/lives/nobody").await,
        404,
        "user_not_found",
    )
    .await;
    assert_error(
        app.get(&anonymous, "/api/lives/no%20such").await,
        404,
        "user_not_found",
    )
    .await;
    assert_error(
        app.get(&anonymous, "/api/users/nobody/lives").await,
        404,
        "user_not_found",
    )
    .await;
    app.user("alice").await;
    assert_error(
        app.get(&anonymous, "/api/lives/alice").await,
        404,
        "not_live",
    )
    .await;
    let history: Value = app
        .get(&anonymous, "/api/users/alice/lives")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(history, json!([]));
}
