//! A minimal HTTP/2 gRPC client that sends any `:authority` (or none), as the client stacks
//! h2's own client cannot imitate do: one unary call on a fresh connection, hand-encoded.
//! `iri-conformance`'s transport cases and the serving tests use it.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use super::{
    authority::PREFACE,
    hpack::{encode_field, put_int},
};

/// How the server answered a probe call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeAnswer {
    /// The call ended with trailers (or a trailers-only response).
    Answered {
        /// The `:status` of the response headers.
        http_status: Option<u16>,
        /// The `grpc-status` of the trailers.
        grpc_status: Option<i32>,
        /// The `grpc-message` of the trailers.
        grpc_message: Option<String>,
        /// The response messages' bytes (length prefixes included).
        body: Vec<u8>,
    },
    /// The server reset the stream with this HTTP/2 error code (1 = PROTOCOL_ERROR).
    StreamReset(u32),
    /// The server ended the connection with GOAWAY and this error code before answering.
    GoAway(u32),
    /// The connection closed before an answer.
    Closed,
}

/// The header block of a gRPC call to `path` with `authority` (none: no `:authority` field),
/// without Huffman or dynamic-table use.
pub fn request_block(path: &str, authority: Option<&[u8]>) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in [
        (&b":method"[..], &b"POST"[..]),
        (b":scheme", b"http"),
        (b":path", path.as_bytes()),
    ] {
        encode_field(&mut block, name, value, false);
    }
    if let Some(authority) = authority {
        // Literal without indexing, name index 1 (`:authority`): byte-exact even for "".
        put_int(&mut block, 1, 4, 0);
        put_int(&mut block, authority.len(), 7, 0);
        block.extend_from_slice(authority);
    }
    encode_field(&mut block, b"content-type", b"application/grpc", false);
    encode_field(&mut block, b"te", b"trailers", false);
    block
}

fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = u32::try_from(payload.len())
        .unwrap_or(u32::MAX)
        .to_be_bytes();
    out.extend_from_slice(&len[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

/// One unary gRPC call with `authority` on a fresh connection `io`: `message` is the encoded
/// protobuf request. Gives up after `timeout` with [`std::io::ErrorKind::TimedOut`].
pub async fn call<IO: AsyncRead + AsyncWrite + Unpin>(
    io: IO,
    path: &str,
    authority: Option<&[u8]>,
    message: &[u8],
    timeout: Duration,
) -> std::io::Result<ProbeAnswer> {
    call_with_block(io, &request_block(path, authority), message, timeout).await
}

/// [`call`] with a header block of the caller's (for malformed-block tests).
pub async fn call_with_block<IO: AsyncRead + AsyncWrite + Unpin>(
    io: IO,
    block: &[u8],
    message: &[u8],
    timeout: Duration,
) -> std::io::Result<ProbeAnswer> {
    tokio::time::timeout(timeout, exchange(io, block, message))
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out: no answer in time")
        })?
}

async fn exchange<IO: AsyncRead + AsyncWrite + Unpin>(
    mut io: IO,
    block: &[u8],
    message: &[u8],
) -> std::io::Result<ProbeAnswer> {
    let mut out = PREFACE.to_vec();
    frame(&mut out, 0x4, 0, 0, &[]);
    frame(&mut out, 0x1, 0x4, 1, block);
    let mut data = vec![0u8];
    data.extend_from_slice(
        &u32::try_from(message.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    data.extend_from_slice(message);
    frame(&mut out, 0x0, 0x1, 1, &data);
    io.write_all(&out).await?;
    io.flush().await?;

    let mut decoder = loona_hpack::Decoder::new();
    let (mut http_status, mut grpc_status, mut grpc_message) = (None, None, None);
    let mut body = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut pending_end = false;
    loop {
        let mut head = [0u8; 9];
        if io.read_exact(&mut head).await.is_err() {
            return Ok(ProbeAnswer::Closed);
        }
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        if io.read_exact(&mut payload).await.is_err() {
            return Ok(ProbeAnswer::Closed);
        }
        match kind {
            0x4 if flags & 0x1 == 0 => {
                let mut ack = Vec::new();
                frame(&mut ack, 0x4, 0x1, 0, &[]);
                // The server may already have closed its side (after a GOAWAY): keep reading.
                let _ = io.write_all(&ack).await;
            }
            0x7 => {
                let code = payload
                    .get(4..8)
                    .map_or(0, |c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
                return Ok(ProbeAnswer::GoAway(code));
            }
            0x3 if stream == 1 => {
                let code = payload
                    .get(..4)
                    .map_or(0, |c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
                return Ok(ProbeAnswer::StreamReset(code));
            }
            0x0 if stream == 1 => {
                let (start, pad) = if flags & 0x8 != 0 {
                    (1, usize::from(payload.first().copied().unwrap_or(0)))
                } else {
                    (0, 0)
                };
                let end = len.saturating_sub(pad).max(start);
                body.extend_from_slice(payload.get(start..end).unwrap_or(&[]));
                if flags & 0x1 != 0 {
                    break;
                }
            }
            0x1 | 0x9 if stream == 1 => {
                let mut start = 0;
                let mut end = payload.len();
                if kind == 0x1 {
                    pending.clear();
                    pending_end = flags & 0x1 != 0;
                    if flags & 0x8 != 0 {
                        start = 1;
                        end =
                            end.saturating_sub(usize::from(payload.first().copied().unwrap_or(0)));
                    }
                    if flags & 0x20 != 0 {
                        start += 5;
                    }
                }
                pending.extend_from_slice(payload.get(start..end).unwrap_or(&[]));
                if flags & 0x4 != 0 {
                    let fields = decoder.decode(&pending).map_err(|e| {
                        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{e}"))
                    })?;
                    for (name, value) in fields {
                        let value = String::from_utf8_lossy(&value).into_owned();
                        match &name[..] {
                            b":status" => http_status = value.parse().ok(),
                            b"grpc-status" => grpc_status = value.parse().ok(),
                            b"grpc-message" => grpc_message = Some(value),
                            _ => {}
                        }
                    }
                    if pending_end {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(ProbeAnswer::Answered {
        http_status,
        grpc_status,
        grpc_message,
        body,
    })
}
