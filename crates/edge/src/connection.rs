//! What both services set on every accepted TCP connection.

use std::time::Duration;

/// How long the kernel keeps a connection whose data the client does not take (no ACK,
/// or a zero receive window) before aborting it. actix-http keeps writing a stuck
/// connection forever, with what is queued for it, even after its session ended (a
/// client that stopped reading); longer than either service's send timeout. A socket's
/// per-address slot is held until then (see [`crate::websocket::accept`]).
pub const TCP_USER_TIMEOUT: Duration = Duration::from_secs(20);

/// For `HttpServer::on_connect`: sets [`TCP_USER_TIMEOUT`] on each accepted connection.
pub fn limit_stuck_writes(connection: &dyn std::any::Any, _: &mut actix_web::dev::Extensions) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Some(stream) = connection.downcast_ref::<actix_web::rt::net::TcpStream>()
        && let Err(error) =
            socket2::SockRef::from(stream).set_tcp_user_timeout(Some(TCP_USER_TIMEOUT))
    {
        tracing::debug!(%error, "cannot set TCP_USER_TIMEOUT");
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = connection;
}
