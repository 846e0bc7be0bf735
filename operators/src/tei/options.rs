//! [`EmbedOptions`]: how the vectors are made — TEI's `prompt_name`, `dimensions` (Matryoshka
//! truncation), `normalize` and `truncation_direction` (`router/src/http/types.rs`, TEI ≥ 1.5;
//! `notes/tei.md`). Each is sent only when set, so a server that knows none of them (or refuses
//! unknown fields) sees the request it always saw.
//!
//! The native route (`POST /embed`) takes all four; the OpenAI-compatible route
//! (`POST /v1/embeddings`) takes only `dimensions`. [`EmbedOptions::native_only`] names the
//! options that need the native route.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Which end of a long input TEI keeps when it truncates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TruncationDirection {
    /// Cut the beginning: keeps a tweet's end.
    Left,
    /// Cut the end (TEI's default).
    Right,
}

impl FromStr for TruncationDirection {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "left" => Ok(Self::Left),
            "right" => Ok(Self::Right),
            _ => Err(format!("`{s}` is not a truncation direction: left or right")),
        }
    }
}

impl fmt::Display for TruncationDirection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Left => "left",
            Self::Right => "right",
        })
    }
}

/// The embedding options of every request; `None` leaves the server's default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EmbedOptions {
    /// A prompt of the model's (`config_sentence_transformers.json`) that TEI prepends to every
    /// input, e.g. EmbeddingGemma's `document` or `query`.
    pub prompt_name: Option<String>,
    /// Matryoshka truncation of the vectors to this many dimensions (768 → 512, 256, 128).
    pub dimensions: Option<usize>,
    /// Whether TEI normalizes the vectors to unit length (its default: true).
    pub normalize: Option<bool>,
    /// Which end of a long input TEI keeps (its default: right, the beginning is kept).
    pub truncation_direction: Option<TruncationDirection>,
}

impl EmbedOptions {
    /// Whether the vectors come back of unit length (TEI's default is to normalize).
    pub fn normalized(&self) -> bool {
        self.normalize != Some(false)
    }

    /// The flags set here that `/v1/embeddings` cannot carry.
    pub fn native_only(&self) -> Vec<&'static str> {
        let mut flags = Vec::new();
        if self.prompt_name.is_some() {
            flags.push("--prompt-name");
        }
        if self.normalize.is_some() {
            flags.push("--normalize");
        }
        if self.truncation_direction.is_some() {
            flags.push("--truncation-direction");
        }
        flags
    }

    /// The options as flags, for messages: `--prompt-name document --dimensions 256`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(p) = &self.prompt_name {
            parts.push(format!("--prompt-name {p}"));
        }
        if let Some(d) = self.dimensions {
            parts.push(format!("--dimensions {d}"));
        }
        if let Some(n) = self.normalize {
            parts.push(format!("--normalize {n}"));
        }
        if let Some(t) = self.truncation_direction {
            parts.push(format!("--truncation-direction {t}"));
        }
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directions_parse_and_print_as_tei_spells_them() {
        assert_eq!("Left".parse::<TruncationDirection>(), Ok(TruncationDirection::Left));
        assert_eq!(TruncationDirection::Right.to_string(), "right");
        assert_eq!(serde_json::to_string(&TruncationDirection::Left).unwrap(), "\"left\"");
        assert!("up".parse::<TruncationDirection>().is_err());
    }

    #[test]
    fn only_dimensions_travel_on_the_openai_route() {
        let o = EmbedOptions { dimensions: Some(256), ..EmbedOptions::default() };
        assert!(o.native_only().is_empty());
        let o = EmbedOptions { prompt_name: Some("document".into()), normalize: Some(false), ..o };
        assert_eq!(o.native_only(), ["--prompt-name", "--normalize"]);
        assert!(!o.normalized());
        assert_eq!(o.describe(), "--prompt-name document --dimensions 256 --normalize false");
    }
}
