//! The client's frames, decoded from the request's payload with actix's codec, with
//! continuations put together into one message. Nothing larger than the limit is held:
//! a frame that announces more is refused from its header, and continuations stop at
//! the limit.

use std::pin::Pin;
use std::task::{Context, Poll};

use actix_http::ws::{CloseReason, Codec, Frame, Item, ProtocolError};
use actix_web::dev::Payload;
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use futures_util::Stream;
use tokio_util::codec::Decoder;

/// Past this size the read buffer is not kept once it is empty.
const KEPT_BUFFER_BYTES: usize = 2 * 1024;

/// One message from the client.
#[derive(Debug)]
pub enum Incoming {
    Text(ByteString),
    Binary(Bytes),
    Ping(Bytes),
    Pong,
    Close(Option<CloseReason>),
}

/// Why the client's stream cannot go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundError {
    /// A message over the limit.
    TooLarge,
    /// Not valid WebSocket framing, or text that is not UTF-8.
    Malformed(String),
}

/// See the module documentation.
pub struct Inbound {
    payload: Payload,
    codec: Codec,
    buffer: BytesMut,
    max_message_bytes: usize,
    /// A message arriving in continuations: whether it is text, and its bytes so far.
    partial: Option<(bool, BytesMut)>,
    payload_ended: bool,
    failed: bool,
}

impl Inbound {
    pub(super) fn new(payload: Payload, max_message_bytes: usize) -> Inbound {
        Inbound {
            payload,
            codec: super::server_codec(max_message_bytes),
            buffer: BytesMut::new(),
            max_message_bytes,
            partial: None,
            payload_ended: false,
            failed: false,
        }
    }

    /// The next message in the buffer, if a whole one is there.
    fn next_buffered(&mut self) -> Result<Option<Incoming>, InboundError> {
        loop {
            let frame = match self.codec.decode(&mut self.buffer) {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ok(None),
                Err(ProtocolError::Overflow) => return Err(InboundError::TooLarge),
                Err(error) => return Err(InboundError::Malformed(error.to_string())),
            };
            let message = match frame {
                Frame::Text(bytes) => Incoming::Text(text(bytes)?),
                Frame::Binary(bytes) => Incoming::Binary(bytes),
                Frame::Ping(bytes) => Incoming::Ping(bytes),
                Frame::Pong(_) => Incoming::Pong,
                Frame::Close(reason) => Incoming::Close(reason),
                Frame::Continuation(item) => match self.continuation(item)? {
                    Some(message) => message,
                    None => continue,
                },
            };
            return Ok(Some(message));
        }
    }

    /// Puts continuations together; the whole message once its last part is here.
    fn continuation(&mut self, item: Item) -> Result<Option<Incoming>, InboundError> {
        let (part, last) = match item {
            Item::FirstText(bytes) => {
                self.partial = Some((true, BytesMut::new()));
                (bytes, false)
            }
            Item::FirstBinary(bytes) => {
                self.partial = Some((false, BytesMut::new()));
                (bytes, false)
            }
            Item::Continue(bytes) => (bytes, false),
            Item::Last(bytes) => (bytes, true),
        };
        let Some((_, message)) = self.partial.as_mut() else {
            return Err(InboundError::Malformed("a continuation of nothing".into()));
        };
        if message.len() + part.len() > self.max_message_bytes {
            return Err(InboundError::TooLarge);
        }
        message.extend_from_slice(&part);
        if !last {
            return Ok(None);
        }
        let Some((is_text, message)) = self.partial.take() else {
            return Ok(None);
        };
        let message = message.freeze();
        Ok(Some(if is_text {
            Incoming::Text(text(message)?)
        } else {
            Incoming::Binary(message)
        }))
    }
}

fn text(bytes: Bytes) -> Result<ByteString, InboundError> {
    ByteString::try_from(bytes)
        .map_err(|_| InboundError::Malformed("a text message that is not UTF-8".into()))
}

impl Stream for Inbound {
    type Item = Result<Incoming, InboundError>;

    fn poll_next(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        loop {
            match this.next_buffered() {
                Ok(Some(message)) => {
                    // A large message (an SDP offer) must not leave its size behind.
                    if this.buffer.is_empty() && this.buffer.capacity() > KEPT_BUFFER_BYTES {
                        this.buffer = BytesMut::new();
                    }
                    return Poll::Ready(Some(Ok(message)));
                }
                Ok(None) => {}
                Err(error) => {
                    this.failed = true;
                    return Poll::Ready(Some(Err(error)));
                }
            }
            if this.payload_ended {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.payload).poll_next(context) {
                Poll::Ready(Some(Ok(chunk))) => this.buffer.extend_from_slice(&chunk),
                Poll::Ready(Some(Err(error))) => {
                    tracing::debug!(%error, "a WebSocket client's connection failed");
                    this.payload_ended = true;
                }
                Poll::Ready(None) => this.payload_ended = true,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use actix_http::ws::Message;
    use futures_util::StreamExt;
    use tokio_util::codec::Encoder;

    use super::*;

    /// `messages` as a client sends them (masked), as one request payload.
    fn inbound(messages: Vec<Message>, limit: usize) -> Inbound {
        let mut codec = Codec::new().client_mode();
        let mut wire = BytesMut::new();
        for message in messages {
            codec.encode(message, &mut wire).unwrap();
        }
        Inbound::new(Payload::from(wire.freeze()), limit)
    }

    #[tokio::test]
    async fn continuations_make_one_message_and_controls_pass_between_them() {
        let mut stream = inbound(
            vec![
                Message::Continuation(Item::FirstText("hel".into())),
                Message::Ping(Bytes::from_static(b"p")),
                Message::Continuation(Item::Continue("lo ".into())),
                Message::Continuation(Item::Last("world".into())),
                Message::Text("next".into()),
            ],
            64,
        );
        assert!(matches!(stream.next().await, Some(Ok(Incoming::Ping(ping))) if ping == "p"));
        assert!(
            matches!(stream.next().await, Some(Ok(Incoming::Text(text))) if text == "hello world")
        );
        assert!(matches!(stream.next().await, Some(Ok(Incoming::Text(text))) if text == "next"));
        assert!(stream.next().await.is_none());
    }

    #[tokio::test]
    async fn over_the_limit_in_one_frame_or_in_parts_is_refused() {
        let mut one_frame = inbound(vec![Message::Text("0123456789".into())], 8);
        assert_eq!(
            one_frame.next().await.unwrap().unwrap_err(),
            InboundError::TooLarge
        );
        assert!(one_frame.next().await.is_none(), "nothing after a refusal");
        let mut parts = inbound(
            vec![
                Message::Continuation(Item::FirstText("01234".into())),
                Message::Continuation(Item::Last("56789".into())),
            ],
            8,
        );
        assert_eq!(
            parts.next().await.unwrap().unwrap_err(),
            InboundError::TooLarge
        );
    }

    #[tokio::test]
    async fn text_that_is_not_utf8_is_malformed() {
        let mut stream = inbound(
            vec![
                Message::Continuation(Item::FirstText(Bytes::from_static(&[0xff, 0xfe]))),
                Message::Continuation(Item::Last(Bytes::new())),
            ],
            64,
        );
        assert!(matches!(
            stream.next().await,
            Some(Err(InboundError::Malformed(_)))
        ));
    }
}
