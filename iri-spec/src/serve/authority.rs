//! [`AnyAuthority`]: an IO wrapper around an accepted connection that makes h2 accept any
//! `:authority` a gRPC client sends on a unix socket.
//!
//! The wrapper parses the client-to-server byte stream as HTTP/2 frames ([`Rewriter`]). The
//! connection preface and every frame but HEADERS and CONTINUATION pass through byte for byte
//! (DATA is streamed, never buffered whole). On the data path nothing is copied: the wrapper
//! reads straight into h2's buffer and checks the frame headers where they lie
//! ([`Rewriter::scan_in_place`]); a HEADERS frame that is a whole block and needs no rewrite
//! stays there too. Only what must be rewritten or waited for (a split frame header, a block
//! over several frames) is moved into the wrapper's own buffers. A header block (HEADERS plus its CONTINUATION
//! frames) is gathered and decoded, which keeps the decoder's dynamic table in step with the
//! client's encoder:
//!
//! - while every block's `:authority` is acceptable (or absent) the block's original frames
//!   pass through unchanged, so the server's decoder sees exactly what the client sent;
//! - from the first block with an `:authority` h2 would reject (a percent-encoded or raw socket
//!   path, an empty value), that block and every later one of the connection are re-encoded
//!   without the dynamic table (see [`super::hpack`]) with the authority replaced by
//!   `localhost`, and sent as one HEADERS frame (PRIORITY kept, padding dropped) plus
//!   CONTINUATION frames of at most 16 384 bytes payload, the smallest
//!   `SETTINGS_MAX_FRAME_SIZE` a server can have.
//!
//! A block that cannot be decoded, a CONTINUATION out of sequence, bad padding or a block
//! beyond the size limits ends the connection with a connection error: the wrapper hands h2 a
//! HEADERS frame with an invalid HPACK index, h2 answers with GOAWAY and closes, and the rest
//! of the client's bytes are discarded. Nothing panics; every state needs only more input.
//! The server-to-client direction is not touched.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Buf as _, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::hpack::{BlockDecoder, MAX_HEADER_LIST_SIZE};

/// The HTTP/2 client connection preface.
pub(crate) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// Payload limit of the frames the rewrite emits (the minimum `SETTINGS_MAX_FRAME_SIZE`).
pub(crate) const OUT_FRAME: usize = 16_384;
/// The largest encoded header block (all its frames' payloads) the rewrite gathers.
pub(crate) const MAX_BLOCK: usize = MAX_HEADER_LIST_SIZE;

/// Whether a unix-socket server accepts any `:authority` or keeps h2's strict check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthorityPolicy {
    /// Rewrite an `:authority` h2 would reject to `localhost` (the default on unix sockets).
    #[default]
    Any,
    /// Pass every byte through: h2 resets streams with a percent-encoded or raw-path
    /// authority. For TCP listeners, the strict-authority mutant and benchmarks.
    Strict,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Bytes of the connection preface still to pass.
    Preface(usize),
    /// Waiting for a frame header (or a whole HEADERS/CONTINUATION frame).
    Frame,
    /// Bytes of a passed-through frame's payload still to pass.
    Payload(usize),
    /// A connection error was handed to h2; input is discarded.
    Dead,
}

#[derive(Debug)]
struct Block {
    stream_id: u32,
    /// END_STREAM of the HEADERS frame.
    end_stream: bool,
    /// The 5 priority bytes of the HEADERS frame, if it had the PRIORITY flag.
    priority: Option<[u8; 5]>,
}

/// The sans-IO frame rewriter of one connection's client-to-server direction.
#[derive(Debug)]
pub(crate) struct Rewriter {
    state: State,
    block: Option<Block>,
    decoder: BlockDecoder,
    /// Set by the first block whose authority was replaced; from then on every block is
    /// re-encoded.
    reencode: bool,
    /// The open block's original frames (for pass-through), reused across blocks.
    frames: Vec<u8>,
    /// The open block's header block fragments, concatenated; reused across blocks.
    fragment: Vec<u8>,
}

impl Default for Rewriter {
    fn default() -> Self {
        Rewriter {
            state: State::Preface(PREFACE.len()),
            block: None,
            decoder: BlockDecoder::default(),
            reencode: false,
            frames: Vec::new(),
            fragment: Vec::new(),
        }
    }
}

