//! [`DocId`], the document id in the engine's one string form, and the one owner of the id's
//! encodings: BSON `_id` -> string ([`DocId::of`]), string -> BSON `_id` ([`DocId::to_bson`],
//! [`DocId::decode`]), a raw document's `_id` read however broken its strings are
//! ([`DocId::read`], [`DocId::read_bson`]), and the ObjectId arithmetic of scan ranges
//! ([`DocId::oid_floor`], [`DocId::prev_oid`]). The output's typed `id` column
//! (`crate::table::output::id_type`) converts from the string form at the Parquet boundary. It
//! depends on no other module of the crate.
//!
//! The string form is stored in checkpoints, deletion logs and Parquet files: it must never
//! change.

use std::fmt;

use mongodb::bson::oid::ObjectId;
use mongodb::bson::serde_helpers::Utf8LossyDeserialization;
use mongodb::bson::{Bson, Document, RawDocument};

/// A document's `_id` in the engine's string form, which the output's `id` column shows, the
/// checkpoint and the deletion logs hold, and every record of the dataflow carries:
///
/// | `_id`                      | string form                                   |
/// |----------------------------|-----------------------------------------------|
/// | ObjectId                   | 24 lowercase hex digits: `65a1f0c2e4b0a1b2c3d4e5f6` |
/// | anything else              | canonical extended JSON: `{"$numberLong":"5"}`, `{"$numberInt":"-3"}`, `"x"`, `{"$numberDouble":"1.5"}`, `{"a":{"$numberInt":"1"}}` |
///
/// Canonical extended JSON keeps the BSON type of every value, so the form is unambiguous (the
/// string `"5"` and the number `5` are two ids) and decodes back to the very `_id`
/// (<https://www.mongodb.com/docs/manual/reference/mongodb-extended-json/>). A string of 24 hex
/// digits cannot be mistaken for an ObjectId: as JSON it is quoted, 26 characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DocId(String);

impl DocId {
    /// The string form of `id`.
    pub fn of(id: &Bson) -> DocId {
        DocId(match id {
            Bson::ObjectId(o) => o.to_hex(),
            other => other.clone().into_canonical_extjson().to_string(),
        })
    }

    /// The id of a document as the server sent it (see [`DocId::read_bson`]).
    pub fn read(raw: &RawDocument) -> DocId {
        DocId::of(&DocId::read_bson(raw))
    }

    /// The `_id` of a raw document, decoded lossily when it holds strings that are not UTF-8 (a
    /// server stores such strings as it receives them; the driver's strict decoding would fail
    /// the whole read); `Null` if there is none or it cannot be read at all.
    pub fn read_bson(raw: &RawDocument) -> Bson {
        let Some(Ok(el)) = raw.iter_elements().find(|e| e.as_ref().is_ok_and(|e| e.key() == "_id")) else {
            return Bson::Null;
        };
        if let Ok(v) = el.value() {
            if let Ok(b) = Bson::try_from(v.to_raw_bson()) {
                return b;
            }
        }
        // A string `_id` (or one holding strings) that is not UTF-8: decode the document lossily.
        mongodb::bson::from_slice::<Utf8LossyDeserialization<Document>>(raw.as_bytes())
            .ok()
            .and_then(|d| d.0.get("_id").cloned())
            .unwrap_or(Bson::Null)
    }

    /// The `_id` this id is the string form of; `None` if it is not one.
    pub fn to_bson(&self) -> Option<Bson> {
        DocId::decode(&self.0)
    }

    /// The `_id` whose string form is `s` (an id as a checkpoint, a deletion log or a record
    /// holds it): the inverse of [`DocId::of`]; `None` if `s` is not such a form.
    pub fn decode(s: &str) -> Option<Bson> {
        if s.len() == 24 {
            if let Ok(o) = ObjectId::parse_str(s) {
                return Some(Bson::ObjectId(o));
            }
        }
        let v: serde_json::Value = serde_json::from_str(s).ok()?;
        Bson::try_from(v).ok()
    }

    /// The string form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The string form, owned.
    pub fn into_string(self) -> String {
        self.0
    }

