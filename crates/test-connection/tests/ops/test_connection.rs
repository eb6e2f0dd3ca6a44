//! `privatehub-test-connection` (and its wrapper script) against the real services
//! behind nginx: passes when all is well, fails with a clear reason when the media server
//! is down or its UDP port does not answer.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use privatehub_testkit::nginx::NginxFront;
use privatehub_testkit::{StackOptions, free_udp_port_range};

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
