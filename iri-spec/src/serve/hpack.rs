//! The HPACK half of the authority rewrite: decode a client's header block with the
//! `loona-hpack` decoder (which keeps the dynamic table in step with the client's encoder and
//! decodes Huffman strings), and re-encode the header list without the dynamic table.
//!
//! Re-encoded blocks use only static-table indices and literals *without indexing* (never
//! indexed ones stay never indexed, RFC 7541 §6.2.3), and drop the client's dynamic table
//! size updates. So the server's decoder never adds an entry while re-encoded blocks reach it,
//! and whatever its dynamic table holds from earlier, passed-through blocks is never
//! referenced again: both sides stay consistent without tracking the server's table.

use http::uri::Authority;

/// The value an unusable `:authority` is replaced with.
pub(crate) const REPLACEMENT_AUTHORITY: &[u8] = b"localhost";

/// `SETTINGS_HEADER_TABLE_SIZE` of the server: h2's default (4096), which tonic's server never
/// changes. The client's encoder may not use a bigger table, so a size update above it is a
/// decoding error, as h2 would treat it.
pub(crate) const SERVER_HEADER_TABLE_SIZE: usize = 4096;

/// The largest decoded header list (RFC 7540 §6.5.2 size: name + value + 32 per field) the
/// rewrite handles; a bigger one is a connection error. Far above what the servers accept
/// (hyper's default `SETTINGS_MAX_HEADER_LIST_SIZE` is 16 KiB), so h2 keeps deciding about
/// merely large lists.
pub(crate) const MAX_HEADER_LIST_SIZE: usize = 1 << 20;

/// A header block that cannot be decoded (or is too big to handle).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Malformed(pub(crate) &'static str);

/// What decoding one block found.
#[derive(Debug, Default)]
pub(crate) struct Decoded {
    /// The block re-encoded without the dynamic table, `:authority` replaced where unusable.
    pub(crate) reencoded: Vec<u8>,
    /// Whether an `:authority` h2 would reject was replaced.
    pub(crate) replaced: bool,
}

/// Whether h2's server accepts `value` as `:authority` (the same check h2 makes).
pub(crate) fn authority_ok(value: &[u8]) -> bool {
    Authority::try_from(value).is_ok()
}

/// The client-to-server HPACK decoding state of one connection.
pub(crate) struct BlockDecoder {
    decoder: loona_hpack::Decoder<'static>,
}

impl std::fmt::Debug for BlockDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockDecoder").finish_non_exhaustive()
    }
}

impl Default for BlockDecoder {
    fn default() -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(SERVER_HEADER_TABLE_SIZE);
        BlockDecoder { decoder }
    }
}

impl BlockDecoder {
    /// Decodes one complete header block (updating the dynamic table) and re-encodes it.
    /// After an error the decoder is out of step with the client: the connection must end.
    ///
    /// With `skip_inert`, an inert block (see [`Layout`]) is not decoded at all and `None` is
    /// returned: it leaves the table as it is, and every `:authority` it can refer to was
    /// checked when it entered the table (the caller passes blocks through only while none
    /// was replaced).
    pub(crate) fn decode(
        &mut self,
        block: &[u8],
        skip_inert: bool,
    ) -> Result<Option<Decoded>, Malformed> {
        let layout = scan(block)?;
        if skip_inert && layout.inert {
            return Ok(None);
        }
        let never = layout.never;
        let mut out = Decoded {
            reencoded: Vec::with_capacity(block.len() + 32),
            replaced: false,
        };
        let mut list_size = 0usize;
        let mut too_big = false;
        let mut ordinal = 0u32;
        self.decoder
            .decode_with_cb(block, |name, value| {
                let never_indexed = never.contains(&ordinal);
                ordinal += 1;
                list_size = list_size.saturating_add(name.len() + value.len() + 32);
                if too_big || list_size > MAX_HEADER_LIST_SIZE {
                    too_big = true;
                    return;
                }
                let value: &[u8] = if &*name == b":authority" && !authority_ok(&value) {
                    out.replaced = true;
                    REPLACEMENT_AUTHORITY
                } else {
                    &value
                };
                encode_field(&mut out.reencoded, &name, value, never_indexed);
            })
            .map_err(|_| Malformed("undecodable header block"))?;
        if too_big {
            return Err(Malformed("header list too large"));
        }
        Ok(Some(out))
    }
}

