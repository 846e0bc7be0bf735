//! Reading a stored document into a [`Candidate`]: its `_id`, `lang` and `created_at`, and its
//! text or the reason it has none usable. Both sources (the work-queue scan and the change
//! stream) read documents through [`from_raw`], so a document is judged the same whichever
//! source reads it. It never fails: whatever a document holds becomes a text or a reason.
//!
//! Sources hand over the document as the server sent it ([`from_raw`]), because stored data
//! can hold strings that are not valid UTF-8 (mongod stores what old drivers and scrapers
//! wrote), which a typed read (`deserialize_current`, a `Document` change event) refuses for
//! the whole document; a source that retried such a read would stall on it for ever. Decoding
//! here, in one place, makes one bad field cost that document alone:
//! - a text that is not valid UTF-8 is a rejection, `<text field> is not valid UTF-8`, not a
//!   lossily decoded text: a lossy text would be embedded as a text other than the one stored,
//!   silently, while a rejection is visible (in `_rejects/`, counted, marked `false`) and the
//!   document can be requeued with `tweet-embed requeue` once its data is fixed;
//! - every other field (`lang`, `created_at`, `_id`, …) is decoded lossily (U+FFFD for each bad
//!   sequence): they only label a row, and losing the document for a bad label would be worse.

use crate::dataflow::record::{Candidate, DocMeta, Origin};
use crate::mongo::document_id::DocId;
use mongodb::bson::serde_helpers::Utf8LossyDeserialization;
use mongodb::bson::spec::ElementType;
use mongodb::bson::{Bson, Document, RawDocument};

/// Reads a document as the server sent it into a candidate (see the module doc for strings
/// that are not valid UTF-8). Also returns its `_id`, for a scan to resume after it.
pub fn from_raw(raw: &RawDocument, text_field: &str, origin: Origin) -> (Bson, Candidate) {
    if let Ok(doc) = Document::try_from(raw) {
        let id = doc.get("_id").cloned().unwrap_or(Bson::Null);
        return (id, to_candidate(doc, text_field, origin));
    }
    let text_not_utf8 = raw.iter_elements().any(|e| {
        e.is_ok_and(|e| e.key() == text_field && e.element_type() == ElementType::String && e.value().is_err())
    });
    match mongodb::bson::from_slice::<Utf8LossyDeserialization<Document>>(raw.as_bytes()) {
        Ok(Utf8LossyDeserialization(doc)) => {
            let id = doc.get("_id").cloned().unwrap_or(Bson::Null);
            let mut cand = to_candidate(doc, text_field, origin);
            if text_not_utf8 {
                cand.text = Err(format!("{text_field} is not valid UTF-8"));
            }
            (id, cand)
        }
        Err(e) => {
            // Not BSON even lossily (a field name that is not UTF-8, a broken length): a reason
            // for this document, under whatever `_id` can be read.
            let id = DocId::read_bson(raw);
            let meta = DocMeta { id: DocId::of(&id).into_string(), lang: None, created_at_ms: None, origin };
            (id, Candidate { doc: meta, text: Err(format!("document is not readable BSON: {e}")) })
        }
    }
}

/// Reads a document into a candidate: its text, or the reason it has none usable. Takes the
/// document by value so the text moves instead of being copied (this runs for every document).
pub fn to_candidate(mut doc: Document, text_field: &str, origin: Origin) -> Candidate {
    let id = doc.get("_id").cloned().unwrap_or(Bson::Null);
    let lang = match doc.remove("lang") {
        Some(Bson::String(s)) => Some(s),
        _ => None,
    };
    let created_at_ms = created_at(doc.get("created_at")).or(match &id {
        Bson::ObjectId(o) => Some(o.timestamp().timestamp_millis()),
        _ => None,
    });
    let text = match doc.remove(text_field) {
        None => Err(format!("no {text_field} field")),
        Some(Bson::String(s)) if s.is_empty() => Err("empty text".to_string()),
        Some(Bson::String(s)) if s.trim().is_empty() => Err("whitespace-only text".to_string()),
        Some(Bson::String(s)) => Ok(s),
        Some(Bson::Null) => Err(format!("{text_field} is null")),
        Some(other) => Err(format!("{text_field} is not a string ({:?})", other.element_type())),
    };
    Candidate { doc: DocMeta { id: DocId::of(&id).into_string(), lang, created_at_ms, origin }, text }
}

