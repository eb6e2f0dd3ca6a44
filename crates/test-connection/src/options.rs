//! Command-line options, parsed by hand (there are few of them).

use std::net::IpAddr;
use std::time::Duration;

use reqwest::Url;

pub const USAGE: &str = "\
usage: privatehub-test-connection [options] <app-url> <media-url>

Checks, from where it runs, what browsers need: the app's and the media server's health
over their public URLs, both WebSockets (the app's and the media signaling), the address
the media server announces, a STUN exchange with every RTC UDP port and the ICE-TCP
port, and, when a TURN relay is configured, a TURN allocation on each of its URLs with a
freshly minted credential. Exit status 1 if any check fails.

  <app-url>              the app as browsers see it, e.g. https://privatehub.example.com
  <media-url>            the media server as browsers see it, e.g. https://sfu.privatehub.example.com

options:
  --insecure             accept self-signed or otherwise invalid TLS certificates
  --origin ORIGIN        Origin sent with the WebSocket handshake (default: the app URL's origin)
  --rtc-ports LIST       probe these UDP ports instead of those the server reports,
                         e.g. 40000-40003 or 40000,40002
  --rtc-address IP       send STUN to this address instead of the announced one
  --timeout SECS         HTTP and WebSocket timeout (default 10)
  --udp-timeout-ms MS    first STUN retransmission timeout, doubled on each retry (default 500)
  --udp-attempts N       STUN requests per port before giving up (default 3)
  --rtc-tcp-port PORT    check ICE-TCP on this port instead of the one the server reports
  --turn-url URL         a TURN URL to allocate on (repeatable or comma-separated; default:
                         TURN_URLS from the environment)
  --turn-secret-file F   the TURN secret (coturn's static-auth-secret) from a file
                         (default: TURN_SECRET or TURN_SECRET_FILE from the environment)
  -h, --help             show this help
";

/// Everything the checks need to know.
#[derive(Debug, Clone)]
pub struct Options {
    pub app_url: Url,
    pub media_url: Url,
    pub insecure: bool,
    /// `Origin` header for the signaling handshake.
    pub origin: String,
    pub rtc_ports: Option<Vec<u16>>,
    pub rtc_address: Option<IpAddr>,
    pub timeout: Duration,
    pub udp_first_timeout: Duration,
    pub udp_attempts: u32,
    pub rtc_tcp_port: Option<u16>,
    /// The site's TURN relay, when configured: each `turn:`/`turns:` URL gets an Allocate.
    pub turn: Option<privatehub_protocol::TurnConfig>,
}

/// What the command line asked for.
#[derive(Debug)]
pub enum Command {
    Run(Box<Options>),
    Help,
}

/// Parses the arguments after the program name. Errors are messages for the user.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut positional = Vec::new();
    let mut insecure = false;
    let mut origin = None;
    let mut rtc_ports = None;
    let mut rtc_address = None;
    let mut timeout = Duration::from_secs(10);
    let mut udp_first_timeout = Duration::from_millis(500);
    let mut udp_attempts = 3;
    let mut rtc_tcp_port = None;
    let mut turn_urls: Vec<String> = Vec::new();
    let mut turn_secret_file = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline_value) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag.to_owned(), Some(value.into())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline_value
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--insecure" | "-k" => insecure = true,
            "--origin" => origin = Some(value("--origin")?),
            "--rtc-ports" => rtc_ports = Some(parse_ports(&value("--rtc-ports")?)?),
            "--rtc-address" => {
                let text = value("--rtc-address")?;
                let ip = text
                    .parse()
                    .map_err(|_| format!("--rtc-address: {text:?} is not an IP address"))?;
                rtc_address = Some(ip);
            }
            "--timeout" => timeout = Duration::from_secs(parse_number(&value("--timeout")?)?),
            "--udp-timeout-ms" => {
                udp_first_timeout =
                    Duration::from_millis(parse_number(&value("--udp-timeout-ms")?)?)
            }
            "--udp-attempts" => udp_attempts = parse_number(&value("--udp-attempts")?)?.max(1),
            "--rtc-tcp-port" => {
                let text = value("--rtc-tcp-port")?;
                let port: u16 = text
                    .parse()
                    .ok()
                    .filter(|port| *port != 0)
                    .ok_or_else(|| format!("--rtc-tcp-port: {text:?} is not a port"))?;
                rtc_tcp_port = Some(port);
            }
            "--turn-url" => turn_urls.push(value("--turn-url")?),
            "--turn-secret-file" => turn_secret_file = Some(value("--turn-secret-file")?),
            other if other.starts_with('-') && other.len() > 1 => {
                return Err(format!("unknown option {other}"));
            }
            _ => positional.push(arg),
        }
    }
    let [app, media] = <[String; 2]>::try_from(positional).map_err(|got| {
        format!(
            "expected <app-url> <media-url>, got {} arguments",
            got.len()
        )
    })?;
    let app_url = parse_url("app", &app)?;
    let media_url = parse_url("media", &media)?;
    let origin = origin.unwrap_or_else(|| app_url.origin().ascii_serialization());
    let turn = turn_settings(turn_urls, turn_secret_file)?;
    Ok(Command::Run(Box::new(Options {
        rtc_tcp_port,
        turn,
        app_url,
        media_url,
        insecure,
        origin,
        rtc_ports,
        rtc_address,
        timeout,
        udp_first_timeout,
        udp_attempts: u32::try_from(udp_attempts).unwrap_or(u32::MAX),
    })))
}

