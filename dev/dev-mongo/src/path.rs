//! Dotted paths (`user.lang`, `tags.0`) into documents: reading with MongoDB's array traversal,
//! and writing for updates. Every component that reads or writes a field by path goes through
//! here so that arrays and missing fields are treated alike everywhere.

use mongodb::bson::{Bson, Document};

/// The values a path reaches in a document. `missing` is true when some branch of the traversal
/// found no value (which `{f: null}` and `$exists: false` care about).
#[derive(Debug, Default)]
pub struct Reached<'a> {
    /// Values found, in traversal order. Arrays at the end of the path are returned whole.
    pub values: Vec<&'a Bson>,
    /// Some branch ended without a value.
    pub missing: bool,
}

/// Reads `path` from `doc`, traversing arrays of sub-documents as MongoDB does.
pub fn reach<'a>(doc: &'a Document, path: &str) -> Reached<'a> {
    let mut out = Reached::default();
    let parts: Vec<&str> = path.split('.').collect();
    reach_doc(doc, &parts, &mut out);
    out
}

fn reach_doc<'a>(doc: &'a Document, parts: &[&str], out: &mut Reached<'a>) {
    match doc.get(parts[0]) {
        None => out.missing = true,
        Some(v) => reach_value(v, &parts[1..], out),
    }
}

fn reach_value<'a>(v: &'a Bson, rest: &[&str], out: &mut Reached<'a>) {
    if rest.is_empty() {
        out.values.push(v);
        return;
    }
    match v {
        Bson::Document(d) => reach_doc(d, rest, out),
        Bson::Array(items) => {
            if let Ok(i) = rest[0].parse::<usize>() {
                match items.get(i) {
                    Some(item) => reach_value(item, &rest[1..], out),
                    None => out.missing = true,
                }
            } else {
                let before = out.values.len();
                for item in items {
                    if let Bson::Document(d) = item {
                        reach_doc(d, rest, out);
                    }
                }
                if out.values.len() == before {
                    out.missing = true;
                }
            }
        }
        _ => out.missing = true,
    }
}

/// The single value at `path` without array traversal (used for `_id`, sort keys, projections
/// and `$group` keys), or `None`.
pub fn get<'a>(doc: &'a Document, path: &str) -> Option<&'a Bson> {
    let mut parts = path.split('.');
    let mut cur = doc.get(parts.next()?)?;
    for part in parts {
        cur = match cur {
            Bson::Document(d) => d.get(part)?,
            Bson::Array(a) => a.get(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Why a path cannot be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot create field '{field}' in element {{{parent}: {value}}}")]
pub struct PathConflict {
    field: String,
    parent: String,
    value: String,
}

/// Sets `path` to `value`, creating intermediate documents.
pub fn set(doc: &mut Document, path: &str, value: Bson) -> Result<(), PathConflict> {
    match path.split_once('.') {
        None => {
            doc.insert(path, value);
            Ok(())
        }
        Some((head, rest)) => {
            if !doc.contains_key(head) {
                doc.insert(head, Document::new());
            }
            match doc.get_mut(head) {
                Some(Bson::Document(d)) => set(d, rest, value),
                Some(Bson::Array(a)) => set_in_array(a, head, rest, value),
                Some(other) => {
                    Err(PathConflict { field: rest.to_string(), parent: head.to_string(), value: other.to_string() })
                }
                None => Ok(()),
            }
        }
    }
}

fn set_in_array(a: &mut Vec<Bson>, head: &str, path: &str, value: Bson) -> Result<(), PathConflict> {
    let (idx, rest) = match path.split_once('.') {
        Some((i, r)) => (i, Some(r)),
        None => (path, None),
    };
    let i: usize = idx.parse().map_err(|_| PathConflict {
        field: idx.to_string(),
        parent: head.to_string(),
        value: "array".to_string(),
    })?;
    while a.len() <= i {
        a.push(Bson::Null);
    }
    match rest {
        None => {
            a[i] = value;
            Ok(())
        }
        Some(rest) => {
            if !matches!(a[i], Bson::Document(_) | Bson::Array(_)) {
                a[i] = Bson::Document(Document::new());
            }
            match &mut a[i] {
                Bson::Document(d) => set(d, rest, value),
                Bson::Array(inner) => set_in_array(inner, idx, rest, value),
                _ => Ok(()),
            }
        }
    }
}

/// Removes `path`; returns whether something was removed.
pub fn unset(doc: &mut Document, path: &str) -> bool {
    match path.split_once('.') {
        None => doc.remove(path).is_some(),
        Some((head, rest)) => match doc.get_mut(head) {
            Some(Bson::Document(d)) => unset(d, rest),
            Some(Bson::Array(a)) => match rest.parse::<usize>() {
                // $unset of an array element sets it to null, as mongod does.
                Ok(i) if i < a.len() => {
                    a[i] = Bson::Null;
                    true
                }
                _ => false,
            },
            _ => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::doc;

    #[test]
    fn reaches_through_arrays() {
        let d = doc! {"a": [{"b": 1}, {"c": 2}, {"b": [3, 4]}], "x": {"y": null}};
        let r = reach(&d, "a.b");
        assert_eq!(r.values.len(), 2);
        assert!(r.missing);
        assert_eq!(reach(&d, "x.y").values, vec![&Bson::Null]);
        assert!(reach(&d, "x.z").missing);
        assert_eq!(get(&d, "a.0.b"), Some(&Bson::Int32(1)));
    }

    #[test]
    fn sets_and_unsets_nested() {
        let mut d = doc! {"a": 1};
        set(&mut d, "b.c", Bson::Int32(2)).unwrap();
        assert_eq!(d, doc! {"a": 1, "b": {"c": 2}});
        assert!(set(&mut d, "a.z", Bson::Int32(1)).is_err());
        assert!(unset(&mut d, "b.c"));
        assert_eq!(d, doc! {"a": 1, "b": {}});
    }
}
