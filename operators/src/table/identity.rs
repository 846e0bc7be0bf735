//! [`DatasetIdentity`]: how a dataset's vectors were made. Vectors of another model, revision,
//! dimension, prompt, normalization or truncation cannot be compared with these, and rows of
//! another text or mark field are other documents' rows; so the identity is recorded in the
//! checkpoint and in every Parquet file's key-value metadata, and a run whose settings or servers
//! would make other vectors refuses to write into the same output ([`DatasetIdentity::check`]).
//!
//! It never decides what to do about a difference: the run refuses with one line, and the user
//! picks a new `--out` and `--mark-field`, or `--reset-output`.

use serde::{Deserialize, Serialize};

use crate::tei::{EmbedOptions, TruncationDirection};

/// The identity of a dataset (DESIGN.md, "Checkpoints and exactly-once output").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetIdentity {
    /// `/info`'s `model_id`.
    pub model_id: String,
    /// `/info`'s `model_sha` (the model's revision); `None` when the server does not say.
    pub model_sha: Option<String>,
    /// Vector dimension as written.
    pub dim: usize,
    /// The prompt TEI prepends (`--prompt-name`); `None`: no prompt was asked for.
    pub prompt_name: Option<String>,
    /// Whether vectors are of unit length.
    pub normalize: bool,
    /// Which end of a long text is kept.
    pub truncation_direction: TruncationDirection,
    /// The field the text was read from.
    pub text_field: String,
    /// The field marking documents done.
    pub mark_field: String,
    /// The `id` column's type (`crate::table::output::IdType`), once the run has settled it; a run
    /// checks it apart (`--id-type`), since it is decided after the servers are reached.
    #[serde(default)]
    pub id_type: Option<crate::table::output::IdType>,
}

impl DatasetIdentity {
    /// The identity of vectors from a server of `model_id`/`model_sha` returning `dim`
    /// dimensions with `options`, of `text_field`, marked in `mark_field`.
    pub fn new(
        model_id: &str,
        model_sha: Option<&str>,
        dim: usize,
        options: &EmbedOptions,
        text_field: &str,
        mark_field: &str,
    ) -> DatasetIdentity {
        DatasetIdentity {
            model_id: model_id.to_string(),
            model_sha: model_sha.map(str::to_string),
            dim,
            prompt_name: options.prompt_name.clone(),
            normalize: options.normalized(),
            truncation_direction: options.truncation_direction.unwrap_or(TruncationDirection::Right),
            text_field: text_field.to_string(),
            mark_field: mark_field.to_string(),
            id_type: None,
        }
    }

