//! Clients for talking to nginx over TLS: reqwest, a WebSocket client and raw ALPN.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// Upper bound for any single network step in these tests.
pub const STEP: Duration = Duration::from_secs(10);

/// reqwest trusting the test certificate, no proxy, no redirects followed.
pub fn https_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .danger_accept_invalid_certs(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(STEP)
        .build()
        .unwrap()
}

/// A TLS connection to `127.0.0.1:port` for `server_name`, offering `alpn`.
pub async fn tls_connect(port: u16, server_name: &str, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    config
        .dangerous()
        .set_certificate_verifier(Arc::new(AnyCertificate));
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(server_name.to_owned()).unwrap();
    tokio::time::timeout(
        STEP,
        TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .expect("TLS handshake in time")
    .expect("TLS handshake")
}

/// A WebSocket over TLS to `wss://<server_name>:<port><path>` with `origin`.
/// Returns the handshake error's HTTP status on refusal.
pub async fn wss_connect(
    port: u16,
    server_name: &str,
    path: &str,
    origin: &str,
) -> Result<WebSocketStream<TlsStream<TcpStream>>, String> {
    let stream = tls_connect(port, server_name, &[b"http/1.1"]).await;
    let mut request = format!("wss://{server_name}:{port}{path}")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Origin", HeaderValue::from_str(origin).unwrap());
    match tokio::time::timeout(STEP, tokio_tungstenite::client_async(request, stream)).await {
        Ok(Ok((socket, response))) => {
            assert_eq!(response.status(), 101);
            Ok(socket)
        }
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response))) => {
            Err(format!("HTTP {}", response.status()))
        }
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("handshake timed out".into()),
    }
}

/// Sends `{"type":"ping"}` and returns the first text message that comes back.
pub async fn ping(socket: &mut WebSocketStream<TlsStream<TcpStream>>) -> String {
    socket
        .send(Message::text(r#"{"type":"ping"}"#))
        .await
        .unwrap();
    next_text(socket).await
}

/// The next text message, skipping control frames.
pub async fn next_text(socket: &mut WebSocketStream<TlsStream<TcpStream>>) -> String {
    loop {
        let message = tokio::time::timeout(STEP, socket.next())
            .await
            .expect("a message in time")
            .expect("socket still open")
            .expect("no socket error");
        if let Message::Text(text) = message {
            return text.to_string();
        }
    }
}

#[derive(Debug)]
struct AnyCertificate;

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
