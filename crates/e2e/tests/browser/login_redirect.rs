//! After signing in, the login page follows `?next=` only to a page of this site: the
//! URL parser, not a string check, decides (it drops tabs and line breaks, so
//! `/%09/evil.example` once meant `//evil.example`).

use std::time::Duration;

use privatehub_testkit::{StackOptions, start_stack};

use crate::harness::{Browser, BrowserOptions, ChromeDriver};
use crate::pages::{self, PASSWORD};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_never_redirects_to_another_site() {
    let _guard = crate::exclusive().await;
    let stack = start_stack(StackOptions::default());
    let app = stack.app_url.clone();
    let driver = ChromeDriver::start().await;
    // Were the page to leave the site, no request may go further than loopback.
    let options = BrowserOptions {
        extra_args: vec!["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1".into()],
        ..BrowserOptions::default()
    };
    let browser = Browser::open(&driver, "dana", &options).await;
    pages::sign_up(&browser, &app, "dana").await;

    let cases = [
        ("/%09/evil.example", "/"),
        ("/%0a/evil.example", "/"),
        ("/%0d/evil.example", "/"),
        ("/%5Cevil.example", "/"),
        ("//evil.example/", "/"),
        ("https://evil.example/", "/"),
        ("javascript:alert(1)", "/"),
        ("/dana/start-live", "/dana/start-live"),
        ("%2Fdana%2Flive%3Fx%3D1%23chat", "/dana/live?x=1#chat"),
    ];
    for (next, expected) in cases {
        browser.goto(&format!("{app}/login?next={next}")).await;
        browser.type_into("input[name=username]", "dana").await;
        browser.type_into("input[name=password]", PASSWORD).await;
        browser.click("button[type=submit]").await;
        browser
            .wait_js(
                &format!("leaving the login page for next={next}"),
                "window.location.pathname !== '/login'",
                Duration::from_secs(10),
            )
            .await;
        let landed = browser
            .js(
                "return [window.location.origin, \
                 window.location.pathname + window.location.search + window.location.hash];",
                vec![],
            )
            .await;
        assert_eq!(
            landed[0],
            app.as_str(),
            "next={next} left the site: {landed}"
        );
        assert_eq!(landed[1], expected, "next={next}");
    }
    browser.close().await;
}
