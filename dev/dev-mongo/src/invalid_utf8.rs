//! Strings that are not valid UTF-8, stored and returned byte-for-byte as mongod does.
//!
//! mongod stores whatever string bytes a client sends (old drivers and scrapers wrote tweets
//! that are not valid UTF-8), and returns them unchanged. The `bson` crate's [`Document`], which
//! the whole server works on, can only hold valid UTF-8. So the server keeps such a string
//! *inside* the `Document`, as a sentinel value: a binary of subtype [`SUBTYPE`] whose bytes are
//! [`MAGIC`] followed by the string's original bytes. Everything in between sees a value like
//! any other:
//! - matching, indexing and grouping compare the sentinel by its bytes, so an equality on the
//!   same invalid bytes matches exactly as on mongod. (Divergences from mongod, acceptable for a
//!   dev server: such a value orders and `$type`s as binary data, not as a string.)
//! - updates (`$set`/`$unset` of other fields, what the marker does) leave it untouched, so the
//!   original bytes survive every update that does not replace the field itself; the oplog,
//!   change events' `fullDocument` and snapshots carry it the same way.
//!
//! At the two edges the sentinel is translated: [`decode`] turns incoming BSON (a request off
//! the wire, a `--data` snapshot) into a `Document`, replacing invalid strings with sentinels,
//! and [`encode`] writes a `Document` back as BSON, turning sentinels into the original string
//! bytes (every reply, every snapshot). A document that is not BSON at all is an error naming
//! it, never a silent connection close. Field names that are not UTF-8 are decoded lossily
//! (U+FFFD): the one case where stored bytes differ from what was sent.

use mongodb::bson::Document;
use std::sync::atomic::{AtomicBool, Ordering};

/// Binary subtype of the sentinel (a user-defined subtype).
pub const SUBTYPE: u8 = 0x8f;
/// Prefix of the sentinel's bytes, before the string's own bytes; makes a collision with a
/// client's binary data of the same subtype practically impossible.
pub const MAGIC: &[u8] = b"\0tweet-embed dev-mongo: string, not UTF-8\0";

/// Set once any sentinel was made in this process: until then [`encode`] skips its rewrite.
static SEEN: AtomicBool = AtomicBool::new(false);

/// Decodes one BSON document (exactly `bytes`), keeping strings that are not UTF-8 as sentinels.
/// The error says what is wrong and, when it can be read, the document's `_id`.
pub fn decode(bytes: &[u8]) -> Result<Document, String> {
    if let Ok(d) = Document::from_reader(bytes) {
        return Ok(d);
    }
    let mut out = Vec::with_capacity(bytes.len() + 64);
    let result = rewrite(bytes, &mut out, Dir::Decode)
        .and_then(|()| Document::from_reader(out.as_slice()).map_err(|e| e.to_string()));
    result.map_err(|e| match id_of(bytes) {
        Some(id) => format!("document with _id {id} is not valid BSON: {e}"),
        None => format!("document (no readable _id) is not valid BSON: {e}"),
    })
}

/// Writes `doc` as BSON into `out`, sentinels back as their original string bytes.
pub fn encode(doc: &Document, out: &mut Vec<u8>) {
    let start = out.len();
    // Writing into a Vec cannot fail.
    let _ = doc.to_writer(&mut *out);
    if !SEEN.load(Ordering::Relaxed) {
        return;
    }
    let written = out.split_off(start);
    let mut rewritten = Vec::with_capacity(written.len());
    match rewrite(&written, &mut rewritten, Dir::Encode) {
        Ok(()) => out.extend_from_slice(&rewritten),
        // What `to_writer` wrote is well-formed; keep it as it is should that ever not hold.
        Err(_) => out.extend_from_slice(&written),
    }
}

/// `_id` of a raw document as extended JSON, if it can be read.
fn id_of(bytes: &[u8]) -> Option<String> {
    let raw = mongodb::bson::RawDocument::from_bytes(bytes).ok()?;
    let id = raw.get("_id").ok()??;
    let b: mongodb::bson::Bson = id.to_raw_bson().try_into().ok()?;
    Some(b.into_relaxed_extjson().to_string())
}

#[derive(Clone, Copy, PartialEq)]
enum Dir {
    Decode,
    Encode,
}

fn i32_at(b: &[u8], at: usize) -> Result<usize, String> {
    let s = b.get(at..at + 4).ok_or("truncated")?;
    let v = i32::from_le_bytes([s[0], s[1], s[2], s[3]]);
    usize::try_from(v).map_err(|_| format!("negative length {v}"))
}

fn cstring_end(b: &[u8], at: usize) -> Result<usize, String> {
    b.get(at..).and_then(|s| s.iter().position(|&c| c == 0)).map(|p| at + p).ok_or_else(|| "unterminated name".into())
}