/// The TURN relay from the flags, falling back to the environment's `TURN_*` settings
/// (as in app.env), checked the way the services check them.
fn turn_settings(
    urls: Vec<String>,
    secret_file: Option<String>,
) -> Result<Option<privatehub_protocol::TurnConfig>, String> {
    let from_flags = |name: &str| -> Option<String> {
        match name {
            "TURN_URLS" if !urls.is_empty() => Some(urls.join(",")),
            "TURN_SECRET_FILE" if secret_file.is_some() => secret_file.clone(),
            "TURN_SECRET" if secret_file.is_some() => None,
            _ => std::env::var(name)
                .ok()
                .filter(|value| !value.trim().is_empty()),
        }
    };
    privatehub_protocol::TurnConfig::from_lookup(from_flags).map_err(|error| error.to_string())
}

fn parse_url(which: &str, text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|error| format!("{which} URL {text:?}: {error}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!(
            "{which} URL {text:?} must be http:// or https:// with a host"
        ));
    }
    Ok(url)
}

fn parse_number(text: &str) -> Result<u64, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not a whole number"))
}

/// `40000-40003`, `40000,40002` or a mix of both.
pub fn parse_ports(text: &str) -> Result<Vec<u16>, String> {
    let bad = || format!("--rtc-ports: {text:?} is not a port list like 40000-40003,40010");
    let mut ports = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((first, last)) => {
                let first: u16 = first.trim().parse().map_err(|_| bad())?;
                let last: u16 = last.trim().parse().map_err(|_| bad())?;
                if first > last || last - first > 1024 {
                    return Err(bad());
                }
                ports.extend(first..=last);
            }
            None => ports.push(part.parse().map_err(|_| bad())?),
        }
    }
    if ports.is_empty() || ports.contains(&0) {
        return Err(bad());
    }
    Ok(ports)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn urls_and_flags() {
        let Ok(Command::Run(options)) = parse(args(
            "--insecure https://a.example:8443/ --rtc-ports=40000-40002,40010 https://sfu.example",
        )) else {
            panic!("should parse");
        };
        assert!(options.insecure);
        assert_eq!(options.origin, "https://a.example:8443");
        assert_eq!(options.media_url.as_str(), "https://sfu.example/");
        assert_eq!(options.rtc_ports, Some(vec![40000, 40001, 40002, 40010]));
        assert_eq!(options.udp_attempts, 3);
    }

    #[test]
    fn mistakes_are_explained() {
        for (input, expected) in [
            ("https://a", "expected <app-url> <media-url>, got 1"),
            ("ftp://a https://b", "must be http:// or https://"),
            ("https://a https://b --bogus", "unknown option --bogus"),
            ("https://a https://b --rtc-ports 5-1", "--rtc-ports"),
            (
                "https://a https://b --rtc-address nope",
                "not an IP address",
            ),
            ("https://a https://b --timeout", "--timeout needs a value"),
        ] {
            let error = parse(args(input)).expect_err(input);
            assert!(error.contains(expected), "{input}: {error}");
        }
        assert!(matches!(parse(args("-h")), Ok(Command::Help)));
    }
}
