//! Unit tests of the socket bind and the `:authority` rewrite on hand-made HPACK blocks.

#![allow(clippy::unwrap_used)]

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::BytesMut;
use tokio::io::AsyncRead as _;

use super::{
    AnyAuthority, AuthorityPolicy,
    authority::{OUT_FRAME, PREFACE, Rewriter},
    hpack::{self, MAX_HEADER_LIST_SIZE, put_int},
};

// ------------------------------------------------------------------ hand-made HPACK

/// A few Huffman codes of RFC 7541 Appendix B (enough for socket paths); checked by decoding.
fn huffman(s: &[u8]) -> Vec<u8> {
    let mut bits: u64 = 0;
    let mut n = 0u32;
    let mut out = Vec::new();
    for &c in s {
        let (code, len): (u64, u32) = match c {
            b'%' => (0x15, 6),
            b'/' => (0x18, 6),
            b'2' => (0x2, 5),
            b'F' => (0x61, 7),
            b'm' => (0x29, 6),
            b'p' => (0x2b, 6),
            b's' => (0x8, 5),
            b't' => (0x9, 5),
            b'.' => (0x17, 6),
            b'o' => (0x7, 5),
            b'c' => (0x4, 5),
            b'k' => (0x75, 7),
            _ => panic!("no test code for {c}"),
        };
        bits = bits << len | code;
        n += len;
        while n >= 8 {
            out.push((bits >> (n - 8)) as u8);
            n -= 8;
        }
    }
    if n > 0 {
        out.push(((bits << (8 - n)) as u8) | (0xff >> n));
    }
    out
}

fn lit_str(out: &mut Vec<u8>, s: &[u8]) {
    put_int(out, s.len(), 7, 0);
    out.extend_from_slice(s);
}

