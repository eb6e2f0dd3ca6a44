//! Replays `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` through the fuzz
//! entry points on the stable toolchain: a crash the fuzzer once found, or an input the
//! corpus holds, fails `cargo test` if it panics again. The fuzzing itself is
//! `scripts/fuzz` (nightly, cargo-fuzz); see docs/reliability.md, "Fuzzing".

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::Instant;

use privatehub_fuzz_entry::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_corpus_and_regression_input_runs_without_panicking() {
    let mut failures = Vec::new();
    let mut total = 0;
    for (name, entry) in TARGETS {
        let started = Instant::now();
        let corpus = files(&fuzz_dir().join("corpus").join(name));
        assert!(
            !corpus.is_empty(),
            "fuzz/corpus/{name}/ is empty or missing"
        );
        let regressions = files(&fuzz_dir().join("regressions").join(name));
        for path in corpus.iter().chain(&regressions) {
            let data = std::fs::read(path).expect("readable input");
            if catch_unwind(AssertUnwindSafe(|| entry(&data))).is_err() {
                failures.push(path.display().to_string());
            }
        }
        total += corpus.len() + regressions.len();
        eprintln!(
            "{name}: {} corpus + {} regression inputs in {:?}",
            corpus.len(),
            regressions.len(),
            started.elapsed()
        );
    }
    assert!(failures.is_empty(), "inputs that panic: {failures:#?}");
    eprintln!("{total} inputs replayed");
}

#[test]
fn every_target_has_a_cargo_fuzz_target() {
    for (name, _) in TARGETS {
        let path = fuzz_dir().join("fuzz_targets").join(format!("{name}.rs"));
        let source =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            source.contains(&format!("privatehub_fuzz_entry::{name}(")),
            "{} does not call privatehub_fuzz_entry::{name}",
            path.display()
        );
    }
}

