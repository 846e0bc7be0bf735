//! Reading a stored document into a [`Candidate`]: its `_id`, `lang` and `created_at`, and its
//! text or the reason it has none usable. Both sources (the work-queue scan and the change
//! stream) read documents through [`to_candidate`], so a document is judged the same whichever
//! source reads it. It never fails: whatever a document holds becomes a text or a reason.

use crate::record::{Candidate, DocMeta, Origin};
use crate::work_queue::id_string;
use mongodb::bson::{Bson, Document};

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
    Candidate { doc: DocMeta { id: id_string(&id), lang, created_at_ms, origin }, text }
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
}
