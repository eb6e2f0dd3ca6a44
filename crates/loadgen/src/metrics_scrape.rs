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

/// `after - before` for every counter (`*_total`) and histogram series (`*_bucket{..}`,
/// `*_count`, `*_sum`) present in both.
pub fn counter_deltas(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .filter(|(name, _)| {
            name.ends_with("_total")
                || name.contains("_bucket{")
                || name.ends_with("_count")
                || name.ends_with("_sum")
        })
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

/// The `quantile` (0..1) of histogram `name` from its bucket series in `samples`: the
/// upper bound of the first bucket holding that share of the observations (Prometheus'
/// `histogram_quantile` without interpolation). `None` without observations.
pub fn histogram_quantile(
    samples: &BTreeMap<String, f64>,
    name: &str,
    quantile: f64,
) -> Option<f64> {
    let prefix = format!("{name}_bucket{{le=\"");
    let mut buckets: Vec<(f64, f64)> = samples
        .iter()
        .filter_map(|(key, value)| {
            let bound = key.strip_prefix(&prefix)?.strip_suffix("\"}")?;
            let bound = if bound == "+Inf" {
                f64::INFINITY
            } else {
                bound.parse().ok()?
            };
            Some((bound, *value))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    buckets
        .iter()
        .find(|(_, cumulative)| *cumulative >= quantile * total)
        .map(|(bound, _)| *bound)
}

fn parse(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && (!line.contains('{') || line.contains("_bucket{")))
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
        assert_eq!(before.len(), 3);
        let deltas = counter_deltas(&before, &after);
        assert_eq!(deltas.get("a_total"), Some(&7.0));
        assert_eq!(deltas.get("b"), None);
    }

    #[test]
    fn quantile_from_bucket_deltas() {
        let before =
            parse("d_bucket{le=\"0.001\"} 0\nd_bucket{le=\"0.005\"} 0\nd_bucket{le=\"+Inf\"} 0\n");
        let after = parse(
            "d_bucket{le=\"0.001\"} 90\nd_bucket{le=\"0.005\"} 99\nd_bucket{le=\"+Inf\"} 100\n",
        );
        let deltas = counter_deltas(&before, &after);
        assert_eq!(histogram_quantile(&deltas, "d", 0.5), Some(0.001));
        assert_eq!(histogram_quantile(&deltas, "d", 0.99), Some(0.005));
        assert_eq!(histogram_quantile(&deltas, "d", 1.0), Some(f64::INFINITY));
        assert_eq!(histogram_quantile(&BTreeMap::new(), "d", 0.5), None);
    }
}