/// Writes the seed inputs into `fuzz/corpus/<target>/seed-*` (run by hand:
/// `cargo test -p privatehub-fuzz-entry -- --ignored write_seed_corpus`, then
/// `scripts/fuzz` minimises). Real client messages from docs/protocol.md, Chromium 156
/// offers captured from a real `RTCPeerConnection` (`fuzz/seeds/`), str0m offers like the
/// loadgen's, a fresh signed token, STUN binding requests and DTLS/RTP-looking datagrams.
#[test]
#[ignore]
fn write_seed_corpus() {
    use privatehub_protocol::{LiveId, MediaRole, MediaTokenClaims, issue_media_token};
    use str0m::media::{Direction, MediaKind};

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = MediaTokenClaims::new(LiveId(7), "alice", "bob", MediaRole::Publish, now, 600);
    let token = issue_media_token(&claims, privatehub_fuzz_entry::FUZZ_TOKEN_SECRET).unwrap();
    let chromium_send =
        std::fs::read_to_string(fuzz_dir().join("seeds/chromium-156-sendonly.sdp")).unwrap();
    let chromium_recv =
        std::fs::read_to_string(fuzz_dir().join("seeds/chromium-156-recvonly.sdp")).unwrap();
    let str0m_offer = |dir: Direction| {
        let at = std::time::Instant::now();
        let mut rtc = str0m::Rtc::builder().build(at);
        let addr = "10.0.0.5:5000".parse().unwrap();
        rtc.add_local_candidate(str0m::Candidate::host(addr, "udp").unwrap());
        let mut api = rtc.sdp_api();
        api.add_media(MediaKind::Audio, dir, None, None, None);
        api.add_media(MediaKind::Video, dir, None, None, None);
        api.apply().unwrap().0.to_sdp_string()
    };
    let str0m_send = str0m_offer(Direction::SendOnly);
    let str0m_recv = str0m_offer(Direction::RecvOnly);
    let candidates: Vec<String> = chromium_send
        .lines()
        .filter(|l| l.starts_with("a=candidate:"))
        .map(str::to_owned)
        .chain([
            "candidate:1 1 udp 2122260223 192.0.2.10 54321 typ host".to_owned(),
            "candidate:2 1 udp 1686052607 203.0.113.9 61000 typ srflx raddr 192.168.1.2 rport 61000 generation 0".to_owned(),
            "candidate:3 1 tcp 1518280447 2001:db8::1 9 typ host tcptype active".to_owned(),
            String::new(),
        ])
        .collect();

    let mut seeds: Vec<(&str, String, Vec<u8>)> = Vec::new();
    let mut add = |target: &'static str, name: &str, data: Vec<u8>| {
        seeds.push((target, name.to_owned(), data));
    };
    let message = |kind: &str, sdp: &str| {
        serde_json::json!({"type": kind, "token": token, "offer": {"type": "offer", "sdp": sdp}})
            .to_string()
    };
    add(
        "media_signaling",
        "publish-chromium",
        message("publish", &chromium_send).into_bytes(),
    );
    add(
        "media_signaling",
        "watch-chromium",
        message("watch", &chromium_recv).into_bytes(),
    );
    add(
        "media_signaling",
        "publish-str0m",
        message("publish", &str0m_send).into_bytes(),
    );
    add(
        "media_signaling",
        "watch-str0m",
        message("watch", &str0m_recv).into_bytes(),
    );
    for (i, c) in candidates.iter().enumerate() {
        let text = serde_json::json!({"type": "candidate", "candidate": c}).to_string();
        add(
            "media_signaling",
            &format!("candidate-{i}"),
            text.into_bytes(),
        );
    }
    for (i, text) in [
        r#"{"type":"leave"}"#,
        r#"{"type":"ping"}"#,
        r#"{"type":"dance"}"#,
        r#"{"type":"watch","token":"t","offer":{"type":"answer","sdp":"v=0"}}"#,
    ]
    .iter()
    .enumerate()
    {
        add(
            "media_signaling",
            &format!("doc-{i}"),
            text.as_bytes().to_vec(),
        );
    }
    for (i, text) in [
        r#"{"type":"user:online"}"#,
        r#"{"type":"live:join","channel":"alice"}"#,
        r#"{"type":"live:leave"}"#,
        r#"{"type":"chat:send","text":"hello"}"#,
        "{\"type\":\"chat:send\",\"text\":\"caf\\u00e9 \\u202e\\r\\nline\\tx \\ud83d\\ude00\"}",
        r#"{"type":"chat:delete","message_id":12}"#,
        r#"{"type":"chat:ban","username":"bob"}"#,
        r#"{"type":"ping"}"#,
    ]
    .iter()
    .enumerate()
    {
        add("app_socket", &format!("doc-{i}"), text.as_bytes().to_vec());
    }
    let mut token_seed = vec![0u8];
    token_seed.extend_from_slice(token.as_bytes());
    add("media_token", "signed", token_seed);
    add(
        "media_token",
        "not-a-jwt",
        b"\0eyJhbGciOiJub25lIn0.e30.".to_vec(),
    );
    add(
        "media_token",
        "derived",
        b"\x01\0\0\0\0\0\0\0\x07\x01\0\xff\xff\xff\0\0\0\x02\x58\x05alice\x03bob".to_vec(),
    );
    let payload = serde_json::to_vec(&claims).unwrap();
    let mut raw = vec![2u8];
    raw.extend_from_slice(&payload);
    add("media_token", "raw-claims", raw);
    let mut raw_header = vec![2u8];
    raw_header.extend_from_slice(br#"{"alg":"HS256","typ":"JWT","kid":"1"}"#);
    raw_header.push(0);
    raw_header.extend_from_slice(&payload);
    add("media_token", "raw-header", raw_header);
    add(
        "sdp_offer",
        "chromium-sendonly",
        chromium_send.clone().into_bytes(),
    );
    add(
        "sdp_offer",
        "chromium-recvonly",
        chromium_recv.clone().into_bytes(),
    );
    add(
        "sdp_offer",
        "str0m-sendonly",
        str0m_send.clone().into_bytes(),
    );
    add(
        "sdp_offer",
        "str0m-recvonly",
        str0m_recv.clone().into_bytes(),
    );

    // STUN: [family][address][port][datagram].
    let binding = |username: Option<&str>| {
        let mut b = vec![0x00, 0x01, 0, 0, 0x21, 0x12, 0xA4, 0x42];
        b.extend_from_slice(&[7u8; 12]);
        if let Some(u) = username {
            b.extend_from_slice(&[0x00, 0x06]);
            b.extend_from_slice(&(u.len() as u16).to_be_bytes());
            b.extend_from_slice(u.as_bytes());
            while b.len() % 4 != 0 {
                b.push(0);
            }
        }
        b.extend_from_slice(&[0x80, 0x28, 0x00, 0x04, 1, 2, 3, 4]); // FINGERPRINT-shaped
        let len = (b.len() - 20) as u16;
        b[2..4].copy_from_slice(&len.to_be_bytes());
        b
    };
    let dtls_hello = {
        let mut b = vec![
            0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x40, 0x01, 0, 0, 0x34,
        ];
        b.extend_from_slice(&[0u8; 0x40]);
        b
    };
    let rtp = {
        let mut b = vec![
            0x80, 0x60, 0x12, 0x34, 0, 0, 0x10, 0, 0xde, 0xad, 0xbe, 0xef,
        ];
        b.extend_from_slice(&[0xAA; 100]);
        b
    };
    let rtcp = vec![
        0x81, 0xc9, 0x00, 0x07, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let v4 = [0u8, 192, 0, 2, 1, 0x80, 0x55];
    let mut v6 = vec![1u8];
    v6.extend_from_slice(
        &"2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    v6.extend_from_slice(&[0x13, 0x88]);
    for (name, datagram) in [
        ("plain", binding(None)),
        ("ice-check", binding(Some("abcd:efgh"))),
        ("dtls", dtls_hello.clone()),
        ("rtp", rtp.clone()),
    ] {
        add(
            "stun",
            &format!("{name}-v4"),
            [v4.as_slice(), &datagram].concat(),
        );
        add(
            "stun",
            &format!("{name}-v6"),
            [v6.as_slice(), &datagram].concat(),
        );
    }
    // rtc_datagram: [flags] then records [selector][u16 len][bytes].
    let record = |selector: u8, addr: &[u8], datagram: &[u8]| {
        let mut r = vec![selector];
        r.extend_from_slice(addr);
        r.extend_from_slice(&(datagram.len() as u16).to_be_bytes());
        r.extend_from_slice(datagram);
        r
    };
    let from_v4 = |d: &[u8]| record(0, &v4[1..], d);
    let from_v6 = |d: &[u8]| record(1, &v6[1..], d);
    let from_peer = |d: &[u8]| record(2 | (4 << 2), &[], d);
    add(
        "rtc_datagram",
        "unknown-v4",
        [
            vec![0],
            from_v4(&binding(None)),
            from_v4(&dtls_hello),
            from_v4(&rtp),
        ]
        .concat(),
    );
    add(
        "rtc_datagram",
        "unknown-v6",
        [
            vec![0],
            from_v6(&binding(None)),
            from_v6(&binding(Some("x:y"))),
        ]
        .concat(),
    );
    add(
        "rtc_datagram",
        "peer-plain",
        [
            vec![1],
            from_v4(&binding(Some("abcd:efgh"))),
            record(3, &[], &binding(None)),
        ]
        .concat(),
    );
    add(
        "rtc_datagram",
        "peer-media",
        [
            vec![1],
            from_peer(&dtls_hello),
            from_peer(&rtp),
            from_peer(&rtcp),
            from_peer(&binding(Some("a:b"))),
        ]
        .concat(),
    );
    for (i, (kind, body)) in [
        (
            0u8,
            r#"{"username":"alice","password":"correct horse battery"}"#,
        ),
        (0, r#"{"username":"Bob_2","password":"        "}"#),
        (0, r#"{"username":"a","password":"x","extra":1}"#),
        (1, r#"{"title":"My first live"}"#),
        (1, "{\"title\":\"\\u202eevil\\r\\ntitle\\u0000\"}"),
        (1, r#"{"title":null}"#),
        (2, r#"{"limit":10}"#),
        (2, r#"{"limit":70000}"#),
    ]
    .iter()
    .enumerate()
    {
        add(
            "json_body",
            &format!("doc-{i}"),
            [&[*kind][..], body.as_bytes()].concat(),
        );
    }

    for (target, name, data) in seeds {
        let dir = fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{name}")), data).unwrap();
    }
}
