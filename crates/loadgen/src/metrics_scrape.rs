//! Reads a Prometheus text endpoint (the SFU's `GET /metrics`) to cross-check what the
//! server says it sent against what the viewers received.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Unlabelled samples of `http://host:port/path`, by metric name. Empty on any error.
pub fn scrape(url: &str) -> BTreeMap<String, f64> {
    fetch(url).map(|text| parse(&text)).unwrap_or_default()
}

/// `after - before` for every counter (`*_total`) present in both.
pub fn counter_deltas(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .filter(|(name, _)| name.ends_with("_total"))
        .filter_map(|(name, value)| before.get(name).map(|old| (name.clone(), value - old)))
        .collect()
}

fn fetch(url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(index) => (&rest[..index], &rest[index..]),
        None => (rest, "/"),
    };
    let mut stream = TcpStream::connect(authority).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return None;
    }
    Some(body.to_owned())
}

fn parse(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.contains('{'))
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let name = parts.next()?;
            let value = parts.next()?.parse().ok()?;
            Some((name.to_owned(), value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_unlabelled_samples_and_counter_deltas() {
        let before = parse("# HELP a_total x\na_total 3\nb 1\nc_bucket{le=\"1\"} 2\n");
        let after = parse("a_total 10\nb 5\n");
        assert_eq!(before.len(), 2);
        let deltas = counter_deltas(&before, &after);
        assert_eq!(deltas.get("a_total"), Some(&7.0));
        assert_eq!(deltas.get("b"), None);
    }
}