fn huff_str(out: &mut Vec<u8>, s: &[u8]) {
    let h = huffman(s);
    put_int(out, h.len(), 7, 0x80);
    out.extend_from_slice(&h);
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let len = (payload.len() as u32).to_be_bytes();
    out.extend_from_slice(&len[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn connection(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut v = PREFACE.to_vec();
    v.extend(frame(0x4, 0, 0, &[0, 3, 0, 0, 0, 100]));
    for f in frames {
        v.extend_from_slice(f);
    }
    v
}

/// The sans-IO rewrite of `input`; checks that [`AnyAuthority`] (its zero-copy path and its
/// buffered one) gives h2 the same bytes, whatever the read sizes.
fn rewrite(input: &[u8]) -> (Vec<u8>, Rewriter) {
    let mut rw = Rewriter::default();
    let mut inp = BytesMut::from(input);
    let mut out = BytesMut::new();
    rw.process(&mut inp, &mut out);
    for (chunk, read) in [
        (usize::MAX, 1 << 16),
        (1, 1 << 16),
        (7, 5),
        (100, 33),
        (4096, 8192),
    ] {
        assert_eq!(
            through_io(input, chunk, read),
            out.to_vec(),
            "chunks of {chunk}, reads of {read}"
        );
    }
    (out.to_vec(), rw)
}

/// A client connection that delivers `input` in chunks of `chunk` bytes.
struct Chunks {
    input: Vec<u8>,
    pos: usize,
    chunk: usize,
}

impl tokio::io::AsyncRead for Chunks {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = (self.input.len() - self.pos)
            .min(self.chunk)
            .min(buf.remaining());
        let pos = self.pos;
        buf.put_slice(&self.input[pos..pos + n]);
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}

/// What h2 reads through [`AnyAuthority`] from `input` delivered in `chunk`-byte pieces, read
/// with buffers of `read` bytes.
fn through_io(input: &[u8], chunk: usize, read: usize) -> Vec<u8> {
    let io = Chunks {
        input: input.to_vec(),
        pos: 0,
        chunk,
    };
    let mut conn = AnyAuthority::new(io, AuthorityPolicy::Any);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut seen = Vec::new();
    let mut storage = vec![0u8; read];
    loop {
        let mut buf = tokio::io::ReadBuf::new(&mut storage);
        match Pin::new(&mut conn).poll_read(&mut cx, &mut buf) {
            Poll::Ready(Ok(())) if buf.filled().is_empty() => return seen,
            Poll::Ready(Ok(())) => seen.extend_from_slice(buf.filled()),
            other => panic!("{other:?}"),
        }
    }
}

type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// What h2 would see: the frames of the rewritten stream, with every header block decoded by
/// one decoder (as the server's), so a dynamic-table divergence shows as an error or a
/// wrong field.
#[derive(Debug)]
struct Seen {
    /// (stream, flags of HEADERS, decoded fields) per header block.
    blocks: Vec<(u32, u8, Fields)>,
    /// (type, flags, payload length) of every frame.
    frames: Vec<(u8, u8, usize)>,
    /// Never-indexed ordinals per block.
    never: Vec<Vec<u32>>,
}

fn seen(out: &[u8]) -> Result<Seen, String> {
    assert!(out.starts_with(PREFACE));
    let mut rest = &out[PREFACE.len()..];
    let mut decoder = loona_hpack::Decoder::new();
    let mut s = Seen {
        blocks: Vec::new(),
        frames: Vec::new(),
        never: Vec::new(),
    };
    let mut pending: Option<(u32, u8, Vec<u8>)> = None;
    while !rest.is_empty() {
        let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        let (kind, flags) = (rest[3], rest[4]);
        let stream = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]);
        let payload = &rest[9..9 + len];
        rest = &rest[9 + len..];
        s.frames.push((kind, flags, len));
        let fragment = match kind {
            0x1 => {
                let mut start = 0;
                let mut end = payload.len();
                if flags & 0x8 != 0 {
                    start = 1;
                    end -= usize::from(payload[0]);
                }
                if flags & 0x20 != 0 {
                    start += 5;
                }
                pending = Some((stream, flags, Vec::new()));
                &payload[start..end]
            }
            0x9 => payload,
            _ => continue,
        };
        let p = pending.as_mut().ok_or("CONTINUATION without HEADERS")?;
        p.2.extend_from_slice(fragment);
        if flags & 0x4 != 0 {
            let (stream, flags, block) = pending.take().unwrap();
            s.never
                .push(hpack::scan(&block).map_err(|m| m.0.to_owned())?.never);
            let fields = decoder.decode(&block).map_err(|e| format!("{e:?}"))?;
            s.blocks.push((stream, flags, fields));
        }
    }
    Ok(s)
}

fn authority_of(fields: &Fields) -> Option<&[u8]> {
    fields
        .iter()
        .find(|(n, _)| n == b":authority")
        .map(|(_, v)| &v[..])
}

/// The poison frame (HEADERS, END_HEADERS|END_STREAM, block `0x80`) ends the output.
fn assert_poisoned(out: &[u8], rw: &Rewriter) {
    assert!(rw.is_dead(), "the connection should be ended");
    let tail = &out[out.len() - 10..];
    assert_eq!(&tail[..5], &[0, 0, 1, 0x1, 0x5], "{tail:?}");
    assert_eq!(tail[9], 0x80);
}

/// `:method POST`, `:scheme http`, `:path /svc/M` (literal, incremental indexing, name 4).
fn pseudo(block: &mut Vec<u8>, path: &[u8]) {
    block.extend_from_slice(&[0x83, 0x86]);
    put_int(block, 4, 6, 0x40);
    lit_str(block, path);
}

// ------------------------------------------------------------------ tests

#[test]
fn huffman_helper_matches_the_decoder() {
    let s = b"%2Ftmp%2Fm.sock/tmp/m.sock";
    let mut block = vec![0x00];
    lit_str(&mut block, b"x");
    huff_str(&mut block, s);
    let fields = loona_hpack::Decoder::new().decode(&block).unwrap();
    assert_eq!(fields[0].1, s);
}

#[test]
fn static_table_matches_the_decoder() {
    for i in 1..=61usize {
        let mut block = Vec::new();
        put_int(&mut block, i, 7, 0x80);
        let got = loona_hpack::Decoder::new().decode(&block).unwrap();
        let mut enc = Vec::new();
        hpack::encode_field(&mut enc, &got[0].0, &got[0].1, false);
        assert_eq!(enc, block, "static entry {i}");
    }
}

#[test]
fn reencoding_round_trips_every_shape() {
    let fields: Fields = vec![
        (b":method".to_vec(), b"POST".to_vec()),
        (
            b":path".to_vec(),
            b"/machine.v1alpha1.MachineRuntime/Version".to_vec(),
        ),
        (b"content-type".to_vec(), b"application/grpc".to_vec()),
        (b"x-custom".to_vec(), vec![b'v'; 300]),
        (b"authorization".to_vec(), b"secret".to_vec()),
        (b"x-empty".to_vec(), Vec::new()),
    ];
    let mut block = Vec::new();
    for (i, (n, v)) in fields.iter().enumerate() {
        hpack::encode_field(&mut block, n, v, i == 4);
    }
    assert_eq!(hpack::scan(&block).unwrap().never, vec![4]);
    assert_eq!(loona_hpack::Decoder::new().decode(&block).unwrap(), fields);
}

#[test]
fn valid_authority_passes_byte_for_byte() {
    let mut block = Vec::new();
    pseudo(&mut block, b"/svc/M");
    put_int(&mut block, 1, 6, 0x40);
    huff_str(&mut block, b"tmp");
    let input = connection(&[
        frame(0x1, 0x4, 1, &block),
        frame(0x0, 0x1, 1, &[0, 0, 0, 0, 0]),
        frame(0x8, 0, 0, &[0, 0, 1, 0]),
    ]);
    let (out, rw) = rewrite(&input);
    assert_eq!(out, input);
    assert!(!rw.reencoding());
}

#[test]
fn inert_blocks_are_recognised() {
    let inert = |b: &[u8]| hpack::scan(b).unwrap().inert;
    assert!(inert(&[0x83, 0x86, 0x80 | 62]));
    assert!(inert(&[0x0f, 0x10, 0x01, b'x'])); // content-type (31), literal without indexing
    assert!(!inert(&[0x81])); // :authority "" (static 1)
    assert!(!inert(&[0x01, 0x01, b'x'])); // literal under static name 1
    assert!(!inert(&[0x0f, 0x2f, 0x01, b'x'])); // literal under dynamic name 62
    assert!(!inert(&[0x00, 0x01, b'n', 0x01, b'x'])); // literal name
    assert!(!inert(&[0x20, 0x83])); // size update
    assert!(!inert(&[0x44, 0x01, b'/'])); // incremental indexing
}

#[test]
fn an_inert_block_after_a_passed_block_refers_to_checked_entries() {
    // Block 1 enters a valid authority; block 2 refers to it only by index (inert, skipped);
    // block 3 is a literal under the dynamic name of that entry with a raw path: decoded.
    let mut b1 = Vec::new();
    pseudo(&mut b1, b"/svc/M");
    put_int(&mut b1, 1, 6, 0x40);
    lit_str(&mut b1, b"localhost");
    let b2 = vec![0x83, 0x86, 0x80 | 63, 0x80 | 62];
    let mut b3 = vec![0x83, 0x86, 0x80 | 63];
    put_int(&mut b3, 62, 4, 0x00);
    lit_str(&mut b3, b"/tmp/m.sock");
    let input = connection(&[
        frame(0x1, 0x5, 1, &b1),
        frame(0x1, 0x5, 3, &b2),
        frame(0x1, 0x5, 5, &b3),
    ]);
    let (out, rw) = rewrite(&input);
    assert!(rw.reencoding());
    let s = seen(&out).unwrap();
    assert_eq!(authority_of(&s.blocks[1].2), Some(&b"localhost"[..]));
    assert_eq!(authority_of(&s.blocks[2].2), Some(&b"localhost"[..]));
}

#[test]
fn percent_encoded_huffman_authority_is_replaced_and_dynamic_references_stay_in_step() {
    // Block 1 (valid authority) passes and fills both dynamic tables.
    let mut b1 = Vec::new();
    pseudo(&mut b1, b"/svc/A");
    put_int(&mut b1, 1, 6, 0x40);
    lit_str(&mut b1, b"localhost");
    put_int(&mut b1, 31, 6, 0x40);
    lit_str(&mut b1, b"application/grpc");
    // Block 2: a percent-encoded path, Huffman coded, indexed into the table.
    let mut b2 = Vec::new();
    pseudo(&mut b2, b"/svc/B");
    put_int(&mut b2, 1, 6, 0x40);
    huff_str(&mut b2, b"%2Ftmp%2Fm.sock");
    b2.push(0x80 | 64); // content-type from block 1 (62 = :authority of b2, 63 = path B, 64 = ct)
    // Block 3 refers to block 2's authority entry (62) and block 1's entries by index.
    let b3 = vec![0x83, 0x86, 0x80 | 63, 0x80 | 62, 0x80 | 64];
    let input = connection(&[
        frame(0x1, 0x5, 1, &b1),
        frame(0x1, 0x5, 3, &b2),
        frame(0x1, 0x5, 5, &b3),
    ]);
    let (out, rw) = rewrite(&input);
    assert!(rw.reencoding());
    let s = seen(&out).unwrap();
    assert_eq!(s.blocks.len(), 3);
    assert_eq!(authority_of(&s.blocks[0].2), Some(&b"localhost"[..]));
    assert_eq!(authority_of(&s.blocks[1].2), Some(&b"localhost"[..]));
    assert_eq!(authority_of(&s.blocks[2].2), Some(&b"localhost"[..]));
    assert_eq!(
        s.blocks[2].2,
        vec![
            (b":method".to_vec(), b"POST".to_vec()),
            (b":scheme".to_vec(), b"http".to_vec()),
            (b":path".to_vec(), b"/svc/B".to_vec()),
            (b":authority".to_vec(), b"localhost".to_vec()),
            (b"content-type".to_vec(), b"application/grpc".to_vec()),
        ]
    );
    for (_, flags, _) in &s.blocks {
        assert_eq!(*flags & 0x5, 0x5, "END_STREAM and END_HEADERS kept");
    }
}

#[test]
fn raw_path_empty_and_absent_authorities() {
    for (authority, want) in [
        (Some(&b"/tmp/m.sock"[..]), Some(&b"localhost"[..])),
        (Some(&b""[..]), Some(&b"localhost"[..])),
        (Some(&b"tmp%2Fm.sock"[..]), Some(&b"localhost"[..])),
        (None, None),
        (Some(&b"localhost:50051"[..]), Some(&b"localhost:50051"[..])),
    ] {
        let block = super::probe::request_block("/svc/M", authority);
        let input = connection(&[frame(0x1, 0x4, 1, &block)]);
        let (out, _) = rewrite(&input);
        let s = seen(&out).unwrap();
        assert_eq!(authority_of(&s.blocks[0].2), want, "{authority:?}");
        if authority == want {
            assert_eq!(out, input, "untouched when acceptable");
        }
    }
}

#[test]
fn never_indexed_stays_never_indexed() {
    let mut block = Vec::new();
    pseudo(&mut block, b"/svc/M");
    put_int(&mut block, 1, 4, 0x00);
    lit_str(&mut block, b"/run/x.sock");
    put_int(&mut block, 23, 4, 0x10); // authorization, never indexed, name from the static table
    huff_str(&mut block, b"sock");
    block.push(0x10); // never indexed, literal name
    lit_str(&mut block, b"x-token");
    lit_str(&mut block, b"t");
    let (out, _) = rewrite(&connection(&[frame(0x1, 0x4, 1, &block)]));
    let s = seen(&out).unwrap();
    assert_eq!(s.never[0], vec![4, 5]);
    assert_eq!(
        s.blocks[0].2[4],
        (b"authorization".to_vec(), b"sock".to_vec())
    );
    assert_eq!(s.blocks[0].2[5], (b"x-token".to_vec(), b"t".to_vec()));
}

#[test]
fn table_size_updates_are_honoured_and_dropped() {
    // Block 1: size update to 4096 then 0 (evicts nothing yet), then fields; the authority
    // entry never enters the (zero-sized) table, so index 62 in block 2 is an error.
    let mut b1 = vec![0x3f, 0xe1, 0x1f, 0x20];
    pseudo(&mut b1, b"/svc/M");
    put_int(&mut b1, 1, 6, 0x40);
    lit_str(&mut b1, b"/tmp/m.sock");
    let (out, rw) = rewrite(&connection(&[frame(0x1, 0x4, 1, &b1)]));
    let s = seen(&out).unwrap();
    assert!(!rw.is_dead());
    assert_eq!(authority_of(&s.blocks[0].2), Some(&b"localhost"[..]));
    let b2 = vec![0x83, 0x86, 0x80 | 62];
    let (out, rw) = rewrite(&connection(&[
        frame(0x1, 0x4, 1, &b1),
        frame(0x1, 0x4, 3, &b2),
    ]));
    assert_poisoned(&out, &rw);

    // A size update above SETTINGS_HEADER_TABLE_SIZE, and one after a field, are errors.
    for bad in [vec![0x3f, 0xe2, 0x1f, 0x83], vec![0x83, 0x20, 0x86]] {
        let (out, rw) = rewrite(&connection(&[frame(0x1, 0x4, 1, &bad)]));
        assert_poisoned(&out, &rw);
    }
}

#[test]
fn continuation_padding_and_priority() {
    let mut block = Vec::new();
    pseudo(&mut block, b"/svc/M");
    put_int(&mut block, 1, 6, 0x40);
    huff_str(&mut block, b"/tmp/m.sock");
    put_int(&mut block, 31, 4, 0x00); // content-type, literal without indexing
    lit_str(&mut block, b"application/grpc");
    let (a, rest) = block.split_at(5);
    let (b, c) = rest.split_at(7);
    // HEADERS with PADDED (3 bytes) and PRIORITY, then two CONTINUATIONs.
    let mut first = vec![3];
    first.extend_from_slice(&[0x80, 0, 0, 3, 15]);
    first.extend_from_slice(a);
    first.extend_from_slice(&[0, 0, 0]);
    let frames = [
        frame(0x1, 0x8 | 0x20 | 0x1, 1, &first),
        frame(0x9, 0, 1, b),
        frame(0x9, 0x4, 1, c),
    ];
    let (out, _) = rewrite(&connection(&frames));
    let s = seen(&out).unwrap();
    assert_eq!(authority_of(&s.blocks[0].2), Some(&b"localhost"[..]));
    let (kind, flags, _) = s.frames[1];
    assert_eq!(kind, 0x1);
    assert_eq!(
        flags,
        0x20 | 0x4 | 0x1,
        "PRIORITY and END_STREAM kept, padding dropped"
    );
    assert_eq!(&out[PREFACE.len() + 15 + 9..][..5], &[0x80, 0, 0, 3, 15]);

    // The same frames with a valid authority pass byte for byte.
    let mut ok = Vec::new();
    pseudo(&mut ok, b"/svc/M");
    put_int(&mut ok, 1, 6, 0x40);
    lit_str(&mut ok, b"localhost");
    let mut first = vec![2, 0, 0, 0, 0, 16];
    first.extend_from_slice(&ok[..4]);
    first.extend_from_slice(&[0, 0]);
    let input = connection(&[frame(0x1, 0x28, 1, &first), frame(0x9, 0x4, 1, &ok[4..])]);
    assert_eq!(rewrite(&input).0, input);
}

#[test]
fn a_rewritten_block_too_big_for_one_frame_is_split() {
    let mut block = Vec::new();
    pseudo(&mut block, b"/svc/M");
    put_int(&mut block, 1, 6, 0x40);
    lit_str(&mut block, b"/tmp/m.sock");
    block.push(0x00);
    lit_str(&mut block, b"x-big");
    lit_str(&mut block, &vec![b'b'; 40_000]);
    // The client sent it in 16 KiB frames with PRIORITY.
    let mut frames = Vec::new();
    let mut first = vec![0, 0, 0, 0, 7];
    first.extend_from_slice(&block[..16_000]);
    frames.push(frame(0x1, 0x20, 1, &first));
    for (i, chunk) in block[16_000..].chunks(16_384).enumerate() {
        let last = 16_000 + (i + 1) * 16_384 >= block.len();
        frames.push(frame(0x9, if last { 0x4 } else { 0 }, 1, chunk));
    }
    let (out, rw) = rewrite(&connection(&frames));
    assert!(!rw.is_dead());
    let s = seen(&out).unwrap();
    assert_eq!(s.blocks[0].2[4].1.len(), 40_000);
    assert_eq!(authority_of(&s.blocks[0].2), Some(&b"localhost"[..]));
    let header_frames: Vec<_> = s
        .frames
        .iter()
        .filter(|f| f.0 == 0x1 || f.0 == 0x9)
        .collect();
    assert!(header_frames.len() >= 3, "{header_frames:?}");
    for (i, (kind, flags, len)) in header_frames.iter().enumerate() {
        assert!(*len <= OUT_FRAME);
        assert_eq!(*kind == 0x1, i == 0);
        assert_eq!(flags & 0x4 != 0, i == header_frames.len() - 1);
    }
    assert_eq!(header_frames[0].1 & 0x20, 0x20);
}

#[test]
fn a_header_list_at_the_size_limit_passes_and_one_byte_more_fails() {
    // Block 1 puts a 4000-byte value in the dynamic table; block 2 refers to it k times and
    // ends with a literal that brings the list to exactly the limit.
    let mut b1 = vec![0x40];
    lit_str(&mut b1, b"x");
    lit_str(&mut b1, &vec![b'v'; 4000]);
    let entry = 1 + 4000 + 32;
    let k = MAX_HEADER_LIST_SIZE / entry - 1;
    for extra in [0usize, 1] {
        let mut b2 = vec![0xbe; k];
        b2.push(0x00);
        lit_str(&mut b2, b"y");
        let r = MAX_HEADER_LIST_SIZE - k * entry - 33 + extra;
        lit_str(&mut b2, &vec![b'w'; r]);
        let (out, rw) = rewrite(&connection(&[
            frame(0x1, 0x4, 1, &b1),
            frame(0x1, 0x4, 3, &b2),
        ]));
        if extra == 0 {
            assert!(!rw.is_dead());
            assert_eq!(seen(&out).unwrap().blocks.len(), 2);
        } else {
            assert_poisoned(&out, &rw);
        }
    }
}

#[test]
fn malformed_input_is_a_connection_error() {
    // An inert block (only indices) passes undecoded while nothing was replaced: an index
    // beyond the table is then h2's connection error, not ours.
    let input = connection(&[frame(0x1, 0x4, 1, &[0x80 | 70])]);
    assert_eq!(rewrite(&input).0, input);
    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        (
            "index out of range",
            vec![frame(0x1, 0x4, 1, &[0x80 | 70, 0x44, 0x01, b'/'])],
        ),
        ("index zero", vec![frame(0x1, 0x4, 1, &[0x80])]),
        ("truncated integer", vec![frame(0x1, 0x4, 1, &[0x7f, 0xff])]),
        (
            "string past the block",
            vec![frame(0x1, 0x4, 1, &[0x00, 0x05, b'a'])],
        ),
        (
            "bad huffman (EOS)",
            vec![frame(0x1, 0x4, 1, &[0x00, 0x81, 0xff, 0x01, b'a'])],
        ),
        (
            "padding longer than payload",
            vec![frame(0x1, 0x8 | 0x4, 1, &[9, 0x83])],
        ),
        ("short priority", vec![frame(0x1, 0x20 | 0x4, 1, &[0, 0])]),
        (
            "DATA inside a header block",
            vec![frame(0x1, 0, 1, &[0x83]), frame(0x0, 0, 1, &[1])],
        ),
        (
            "CONTINUATION on another stream",
            vec![frame(0x1, 0, 1, &[0x83]), frame(0x9, 0x4, 3, &[0x86])],
        ),
        (
            "HEADERS inside a header block",
            vec![frame(0x1, 0, 1, &[0x83]), frame(0x1, 0x4, 3, &[0x86])],
        ),
    ];
    for (what, frames) in cases {
        let mut input = connection(&frames);
        input.extend(frame(0x0, 0x1, 1, &[0, 0, 0, 0, 0]));
        let (out, rw) = rewrite(&input);
        assert_poisoned(&out, &rw);
        let _ = what;
    }
}

