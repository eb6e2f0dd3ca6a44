//! The invariants ARCHITECTURE.md states, checked on the source tree, so a change that
//! breaks one fails the suite instead of quietly making the document wrong.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The `[dependencies]` table of a crate's manifest (not dev-dependencies).
fn dependencies(krate: &str) -> String {
    let manifest = std::fs::read_to_string(root().join("crates").join(krate).join("Cargo.toml"))
        .unwrap_or_else(|error| panic!("read {krate}/Cargo.toml: {error}"));
    let start = manifest
        .find("[dependencies]")
        .unwrap_or_else(|| panic!("{krate} has no [dependencies]"));
    let rest = &manifest[start + "[dependencies]".len()..];
    let end = rest.find("\n[").unwrap_or(rest.len());
    rest[..end].to_owned()
}

fn depends_on(krate: &str, dependency: &str) -> bool {
    dependencies(krate)
        .lines()
        .any(|line| line.trim_start().starts_with(dependency) && line.contains('='))
}

/// Every `.rs` file below `dir`, with the text before its first `#[cfg(test)]` (unit
/// tests may do what the code may not).
fn sources_without_tests(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                if path.file_name().is_some_and(|name| name == "tests.rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                let code = text.split("#[cfg(test)]").next().unwrap_or("").to_owned();
                found.push((path, code));
            }
        }
    }
    found
}

#[test]
fn app_and_media_never_depend_on_each_other() {
    assert!(!depends_on("app", "privatehub-media"));
    assert!(!depends_on("media", "privatehub-app"));
    assert!(depends_on("app", "privatehub-protocol"));
    assert!(depends_on("media", "privatehub-protocol"));
}

#[test]
fn the_edge_crate_serves_both_services_and_knows_neither() {
    for service in ["privatehub-app", "privatehub-media", "privatehub-protocol"] {
        assert!(!depends_on("edge", service), "edge depends on {service}");
    }
    for service in ["app", "media"] {
        assert!(
            depends_on(service, "privatehub-edge"),
            "{service} does not use the edge"
        );
        // The WebSocket connection is the edge's, in both.
        assert!(
            !depends_on(service, "actix-ws"),
            "{service} has its own WebSocket loop again"
        );
    }
}

/// ARCHITECTURE.md: protocol is the only crate that derives the wire types.
#[test]
fn only_protocol_derives_the_wire_types() {
    for krate in ["app", "media", "edge"] {
        for (path, code) in sources_without_tests(&root().join("crates").join(krate).join("src")) {
            for line in code
                .lines()
                .filter(|line| line.trim_start().starts_with("#[derive("))
            {
                assert!(
                    !line.contains("Serialize") && !line.contains("Deserialize"),
                    "{} derives a wire type ({line}): it belongs in crates/protocol",
                    path.display()
                );
            }
        }
    }
}

/// ARCHITECTURE.md: the chat server task never awaits (database work is spawned and
/// reports back). Only its `run` loop is async; `loading.rs` holds the reads those
/// spawned tasks run.
#[test]
fn the_chat_server_task_never_awaits() {
    let server = root().join("crates/app/src/chat");
    let mut files = sources_without_tests(&server.join("server"));
    files.push((
        server.join("server.rs"),
        std::fs::read_to_string(server.join("server.rs")).unwrap(),
    ));
    for (path, code) in files {
        if path.ends_with("loading.rs") {
            continue;
        }
        for line in code.lines().filter(|line| line.contains("async fn")) {
            let allowed = line.contains("async fn run(") || line.contains("async fn shutdown(");
            assert!(
                allowed,
                "{}: `{}`: the chat server's methods must not await",
                path.display(),
                line.trim()
            );
        }
    }
}

#[test]
fn the_protocol_crate_has_no_io_dependencies() {
    for io in [
        "tokio",
        "actix-web",
        "actix-ws",
        "diesel",
        "str0m",
        "reqwest",
    ] {
        assert!(!depends_on("protocol", io), "protocol depends on {io}");
    }
}

#[test]
fn only_the_app_touches_sqlite() {
    for krate in ["media", "protocol"] {
        for database in ["diesel", "libsqlite3-sys", "r2d2"] {
            assert!(
                !depends_on(krate, database),
                "{krate} depends on {database}"
            );
        }
    }
}

#[test]
fn the_sfu_core_reads_no_clock_socket_or_channel() {
    let sfu = root().join("crates/media/src/sfu");
    let files = sources_without_tests(&sfu);
    assert!(
        files.len() >= 5,
        "found only {} files in {}",
        files.len(),
        sfu.display()
    );
    for (path, code) in files {
        for forbidden in [
            "Instant::now()",
            "SystemTime::now()",
            "UdpSocket",
            "tokio::",
            "std::sync::mpsc",
        ] {
            assert!(
                !code.contains(forbidden),
                "{} uses {forbidden}: time and I/O are the worker's, the core takes them as arguments",
                path.display()
            );
        }
    }
}

#[test]
fn no_file_is_written_on_a_media_worker() {
    let media = root().join("crates/media/src");
    let mut files = sources_without_tests(&media.join("sfu"));
    for name in ["worker.rs", "udp_batch.rs", "engine.rs"] {
        let path = media.join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        files.push((
            path,
            text.split("#[cfg(test)]").next().unwrap_or("").to_owned(),
        ));
    }
    for (path, code) in files {
        for forbidden in ["std::fs", "File::", "OpenOptions", "write_all("] {
            assert!(
                !code.contains(forbidden),
                "{} uses {forbidden}: recordings are written by the recorder thread, never on a media worker",
                path.display()
            );
        }
    }
    let recorder = std::fs::read_to_string(media.join("recording/mod.rs")).unwrap();
    assert!(
        recorder.contains("try_send("),
        "the workers hand packets to the recorder without waiting"
    );
}

#[test]
fn argon2_runs_only_behind_the_hashing_pool() {
    let app = root().join("crates/app/src");
    for (path, code) in sources_without_tests(&app) {
        let name = path
            .strip_prefix(&app)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if code.contains("use argon2") || code.contains("argon2::") {
            assert_eq!(
                name, "auth/password.rs",
                "argon2 used outside auth/password.rs"
            );
        }
        if code.contains("password::hash_password")
            || code.contains("password::verify_password")
            || code.contains("spend_like_a_verification")
        {
            assert!(
                name == "auth/hashing.rs" || name == "auth/password.rs",
                "{name} hashes a password outside the hashing pool"
            );
        }
    }
}

#[test]
fn the_services_talk_only_through_their_internal_api_clients() {
    let clients = [
        ("crates/app/src", "whip.rs"),
        ("crates/media/src", "whip/app_api.rs"),
    ];
    for (dir, client) in clients {
        let base = root().join(dir);
        for (path, code) in sources_without_tests(&base) {
            let name = path
                .strip_prefix(&base)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if code.contains("reqwest::") {
                assert_eq!(
                    name, client,
                    "{dir}/{name} makes HTTP calls outside its internal API client"
                );
            }
        }
    }
    // The internal API is published on neither nginx site.
    let template = std::fs::read_to_string(root().join("nginx/privatehub.conf.template")).unwrap();
    let refusals = template
        .matches("location ^~ /internal/ {\n        return 404;")
        .count();
    assert_eq!(refusals, 2, "both nginx sites must refuse /internal/");
}