    /// `(field, recorded, now)` for each field that differs from `recorded` (the id type only
    /// when both know it).
    pub fn differences(&self, recorded: &DatasetIdentity) -> Vec<(&'static str, String, String)> {
        let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "none".into());
        let fields = [
            ("model", recorded.model_id.clone(), self.model_id.clone()),
            ("model revision (model_sha)", opt(&recorded.model_sha), opt(&self.model_sha)),
            ("dimension", recorded.dim.to_string(), self.dim.to_string()),
            ("prompt", opt(&recorded.prompt_name), opt(&self.prompt_name)),
            ("normalize", recorded.normalize.to_string(), self.normalize.to_string()),
            ("truncation direction", recorded.truncation_direction.to_string(), self.truncation_direction.to_string()),
            ("text field", recorded.text_field.clone(), self.text_field.clone()),
            ("mark field", recorded.mark_field.clone(), self.mark_field.clone()),
        ];
        let mut diff: Vec<_> = fields.into_iter().filter(|(_, a, b)| a != b).collect();
        if let (Some(a), Some(b)) = (recorded.id_type, self.id_type) {
            if a != b {
                diff.push(("id type", a.to_string(), b.to_string()));
            }
        }
        diff
    }

    /// `Ok` when this identity may write into a dataset recorded as `recorded`; else one line
    /// naming each old and new value and what to do, about the output `out`.
    pub fn check(&self, recorded: &DatasetIdentity, out: &str) -> Result<(), String> {
        let diff = self.differences(recorded);
        if diff.is_empty() {
            return Ok(());
        }
        let changes: Vec<String> = diff.iter().map(|(f, a, b)| format!("{f} {a} → {b}")).collect();
        Err(format!(
            "refusing to add other vectors to {out}: these settings and servers would make vectors that cannot be \
             compared with the ones it holds ({}). Use a new --out and --mark-field, or pass --reset-output to delete \
             the output and clear the marks (everything is embedded again)",
            changes.join(", ")
        ))
    }

    /// The key-value metadata every Parquet file carries: the whole identity as JSON under
    /// `tweet_embed.identity`, and each field on its own for tools that read one.
    pub fn key_values(&self) -> Vec<(String, String)> {
        let mut kv = vec![
            ("tweet_embed.identity".to_string(), serde_json::to_string(self).unwrap_or_default()),
            ("tweet_embed.model".to_string(), self.model_id.clone()),
            ("tweet_embed.dim".to_string(), self.dim.to_string()),
            ("tweet_embed.normalize".to_string(), self.normalize.to_string()),
            ("tweet_embed.truncation_direction".to_string(), self.truncation_direction.to_string()),
            ("tweet_embed.text_field".to_string(), self.text_field.clone()),
            ("tweet_embed.mark_field".to_string(), self.mark_field.clone()),
        ];
        if let Some(sha) = &self.model_sha {
            kv.push(("tweet_embed.model_sha".to_string(), sha.clone()));
        }
        if let Some(p) = &self.prompt_name {
            kv.push(("tweet_embed.prompt_name".to_string(), p.clone()));
        }
        if let Some(t) = self.id_type {
            kv.push(("tweet_embed.id_type".to_string(), t.to_string()));
        }
        kv
    }

    /// One line for people: `google/embeddinggemma-300m@abc123 · 256 dims · prompt document · …`.
    pub fn summary(&self) -> String {
        format!(
            "{}{} · {} dims · prompt {} · {} · truncation {} · text field {} · mark field {}{}",
            self.model_id,
            self.model_sha.as_ref().map(|s| format!("@{}", &s[..s.len().min(12)])).unwrap_or_default(),
            self.dim,
            self.prompt_name.as_deref().unwrap_or("none"),
            if self.normalize { "normalized" } else { "not normalized" },
            self.truncation_direction,
            self.text_field,
            self.mark_field,
            self.id_type.map(|t| format!(" · id {t}")).unwrap_or_default()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gemma(dim: usize, prompt: Option<&str>) -> DatasetIdentity {
        let options = EmbedOptions { prompt_name: prompt.map(str::to_string), ..EmbedOptions::default() };
        DatasetIdentity::new("google/embeddinggemma-300m", Some("abc"), dim, &options, "text", "gemma_embedded_768")
    }

    #[test]
    fn a_difference_is_refused_naming_old_and_new() {
        let a = gemma(768, Some("document"));
        assert!(a.check(&a.clone(), "out").is_ok());
        let err = gemma(256, None).check(&a, "/data/out").unwrap_err();
        assert!(err.contains("dimension 768 → 256"), "{err}");
        assert!(err.contains("prompt document → none"), "{err}");
        assert!(err.contains("--reset-output") && err.contains("/data/out"), "{err}");
        assert!(!err.contains('\n'));
    }

    #[test]
    fn metadata_round_trips() {
        let a = gemma(512, Some("query"));
        let kv = a.key_values();
        let json = &kv.iter().find(|(k, _)| k == "tweet_embed.identity").unwrap().1;
        assert_eq!(serde_json::from_str::<DatasetIdentity>(json).unwrap(), a);
        assert!(kv.contains(&("tweet_embed.prompt_name".into(), "query".into())));
        assert!(a.summary().contains("512 dims · prompt query · normalized"));
    }
}
