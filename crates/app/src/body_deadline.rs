//! A deadline on reading request bodies. actix-web bounds the time to receive headers
//! but not the body: a client announcing a body and sending it a byte at a time would
//! hold its connection (and a worker's attention) forever. Past [`BODY_READ_TIMEOUT`]
//! the body stream fails with a timed-out I/O error, which the JSON extractor turns
//! into `408 body_timeout` (`error::json_error_handler`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::HttpMessage;
use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::{Method, header};
use actix_web::middleware::Next;
use actix_web::web::{Bytes, Data};
use futures_util::Stream;

use crate::metrics::AppMetrics;
use crate::state::AppState;

/// The whole body must arrive within this time of the handler starting to read it. API
/// bodies are at most 16 KiB, so this allows for very slow links.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Middleware (`middleware::from_fn`): puts the deadline on bodies of requests that may
/// carry one. GET requests (WebSocket upgrades among them) are left alone.
pub async fn body_deadline(
    mut request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let may_have_body = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) && !request.headers().contains_key(header::UPGRADE);
    if may_have_body {
        let metrics = request
            .app_data::<Data<AppState>>()
            .map(|state| state.metrics.clone());
        let inner = request.take_payload();
        let limited = DeadlineBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(BODY_READ_TIMEOUT)),
            metrics,
            expired: false,
        };
        request.set_payload(Payload::Stream {
            payload: Box::pin(limited),
        });
    }
    next.call(request).await
}

struct DeadlineBody {
    inner: Payload,
    deadline: Pin<Box<tokio::time::Sleep>>,
    metrics: Option<Arc<AppMetrics>>,
    expired: bool,
}

impl Stream for DeadlineBody {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.expired {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = Pin::new(&mut self.inner).poll_next(cx) {
            return Poll::Ready(item);
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.expired = true;
            if let Some(metrics) = &self.metrics {
                metrics.body_read_timeouts.fetch_add(1, Relaxed);
            }
            let timed_out = std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the request body did not arrive in time",
            );
            return Poll::Ready(Some(Err(PayloadError::Io(timed_out))));
        }
        Poll::Pending
    }
}
