//! Log-in and sign-up limits, and the password-hashing pool under a flood. Clients
//! appear at several addresses through `X-Forwarded-For` with proxy headers trusted, as
//! behind the shipped nginx site.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use futures_util::future::join_all;
use reqwest::Response;
use serde_json::json;

use crate::helpers::{ORIGIN, PASSWORD, assert_error, client, login_from, spawn_app_with};

fn retry_after(response: &Response) -> u64 {
    response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn concurrent_guesses_are_counted_before_they_are_checked() {
    let app = spawn_app_with(|settings| {
        settings.trust_proxy_headers = true;
        settings.login_rate_limit.free_failures_per_pair = 5;
        // Room for all 40 in the hashing pool: only the log-in limit may refuse them.
        settings.hashing.queue = 100;
        settings.hashing.per_client = 100;
    })
    .await;
    app.user("alice").await;
    let guesses = (0..40).map(|_| login_from(&app, "203.0.113.9", "alice", "guess guess"));
    let statuses: Vec<u16> = join_all(guesses)
        .await
        .iter()
        .map(|response| response.status().as_u16())
        .collect();
    let checked = statuses.iter().filter(|&&status| status == 401).count();
    let refused = statuses.iter().filter(|&&status| status == 429).count();
    assert_eq!((checked, refused), (5, 35), "{statuses:?}");
}

#[tokio::test]
async fn guesses_from_one_address_do_not_lock_the_owner_out() {
    let app = spawn_app_with(|settings| {
        settings.trust_proxy_headers = true;
        settings.login_rate_limit.free_failures_per_pair = 5;
    })
    .await;
    app.user("alice").await;
    for _ in 0..5 {
        let response = login_from(&app, "203.0.113.9", "alice", "guess guess").await;
        assert_error(response, 401, "invalid_credentials").await;
    }
    // The guesser now has to wait, even with the right password...
    let response = login_from(&app, "203.0.113.9", "ALICE", PASSWORD).await;
    assert!((1..=900).contains(&retry_after(&response)));
    assert_error(response, 429, "rate_limited").await;
    // ...and the owner, from their own address, signs in at once.
    let response = login_from(&app, "198.51.100.7", "alice", PASSWORD).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn the_account_wide_limit_spares_addresses_that_signed_in_before() {
    let app = spawn_app_with(|settings| {
        settings.trust_proxy_headers = true;
        settings.login_rate_limit.max_per_account = 3;
    })
    .await;
    app.user("bob").await;
    let home = "198.51.100.7";
    assert_eq!(login_from(&app, home, "bob", PASSWORD).await.status(), 200);
    // A guesser spread over many addresses uses up the account-wide allowance...
    for n in 1..=3 {
        let response = login_from(&app, &format!("203.0.113.{n}"), "bob", "guess guess").await;
        assert_error(response, 401, "invalid_credentials").await;
    }
    let response = login_from(&app, "203.0.113.99", "bob", PASSWORD).await;
    assert_error(response, 429, "rate_limited").await;
    // ...but bob's own address still gets in.
    assert_eq!(login_from(&app, home, "bob", PASSWORD).await.status(), 200);
}

#[tokio::test]
async fn one_address_cannot_spray_many_accounts() {
    let app = spawn_app_with(|settings| {
        settings.trust_proxy_headers = true;
        settings.login_rate_limit.max_per_network = 3;
    })
    .await;
    app.user("carol").await;
    for name in ["nobody1", "nobody2", "nobody3"] {
        let response = login_from(&app, "203.0.113.9", name, "whatever1").await;
        assert_error(response, 401, "invalid_credentials").await;
    }
    // Blocked whichever account it tries, and a forged left-most entry does not help
    // (the proxy's own entry is the right-most)...
    for forwarded in ["203.0.113.9", "198.51.100.1, 203.0.113.9"] {
        let response = login_from(&app, forwarded, "carol", PASSWORD).await;
        assert_error(response, 429, "rate_limited").await;
    }
    // ...while other addresses may still log in.
    let response = login_from(&app, "198.51.100.7", "carol", PASSWORD).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn malformed_names_cost_no_hash_and_hold_no_state() {
    let app = spawn_app_with(|settings| {
        settings.trust_proxy_headers = true;
        settings.login_rate_limit.max_per_network = 20;
    })
    .await;
    let long_name = "n".repeat(15_000);
    for _ in 0..20 {
        let response = login_from(&app, "203.0.113.50", &long_name, "whatever1").await;
        assert_error(response, 401, "invalid_credentials").await;
    }
    // Counted against the address (it is now limited) but never hashed.
    let response = login_from(&app, "203.0.113.50", "valid_name", "whatever1").await;
    assert_error(response, 429, "rate_limited").await;
    assert_eq!(app.state.metrics.hash_completed.load(Relaxed), 0);
}

#[tokio::test]
async fn sign_ups_are_limited_per_address() {
    let app = spawn_app_with(|settings| {
        settings.trust_proxy_headers = true;
        settings.signup_rate_limit.max_per_network = 3;
    })
    .await;
    let signup = |address: &'static str, name: String| {
        let url = app.url("/api/auth/signup");
        async move {
            client()
                .post(url)
                .header("Origin", ORIGIN)
                .header("X-Forwarded-For", address)
                .json(&json!({"username": name, "password": PASSWORD}))
                .send()
                .await
                .unwrap()
        }
    };
    for n in 0..3 {
        let response = signup("203.0.113.7", format!("bot{n}")).await;
        assert_eq!(response.status(), 201);
    }
    let response = signup("203.0.113.7", "bot3".into()).await;
    assert!(retry_after(&response) > 0);
    assert_error(response, 429, "rate_limited").await;
    assert_eq!(
        app.count("users"),
        3,
        "nothing was written for the refused one"
    );
    let response = signup("198.51.100.3", "person".into()).await;
    assert_eq!(response.status(), 201);
}

/// 300 concurrent log-ins for unknown names from 30 addresses: a bounded number of
/// argon2 computations run (one buffer per worker), the rest are refused cleanly, and
/// neither other pages nor the owner of an account are locked out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_is_bounded_and_refused_cleanly() {
    let app = spawn_app_with(|settings| {
        settings.trust_proxy_headers = true;
        settings.hashing.workers = 2;
        settings.hashing.queue = 8;
        settings.hashing.per_client = 2;
    })
    .await;
    app.user("owner").await;
    let flood = (0..300).map(|n| {
        let address = format!("203.0.113.{}", n % 30);
        let app = &app;
        async move {
            login_from(app, &address, &format!("ghost{n}"), "whatever1")
                .await
                .status()
                .as_u16()
        }
    });
    // Meanwhile: unrelated page loads, and the owner signing in from home (retrying
    // after a 503 as `Retry-After` says).
    let pages = async {
        let mut statuses = Vec::new();
        for _ in 0..20 {
            let response = app.get(&client(), "/api/lives").await;
            statuses.push(response.status().as_u16());
        }
        statuses
    };
    let owner = async {
        for _ in 0..30 {
            let response = login_from(&app, "198.51.100.7", "owner", PASSWORD).await;
            match response.status().as_u16() {
                200 => return true,
                503 => {
                    assert!(retry_after(&response) >= 1);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                other => panic!("owner's log-in answered {other}"),
            }
        }
        false
    };
    let (statuses, page_statuses, owner_signed_in) = tokio::join!(join_all(flood), pages, owner);
    assert!(
        owner_signed_in,
        "the owner could not sign in during the flood"
    );
    assert!(
        page_statuses.iter().all(|&status| status == 200),
        "{page_statuses:?}"
    );
    for status in &statuses {
        assert!(
            matches!(status, 401 | 429 | 503),
            "a flooded log-in answered {status}"
        );
    }
    let metrics = &app.state.metrics;
    let held = metrics.hash_memory_bytes.load(Relaxed);
    assert!(
        held <= 2 * 19 * 1024 * 1024,
        "hashing holds {held} bytes, more than one buffer per worker"
    );
    let refused = metrics.refused_hash_queue_full.load(Relaxed)
        + metrics.refused_hash_client_share.load(Relaxed);
    println!(
        "flood: {} hashed, {refused} refused by the pool, statuses 401={} 429={} 503={}",
        metrics.hash_completed.load(Relaxed),
        statuses.iter().filter(|&&s| s == 401).count(),
        statuses.iter().filter(|&&s| s == 429).count(),
        statuses.iter().filter(|&&s| s == 503).count(),
    );
    assert!(refused > 0, "300 at once must overflow a queue of 8");
}
