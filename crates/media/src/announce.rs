//! Start-up checks of the announced address: the one setting that, wrong, makes video
//! never start for viewers elsewhere while everything looks fine on the server.

use std::net::{IpAddr, SocketAddr};

use crate::config::MediaSettings;

/// The candidates every answer carries, as the start-up log states them: what the
/// firewall must let in.
pub fn what_is_announced(ip: IpAddr, udp_ports: &[u16], tcp: Option<SocketAddr>) -> String {
    let udp = match udp_ports {
        [port] => format!("UDP {}", SocketAddr::new(ip, *port)),
        ports => format!(
            "UDP {ip} ports {}",
            ports
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    match tcp {
        Some(tcp) => format!("browsers must reach {udp}, or TCP {tcp} (ICE-TCP)"),
        None => format!("browsers must reach {udp} (ICE-TCP off)"),
    }
}

/// Warnings about `MEDIA_ANNOUNCED_IP` that the other settings show to be likely wrong.
pub fn announced_address_warnings(settings: &MediaSettings) -> Vec<String> {
    let ip = settings.announced_ip;
    let mut warnings = Vec::new();
    let remote_origins: Vec<&String> = settings
        .cors_origins
        .iter()
        .filter(|origin| origin.as_str() != "*" && !is_local_origin(origin))
        .collect();
    if ip.is_loopback()
        && let Some(origin) = remote_origins.first()
    {
        warnings.push(format!(
            "MEDIA_ANNOUNCED_IP is {ip}, a loopback address, but CORS_ORIGIN allows {origin}: \
             only browsers on this machine can send media to it; set the server's public address"
        ));
    }
    if is_private(ip)
        && let Some(origin) = remote_origins.iter().find(|o| o.starts_with("https://"))
    {
        warnings.push(format!(
            "MEDIA_ANNOUNCED_IP is {ip}, a private address, while the site is public ({origin}): \
             browsers outside this network cannot reach it; set the public address (behind NAT: \
             the public IP, with the UDP ports forwarded)"
        ));
    }
    if let Some((name, addresses)) = &settings.announced_host
        && addresses.len() > 1
    {
        let list: Vec<String> = addresses.iter().map(ToString::to_string).collect();
        warnings.push(format!(
            "MEDIA_ANNOUNCED_IP {name} resolves to {} addresses ({}); announcing {ip}: set the \
             address itself to choose another",
            addresses.len(),
            list.join(", ")
        ));
    }
    warnings
}

/// An origin whose host is this machine (`localhost`, 127.0.0.0/8, `[::1]`).
fn is_local_origin(origin: &str) -> bool {
    let host = origin
        .split("://")
        .nth(1)
        .unwrap_or(origin)
        .split('/')
        .next()
        .unwrap_or("");
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Private, shared (CGNAT) and link-local ranges: not reachable from the internet.
fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private() || v4.is_link_local() || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(announced: &str, origins: &[&str]) -> MediaSettings {
        let mut settings =
            MediaSettings::for_tests("announce-test-secret-0123456789abcdef", 40000, 1);
        settings.announced_ip = announced.parse().unwrap();
        settings.cors_origins = origins.iter().map(|o| (*o).to_owned()).collect();
        settings
    }

    #[test]
    fn the_log_line_names_every_port_to_open() {
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        assert_eq!(
            what_is_announced(ip, &[40000], Some("203.0.113.7:40000".parse().unwrap())),
            "browsers must reach UDP 203.0.113.7:40000, or TCP 203.0.113.7:40000 (ICE-TCP)"
        );
        assert_eq!(
            what_is_announced(ip, &[40000, 40001], None),
            "browsers must reach UDP 203.0.113.7 ports 40000, 40001 (ICE-TCP off)"
        );
    }

    #[test]
    fn local_development_is_quiet() {
        let s = settings(
            "127.0.0.1",
            &[
                "http://localhost:3000",
                "http://127.0.0.1:3000",
                "http://[::1]:3000",
            ],
        );
        assert!(announced_address_warnings(&s).is_empty());
    }

    #[test]
    fn loopback_with_a_public_site_is_flagged() {
        let s = settings("127.0.0.1", &["https://privatehub.example"]);
        let warnings = announced_address_warnings(&s);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("loopback"));
    }

    #[test]
    fn private_and_cgnat_addresses_with_a_public_site_are_flagged() {
        for ip in [
            "10.0.0.5",
            "172.16.1.1",
            "192.168.1.20",
            "100.64.3.4",
            "fd00::5",
            "fe80::1",
        ] {
            let s = settings(ip, &["https://privatehub.example"]);
            let warnings = announced_address_warnings(&s);
            assert_eq!(warnings.len(), 1, "{ip}: {warnings:?}");
            assert!(warnings[0].contains("private"), "{ip}");
        }
        // A LAN-only install (plain http on a private name) is left alone.
        let s = settings("192.168.1.20", &["http://studio.lan:3000"]);
        assert!(announced_address_warnings(&s).is_empty());
        // A public address is fine.
        let s = settings("203.0.113.10", &["https://privatehub.example"]);
        assert!(announced_address_warnings(&s).is_empty());
    }

    #[test]
    fn a_host_name_with_several_addresses_is_flagged() {
        let mut s = settings("203.0.113.10", &["https://privatehub.example"]);
        s.announced_host = Some((
            "sfu.example".into(),
            vec![
                "203.0.113.10".parse().unwrap(),
                "2001:db8::10".parse().unwrap(),
            ],
        ));
        let warnings = announced_address_warnings(&s);
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("resolves to 2 addresses"),
            "{warnings:?}"
        );
    }
}
