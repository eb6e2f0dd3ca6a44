//! Test-only crate: the real-browser end-to-end tests live in `tests/browser/`.
//!
//! They start the built `privatehub-app` and `privatehub-media` binaries through
//! `privatehub-testkit`, a `chromedriver` on a free port, and one headless Chromium per
//! simulated user with a fake camera and microphone.
