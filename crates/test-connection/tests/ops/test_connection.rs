//! `privatehub-test-connection` (and its wrapper script) against the real services
//! behind nginx: passes when all is well, fails with a clear reason when the media server
//! is down or its UDP port does not answer.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use privatehub_test_connection::turn;
use privatehub_testkit::coturn::TurnServer;
use privatehub_testkit::nginx::NginxFront;
use privatehub_testkit::{StackOptions, free_udp_port_range, start_stack};

const TOOL: &str = env!("CARGO_BIN_EXE_privatehub-test-connection");

fn run_tool(args: &[&str]) -> (bool, String) {
    let output = Command::new(TOOL)
        .args(["--insecure", "--timeout", "5", "--udp-timeout-ms", "200"])
        .args(args)
        .env_remove("HTTPS_PROXY")
        .output()
        .expect("run privatehub-test-connection");
    described(output)
}

fn described(output: Output) -> (bool, String) {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn line<'a>(output: &'a str, prefix: &str) -> &'a str {
    output
        .lines()
        .find(|line| line.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting {prefix:?} in:\n{output}"))
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}

#[test]
fn passes_through_nginx_and_names_unreachable_udp() {
    let (stack, front) = NginxFront::start_stack(StackOptions::default());
    let (ok, output) = run_tool(&[&front.app_url, &front.media_url]);
    assert!(ok, "expected every check to pass:\n{output}");
    eprintln!("{output}");
    line(&output, "PASS  app health");
    line(&output, "PASS  app socket");
    line(&output, "PASS  media health");
    line(&output, "PASS  media signaling");
    line(&output, "PASS  announced address");
    let (first, last) = stack.rtc_ports;
    for port in first..=last {
        let stun = line(&output, &format!("PASS  rtc udp/{port}"));
        assert!(
            stun.contains("the server sees this machine as 127.0.0.1:"),
            "{stun}"
        );
    }
    assert!(!output.contains("FAIL"), "{output}");

    // A port where nothing listens: the kernel answers with ICMP port unreachable.
    let (closed, _) = free_udp_port_range(1);
    let closed_text = closed.to_string();
    let (ok, output) = run_tool(&[
        &front.app_url,
        &front.media_url,
        "--rtc-ports",
        &closed_text,
    ]);
    assert!(!ok, "an unreachable RTC port must fail:\n{output}");
    let stun = line(&output, &format!("FAIL  rtc udp/{closed}"));
    assert!(stun.contains("port unreachable"), "{stun}");
    assert!(stun.contains("hint:"), "{stun}");

    // A port where packets vanish, as behind a firewall that drops them.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port().to_string();
    let (ok, output) = run_tool(&[
        &front.app_url,
        &front.media_url,
        "--rtc-ports",
        &silent_port,
        "--udp-attempts",
        "2",
    ]);
    assert!(!ok, "a silent RTC port must fail:\n{output}");
    let stun = line(&output, &format!("FAIL  rtc udp/{silent_port}"));
    assert!(stun.contains("no STUN answer"), "{stun}");
    assert!(
        stun.contains("open UDP"),
        "the hint names the firewall: {stun}"
    );

    // An Origin the media server does not accept (CORS_ORIGIN lacks the app's URL).
    let (ok, output) = run_tool(&[
        &front.app_url,
        &front.media_url,
        "--origin",
        "https://elsewhere.example",
    ]);
    assert!(!ok, "a refused Origin must fail:\n{output}");
    let signaling = line(&output, "FAIL  media signaling");
    assert!(signaling.contains("CORS_ORIGIN"), "{signaling}");
    let app_socket = line(&output, "FAIL  app socket");
    assert!(app_socket.contains("APP_PUBLIC_URL"), "{app_socket}");

    // The wrapper script, URLs from an app env file, the built tool on PATH.
    let env_dir = tempfile::tempdir().unwrap();
    let app_env = env_dir.path().join("app.env");
    std::fs::write(
        &app_env,
        format!(
            "# test\nAPP_PUBLIC_URL={}\nexport MEDIA_PUBLIC_URL=\"{}\"\n",
            front.app_url, front.media_url
        ),
    )
    .unwrap();
    let tool_dir = Path::new(TOOL).parent().unwrap();
    let path = format!(
        "{}:{}",
        tool_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new(repo_root().join("scripts/test-connection"))
        .arg("--insecure")
        .env("PATH", path)
        .env("PRIVATEHUB_APP_ENV", &app_env)
        .env_remove("APP_PUBLIC_URL")
        .env_remove("MEDIA_PUBLIC_URL")
        .env_remove("NEXT_PUBLIC_MEDIA_SERVER_URL")
        .output()
        .unwrap();
    let (ok, output) = described(output);
    assert!(
        ok,
        "scripts/test-connection with URLs from app.env:\n{output}"
    );
    assert!(
        output.contains(&format!("checking app {}/", front.app_url)),
        "{output}"
    );
    drop(front);
    drop(stack);
}

#[test]
fn fails_clearly_when_the_media_server_is_down() {
    let (mut stack, front) = NginxFront::start_stack(StackOptions::default());
    stack.media.kill();
    let (ok, output) = run_tool(&[&front.app_url, &front.media_url]);
    assert!(!ok, "must fail with the media server down:\n{output}");
    eprintln!("{output}");
    line(&output, "PASS  app health");
    line(&output, "PASS  app socket");
    let health = line(&output, "FAIL  media health");
    assert!(health.contains("502"), "{health}");
    assert!(
        health.contains("systemctl status privatehub-media"),
        "{health}"
    );
    line(&output, "FAIL  media signaling");
    line(&output, "SKIP  rtc udp");
}

/// The media server announces an address its UDP sockets do not listen on (as with a
/// wrong MEDIA_ANNOUNCED_IP): signaling works, media would not, and the STUN lines say so.
#[test]
fn fails_when_the_announced_address_does_not_answer_udp() {
    let mut options = StackOptions::default();
    options.media_env.extend([
        ("MEDIA_ANNOUNCED_IP".to_owned(), "127.0.0.2".to_owned()),
        ("MEDIA_RTC_BIND_IP".to_owned(), "127.0.0.1".to_owned()),
    ]);
    let (stack, front) = NginxFront::start_stack(options);
    let (ok, output) = run_tool(&[&front.app_url, &front.media_url]);
    assert!(!ok, "UDP to the announced address must fail:\n{output}");
    eprintln!("{output}");
    line(&output, "PASS  media signaling");
    let (first, last) = stack.rtc_ports;
    for port in first..=last {
        let stun = line(&output, &format!("FAIL  rtc udp/{port}"));
        assert!(stun.contains("127.0.0.2"), "{stun}");
    }
}

/// ICE-TCP on, and a real coturn from the shipped configuration: the tool checks the
/// TCP candidate port and allocates on every TURN URL with a credential it mints; a
/// wrong secret or an expired credential is refused by coturn and said so.
#[test]
fn checks_ice_tcp_and_allocates_on_the_turn_relay() {
    let secret = "ops-test-turn-secret-0123456789";
    let turn = TurnServer::start_with_tls(secret);
    let tls_port = turn.tls_port.expect("TURN over TLS");
    let tcp_port = privatehub_testkit::free_tcp_port();
    let mut options = StackOptions::default();
    options
        .media_env
        .push(("MEDIA_RTC_TCP_PORT".to_owned(), tcp_port.to_string()));
    let stack = start_stack(options);
    let turn_urls = format!(
        "turn:127.0.0.1:{port}?transport=udp,turn:127.0.0.1:{port}?transport=tcp,\
         turns:127.0.0.1:{tls_port}?transport=tcp",
        port = turn.port
    );
    let run_with_turn = |secret: &str| {
        let output = Command::new(TOOL)
            // The test relay's certificate is self-signed.
            .args(["--insecure", "--timeout", "5", "--udp-timeout-ms", "200"])
            .args([&stack.app_url, &stack.media_url])
            .env("TURN_URLS", &turn_urls)
            .env("TURN_SECRET", secret)
            .env_remove("TURN_SECRET_FILE")
            .output()
            .expect("run privatehub-test-connection");
        described(output)
    };
    let (ok, output) = run_with_turn(secret);
    eprintln!("{output}");
    assert!(ok, "expected every check to pass:\n{output}");
    let tcp = line(&output, &format!("PASS  rtc tcp/{tcp_port}"));
    assert!(
        tcp.contains("the server sees this machine as 127.0.0.1:"),
        "{tcp}"
    );
    for (transport, port) in [("udp", turn.port), ("tcp", turn.port), ("tls", tls_port)] {
        let allocated = line(&output, &format!("PASS  turn {transport}/{port}"));
        assert!(
            allocated.contains("allocated relay 127.0.0.1:"),
            "{allocated}"
        );
    }

    let (ok, output) = run_with_turn("not-the-secret-of-this-coturn");
    assert!(!ok, "a wrong TURN secret must fail:\n{output}");
    let refused = line(&output, &format!("FAIL  turn udp/{}", turn.port));
    assert!(refused.contains("refused the credential (401"), "{refused}");
    assert!(
        refused.contains("static-auth-secret"),
        "the hint names the setting: {refused}"
    );

    // A credential that expired a minute ago, minted with the right secret.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (username, password) = privatehub_protocol::turn_credentials::turn_rest_credential(
        secret.as_bytes(),
        now - 60,
        "expired",
    );
    let url = turn::TurnUrl::parse(&format!("turn:127.0.0.1:{}?transport=tcp", turn.port)).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let outcome = runtime.block_on(turn::allocate(
        &url,
        &username,
        &password,
        false,
        Duration::from_secs(5),
    ));
    assert!(
        matches!(outcome, turn::AllocateOutcome::Refused { code: 401, .. }),
        "an expired credential was not refused: {outcome:?}\n{}",
        turn.log_tail(20)
    );
}
