//! Operations tests: the shipped nginx site (rendered and checked by `nginx -t`, then run
//! for real on loopback with a self-signed certificate), the services behind it over
//! HTTPS, `privatehub-test-connection` against that setup, passing and failing, and the
//! deploy/ files (example env files accepted by the real services, units' essentials).
//!
//! Needs nginx and openssl (scripts/install-test-deps) and, for the tests with the real
//! services, the built binaries (`cargo build --workspace --bins`).

mod deploy_files;
mod fake_upstream;
mod nginx_config;
mod support;
mod test_connection;
mod through_nginx;