fn frame_head(out: &mut BytesMut, len: usize, kind: u8, flags: u8, stream_id: u32) {
    let len = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    out.extend_from_slice(&len[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream_id.to_be_bytes());
}

/// The header block fragment of a HEADERS frame's `payload` (padding and priority removed),
/// and its priority bytes.
fn headers_fragment(
    payload: &[u8],
    flags: u8,
) -> Result<(std::ops::Range<usize>, Option<[u8; 5]>), &'static str> {
    let mut start = 0;
    let mut pad = 0;
    if flags & PADDED != 0 {
        pad = usize::from(*payload.first().ok_or("PADDED HEADERS without pad length")?);
        start = 1;
    }
    let mut priority = None;
    if flags & PRIORITY != 0 {
        let bytes = payload
            .get(start..start + 5)
            .ok_or("PRIORITY HEADERS too short")?;
        priority = Some([bytes[0], bytes[1], bytes[2], bytes[3], bytes[4]]);
        start += 5;
    }
    let end = payload
        .len()
        .checked_sub(pad)
        .filter(|end| *end >= start)
        .ok_or("padding longer than the HEADERS payload")?;
    Ok((start..end, priority))
}

/// Decides about one complete header block: `None` to pass its frames through as they are,
/// or the re-encoded block to send instead (see the module docs).
fn judge(
    decoder: &mut BlockDecoder,
    reencode: &mut bool,
    fragment: &[u8],
    stream_id: u32,
) -> Result<Option<Vec<u8>>, &'static str> {
    // While passing through, an inert block needs no decoding (the fast path of a
    // connection whose header fields are all in the table).
    let Some(decoded) = decoder.decode(fragment, !*reencode).map_err(|m| m.0)? else {
        return Ok(None);
    };
    if decoded.replaced && !*reencode {
        tracing::debug!(
            stream = stream_id,
            "unusable :authority replaced; re-encoding this connection's header blocks"
        );
        *reencode = true;
    }
    Ok(reencode.then_some(decoded.reencoded))
}

/// Appends a re-encoded block as one HEADERS frame (PRIORITY kept) plus CONTINUATION frames.
fn emit(out: &mut BytesMut, block: &Block, fragment: &[u8]) {
    let room = OUT_FRAME - if block.priority.is_some() { 5 } else { 0 };
    let first = fragment.len().min(room);
    let mut flags = if block.end_stream { END_STREAM } else { 0 };
    if first == fragment.len() {
        flags |= END_HEADERS;
    }
    let priority = block.priority.as_ref().map_or(&[][..], |p| &p[..]);
    if block.priority.is_some() {
        flags |= PRIORITY;
    }
    frame_head(out, priority.len() + first, HEADERS, flags, block.stream_id);
    out.extend_from_slice(priority);
    out.extend_from_slice(&fragment[..first]);
    let mut rest = &fragment[first..];
    while !rest.is_empty() {
        let n = rest.len().min(OUT_FRAME);
        let flags = if n == rest.len() { END_HEADERS } else { 0 };
        frame_head(out, n, CONTINUATION, flags, block.stream_id);
        out.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
    }
}

impl Rewriter {
    /// Whether the connection was ended with a connection error.
    #[cfg(test)]
    pub(crate) fn is_dead(&self) -> bool {
        self.state == State::Dead
    }

    /// Whether blocks are being re-encoded (some `:authority` was replaced).
    #[cfg(test)]
    pub(crate) fn reencoding(&self) -> bool {
        self.reencode
    }

    /// Consumes what it can of `input` (client bytes) and appends what h2 should read to `out`.
    /// Bytes of an incomplete frame header or header frame stay in `input`.
    pub(crate) fn process(&mut self, input: &mut BytesMut, out: &mut BytesMut) {
        loop {
            match self.state {
                State::Dead => {
                    input.clear();
                    return;
                }
                State::Preface(n) | State::Payload(n) => {
                    let k = n.min(input.len());
                    out.extend_from_slice(&input[..k]);
                    input.advance(k);
                    self.state = match (self.state, n - k) {
                        (_, 0) => State::Frame,
                        (State::Preface(_), rest) => State::Preface(rest),
                        (_, rest) => State::Payload(rest),
                    };
                    if input.is_empty() {
                        return;
                    }
                }
                State::Frame => {
                    if input.len() < 9 {
                        return;
                    }
                    let len = usize::from(input[0]) << 16
                        | usize::from(input[1]) << 8
                        | usize::from(input[2]);
                    let (kind, flags) = (input[3], input[4]);
                    let stream_id =
                        u32::from_be_bytes([input[5], input[6], input[7], input[8]]) & 0x7fff_ffff;
                    if self.block.is_some() && kind != CONTINUATION {
                        // RFC 7540 §6.10: nothing may come between HEADERS and its
                        // CONTINUATION frames.
                        return self.fail(out, stream_id, "frame inside a header block");
                    }
                    if kind != HEADERS && self.block.is_none() {
                        // A stray CONTINUATION passes too: h2 rejects it itself.
                        out.extend_from_slice(&input[..9]);
                        input.advance(9);
                        self.state = State::Payload(len);
                        continue;
                    }
                    let gathered = if self.block.is_some() {
                        self.frames.len()
                    } else {
                        0
                    };
                    if gathered + len > MAX_BLOCK {
                        return self.fail(out, stream_id, "header block too large");
                    }
                    if input.len() < 9 + len {
                        input.reserve(9 + len - input.len());
                        return;
                    }
                    if kind == HEADERS && flags & END_HEADERS != 0 && self.block.is_none() {
                        match self.single_headers(&input[..9 + len], flags, stream_id, out) {
                            Ok(true) => out.extend_from_slice(&input[..9 + len]),
                            Ok(false) => {}
                            Err(why) => return self.fail(out, stream_id, why),
                        }
                        input.advance(9 + len);
                        continue;
                    }
                    let res = self.header_frame(&input[..9 + len], kind, flags, stream_id);
                    input.advance(9 + len);
                    if let Err(why) = res {
                        return self.fail(out, stream_id, why);
                    }
                    if flags & END_HEADERS != 0
                        && let Err(why) = self.finish_block(out)
                    {
                        return self.fail(out, stream_id, why);
                    }
                }
            }
        }
    }

