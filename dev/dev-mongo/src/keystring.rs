//! An order-preserving byte encoding of BSON values ("key strings"), so that comparing the bytes
//! compares the values in MongoDB's canonical order: MinKey < null < numbers < strings < objects
//! < arrays < binData < ObjectId < bool < date < timestamp < regex < MaxKey.
//!
//! Every index, the `_id` order of a collection and the comparison operators of the query
//! language go through this one encoding, so they can never disagree. Encodings are prefix-free
//! (strings and containers are terminated), which lets compound keys be plain concatenations and
//! lets a descending component be stored as the bitwise complement of its bytes.

use mongodb::bson::{spec::BinarySubtype, Bson, Document};
use std::cmp::Ordering;

/// Canonical type brackets; the first byte of every encoding.
pub mod bracket {
    pub const MIN_KEY: u8 = 0x01;
    pub const NULL: u8 = 0x0a;
    pub const NUMBER: u8 = 0x14;
    pub const STRING: u8 = 0x1e;
    pub const OBJECT: u8 = 0x28;
    pub const ARRAY: u8 = 0x32;
    pub const BINARY: u8 = 0x3c;
    pub const OBJECT_ID: u8 = 0x46;
    pub const BOOLEAN: u8 = 0x50;
    pub const DATE: u8 = 0x5a;
    pub const TIMESTAMP: u8 = 0x64;
    pub const REGEX: u8 = 0x6e;
    pub const DB_POINTER: u8 = 0x78;
    pub const CODE: u8 = 0x82;
    pub const CODE_WITH_SCOPE: u8 = 0x8c;
    pub const MAX_KEY: u8 = 0xf0;
}

/// The canonical type bracket of a value; values compare across types by this first.
pub fn bracket_of(v: &Bson) -> u8 {
    use bracket::*;
    match v {
        Bson::MinKey => MIN_KEY,
        Bson::Null | Bson::Undefined => NULL,
        Bson::Double(_) | Bson::Int32(_) | Bson::Int64(_) | Bson::Decimal128(_) => NUMBER,
        Bson::String(_) | Bson::Symbol(_) => STRING,
        Bson::Document(_) => OBJECT,
        Bson::Array(_) => ARRAY,
        Bson::Binary(_) => BINARY,
        Bson::ObjectId(_) => OBJECT_ID,
        Bson::Boolean(_) => BOOLEAN,
        Bson::DateTime(_) => DATE,
        Bson::Timestamp(_) => TIMESTAMP,
        Bson::RegularExpression(_) => REGEX,
        Bson::DbPointer(_) => DB_POINTER,
        Bson::JavaScriptCode(_) => CODE,
        Bson::JavaScriptCodeWithScope(_) => CODE_WITH_SCOPE,
        Bson::MaxKey => MAX_KEY,
    }
}

/// Encodes one value.
pub fn encode(v: &Bson) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    encode_into(v, &mut out);
    out
}

/// Appends the encoding of `v` to `out`.
pub fn encode_into(v: &Bson, out: &mut Vec<u8>) {
    out.push(bracket_of(v));
    match v {
        Bson::MinKey | Bson::MaxKey | Bson::Null | Bson::Undefined => {}
        Bson::Double(f) => encode_number(*f, 0, out),
        Bson::Int32(i) => encode_number(*i as f64, 0, out),
        Bson::Int64(i) => {
            let f = *i as f64;
            // i64 values beyond 2^53 do not fit a double exactly: keep the rest as a tiebreak.
            let rest = (*i as i128 - f as i128) as i64;
            encode_number(f, rest, out)
        }
        Bson::Decimal128(d) => encode_number(d.to_string().parse::<f64>().unwrap_or(f64::NAN), 0, out),
        Bson::String(s) | Bson::Symbol(s) => encode_str(s, out),
        Bson::Document(d) => encode_doc(d, out),
        Bson::Array(a) => {
            for item in a {
                encode_into(item, out);
            }
            out.push(0);
        }
        Bson::Binary(b) => {
            out.extend_from_slice(&(b.bytes.len() as u32).to_be_bytes());
            out.push(u8::from(b.subtype));
            out.extend_from_slice(&b.bytes);
        }
        Bson::ObjectId(o) => out.extend_from_slice(&o.bytes()),
        Bson::Boolean(b) => out.push(*b as u8),
        Bson::DateTime(d) => out.extend_from_slice(&((d.timestamp_millis() as u64) ^ (1 << 63)).to_be_bytes()),
        Bson::Timestamp(t) => {
            out.extend_from_slice(&t.time.to_be_bytes());
            out.extend_from_slice(&t.increment.to_be_bytes());
        }
        Bson::RegularExpression(r) => {
            encode_str(&r.pattern, out);
            encode_str(&r.options, out);
        }
        Bson::DbPointer(p) => encode_str(&format!("{p:?}"), out),
        Bson::JavaScriptCode(c) => encode_str(c, out),
        Bson::JavaScriptCodeWithScope(c) => {
            encode_str(&c.code, out);
            encode_doc(&c.scope, out);
        }
    }
}

