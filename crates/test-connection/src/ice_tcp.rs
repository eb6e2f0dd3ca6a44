//! The media server's ICE-TCP port (RFC 6544, RFC 4571 framing): a plain STUN Binding
//! Request in one length-prefixed frame, which the server answers with this machine's
//! address. A pass means a browser whose network blocks UDP can still reach the server.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::report::CheckResult;
use crate::stun::{BindingResponse, binding_request, parse_binding_response};

/// Connects to `target`, sends one framed Binding Request and reads the framed answer.
pub async fn check(target: SocketAddr, timeout: Duration) -> CheckResult {
    let name = format!("rtc tcp/{}", target.port());
    let firewall = format!(
        "open TCP {} (MEDIA_RTC_TCP_PORT) in ufw/nftables and the cloud security group, or \
         set MEDIA_RTC_TCP_PORT=off if you do not want ICE over TCP",
        target.port()
    );
    let started = Instant::now();
    let exchanged = tokio::time::timeout(timeout, exchange(target)).await;
    match exchanged {
        Err(_) => CheckResult::fail(
            name,
            format!("no answer from TCP {target} within {} s", timeout.as_secs()),
            firewall,
        ),
        Ok(Err(error)) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
            CheckResult::fail(
                name,
                format!("TCP {target} refused the connection: nothing listens there"),
                "is privatehub-media running with MEDIA_RTC_TCP_PORT set to this port? \
                 (journalctl -u privatehub-media)",
            )
        }
        Ok(Err(error)) => CheckResult::fail(name, format!("TCP {target}: {error}"), firewall),
        Ok(Ok(Ok(BindingResponse::Success { mapped, .. }))) => CheckResult::pass(
            name,
            format!(
                "STUN over ICE-TCP to {target} answered in {} ms; the server sees this machine as {mapped}",
                started.elapsed().as_millis()
            ),
        ),
        Ok(Ok(Ok(BindingResponse::Error { code, reason }))) => CheckResult::fail(
            name,
            format!("TCP {target} answered STUN error {code} {reason}"),
            "something other than privatehub-media may hold this port",
        ),
        Ok(Ok(Err(error))) => CheckResult::fail(
            name,
            format!("TCP {target} answered, but not with STUN: {error}"),
            "something other than privatehub-media holds this port (a proxy?)",
        ),
    }
}

type Answer = Result<BindingResponse, crate::stun::StunParseError>;

async fn exchange(target: SocketAddr) -> std::io::Result<Answer> {
    let mut stream = TcpStream::connect(target).await?;
    let transaction_id: [u8; 12] = rand::random();
    let request = binding_request(&transaction_id);
    let mut frame = (request.len() as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(&request);
    stream.write_all(&frame).await?;
    let length = usize::from(stream.read_u16().await?);
    let mut answer = vec![0u8; length];
    stream.read_exact(&mut answer).await?;
    Ok(parse_binding_response(&answer, &transaction_id))
}
