//! Secondary indexes: their specification (`createIndexes` options) and their entries, kept in
//! key-string order and maintained on every write, including partial (`partialFilterExpression`),
//! sparse, unique and multikey (array) indexes.
//!
//! An index only narrows candidates; it must never be the reason a document matches.

use super::error::{code, CmdResult, CommandError};
use super::keystring::{complement, encode_into, prefix_successor};
use super::matcher::{truthy, Filter};
use super::path::reach;
use mongodb::bson::{doc, Bson, Document};
use std::collections::BTreeMap;

/// Name mongod gives the primary index.
pub const ID_INDEX: &str = "_id_";

/// What `createIndexes` asked for.
#[derive(Debug, Clone)]
pub struct IndexSpec {
    /// Index name.
    pub name: String,
    /// Key fields with `true` for descending.
    pub fields: Vec<(String, bool)>,
    /// The key document as given (`{lang: 1, classified: 1, _id: 1}`).
    pub key: Document,
    /// Unique constraint on the key.
    pub unique: bool,
    /// Sparse: documents missing every key field are not indexed.
    pub sparse: bool,
    /// Partial filter: only matching documents are indexed.
    pub partial: Option<(Document, Filter)>,
}

impl IndexSpec {
    /// Parses one element of `createIndexes.indexes`.
    pub fn parse(spec: &Document) -> CmdResult<IndexSpec> {
        let key = spec
            .get_document("key")
            .map_err(|_| CommandError::new(code::FAILED_TO_PARSE, "index specification must have a 'key' document"))?
            .clone();
        if key.is_empty() {
            return Err(CommandError::new(67, "Index keys cannot be empty."));
        }
        let mut fields = Vec::with_capacity(key.len());
        for (path, dir) in &key {
            let desc = match dir {
                Bson::Int32(1) | Bson::Int64(1) => false,
                Bson::Int32(-1) | Bson::Int64(-1) => true,
                Bson::Double(d) if *d > 0.0 => false,
                Bson::Double(d) if *d < 0.0 => true,
                other => {
                    return Err(CommandError::new(
                        67,
                        format!("index key {path}: {other} is not supported by tweet-embed dev-mongo (only 1 and -1)"),
                    ))
                }
            };
            fields.push((path.clone(), desc));
        }
        let name = match spec.get("name") {
            Some(Bson::String(n)) => n.clone(),
            _ => key.iter().map(|(k, v)| format!("{k}_{v}")).collect::<Vec<_>>().join("_"),
        };
        let partial = match spec.get("partialFilterExpression") {
            None => None,
            Some(Bson::Document(d)) => Some((d.clone(), Filter::parse(d)?)),
            Some(other) => return Err(CommandError::type_mismatch("partialFilterExpression", "object", other)),
        };
        let sparse = spec.get("sparse").is_some_and(truthy);
        if sparse && partial.is_some() {
            return Err(CommandError::new(
                code::INVALID_OPTIONS,
                "cannot mix \"partialFilterExpression\" and \"sparse\" options",
            ));
        }
        let unique = spec.get("unique").is_some_and(truthy);
        Ok(IndexSpec { name, fields, key, unique, sparse, partial })
    }

    /// The spec as `listIndexes` shows it.
    pub fn to_document(&self) -> Document {
        let mut d = doc! { "v": 2, "key": self.key.clone(), "name": self.name.clone() };
        if self.unique {
            d.insert("unique", true);
        }
        if self.sparse {
            d.insert("sparse", true);
        }
        if let Some((p, _)) = &self.partial {
            d.insert("partialFilterExpression", p.clone());
        }
        d
    }

    /// Whether another spec is the same index (mongod allows re-creating it).
    pub fn same_as(&self, other: &IndexSpec) -> bool {
        self.key == other.key
            && self.unique == other.unique
            && self.sparse == other.sparse
            && self.partial.as_ref().map(|p| &p.0) == other.partial.as_ref().map(|p| &p.0)
    }
}

/// An index with its entries: `key string of the fields ++ key string of _id` → `_id` key string.
#[derive(Debug, Clone)]
pub struct Index {
    /// What it indexes.
    pub spec: IndexSpec,
    /// Entries in key order.
    pub entries: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Some document had an array on an indexed path.
    pub multikey: bool,
}

impl Index {
    /// An empty index.
    pub fn new(spec: IndexSpec) -> Index {
        Index { spec, entries: BTreeMap::new(), multikey: false }
    }

    /// The entry keys `doc` contributes (none if the partial filter or sparseness excludes it).
    /// Returns whether the keys came from an array (multikey).
    pub fn keys_for(&self, doc: &Document, id_key: &[u8]) -> CmdResult<(Vec<Vec<u8>>, bool)> {
        if let Some((_, filter)) = &self.spec.partial {
            if !filter.matches(doc) {
                return Ok((Vec::new(), false));
            }
        }
        let mut per_field: Vec<Vec<Bson>> = Vec::with_capacity(self.spec.fields.len());
        let mut any_present = false;
        let mut multi_fields = 0;
        for (path, _) in &self.spec.fields {
            let reached = reach(doc, path);
            any_present |= !reached.values.is_empty();
            let mut vals: Vec<Bson> = Vec::new();
            let mut multi = reached.values.len() > 1;
            for v in reached.values {
                match v {
                    Bson::Array(items) => {
                        multi = true;
                        if items.is_empty() {
                            vals.push(Bson::Null);
                        }
                        vals.extend(items.iter().cloned());
                    }
                    other => vals.push(other.clone()),
                }
            }
            if vals.is_empty() {
                vals.push(Bson::Null);
            }
            if multi {
                multi_fields += 1;
                vals.sort_by(super::keystring::compare);
                vals.dedup_by(|a, b| super::keystring::equal(a, b));
            }
            per_field.push(vals);
        }
        if self.spec.sparse && !any_present {
            return Ok((Vec::new(), false));
        }
        if multi_fields > 1 {
            return Err(CommandError::new(171, format!("cannot index parallel arrays in index {}", self.spec.name)));
        }
        let mut keys: Vec<Vec<u8>> = vec![Vec::new()];
        for (vals, (_, desc)) in per_field.iter().zip(&self.spec.fields) {
            let mut next = Vec::with_capacity(keys.len() * vals.len());
            for prefix in &keys {
                for v in vals {
                    let mut k = prefix.clone();
                    push_component(&mut k, v, *desc);
                    next.push(k);
                }
            }
            keys = next;
        }
        for k in &mut keys {
            k.extend_from_slice(id_key);
        }
        Ok((keys, multi_fields > 0))
    }

    /// Refuses keys that would break a unique constraint (another `_id` with the same key).
    pub fn check_unique(&self, keys: &[Vec<u8>], id_key: &[u8]) -> CmdResult<()> {
        if !self.spec.unique {
            return Ok(());
        }
        for k in keys {
            let prefix = &k[..k.len() - id_key.len()];
            let mut range = match prefix_successor(prefix) {
                Some(end) => self.entries.range(prefix.to_vec()..end),
                None => self.entries.range(prefix.to_vec()..),
            };
            if range.any(|(_, id)| id.as_slice() != id_key) {
                return Err(CommandError::new(
                    code::DUPLICATE_KEY,
                    format!("E11000 duplicate key error index: {} dup key", self.spec.name),
                ));
            }
        }
        Ok(())
    }
}

/// Appends one key component, complemented for a descending field.
pub fn push_component(out: &mut Vec<u8>, v: &Bson, desc: bool) {
    let start = out.len();
    encode_into(v, out);
    if desc {
        complement(&mut out[start..]);
    }
}
