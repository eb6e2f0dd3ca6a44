//! Is the address the media server announces one that browsers can reach? Compares it
//! with the address this tool reached the media host at. Pure functions, unit-tested.

use std::fmt;
use std::net::IpAddr;

use crate::report::{CheckResult, Status};

/// Where an IP address is routable from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressScope {
    /// 0.0.0.0 or `::`: not an address anyone can send to.
    Unspecified,
    /// 127.0.0.0/8, `::1`: only this machine.
    Loopback,
    /// 169.254.0.0/16, fe80::/10: only this link.
    LinkLocal,
    /// RFC 1918, RFC 6598 (carrier-grade NAT), fc00::/7: only inside a private network.
    Private,
    /// Everything else: reachable from the internet if nothing filters it.
    Public,
}

impl fmt::Display for AddressScope {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            AddressScope::Unspecified => "unspecified",
            AddressScope::Loopback => "loopback",
            AddressScope::LinkLocal => "link-local",
            AddressScope::Private => "private",
            AddressScope::Public => "public",
        })
    }
}

/// The scope of `ip`.
pub fn scope(ip: IpAddr) -> AddressScope {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4.is_unspecified() {
                AddressScope::Unspecified
            } else if v4.is_loopback() {
                AddressScope::Loopback
            } else if v4.is_link_local() {
                AddressScope::LinkLocal
            } else if v4.is_private() || (a == 100 && (64..128).contains(&b)) {
                AddressScope::Private
            } else {
                AddressScope::Public
            }
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return scope(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            if v6.is_unspecified() {
                AddressScope::Unspecified
            } else if v6.is_loopback() {
                AddressScope::Loopback
            } else if first & 0xFFC0 == 0xFE80 {
                AddressScope::LinkLocal
            } else if first & 0xFE00 == 0xFC00 {
                AddressScope::Private
            } else {
                AddressScope::Public
            }
        }
    }
}

/// What the tool knows about the media host when it compares addresses.
#[derive(Debug, Clone)]
pub struct MediaHost {
    /// Host part of the media URL, e.g. `sfu.example.com`.
    pub name: String,
    /// Every address the name resolved to.
    pub resolved: Vec<IpAddr>,
    /// The address the health request actually connected to, when known.
    pub reached: Option<IpAddr>,
}

