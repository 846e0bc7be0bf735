//! The document id in its encodings, in one place: the engine's string form of a `_id`
//! ([`id_string`], [`id_from_string`]: 24 hex digits for an ObjectId, canonical extended JSON
//! otherwise), a raw document's `_id` read however broken its strings are ([`raw_id`]), and the
//! ObjectId arithmetic of scan ranges ([`oid_floor`], [`prev_oid`]). The output's typed `id`
//! column (`crate::table::output::id_type`) converts from the string form. It depends on no other
//! module of the crate.

use mongodb::bson::oid::ObjectId;
use mongodb::bson::serde_helpers::Utf8LossyDeserialization;
use mongodb::bson::{Bson, Document, RawDocument};

/// The `_id` as the output's `id` column shows it: 24 hex digits for an ObjectId, canonical
/// extended JSON otherwise.
pub fn id_string(id: &Bson) -> String {
    match id {
        Bson::ObjectId(o) => o.to_hex(),
        other => other.clone().into_canonical_extjson().to_string(),
    }
}

/// The inverse of [`id_string`].
pub fn id_from_string(s: &str) -> Option<Bson> {
    if s.len() == 24 {
        if let Ok(o) = ObjectId::parse_str(s) {
            return Some(Bson::ObjectId(o));
        }
    }
    let v: serde_json::Value = serde_json::from_str(s).ok()?;
    Bson::try_from(v).ok()
}

/// The `_id` of a document as the server sent it, decoded lossily; `Null` if unreadable.
pub fn raw_id(raw: &RawDocument) -> Bson {
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

/// The smallest ObjectId with this timestamp.
pub(crate) fn oid_floor(secs: i64) -> ObjectId {
    let mut b = [0u8; 12];
    b[..4].copy_from_slice(&(secs.clamp(0, u32::MAX as i64) as u32).to_be_bytes());
    ObjectId::from_bytes(b)
}

/// The ObjectId just below `b` (so `(prev, x]` starts exactly at `b`).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        let o = ObjectId::new();
        for b in [Bson::ObjectId(o), Bson::Int64(5), Bson::String("x".into()), Bson::Int32(-3)] {
            assert_eq!(id_from_string(&id_string(&b)), Some(b.clone()), "{b:?}");
        }
        assert_eq!(id_string(&Bson::ObjectId(o)).len(), 24);
    }

    #[test]
    fn prev_oid_is_just_below() {
        let o = oid_floor(100);
        let p = prev_oid(&Bson::ObjectId(o));
        assert!(p < o);
        assert_eq!(
            prev_oid(&Bson::ObjectId(ObjectId::from_bytes([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]))).bytes()[11],
            0xff
        );
    }
}
