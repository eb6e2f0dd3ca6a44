//! A stand-in for a service behind nginx that shows what nginx forwarded: plain requests
//! get the request head back as the body; WebSocket upgrades are accepted and the
//! request head is sent as the first text message.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// Starts the upstream on a free loopback port; `label` starts every answer.
pub async fn start(label: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream, label));
        }
    });
    port
}

async fn serve(mut stream: TcpStream, label: &'static str) {
    // nginx keeps upstream connections alive: answer requests until it closes.
    let mut pending = Vec::new();
    loop {
        let Some(head) = read_head(&mut stream, &mut pending).await else {
            return;
        };
        let lower = head.to_ascii_lowercase();
        let body_length = header(&lower, "content-length")
            .and_then(|value| value.parse::<usize>().ok())
            .unwrap_or(0);
        while pending.len() < body_length {
            let mut chunk = [0u8; 8192];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => pending.extend_from_slice(&chunk[..n]),
            }
        }
        pending.drain(..body_length);
        let echo = format!("upstream={label}\n{lower}");
        if let Some(key) = header(&lower, "sec-websocket-key") {
            // Keys are case-sensitive: take it from the original head.
            let key = header(&head, "Sec-WebSocket-Key").unwrap_or(key);
            let response = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                derive_accept_key(key.as_bytes())
            );
            let mut frame = vec![0x81u8, 126];
            frame.extend_from_slice(&(echo.len() as u16).to_be_bytes());
            frame.extend_from_slice(echo.as_bytes());
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.write_all(&frame).await;
            // Hold the socket open until the client goes away.
            let mut sink = [0u8; 1024];
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            return;
        }
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{echo}",
            echo.len()
        );
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Reads up to the blank line; leftover bytes stay in `pending`.
async fn read_head(stream: &mut TcpStream, pending: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).into_owned();
            pending.drain(..end + 4);
            return Some(head);
        }
        let mut chunk = [0u8; 8192];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => pending.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The value of header `name` (matched as written) in a request head.
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == name).then(|| value.trim())
    })
}