/// `created_at` as a date, a Twitter date string (`Wed Oct 10 20:19:24 +0000 2018`) or RFC 3339.
fn created_at(v: Option<&Bson>) -> Option<i64> {
    match v? {
        Bson::DateTime(d) => Some(d.timestamp_millis()),
        Bson::String(s) => parse_twitter_date(s)
            .or_else(|| mongodb::bson::DateTime::parse_rfc3339_str(s).ok().map(|d| d.timestamp_millis())),
        Bson::Int64(ms) => Some(*ms),
        _ => None,
    }
}

fn parse_twitter_date(s: &str) -> Option<i64> {
    // "Wed Oct 10 20:19:24 +0000 2018"
    let parts: Vec<&str> = s.split_whitespace().collect();
    if parts.len() != 6 || parts[4] != "+0000" {
        return None;
    }
    let month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        .iter()
        .position(|m| *m == parts[1])? as u32
        + 1;
    let day: u32 = parts[2].parse().ok()?;
    let year: i32 = parts[5].parse().ok()?;
    let hms: Vec<u32> = parts[3].split(':').filter_map(|x| x.parse().ok()).collect();
    if hms.len() != 3 {
        return None;
    }
    let iso = format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", hms[0], hms[1], hms[2]);
    mongodb::bson::DateTime::parse_rfc3339_str(&iso).ok().map(|d| d.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::doc;

    #[test]
    fn bad_texts_become_reasons() {
        let c = |d: Document| to_candidate(d, "text", Origin::Backfill).text;
        assert_eq!(c(doc! {"_id": 1}), Err("no text field".into()));
        assert_eq!(c(doc! {"_id": 1, "text": 5}), Err("text is not a string (Int32)".into()));
        assert_eq!(c(doc! {"_id": 1, "text": " \n\t"}), Err("whitespace-only text".into()));
        assert_eq!(c(doc! {"_id": 1, "text": ""}), Err("empty text".into()));
        assert_eq!(c(doc! {"_id": 1, "text": "héllo 👋"}), Ok("héllo 👋".into()));
        let d = to_candidate(
            doc! {"_id": 1, "text": "x", "created_at": "Wed Oct 10 20:19:24 +0000 2018"},
            "text",
            Origin::Backfill,
        );
        assert_eq!(d.doc.created_at_ms, Some(1_539_202_764_000));
    }

    /// `{_id: 7, lang: <lang>, text: <text>}` with hand-made string bytes.
    fn raw(lang: &[u8], text: &[u8]) -> mongodb::bson::RawDocumentBuf {
        let mut d = vec![0; 4];
        d.extend_from_slice(&[0x10, b'_', b'i', b'd', 0, 7, 0, 0, 0]);
        for (k, v) in [("lang", lang), ("text", text)] {
            d.push(0x02);
            d.extend_from_slice(k.as_bytes());
            d.push(0);
            d.extend_from_slice(&((v.len() + 1) as i32).to_le_bytes());
            d.extend_from_slice(v);
            d.push(0);
        }
        d.push(0);
        let n = d.len() as i32;
        d[..4].copy_from_slice(&n.to_le_bytes());
        mongodb::bson::RawDocumentBuf::from_bytes(d).expect("framed")
    }

    #[test]
    fn a_text_not_utf8_is_rejected_other_fields_decode_lossily() {
        let (id, c) = from_raw(&raw(b"en", b"caf\xe9"), "text", Origin::Backfill);
        assert_eq!(id, Bson::Int32(7));
        assert_eq!(c.text, Err("text is not valid UTF-8".into()));
        assert_eq!(c.doc.id, "{\"$numberInt\":\"7\"}");
        let (_, c) = from_raw(&raw(b"e\xffn", "héllo".as_bytes()), "text", Origin::Backfill);
        assert_eq!(c.text, Ok("héllo".into()));
        assert_eq!(c.doc.lang.as_deref(), Some("e\u{FFFD}n"));
        let (_, c) = from_raw(&raw(b"en", b"ok"), "text", Origin::Backfill);
        assert_eq!((c.text, c.doc.lang), (Ok("ok".into()), Some("en".into())));
    }
}
