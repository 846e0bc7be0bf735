//! `--data FILE`: the dev server's optional persistence. A snapshot of every collection (documents
//! and index specs) and of the retained oplog, so resume tokens stay valid across restarts. It is
//! written to a temporary file, fsynced and renamed, so a crash leaves the old or the new
//! snapshot, never a torn one.

use super::collection::Collection;
use super::index::IndexSpec;
use super::oplog::{OpKind, Oplog, OplogEntry};
use super::store::Store;
use anyhow::{bail, Context, Result};
use mongodb::bson::{doc, Bson, Document, Timestamp};
use std::collections::BTreeMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::Arc;

const FORMAT: &str = "tweet-embed-devmongo";
const VERSION: i32 = 1;

/// One collection in a snapshot: database, name, index specs, documents.
type CollectionImage = (String, String, Vec<Document>, Vec<Arc<Document>>);

/// A consistent copy of the store taken under its lock (documents are shared, not copied).
pub struct Snapshot {
    header: Document,
    collections: Vec<CollectionImage>,
    oplog: Vec<OplogEntry>,
}

/// Takes a snapshot; cheap enough to do under the lock (reference counts, no serialization).
pub fn snapshot(store: &Store) -> Snapshot {
    let (capacity, truncated, last, entries) = store.oplog.parts();
    let header = doc! {"format": FORMAT, "version": VERSION, "history": capacity as i64, "truncatedUpto": truncated, "last": last};
    let collections = store
        .dbs
        .iter()
        .flat_map(|(db, colls)| {
            colls.iter().map(move |(name, c)| {
                let specs = c.indexes.iter().map(|i| i.spec.to_document()).collect();
                (db.clone(), name.clone(), specs, c.docs.values().cloned().collect())
            })
        })
        .collect();
    Snapshot { header, collections, oplog: entries.iter().cloned().collect() }
}

/// Writes a snapshot atomically to `path`.
pub fn save(snap: &Snapshot, path: &Path) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let file = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let mut bytes = Vec::new();
    let mut write = |d: &Document| {
        bytes.clear();
        // Strings stored as not UTF-8 are written as their original bytes.
        crate::invalid_utf8::encode(d, &mut bytes);
        w.write_all(&bytes).with_context(|| format!("writing {}", tmp.display()))
    };
    write(&snap.header)?;
    for (db, name, specs, docs) in &snap.collections {
        write(&doc! {"collection": {"db": db, "name": name, "indexes": specs.clone(), "count": docs.len() as i64}})?;
        for d in docs {
            write(d)?;
        }
    }
    write(&doc! {"oplog": snap.oplog.len() as i64})?;
    for e in &snap.oplog {
        let mut d =
            doc! {"ts": e.ts, "wall": e.wall, "db": &e.db, "coll": &e.coll, "op": e.kind.name(), "id": e.id.clone()};
        if let Some(full) = &e.doc {
            d.insert("doc", (**full).clone());
        }
        if let Some(u) = &e.update {
            d.insert("update", u.clone());
        }
        write(&d)?;
    }
    let file = w.into_inner().map_err(|e| e.into_error()).with_context(|| format!("flushing {}", tmp.display()))?;
    file.sync_all().with_context(|| format!("syncing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

fn read_doc(r: &mut impl Read) -> Result<Option<Document>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let n = i32::from_le_bytes(len);
    if !(5..=64 * 1024 * 1024).contains(&n) {
        bail!("corrupt document length {n}");
    }
    let mut buf = len.to_vec();
    buf.resize(n as usize, 0);
    r.read_exact(&mut buf[4..])?;
    // Strings that are not UTF-8 load as they were stored (see `invalid_utf8`).
    crate::invalid_utf8::decode(&buf).map(Some).map_err(|e| anyhow::anyhow!(e))
}

/// Loads a snapshot; `history` overrides the saved oplog size when given.
pub fn load(path: &Path, history: Option<usize>) -> Result<Store> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut r = BufReader::with_capacity(1 << 20, file);
    let ctx = || format!("{} is not a tweet-embed dev-mongo data file", path.display());
    let header = read_doc(&mut r)?.with_context(ctx)?;
    if header.get_str("format").ok() != Some(FORMAT) || header.get_i32("version").ok() != Some(VERSION) {
        bail!("{}", ctx());
    }
    let capacity = history.unwrap_or(header.get_i64("history").unwrap_or(1_000_000) as usize);
    let ts = |k: &str| header.get_timestamp(k).unwrap_or(Timestamp { time: 0, increment: 0 });
    let (truncated, last) = (ts("truncatedUpto"), ts("last"));
    let mut dbs: BTreeMap<String, BTreeMap<String, Collection>> = BTreeMap::new();
    let mut entries = Vec::new();
    while let Some(d) = read_doc(&mut r).with_context(ctx)? {
        if let Ok(c) = d.get_document("collection") {
            let (db, name) = (c.get_str("db")?.to_string(), c.get_str("name")?.to_string());
            let coll = dbs.entry(db.clone()).or_default().entry(name.clone()).or_default();
            for i in 0..c.get_i64("count")? {
                let doc = read_doc(&mut r)
                    .with_context(|| format!("{}: {db}.{name}, document #{i}", path.display()))?
                    .with_context(ctx)?;
                coll.insert(doc).map_err(|e| anyhow::anyhow!("{db}.{name}: {e}"))?;
            }
            for spec in c.get_array("indexes")? {
                if let Bson::Document(spec) = spec {
                    coll.create_index(IndexSpec::parse(spec).map_err(|e| anyhow::anyhow!("{e}"))?)
                        .map_err(|e| anyhow::anyhow!("{db}.{name}: {e}"))?;
                }
            }
        } else if let Ok(n) = d.get_i64("oplog") {
            for _ in 0..n {
                let e = read_doc(&mut r)?.with_context(ctx)?;
                let kind = OpKind::from_name(e.get_str("op")?).with_context(ctx)?;
                entries.push(OplogEntry {
                    ts: e.get_timestamp("ts")?,
                    wall: *e.get_datetime("wall")?,
                    db: e.get_str("db")?.to_string(),
                    coll: e.get_str("coll")?.to_string(),
                    kind,
                    id: e.get("id").cloned().unwrap_or(Bson::Null),
                    doc: e.get_document("doc").ok().map(|d| Arc::new(d.clone())),
                    update: e.get_document("update").ok().cloned(),
                });
            }
        }
    }
    Ok(Store::with_parts(dbs, Oplog::restore(capacity, truncated, last, entries)))
}
