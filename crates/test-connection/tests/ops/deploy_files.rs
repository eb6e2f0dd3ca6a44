//! The example environment files in deploy/ are accepted by the real services: every
//! active line and every commented default (`#NAME=value`), with only addresses, ports
//! and paths moved to loopback and a temporary directory, and the placeholder secret
//! replaced (the services refuse it on purpose).

use std::path::Path;
use std::time::Duration;

use privatehub_testkit::{ServiceProcess, free_tcp_port, free_udp_port_range, wait_for_http_ok};

/// `NAME=value` pairs of an env file, commented defaults included.
fn example_env(name: &str) -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    text.lines()
        .map(|line| line.trim_start_matches('#'))
        .filter_map(|line| line.split_once('='))
        .filter(|(key, _)| {
            !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}

fn with_overrides(
    mut env: Vec<(String, String)>,
    overrides: &[(&str, String)],
) -> Vec<(String, String)> {
    for (name, value) in overrides {
        env.retain(|(key, _)| key != name);
        env.push(((*name).to_owned(), value.clone()));
    }
    env
}

#[test]
fn example_env_files_start_the_services() {
    let mut app_env = example_env("app.env.example");
    let mut media_env = example_env("media.env.example");
    // The range is the commented alternative to MEDIA_RTC_PORT, not a setting beside it,
    // and the TURN secret's file the alternative to the variable.
    media_env.retain(|(key, _)| key != "MEDIA_RTC_MIN_PORT" && key != "MEDIA_RTC_MAX_PORT");
    for env in [&mut app_env, &mut media_env] {
        env.retain(|(key, _)| key != "TURN_SECRET_FILE");
    }
    let turn_secret = "example-env-test-turn-secret-0123".to_owned();
    for required in [
        "APP_PUBLIC_URL",
        "MEDIA_PUBLIC_URL",
        "MEDIA_TOKEN_SECRET",
        "TRUST_PROXY_HEADERS",
    ] {
        assert!(
            app_env.iter().any(|(key, _)| key == required),
            "app.env.example lacks {required}"
        );
    }
    for required in [
        "MEDIA_ANNOUNCED_IP",
        "CORS_ORIGIN",
        "MEDIA_RTC_PORT",
        "MEDIA_RTC_TCP_PORT",
        "MEDIA_TOKEN_SECRET",
    ] {
        assert!(
            media_env.iter().any(|(key, _)| key == required),
            "media.env.example lacks {required}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let secret = "example-env-test-secret-0123456789abcdef".to_owned();
    let app_port = free_tcp_port();
    let app = ServiceProcess::spawn(
        "privatehub-app",
        dir.path(),
        &with_overrides(
            app_env,
            &[
                ("APP_PORT", app_port.to_string()),
                ("MEDIA_TOKEN_SECRET", secret.clone()),
                ("TURN_SECRET", turn_secret.clone()),
                (
                    "DATABASE_URL",
                    dir.path().join("app.sqlite").display().to_string(),
                ),
            ],
        ),
    );
    let media_port = free_tcp_port();
    let (rtc_port, _) = free_udp_port_range(1);
    let media = ServiceProcess::spawn(
        "privatehub-media",
        dir.path(),
        &with_overrides(
            media_env,
            &[
                ("MEDIA_SERVER_PORT", media_port.to_string()),
                ("MEDIA_TOKEN_SECRET", secret.clone()),
                ("MEDIA_ANNOUNCED_IP", "127.0.0.1".into()),
                ("MEDIA_RTC_BIND_IP", "127.0.0.1".into()),
                ("MEDIA_RTC_PORT", rtc_port.to_string()),
                ("MEDIA_RTC_TCP_PORT", free_tcp_port().to_string()),
                ("TURN_SECRET", turn_secret.clone()),
            ],
        ),
    );
    let timeout = Duration::from_secs(30);
    wait_for_http_ok(&format!("http://127.0.0.1:{app_port}/healthz"), timeout)
        .unwrap_or_else(|error| panic!("app with app.env.example: {error}\n{}", app.log_tail(20)));
    wait_for_http_ok(&format!("http://127.0.0.1:{media_port}/healthz"), timeout).unwrap_or_else(
        |error| {
            panic!(
                "media with media.env.example: {error}\n{}",
                media.log_tail(20)
            )
        },
    );
}

#[test]
fn units_point_at_the_documented_files() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    for (unit, env_file, binary) in [
        (
            "privatehub-app.service",
            "/etc/privatehub/app.env",
            "/usr/local/bin/privatehub-app",
        ),
        (
            "privatehub-media.service",
            "/etc/privatehub/media.env",
            "/usr/local/bin/privatehub-media",
        ),
    ] {
        let text = std::fs::read_to_string(deploy.join(unit)).unwrap();
        for expected in [
            format!("EnvironmentFile={env_file}"),
            format!("ExecStart={binary}"),
            "User=privatehub".into(),
            "NoNewPrivileges=yes".into(),
            "ProtectSystem=strict".into(),
            "PrivateTmp=yes".into(),
            "LimitNOFILE=".into(),
            "Restart=always".into(),
            "MemoryMax=".into(),
            "MemoryHigh=".into(),
            "TasksMax=".into(),
        ] {
            assert!(text.contains(&expected), "{unit} lacks {expected}");
        }
    }
    let app = std::fs::read_to_string(deploy.join("privatehub-app.service")).unwrap();
    assert!(app.contains("ReadWritePaths=/var/lib/privatehub"));
}

/// Every variable docs/configuration.md documents for a service appears (set or as a
/// commented default) in that service's example env file, so operators see all of them.
#[test]
fn example_env_files_cover_every_documented_variable() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let docs = std::fs::read_to_string(root.join("docs/configuration.md")).unwrap();
    let (app_docs, media_docs) = docs
        .split_once("## Media server")
        .expect("docs/configuration.md has a media server section");
    for (section, example) in [
        (app_docs, "app.env.example"),
        (media_docs, "media.env.example"),
    ] {
        let listed: Vec<String> = example_env(example)
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        let documented = section.lines().filter_map(|line| {
            let name = line.strip_prefix("| `")?.split('`').next()?;
            name.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                .then(|| name.to_owned())
        });
        for name in documented {
            assert!(
                listed.contains(&name),
                "deploy/{example} lacks {name}, which docs/configuration.md documents: \
                 add it (commented, with its default) to the example"
            );
        }
    }
}