/// Copies the document `src` (exactly one document) into `out`, translating strings.
fn rewrite(src: &[u8], out: &mut Vec<u8>, dir: Dir) -> Result<(), String> {
    let len = i32_at(src, 0)?;
    if len < 5 || len != src.len() || src[len - 1] != 0 {
        return Err(format!("document length {len} does not match its {} bytes", src.len()));
    }
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    let mut at = 4;
    while at < len - 1 {
        let kind = src[at];
        let key_end = cstring_end(src, at + 1)?;
        let key = &src[at + 1..key_end];
        let v = key_end + 1;
        let put_key = |out: &mut Vec<u8>, kind: u8| {
            out.push(kind);
            match std::str::from_utf8(key) {
                Ok(_) => out.extend_from_slice(key),
                Err(_) => out.extend_from_slice(String::from_utf8_lossy(key).as_bytes()),
            }
            out.push(0);
        };
        let size = match kind {
            0x02 => {
                let n = i32_at(src, v)?;
                let s = src.get(v + 4..v + 4 + n).ok_or("string out of bounds")?;
                if n == 0 || s[n - 1] != 0 {
                    return Err("string without its terminating NUL".into());
                }
                let bytes = &s[..n - 1];
                if dir == Dir::Decode && std::str::from_utf8(bytes).is_err() {
                    SEEN.store(true, Ordering::Relaxed);
                    put_key(out, 0x05);
                    out.extend_from_slice(&((MAGIC.len() + bytes.len()) as i32).to_le_bytes());
                    out.push(SUBTYPE);
                    out.extend_from_slice(MAGIC);
                    out.extend_from_slice(bytes);
                    at = v + 4 + n;
                    continue;
                }
                4 + n
            }
            0x03 | 0x04 => {
                let n = i32_at(src, v)?;
                let inner = src.get(v..v + n).ok_or("embedded document out of bounds")?;
                put_key(out, kind);
                rewrite(inner, out, dir)?;
                at = v + n;
                continue;
            }
            0x05 => {
                let n = i32_at(src, v)?;
                let data = src.get(v + 5..v + 5 + n).ok_or("binary out of bounds")?;
                if dir == Dir::Encode && src[v + 4] == SUBTYPE && data.starts_with(MAGIC) {
                    let bytes = &data[MAGIC.len()..];
                    put_key(out, 0x02);
                    out.extend_from_slice(&((bytes.len() + 1) as i32).to_le_bytes());
                    out.extend_from_slice(bytes);
                    out.push(0);
                    at = v + 5 + n;
                    continue;
                }
                5 + n
            }
            0x01 | 0x09 | 0x11 | 0x12 => 8,
            0x10 => 4,
            0x08 => 1,
            0x07 => 12,
            0x13 => 16,
            0x06 | 0x0a | 0x7f | 0xff => 0,
            0x0d | 0x0e => 4 + i32_at(src, v)?,
            0x0f => i32_at(src, v)?,
            0x0c => 4 + i32_at(src, v)? + 12,
            0x0b => {
                let p = cstring_end(src, v)?;
                cstring_end(src, p + 1)? + 1 - v
            }
            other => return Err(format!("unknown element type {other:#04x}")),
        };
        let value = src.get(v..v + size).ok_or("value out of bounds")?;
        put_key(out, kind);
        out.extend_from_slice(value);
        at = v + size;
    }
    out.push(0);
    let n = (out.len() - start) as i32;
    out[start..start + 4].copy_from_slice(&n.to_le_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::doc;

    /// `{_id: 1, text: <bytes>, n: {s: <bytes>}}` by hand.
    fn raw_with(bytes: &[u8]) -> Vec<u8> {
        let string = |key: &str, out: &mut Vec<u8>| {
            out.push(0x02);
            out.extend_from_slice(key.as_bytes());
            out.push(0);
            out.extend_from_slice(&((bytes.len() + 1) as i32).to_le_bytes());
            out.extend_from_slice(bytes);
            out.push(0);
        };
        let mut inner = vec![0; 4];
        string("s", &mut inner);
        inner.push(0);
        let n = inner.len() as i32;
        inner[..4].copy_from_slice(&n.to_le_bytes());
        let mut d = vec![0; 4];
        d.extend_from_slice(&[0x10, b'_', b'i', b'd', 0, 1, 0, 0, 0]);
        string("text", &mut d);
        d.extend_from_slice(&[0x03, b'n', 0]);
        d.extend_from_slice(&inner);
        d.push(0);
        let n = d.len() as i32;
        d[..4].copy_from_slice(&n.to_le_bytes());
        d
    }

    #[test]
    fn invalid_strings_round_trip_byte_for_byte() {
        let raw = raw_with(b"caf\xe9 \xff\xfe");
        let mut d = decode(&raw).expect("decodes");
        d.insert("mark", true);
        d.remove("mark");
        let mut out = Vec::new();
        encode(&d, &mut out);
        assert_eq!(out, raw);
        // Valid documents are untouched.
        let good = raw_with("café".as_bytes());
        assert_eq!(decode(&good).expect("valid"), doc! {"_id": 1, "text": "café", "n": {"s": "café"}});
    }

    #[test]
    fn unreadable_documents_are_named() {
        let mut raw = raw_with(b"x");
        let last = raw.len() - 2;
        raw[last] = 0x42; // the inner document's terminator becomes garbage
        let e = decode(&raw).expect_err("broken");
        assert!(e.contains("_id 1"), "{e}");
    }
}