    fn header_frame(
        &mut self,
        frame: &[u8],
        kind: u8,
        flags: u8,
        stream_id: u32,
    ) -> Result<(), &'static str> {
        let payload = &frame[9..];
        if kind == CONTINUATION {
            let block = self.block.as_mut().ok_or("CONTINUATION without HEADERS")?;
            if block.stream_id != stream_id {
                return Err("CONTINUATION on another stream");
            }
            self.fragment.extend_from_slice(payload);
            self.frames.extend_from_slice(frame);
            return Ok(());
        }
        let (range, priority) = headers_fragment(payload, flags)?;
        self.fragment.clear();
        self.fragment.extend_from_slice(&payload[range]);
        self.frames.clear();
        self.frames.extend_from_slice(frame);
        self.block = Some(Block {
            stream_id,
            end_stream: flags & END_STREAM != 0,
            priority,
        });
        Ok(())
    }

    fn finish_block(&mut self, out: &mut BytesMut) -> Result<(), &'static str> {
        let Some(block) = self.block.take() else {
            return Ok(());
        };
        match judge(
            &mut self.decoder,
            &mut self.reencode,
            &self.fragment,
            block.stream_id,
        )? {
            None => out.extend_from_slice(&self.frames),
            Some(fragment) => emit(out, &block, &fragment),
        }
        Ok(())
    }

    /// A HEADERS frame that is a whole header block (END_HEADERS, no block open), judged
    /// where it lies: `Ok(true)` if it passes as it is; `Ok(false)` if its re-encoded frames
    /// were appended to `out` instead.
    fn single_headers(
        &mut self,
        frame: &[u8],
        flags: u8,
        stream_id: u32,
        out: &mut BytesMut,
    ) -> Result<bool, &'static str> {
        let (range, priority) = headers_fragment(&frame[9..], flags)?;
        let fragment = &frame[9..][range];
        match judge(&mut self.decoder, &mut self.reencode, fragment, stream_id)? {
            None => Ok(true),
            Some(fragment) => {
                let block = Block {
                    stream_id,
                    end_stream: flags & END_STREAM != 0,
                    priority,
                };
                emit(out, &block, &fragment);
                Ok(false)
            }
        }
    }

    /// Whether [`Rewriter::scan_in_place`] may be used: no header block is open and the
    /// connection is alive.
    pub(crate) fn can_scan(&self) -> bool {
        self.block.is_none() && self.state != State::Dead
    }

    /// The zero-copy path: scans freshly read client bytes where they lie. Frames other than
    /// HEADERS, and whole-block HEADERS frames the rewrite leaves unchanged, stay in place.
    /// Returns `(keep, consumed)`: `bytes[..keep]` pass to h2 as they are;
    /// `bytes[keep..consumed]` were taken by the rewriter (a re-encoded block appended to
    /// `out` in their place, or a connection error); `bytes[consumed..]` (an incomplete frame
    /// header, a header block split over frames or not yet complete) are left for
    /// [`Rewriter::process`]. Only while [`Rewriter::can_scan`].
    pub(crate) fn scan_in_place(&mut self, bytes: &[u8], out: &mut BytesMut) -> (usize, usize) {
        let mut pos = 0;
        loop {
            match self.state {
                State::Dead => return (pos, bytes.len()),
                State::Preface(n) | State::Payload(n) => {
                    let k = n.min(bytes.len() - pos);
                    pos += k;
                    self.state = match (self.state, n - k) {
                        (_, 0) => State::Frame,
                        (State::Preface(_), rest) => State::Preface(rest),
                        (_, rest) => State::Payload(rest),
                    };
                    if pos == bytes.len() {
                        return (pos, pos);
                    }
                }
                State::Frame => {
                    let rest = &bytes[pos..];
                    if rest.len() < 9 || self.block.is_some() {
                        return (pos, pos);
                    }
                    let len = usize::from(rest[0]) << 16
                        | usize::from(rest[1]) << 8
                        | usize::from(rest[2]);
                    let (kind, flags) = (rest[3], rest[4]);
                    if kind != HEADERS {
                        pos += 9;
                        self.state = State::Payload(len);
                        continue;
                    }
                    if flags & END_HEADERS == 0 || len > MAX_BLOCK || rest.len() < 9 + len {
                        return (pos, pos);
                    }
                    let stream_id =
                        u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]) & 0x7fff_ffff;
                    match self.single_headers(&rest[..9 + len], flags, stream_id, out) {
                        Ok(true) => pos += 9 + len,
                        Ok(false) => return (pos, pos + 9 + len),
                        Err(why) => {
                            self.fail(out, stream_id, why);
                            return (pos, bytes.len());
                        }
                    }
                }
            }
        }
    }

    /// Ends the connection: hands h2 a HEADERS frame whose block starts with the invalid
    /// HPACK index 0, which h2 answers with a connection error (GOAWAY), then discards input.
    fn fail(&mut self, out: &mut BytesMut, stream_id: u32, why: &'static str) {
        tracing::debug!(stream = stream_id, "closing the connection: {why}");
        self.block = None;
        frame_head(out, 1, HEADERS, END_HEADERS | END_STREAM, stream_id.max(1));
        out.extend_from_slice(&[0x80]);
        self.state = State::Dead;
    }
}