/// The "announced address" check: `announced` is the media server's `announced_ip`.
pub fn compare_announced(announced: IpAddr, host: &MediaHost) -> CheckResult {
    let name = "announced address";
    let fix = "set MEDIA_ANNOUNCED_IP in media.env to the public address browsers reach \
               this host at, then restart privatehub-media";
    let announced_scope = scope(announced);
    if announced_scope == AddressScope::Unspecified {
        return CheckResult::new(
            name,
            Status::Fail,
            format!("media server announces {announced}, which no browser can send to"),
            fix,
        );
    }
    if host.reached == Some(announced) || host.resolved.contains(&announced) {
        let note = match announced_scope {
            AddressScope::Public => String::new(),
            other => format!(" ({other}: only clients that can route to it will connect)"),
        };
        let matched = if host.name.parse::<IpAddr>().is_ok() {
            "the address of the media URL".to_owned()
        } else {
            format!("the address {} resolves to", host.name)
        };
        return CheckResult::pass(
            name,
            format!("media server announces {announced}, {matched}{note}"),
        );
    }
    let Some(seen) = host.reached.or_else(|| host.resolved.first().copied()) else {
        return CheckResult::new(
            name,
            Status::Warn,
            format!(
                "media server announces {announced}; could not resolve {} to compare",
                host.name
            ),
            "check the DNS record of the media host",
        );
    };
    let seen_scope = scope(seen);
    let announced_text = format!(
        "media server announces {announced_scope} {announced} but {} was reached at {seen_scope} {seen}",
        host.name
    );
    match (announced_scope, seen_scope) {
        (AddressScope::Loopback, AddressScope::Loopback) => CheckResult::pass(
            name,
            format!("media server announces {announced} on loopback (local testing only)"),
        ),
        (AddressScope::Loopback, _) => CheckResult::new(
            name,
            Status::Fail,
            format!("{announced_text}: browsers would send their media to themselves"),
            fix,
        ),
        (AddressScope::Private | AddressScope::LinkLocal, AddressScope::Public) => {
            CheckResult::new(
                name,
                Status::Fail,
                format!(
                    "{announced_text}: browsers on the internet cannot reach a {announced_scope} address"
                ),
                format!(
                    "behind NAT or a cloud private address? {fix}, and forward the UDP ports to this host"
                ),
            )
        }
        (AddressScope::Public, _) if seen_scope != AddressScope::Public => CheckResult::new(
            name,
            Status::Warn,
            format!("{announced_text} (testing from inside the network?)"),
            "run test-connection from outside the network too; the UDP checks below use the announced address",
        ),
        _ => CheckResult::new(
            name,
            Status::Warn,
            format!(
                "{announced_text}; fine only if media is meant to flow over that other address"
            ),
            fix,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(resolved: &[&str], reached: Option<&str>) -> MediaHost {
        MediaHost {
            name: "sfu.example.com".into(),
            resolved: resolved.iter().map(|ip| ip.parse().unwrap()).collect(),
            reached: reached.map(|ip| ip.parse().unwrap()),
        }
    }

    fn status(announced: &str, host: &MediaHost) -> Status {
        compare_announced(announced.parse().unwrap(), host).status
    }

    #[test]
    fn scopes() {
        let cases = [
            ("0.0.0.0", AddressScope::Unspecified),
            ("127.0.0.1", AddressScope::Loopback),
            ("::1", AddressScope::Loopback),
            ("10.1.2.3", AddressScope::Private),
            ("172.16.0.1", AddressScope::Private),
            ("192.168.1.1", AddressScope::Private),
            ("100.64.0.1", AddressScope::Private),
            ("169.254.169.254", AddressScope::LinkLocal),
            ("fe80::1", AddressScope::LinkLocal),
            ("fd00::1", AddressScope::Private),
            ("::ffff:10.0.0.1", AddressScope::Private),
            ("203.0.113.9", AddressScope::Public),
            ("2001:db8::1", AddressScope::Public),
        ];
        for (ip, expected) in cases {
            assert_eq!(scope(ip.parse().unwrap()), expected, "{ip}");
        }
    }

    #[test]
    fn matching_addresses_pass() {
        let public = host(&["203.0.113.9"], Some("203.0.113.9"));
        assert_eq!(status("203.0.113.9", &public), Status::Pass);
        let dual = host(&["::1", "127.0.0.1"], Some("127.0.0.1"));
        assert_eq!(status("127.0.0.1", &dual), Status::Pass);
        let loopbacks = host(&["::1"], Some("::1"));
        assert_eq!(status("127.0.0.1", &loopbacks), Status::Pass);
    }

    #[test]
    fn unreachable_announcements_fail() {
        let public = host(&["203.0.113.9"], Some("203.0.113.9"));
        for announced in ["127.0.0.1", "10.0.0.5", "172.31.4.4", "0.0.0.0"] {
            let result = compare_announced(announced.parse().unwrap(), &public);
            assert_eq!(result.status, Status::Fail, "{announced}");
            assert!(result.hint.contains("MEDIA_ANNOUNCED_IP"), "{result:?}");
        }
    }

    #[test]
    fn doubtful_announcements_warn() {
        let inside = host(&["10.0.0.5"], Some("10.0.0.5"));
        assert_eq!(status("203.0.113.9", &inside), Status::Warn);
        let other_public = host(&["203.0.113.9"], Some("203.0.113.9"));
        assert_eq!(status("198.51.100.1", &other_public), Status::Warn);
        let unresolved = host(&[], None);
        assert_eq!(status("198.51.100.1", &unresolved), Status::Warn);
    }
}
