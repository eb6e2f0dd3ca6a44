//! The shipped nginx site, rendered as an operator would, passes `nginx -t`; the renderer
//! refuses values that would break the configuration.

use std::path::Path;

use privatehub_testkit::free_tcp_port;
use privatehub_testkit::nginx::{
    render_site, self_signed_certificate, test_config, write_main_config,
};

/// The shipped vars as they are (production domains, upstreams, limits), with the
/// certificate paths pointed at a generated certificate and the listen addresses moved to
/// free loopback ports: `nginx -t` binds them, which needs root for 80/443 and fails if
/// another nginx already holds them.
fn render_production_like(dir: &Path) -> String {
    let (cert, key) = self_signed_certificate(dir);
    let cert = cert.display().to_string();
    let key = key.display().to_string();
    render_site(
        dir,
        &[
            ("APP_TLS_CERT", cert.clone()),
            ("APP_TLS_KEY", key.clone()),
            ("MEDIA_TLS_CERT", cert),
            ("MEDIA_TLS_KEY", key),
            ("LISTEN_HTTP", format!("127.0.0.1:{}", free_tcp_port())),
            ("LISTEN_HTTPS", format!("127.0.0.1:{}", free_tcp_port())),
            ("LISTEN_HTTP_V6", String::new()),
            ("LISTEN_HTTPS_V6", String::new()),
        ],
    )
    .unwrap()
}

#[test]
fn shipped_site_passes_nginx_t() {
    let dir = tempfile::tempdir().unwrap();
    let site = render_production_like(dir.path());
    for expected in [
        "server_name privatehub.com.br sfu.privatehub.com.br;",
        "server_name sfu.privatehub.com.br;",
        "ssl_certificate_key",
        "server 127.0.0.1:3000;",
        "server 127.0.0.1:5050;",
        "return 301 https://$host$request_uri;",
    ] {
        assert!(site.contains(expected), "rendered site lacks {expected:?}");
    }
    assert!(!site.contains('@'), "unrendered placeholder left:\n{site}");
    let site_path = dir.path().join("privatehub.conf");
    std::fs::write(&site_path, &site).unwrap();
    let config = write_main_config(dir.path(), &site_path);
    let output = test_config(dir.path(), &config);
    assert!(
        output.status.success(),
        "nginx -t failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Debian's own nginx.conf with the site in place of sites-enabled: no clash with the
/// distribution's http-level settings. Needs to read /var/log/nginx, so root only.
#[test]
fn shipped_site_fits_debians_nginx_conf() {
    let debian = Path::new("/etc/nginx/nginx.conf");
    let is_root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.trim_ascii() == b"0");
    if !debian.is_file() || !is_root {
        eprintln!("skipped: needs /etc/nginx/nginx.conf and root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let site_path = dir.path().join("privatehub.conf");
    std::fs::write(&site_path, render_production_like(dir.path())).unwrap();
    let config = std::fs::read_to_string(debian)
        .unwrap()
        .replace("include /etc/nginx/sites-enabled/*;", "")
        .replace(
            "include /etc/nginx/conf.d/*.conf;",
            &format!(
                "include /etc/nginx/conf.d/*.conf;\ninclude {};",
                site_path.display()
            ),
        );
    let config_path = dir.path().join("debian-nginx.conf");
    std::fs::write(&config_path, config).unwrap();
    let output = std::process::Command::new(privatehub_testkit::nginx::nginx_binary())
        .arg("-t")
        .arg("-c")
        .arg(&config_path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "nginx -t with Debian's nginx.conf failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn optional_lines_drop_and_ports_follow_the_vars() {
    let dir = tempfile::tempdir().unwrap();
    let site = render_site(
        dir.path(),
        &[
            ("NGINX_HTTP2", "listen".into()),
            ("LISTEN_HTTPS", "127.0.0.1:8443".into()),
            ("LISTEN_HTTPS_V6", String::new()),
            ("HTTPS_PORT_SUFFIX", ":8443".into()),
            ("MEDIA_UPSTREAM", "127.0.0.1:6060".into()),
        ],
    )
    .unwrap();
    assert!(site.contains("listen 127.0.0.1:8443 ssl http2;"));
    let shipped = render_site(dir.path(), &[("NGINX_HTTP2", "listen".into())]).unwrap();
    assert!(shipped.contains("listen 443 ssl http2;"));
    assert!(shipped.contains("listen [::]:443 ssl http2;"));
    assert!(shipped.contains("listen 80;"));
    assert!(!site.contains("[::]:443"));
    assert!(
        site.contains("listen [::]:80;"),
        "other optional lines stay"
    );
    assert!(site.contains("return 301 https://$host:8443$request_uri;"));
    assert!(site.contains("server 127.0.0.1:6060;"));
}

#[test]
fn http2_follows_the_nginx_version() {
    let dir = tempfile::tempdir().unwrap();
    let render = |mode: &str| {
        render_site(
            dir.path(),
            &[
                ("NGINX_HTTP2", mode.into()),
                ("LISTEN_HTTPS_V6", String::new()),
            ],
        )
        .unwrap()
    };
    let old = render("listen");
    assert_eq!(old.matches("listen 443 ssl http2;").count(), 2);
    assert!(!old.contains("http2 on;"));
    let new = render("directive");
    assert_eq!(new.matches("listen 443 ssl;").count(), 2);
    assert_eq!(new.matches("http2 on;").count(), 2);
    assert!(!new.contains("ssl http2"));
}

#[test]
fn renderer_refuses_broken_values() {
    let dir = tempfile::tempdir().unwrap();
    for (name, value, expected) in [
        ("APP_DOMAIN", "a.example; include /etc/shadow", "APP_DOMAIN"),
        ("MEDIA_DOMAIN", "", "MEDIA_DOMAIN must be set"),
        ("APP_UPSTREAM", "127.0.0.1:3000}", "APP_UPSTREAM"),
        ("NGINX_HTTP2", "maybe", "NGINX_HTTP2"),
    ] {
        let error = render_site(dir.path(), &[(name, value.into())]).expect_err(name);
        assert!(error.contains(expected), "{name}={value:?}: {error}");
    }
}