/// An accepted connection whose client-to-server header blocks are rewritten so that h2
/// accepts any `:authority` (see the module docs). With [`AuthorityPolicy::Strict`] every
/// byte passes through untouched.
#[derive(Debug)]
pub struct AnyAuthority<IO> {
    io: IO,
    rewrite: Option<Box<Rewriter>>,
    /// Client bytes the rewriter has not consumed yet (an incomplete frame or header block).
    input: BytesMut,
    /// Whether `input` holds bytes [`Rewriter::process`] has not seen yet.
    pending: bool,
    /// Rewritten bytes for h2, read before anything else.
    out: BytesMut,
    eof: bool,
}

impl<IO> AnyAuthority<IO> {
    /// Wraps an accepted connection.
    pub fn new(io: IO, policy: AuthorityPolicy) -> Self {
        AnyAuthority {
            io,
            rewrite: (policy == AuthorityPolicy::Any).then(Box::default),
            input: BytesMut::new(),
            pending: false,
            out: BytesMut::new(),
            eof: false,
        }
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for AnyAuthority<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(rewrite) = this.rewrite.as_mut() else {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        };
        loop {
            if !this.out.is_empty() {
                let n = this.out.len().min(buf.remaining());
                buf.put_slice(&this.out[..n]);
                this.out.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.pending {
                this.pending = false;
                rewrite.process(&mut this.input, &mut this.out);
                continue;
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            if this.input.is_empty() && rewrite.can_scan() && buf.remaining() > 0 {
                // The zero-copy path: read straight into h2's buffer and check the frames
                // where they lie; only what needs the rewrite is moved aside.
                let before = buf.filled().len();
                match Pin::new(&mut this.io).poll_read(cx, buf) {
                    Poll::Ready(Ok(())) => {}
                    other => return other,
                }
                let filled = buf.filled().len();
                if filled == before {
                    this.eof = true;
                    return Poll::Ready(Ok(()));
                }
                let (keep, consumed) =
                    rewrite.scan_in_place(&buf.filled()[before..], &mut this.out);
                if before + consumed < filled {
                    this.input
                        .extend_from_slice(&buf.filled()[before + consumed..]);
                    this.pending = true;
                }
                buf.set_filled(before + keep);
                if keep > 0 {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            if this.input.capacity() - this.input.len() < 4096 {
                this.input.reserve(16 * 1024);
            }
            let n = match tokio_util::io::poll_read_buf(Pin::new(&mut this.io), cx, &mut this.input)
            {
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            if n == 0 {
                // A frame cut short by the end of the stream is dropped: h2 sees the end of
                // the connection at a frame boundary.
                this.eof = true;
                this.input.clear();
                continue;
            }
            rewrite.process(&mut this.input, &mut this.out);
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for AnyAuthority<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl<IO: tonic::transport::server::Connected> tonic::transport::server::Connected
    for AnyAuthority<IO>
{
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}
