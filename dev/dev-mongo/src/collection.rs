//! One collection: documents ordered by `_id` key string, and the secondary indexes kept in step
//! with them on every insert, replace and delete.
//!
//! A write either changes the documents and every index, or (on a refusal such as a duplicate
//! key) changes nothing.

use super::error::{code, CmdResult, CommandError};
use super::index::{Index, IndexSpec, ID_INDEX};
use super::keystring::encode;
use mongodb::bson::{doc, Bson, Document};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A collection's documents and indexes.
#[derive(Debug, Clone, Default)]
pub struct Collection {
    /// `_id` key string → document.
    pub docs: BTreeMap<Vec<u8>, Arc<Document>>,
    /// Secondary indexes (the `_id` index is `docs` itself).
    pub indexes: Vec<Index>,
}

/// The `_id` key string of a document (`Null` if it has none, which inserts never allow).
pub fn id_key_of(doc: &Document) -> Vec<u8> {
    encode(doc.get("_id").unwrap_or(&Bson::Null))
}

impl Collection {
    /// Looks up an index by name.
    pub fn index(&self, name: &str) -> Option<&Index> {
        self.indexes.iter().find(|i| i.spec.name == name)
    }

    /// Inserts a document that carries an `_id`.
    pub fn insert(&mut self, doc: Document) -> CmdResult<Arc<Document>> {
        let id_key = id_key_of(&doc);
        if self.docs.contains_key(&id_key) {
            let id = doc.get("_id").map(|v| v.to_string()).unwrap_or_default();
            return Err(CommandError::new(
                code::DUPLICATE_KEY,
                format!("E11000 duplicate key error collection index: _id_ dup key: {{ _id: {id} }}"),
            ));
        }
        let keys = self.index_keys(&doc, &id_key)?;
        let doc = Arc::new(doc);
        self.apply_keys(keys, &id_key);
        self.docs.insert(id_key, doc.clone());
        Ok(doc)
    }

    /// Replaces the document stored under `id_key` (the `_id` is unchanged by the caller).
    pub fn replace(&mut self, id_key: &[u8], doc: Document) -> CmdResult<Arc<Document>> {
        let new_keys = self.index_keys(&doc, id_key)?;
        if let Some(old) = self.docs.get(id_key).cloned() {
            self.remove_keys(&old, id_key);
        }
        let doc = Arc::new(doc);
        self.apply_keys(new_keys, id_key);
        self.docs.insert(id_key.to_vec(), doc.clone());
        Ok(doc)
    }

    /// Removes a document; returns it.
    pub fn remove(&mut self, id_key: &[u8]) -> Option<Arc<Document>> {
        let old = self.docs.remove(id_key)?;
        self.remove_keys(&old, id_key);
        Some(old)
    }

    /// Computes every index's keys for `doc`, refusing unique violations before anything changes.
    fn index_keys(&self, doc: &Document, id_key: &[u8]) -> CmdResult<Vec<(Vec<Vec<u8>>, bool)>> {
        self.indexes
            .iter()
            .map(|ix| {
                let (keys, multi) = ix.keys_for(doc, id_key)?;
                ix.check_unique(&keys, id_key)?;
                Ok((keys, multi))
            })
            .collect()
    }

    fn apply_keys(&mut self, keys: Vec<(Vec<Vec<u8>>, bool)>, id_key: &[u8]) {
        for (ix, (keys, multi)) in self.indexes.iter_mut().zip(keys) {
            ix.multikey |= multi;
            for k in keys {
                ix.entries.insert(k, id_key.to_vec());
            }
        }
    }

    fn remove_keys(&mut self, doc: &Document, id_key: &[u8]) {
        for ix in &mut self.indexes {
            // The document was indexed with these same keys, so this cannot fail.
            if let Ok((keys, _)) = ix.keys_for(doc, id_key) {
                for k in keys {
                    ix.entries.remove(&k);
                }
            }
        }
    }

    /// Builds and adds an index over the existing documents. Returns false if an identical
    /// index already existed.
    pub fn create_index(&mut self, spec: IndexSpec) -> CmdResult<bool> {
        if spec.name == ID_INDEX || (spec.key == doc! {"_id": 1} && spec.partial.is_none() && !spec.sparse) {
            return Ok(false);
        }
        if let Some(existing) = self.indexes.iter().find(|i| i.spec.name == spec.name) {
            if existing.spec.same_as(&spec) {
                return Ok(false);
            }
            return Err(CommandError::new(
                code::INDEX_KEY_SPECS_CONFLICT,
                format!("An existing index has the same name as the requested index: {}", spec.name),
            ));
        }
        // Since MongoDB 5.0 indexes of one key pattern may coexist when their partial filters
        // differ (the filter is part of the index's identity); otherwise they are one index.
        let filter = |s: &IndexSpec| s.partial.as_ref().map(|(d, _)| d.clone());
        if let Some(existing) = self.indexes.iter().find(|i| i.spec.key == spec.key && filter(&i.spec) == filter(&spec))
        {
            if existing.spec.same_as(&spec) {
                return Ok(false);
            }
            return Err(CommandError::new(
                code::INDEX_OPTIONS_CONFLICT,
                format!("An equivalent index already exists with a different name: {}", existing.spec.name),
            ));
        }
        let mut index = Index::new(spec);
        for (id_key, doc) in &self.docs {
            let (keys, multi) = index.keys_for(doc, id_key)?;
            index.check_unique(&keys, id_key)?;
            index.multikey |= multi;
            for k in keys {
                index.entries.insert(k, id_key.clone());
            }
        }
        self.indexes.push(index);
        Ok(true)
    }

    /// Drops an index by name; `_id_` cannot be dropped.
    pub fn drop_index(&mut self, name: &str) -> CmdResult<()> {
        if name == ID_INDEX {
            return Err(CommandError::new(code::INVALID_OPTIONS, "cannot drop _id index"));
        }
        let before = self.indexes.len();
        self.indexes.retain(|i| i.spec.name != name);
        if self.indexes.len() == before {
            return Err(CommandError::new(code::INDEX_NOT_FOUND, format!("index not found with name [{name}]")));
        }
        Ok(())
    }
}