#[test]
fn an_oversized_block_is_refused_before_it_is_buffered() {
    let mut head = connection(&[]);
    head.extend_from_slice(&[0xff, 0xff, 0xff, 0x1, 0x0, 0, 0, 0, 1]);
    let mut rw = Rewriter::default();
    let mut out = BytesMut::new();
    let mut total_in = 0;
    // Sixty-five 16 MiB HEADERS+CONTINUATION frames would be 1 GiB; the first one is refused.
    let mut inp = BytesMut::from(&head[..]);
    rw.process(&mut inp, &mut out);
    total_in += head.len();
    assert!(rw.is_dead(), "{total_in}");
    let mut more = BytesMut::from(&[0u8; 1000][..]);
    rw.process(&mut more, &mut out);
    assert!(more.is_empty(), "input after the error is discarded");
}

#[test]
fn byte_at_a_time_gives_the_same_output() {
    let mut block = Vec::new();
    pseudo(&mut block, b"/svc/M");
    put_int(&mut block, 1, 6, 0x40);
    huff_str(&mut block, b"%2Ftmp%2Fm.sock");
    let input = connection(&[
        frame(0x1, 0x4, 1, &block[..]),
        frame(0x0, 0x1, 1, &[0, 0, 0, 0, 2, 8, 1]),
        frame(0x1, 0x5, 3, &[0x83, 0x86, 0x80 | 63, 0x80 | 62]),
    ]);
    let (whole, _) = rewrite(&input);
    let mut rw = Rewriter::default();
    let mut out = BytesMut::new();
    let mut inp = BytesMut::new();
    for b in &input {
        inp.extend_from_slice(&[*b]);
        rw.process(&mut inp, &mut out);
    }
    assert_eq!(out.to_vec(), whole);
    let s = seen(&whole).unwrap();
    assert_eq!(authority_of(&s.blocks[1].2), Some(&b"localhost"[..]));
}

