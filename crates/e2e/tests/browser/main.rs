//! End-to-end tests in real headless Chromium against the real app and media server.
//!
//! Each test starts the built binaries (`cargo build --workspace --bins` first), a
//! chromedriver on a free port, and one Chromium per simulated user with a fake camera
//! and microphone. Tests in this binary run one at a time: several browsers decoding
//! video already keep a small machine busy.

mod cluster_flow;
mod faults;
mod harness;
mod live_flow;
mod login_redirect;
mod lossy_link;
mod nginx_flow;
mod pages;
mod reach;
mod replay;
mod simulcast;
mod smoke;
mod whip;
mod whip_clients;

use tokio::sync::{Mutex, MutexGuard};

static ONE_BROWSER_TEST_AT_A_TIME: Mutex<()> = Mutex::const_new(());

/// Held for the whole of a browser test.
async fn exclusive() -> MutexGuard<'static, ()> {
    ONE_BROWSER_TEST_AT_A_TIME.lock().await
}
