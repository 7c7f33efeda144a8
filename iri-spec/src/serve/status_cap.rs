//! [`CapStatusMessage`]: a tower layer for every irikit gRPC server ([`super::builder`]) that
//! keeps the `grpc-message` of an error answer short.
//!
//! Runtimes name the offending value in their error messages ("machine id '…' not found"). A
//! client that sends a 64 KiB id then gets a 64 KiB `grpc-message` header, larger than the
//! header list clients accept (hyper/tonic 16 KiB, grpc-core 8 KiB): the client sees a
//! protocol error instead of the status, and the connection may go with it. The layer
//! truncates the message (at a character boundary, with a note of how much was cut) before
//! the header is sent; the code and any `grpc-status-details-bin` stay as they are.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use tonic::Status;

/// The longest `grpc-message` header value sent, in bytes (percent-encoded).
pub const MAX_STATUS_MESSAGE_BYTES: usize = 2048;

/// The layer; [`super::builder`] adds it to every irikit server.
#[derive(Debug, Clone, Copy, Default)]
pub struct CapStatusMessage;

impl<S> tower::Layer<S> for CapStatusMessage {
    type Service = CapStatusMessageService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CapStatusMessageService { inner }
    }
}

/// The service [`CapStatusMessage`] wraps around a server's routes.
#[derive(Debug, Clone)]
pub struct CapStatusMessageService<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for CapStatusMessageService<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut res = fut.await?;
            cap(res.headers_mut());
            Ok(res)
        })
    }
}

/// Truncates an over-long `grpc-message` in `headers` (a trailers-only error answer).
pub fn cap(headers: &mut http::HeaderMap) {
    let too_long = headers
        .get("grpc-message")
        .is_some_and(|v| v.len() > MAX_STATUS_MESSAGE_BYTES);
    if !too_long {
        return;
    }
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    let message = status.message();
    // Percent-encoding at most triples a byte; keep room for the note.
    let mut keep = (MAX_STATUS_MESSAGE_BYTES / 3).saturating_sub(40);
    while !message.is_char_boundary(keep.min(message.len())) {
        keep -= 1;
    }
    let keep = keep.min(message.len());
    let short = format!("{}… ({} bytes cut)", &message[..keep], message.len() - keep);
    headers.remove("grpc-message");
    headers.remove("grpc-status");
    if Status::new(status.code(), short)
        .add_header(headers)
        .is_err()
    {
        // Cannot happen for a plain code and a valid message; never leave the answer
        // without a status.
        let _ = Status::new(status.code(), "").add_header(headers);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn headers_of(status: &Status) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        status.add_header(&mut headers).unwrap();
        headers
    }

    #[test]
    fn a_short_message_is_left_alone() {
        let mut headers = headers_of(&Status::not_found("machine 'x' not found"));
        let before = headers.clone();
        cap(&mut headers);
        assert_eq!(headers, before);
    }

    /// `status` through [`cap`], checked to fit the limit, and read back.
    fn capped(status: &Status) -> Status {
        let mut headers = headers_of(status);
        cap(&mut headers);
        let value = headers.get("grpc-message").unwrap();
        assert!(value.len() <= MAX_STATUS_MESSAGE_BYTES, "{}", value.len());
        Status::from_header_map(&headers).unwrap()
    }

    #[test]
    fn a_long_message_is_cut_below_the_limit_and_keeps_its_code() {
        let id = "a".repeat(70_000);
        let status = capped(&Status::not_found(format!("machine '{id}' not found")));
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert!(status.message().starts_with("machine 'aaa"));
        assert!(
            status.message().ends_with("bytes cut)"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn multibyte_text_is_cut_at_a_character_boundary() {
        let text = "😀".repeat(10_000);
        let status = capped(&Status::invalid_argument(text));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().starts_with('😀'));
    }

    #[test]
    fn details_survive() {
        let status = Status::with_details(
            tonic::Code::FailedPrecondition,
            "x".repeat(10_000),
            bytes_of(b"details"),
        );
        let mut headers = headers_of(&status);
        cap(&mut headers);
        let status = Status::from_header_map(&headers).unwrap();
        assert_eq!(status.details(), b"details");
    }

    fn bytes_of(b: &[u8]) -> tonic::codegen::Bytes {
        tonic::codegen::Bytes::copy_from_slice(b)
    }
}