fn encode_number(f: f64, rest: i64, out: &mut Vec<u8>) {
    let bits = if f.is_nan() {
        0 // NaN sorts below every number, as in MongoDB.
    } else {
        let f = if f == 0.0 { 0.0 } else { f }; // -0.0 == 0.0
        let b = f.to_bits();
        if b >> 63 == 1 {
            !b
        } else {
            b | (1 << 63)
        }
    };
    out.extend_from_slice(&bits.to_be_bytes());
    out.extend_from_slice(&((rest as u64) ^ (1 << 63)).to_be_bytes());
}

fn encode_str(s: &str, out: &mut Vec<u8>) {
    for &b in s.as_bytes() {
        out.push(b);
        if b == 0 {
            out.push(0xff);
        }
    }
    out.extend_from_slice(&[0, 0]);
}

fn encode_doc(d: &Document, out: &mut Vec<u8>) {
    for (k, v) in d {
        out.push(bracket_of(v));
        encode_str(k, out);
        encode_into(v, out);
    }
    out.push(0);
}

/// Compares two values in MongoDB's canonical order.
pub fn compare(a: &Bson, b: &Bson) -> Ordering {
    // Fast paths for the common scalar cases; the encoding handles everything else.
    match (a, b) {
        (Bson::String(x), Bson::String(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Bson::ObjectId(x), Bson::ObjectId(y)) => x.bytes().cmp(&y.bytes()),
        (Bson::Int32(x), Bson::Int32(y)) => x.cmp(y),
        (Bson::Int64(x), Bson::Int64(y)) => x.cmp(y),
        (Bson::Boolean(x), Bson::Boolean(y)) => x.cmp(y),
        _ => encode(a).cmp(&encode(b)),
    }
}

/// Whether two values are equal under MongoDB's rules (1 == 1.0 == 1L).
pub fn equal(a: &Bson, b: &Bson) -> bool {
    compare(a, b) == Ordering::Equal
}

/// Complements bytes in place: how a descending index component is stored.
pub fn complement(bytes: &mut [u8]) {
    for b in bytes {
        *b = !*b;
    }
}

/// The smallest byte string greater than every string that starts with `prefix`, or `None`
/// when there is none (all 0xff).
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut s = prefix.to_vec();
    while let Some(last) = s.pop() {
        if last != 0xff {
            s.push(last + 1);
            return Some(s);
        }
    }
    None
}

/// Binary subtype helper kept here so every user encodes generic binaries alike.
pub fn generic_binary(bytes: Vec<u8>) -> Bson {
    Bson::Binary(mongodb::bson::Binary { subtype: BinarySubtype::Generic, bytes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::{doc, oid::ObjectId, DateTime};

    #[test]
    fn canonical_order_across_types() {
        let ordered = vec![
            Bson::MinKey,
            Bson::Null,
            Bson::Double(f64::NAN),
            Bson::Double(-1.5),
            Bson::Int32(0),
            Bson::Int64(1),
            Bson::Double(1.5),
            Bson::Int64(i64::MAX),
            Bson::String(String::new()),
            Bson::String("a".into()),
            Bson::String("a\0".into()),
            Bson::String("ab".into()),
            Bson::Document(doc! {}),
            Bson::Document(doc! {"a": 1}),
            Bson::Document(doc! {"a": 1, "b": 1}),
            Bson::Document(doc! {"a": "x"}),
            Bson::Array(vec![]),
            Bson::Array(vec![Bson::Int32(1)]),
            generic_binary(vec![9]),
            Bson::ObjectId(ObjectId::from_bytes([0; 12])),
            Bson::Boolean(false),
            Bson::Boolean(true),
            Bson::DateTime(DateTime::from_millis(-5)),
            Bson::DateTime(DateTime::from_millis(5)),
            Bson::MaxKey,
        ];
        for w in ordered.windows(2) {
            assert_eq!(compare(&w[0], &w[1]), Ordering::Less, "{:?} < {:?}", w[0], w[1]);
        }
        assert!(equal(&Bson::Int32(1), &Bson::Double(1.0)));
        assert!(equal(&Bson::Int64(1), &Bson::Double(1.0)));
        assert!(equal(&Bson::Double(-0.0), &Bson::Int32(0)));
        assert_eq!(compare(&Bson::Int64(i64::MAX - 1), &Bson::Int64(i64::MAX)), Ordering::Less);
    }

    #[test]
    fn complement_reverses_order_of_prefix_free_encodings() {
        let mut a = encode(&Bson::String("a".into()));
        let mut b = encode(&Bson::String("ab".into()));
        complement(&mut a);
        complement(&mut b);
        assert!(b < a);
    }

    #[test]
    fn successor_bounds_prefix() {
        assert_eq!(prefix_successor(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_successor(&[0xff]), None);
    }
}
