//! Projections for `find` and `$project`: inclusion or exclusion of (dotted) fields, `_id` kept
//! unless excluded, and `"$path"` references in `$project`.

use super::error::{CmdResult, CommandError};
use super::matcher::truthy;
use super::path;
use mongodb::bson::{Bson, Document};

/// A parsed projection.
#[derive(Debug, Clone)]
pub struct Projection {
    include: bool,
    fields: Vec<(String, Option<String>)>,
    keep_id: bool,
}

impl Projection {
    /// Parses a projection; `allow_refs` accepts `{out: "$path"}` (aggregation `$project`).
    pub fn parse(spec: &Document, allow_refs: bool) -> CmdResult<Option<Projection>> {
        if spec.is_empty() {
            return Ok(None);
        }
        let mut include = None;
        let mut keep_id = true;
        let mut fields = Vec::new();
        for (k, v) in spec {
            let (inc, source) = match v {
                Bson::String(s) if allow_refs && s.starts_with('$') => (true, Some(s[1..].to_string())),
                Bson::Boolean(_) | Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) => (truthy(v), None),
                other => {
                    return Err(CommandError::bad_value(format!(
                        "projection of {k}: {other} is not supported by tweet-embed dev-mongo (use 0, 1 or \"$path\")"
                    )))
                }
            };
            if k == "_id" && source.is_none() {
                keep_id = inc;
                continue;
            }
            if *include.get_or_insert(inc) != inc {
                return Err(CommandError::new(
                    31254,
                    format!("Cannot do exclusion on field {k} in inclusion projection"),
                ));
            }
            fields.push((k.clone(), source));
        }
        // `{_id: 1}` alone is an inclusion (only `_id`), `{_id: 0}` alone an exclusion, as on mongod.
        Ok(Some(Projection { include: include.unwrap_or(keep_id), fields, keep_id }))
    }

    /// Applies the projection.
    pub fn apply(&self, doc: &Document) -> Document {
        if self.include {
            let mut out = Document::new();
            if self.keep_id {
                if let Some(id) = doc.get("_id") {
                    out.insert("_id", id.clone());
                }
            }
            for (k, source) in &self.fields {
                if let Some(v) = path::get(doc, source.as_deref().unwrap_or(k)) {
                    let _ = path::set(&mut out, k, v.clone());
                }
            }
            out
        } else {
            let mut out = doc.clone();
            if !self.keep_id {
                out.remove("_id");
            }
            for (k, _) in &self.fields {
                path::unset(&mut out, k);
            }
            out
        }
    }
}