/// Reads an HPACK integer with an `n`-bit prefix at `*pos` (at most 5 octets, as the decoder).
fn int(buf: &[u8], pos: &mut usize, n: u8) -> Result<usize, Malformed> {
    let err = Malformed("truncated or oversized integer");
    let mask = (1usize << n) - 1;
    let first = *buf.get(*pos).ok_or(err.clone())?;
    *pos += 1;
    let mut value = usize::from(first) & mask;
    if value < mask {
        return Ok(value);
    }
    for shift in [0u32, 7, 14, 21] {
        let b = *buf.get(*pos).ok_or(err.clone())?;
        *pos += 1;
        value += usize::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(err)
}

/// Skips a string literal at `*pos`.
fn skip_str(buf: &[u8], pos: &mut usize) -> Result<(), Malformed> {
    let len = int(buf, pos, 7)?;
    *pos = pos
        .checked_add(len)
        .filter(|end| *end <= buf.len())
        .ok_or(Malformed("truncated string literal"))?;
    Ok(())
}

/// What [`scan`] found out about a block without decoding it.
#[derive(Debug, Default)]
pub(crate) struct Layout {
    /// The ordinals of the never-indexed fields.
    pub(crate) never: Vec<u32>,
    /// Whether the block can neither change the dynamic table nor carry an `:authority`
    /// that is not already in the table (no size update, no incremental-indexing literal, no
    /// static index 1, and literals only under static names other than `:authority`).
    pub(crate) inert: bool,
}

/// Walks the field representations of a block: checks that dynamic table size updates come
/// only before the first field (RFC 7541 §4.2, as h2 enforces), collects the never-indexed
/// fields and tells whether the block is inert (see [`Layout`]).
pub(crate) fn scan(block: &[u8]) -> Result<Layout, Malformed> {
    let mut layout = Layout {
        never: Vec::new(),
        inert: true,
    };
    let (mut pos, mut field) = (0usize, 0u32);
    while let Some(&b) = block.get(pos) {
        if b & 0x80 != 0 {
            // Index 0 is invalid, 1 is `:authority` "": decode (and fail or replace).
            if int(block, &mut pos, 7)? <= 1 {
                layout.inert = false;
            }
        } else if b & 0xe0 == 0x20 {
            if field > 0 {
                return Err(Malformed("dynamic table size update after a header field"));
            }
            int(block, &mut pos, 5)?;
            layout.inert = false;
            continue;
        } else {
            let prefix = if b & 0x40 != 0 { 6 } else { 4 };
            if b & 0x40 != 0 {
                layout.inert = false;
            }
            if b & 0xf0 == 0x10 {
                layout.never.push(field);
            }
            let name = int(block, &mut pos, prefix)?;
            // A literal value under a dynamic name could be an :authority: decode it.
            if name <= 1 || name > STATIC_TABLE.len() {
                layout.inert = false;
            }
            if name == 0 {
                skip_str(block, &mut pos)?;
            }
            skip_str(block, &mut pos)?;
        }
        field += 1;
    }
    Ok(layout)
}

/// Writes an HPACK integer with an `n`-bit prefix and the high bits `flags`.
pub(crate) fn put_int(out: &mut Vec<u8>, value: usize, n: u8, flags: u8) {
    let mask = (1usize << n) - 1;
    if value < mask {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | mask as u8);
    let mut rest = value - mask;
    while rest >= 0x80 {
        out.push((rest & 0x7f) as u8 | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    put_int(out, s.len(), 7, 0);
    out.extend_from_slice(s);
}

/// Encodes one field without touching the dynamic table: a static index when the static table
/// holds the whole field, otherwise a literal without indexing (never indexed if it was),
/// with the name as a static index where possible. Strings are sent raw (no Huffman).
pub(crate) fn encode_field(out: &mut Vec<u8>, name: &[u8], value: &[u8], never_indexed: bool) {
    let mut name_index = 0;
    for (i, (n, v)) in STATIC_TABLE.iter().enumerate() {
        if *n == name {
            if !never_indexed && *v == value {
                put_int(out, i + 1, 7, 0x80);
                return;
            }
            if name_index == 0 {
                name_index = i + 1;
            }
        }
    }
    put_int(out, name_index, 4, if never_indexed { 0x10 } else { 0 });
    if name_index == 0 {
        put_str(out, name);
    }
    put_str(out, value);
}

/// RFC 7541 Appendix A.
const STATIC_TABLE: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];