    /// The smallest ObjectId of second `secs` since the Unix epoch: the timestamp's 4 bytes
    /// (big-endian, clamped to `u32`), then 8 zero bytes. An ObjectId starts with its creation
    /// time in seconds, most significant byte first
    /// (<https://www.mongodb.com/docs/manual/reference/method/ObjectId/>), and ObjectIds compare
    /// by their bytes in order, so every ObjectId made in or after that second is `>=` this one.
    pub(crate) fn oid_floor(secs: i64) -> ObjectId {
        let mut b = [0u8; 12];
        b[..4].copy_from_slice(&(secs.clamp(0, u32::MAX as i64) as u32).to_be_bytes());
        ObjectId::from_bytes(b)
    }

    /// The ObjectId just below `b`, its 12 bytes read as one big-endian number minus one (so the
    /// range `(prev, x]` starts exactly at `b`); all zeros if `b` is not an ObjectId or is zero.
    pub(crate) fn prev_oid(b: &Bson) -> ObjectId {
        let Bson::ObjectId(o) = b else { return ObjectId::from_bytes([0; 12]) };
        let v = u128::from_be_bytes({
            let mut w = [0u8; 16];
            w[4..].copy_from_slice(&o.bytes());
            w
        });
        let p = v.saturating_sub(1).to_be_bytes();
        let mut out = [0u8; 12];
        out.copy_from_slice(&p[4..]);
        ObjectId::from_bytes(out)
    }
}

impl fmt::Display for DocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for DocId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<DocId> for String {
    fn from(id: DocId) -> String {
        id.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::{doc, rawdoc};

    #[test]
    fn ids_round_trip() {
        let o = ObjectId::new();
        for b in [Bson::ObjectId(o), Bson::Int64(5), Bson::String("x".into()), Bson::Int32(-3)] {
            assert_eq!(DocId::of(&b).to_bson(), Some(b.clone()), "{b:?}");
        }
        assert_eq!(DocId::of(&Bson::ObjectId(o)).as_str().len(), 24);
    }

    /// Each kind of `_id` goes to its exact string form (stored on disk: it must not change) and
    /// back to the same `_id`, through the string and through a raw document.
    #[test]
    fn each_id_kind_round_trips() {
        let oid = ObjectId::parse_str("65a1f0c2e4b0a1b2c3d4e5f6").unwrap();
        let cases = [
            (Bson::ObjectId(oid), "65a1f0c2e4b0a1b2c3d4e5f6"),
            (Bson::Int32(-3), r#"{"$numberInt":"-3"}"#),
            (Bson::Int64(1_500_000_000_000_000_000), r#"{"$numberLong":"1500000000000000000"}"#),
            (Bson::String("65a1f0c2e4b0a1b2c3d4e5f6".into()), r#""65a1f0c2e4b0a1b2c3d4e5f6""#),
            (Bson::String("12\"3 ☀".into()), r#""12\"3 ☀""#),
            (Bson::Double(1.5), r#"{"$numberDouble":"1.5"}"#),
            (Bson::Document(doc! {"a": 1, "b": "x"}), r#"{"a":{"$numberInt":"1"},"b":"x"}"#),
        ];
        for (b, form) in cases {
            let id = DocId::of(&b);
            assert_eq!(id.as_str(), form, "{b:?}");
            assert_eq!(id.to_bson(), Some(b.clone()), "{b:?}");
            assert_eq!(DocId::decode(form), Some(b.clone()), "{b:?}");
            let raw = mongodb::bson::RawDocumentBuf::from_document(&doc! {"_id": b.clone(), "t": "x"}).unwrap();
            assert_eq!(DocId::read(&raw), id, "{b:?}");
        }
        assert_eq!(DocId::decode("not an id"), None);
    }

    #[test]
    fn reads_a_missing_id_as_null() {
        assert_eq!(DocId::read_bson(&rawdoc! {"t": "x"}), Bson::Null);
        assert_eq!(DocId::read(&rawdoc! {"t": "x"}).as_str(), "null");
    }

    #[test]
    fn prev_oid_is_just_below() {
        let o = DocId::oid_floor(100);
        let p = DocId::prev_oid(&Bson::ObjectId(o));
        assert!(p < o);
        assert_eq!(
            DocId::prev_oid(&Bson::ObjectId(ObjectId::from_bytes([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]))).bytes()[11],
            0xff
        );
    }
}