#[test]
fn random_input_never_panics() {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..3000 {
        let mut input = PREFACE.to_vec();
        let n = (next() % 400) as usize;
        for _ in 0..n {
            input.push(next() as u8);
        }
        // Bias towards header frames with plausible lengths.
        if next() % 2 == 0 && input.len() > PREFACE.len() + 9 {
            let i = PREFACE.len();
            input[i] = 0;
            input[i + 1] = 0;
            input[i + 2] = (next() % 64) as u8;
            input[i + 3] = if next() % 2 == 0 { 0x1 } else { 0x9 };
        }
        let mut rw = Rewriter::default();
        let mut out = BytesMut::new();
        let mut inp = BytesMut::new();
        let size = 1 + (next() % 50) as usize;
        for chunk in input.chunks(size) {
            inp.extend_from_slice(chunk);
            rw.process(&mut inp, &mut out);
        }
        let read = 1 + (next() % 100) as usize;
        assert_eq!(through_io(&input, size, read), out.to_vec());
    }
}

// ------------------------------------------------------------------ bind

#[test]
fn bind_creates_a_0600_socket_and_refuses_what_it_must_not_replace() {
    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let dir = tempfile::tempdir().unwrap();
    assert!(super::bind_unix(&dir.path().join("missing/iri.sock")).is_err());
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let path = dir.path().join("sub/iri.sock");

    // Fresh: created with 0600, no leftovers of the private directory.
    let listener = super::bind_unix(&path).unwrap();
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("iri.sock")]);
    // Clients reach the listener through the path.
    std::os::unix::net::UnixStream::connect(&path).unwrap();

    // A live server is refused, and its socket stays.
    let err = super::bind_unix(&path).unwrap_err();
    assert!(
        err.to_string().contains("another server is listening on"),
        "{err}"
    );
    assert!(std::fs::symlink_metadata(&path).is_ok());

    // A stale socket (server gone) is replaced.
    drop(listener);
    let listener = super::bind_unix(&path).unwrap();
    std::os::unix::net::UnixStream::connect(&path).unwrap();
    drop(listener);

    // A regular file, a directory and a symlink are refused and left alone.
    let file = dir.path().join("passwd");
    std::fs::write(&file, "root:x:0:0").unwrap();
    let err = super::bind_unix(&file).unwrap_err();
    assert!(err.to_string().contains("a regular file"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "root:x:0:0");
    let sub = dir.path().join("adir");
    std::fs::create_dir(&sub).unwrap();
    assert!(
        super::bind_unix(&sub)
            .unwrap_err()
            .to_string()
            .contains("a directory")
    );
    let link = dir.path().join("link.sock");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    assert!(
        super::bind_unix(&link)
            .unwrap_err()
            .to_string()
            .contains("symbolic link")
    );
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
}
