//! TEI's wire types as the simulator speaks them: request bodies, error bodies and the small
//! response helpers every route uses.
//!
//! This module owns shapes and status codes (TEI 1.9, `router/src/http/types.rs`); it never
//! decides *whether* a request fails. Rejections before a handler runs follow axum's `Json`
//! extractor, which TEI uses: a body that is not JSON is 400, JSON of the wrong shape is 422, a
//! missing `Content-Type: application/json` is 415, all plain text; over the payload limit is 413
//! plain text.

use std::fmt;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::tokens::Direction;

pub(crate) type Resp = Response<Full<Bytes>>;

/// One input: a text or token ids.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Input {
    Text(String),
    Ids(Vec<u32>),
}

impl Input {
    /// TEI's `x-compute-characters` contribution: chars of a text, count of ids.
    pub fn chars(&self) -> usize {
        match self {
            Input::Text(t) => t.chars().count(),
            Input::Ids(ids) => ids.len(),
        }
    }
}

/// `inputs`: `string | [string] | [u32] | [[u32]]` (a batch may mix texts and id lists).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Inputs {
    pub items: Vec<Input>,
    /// Whether the client sent a list of inputs (TEI's `method="batch"`).
    pub batch: bool,
}

impl<'de> Deserialize<'de> for Inputs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(InputsVisitor)
    }
}

struct InputsVisitor;

impl<'de> Visitor<'de> for InputsVisitor {
    type Value = Inputs;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string, a list of strings, a list of token ids or a list of those")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Inputs, E> {
        Ok(Inputs { items: vec![Input::Text(v.to_string())], batch: false })
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Inputs, E> {
        Ok(Inputs { items: vec![Input::Text(v)], batch: false })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Inputs, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        let mut ids = Vec::new();
        while let Some(elem) = seq.next_element::<Elem>()? {
            match elem {
                Elem::Id(id) if items.is_empty() => ids.push(id),
                Elem::Id(_) => return Err(de::Error::custom("a batch of inputs mixes ids and inputs")),
                _ if !ids.is_empty() => {
                    return Err(de::Error::custom("a list of token ids holds a non-id"));
                }
                Elem::Text(t) => items.push(Input::Text(t)),
                Elem::Ids(v) => items.push(Input::Ids(v)),
            }
        }
        if ids.is_empty() {
            Ok(Inputs { items, batch: true })
        } else {
            Ok(Inputs { items: vec![Input::Ids(ids)], batch: false })
        }
    }
}

/// One element of an `inputs` list.
enum Elem {
    Text(String),
    Id(u32),
    Ids(Vec<u32>),
}

impl<'de> Deserialize<'de> for Elem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Elem;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, a token id or a list of token ids")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Elem, E> {
                Ok(Elem::Text(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Elem, E> {
                Ok(Elem::Text(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Elem, E> {
                u32::try_from(v).map(Elem::Id).map_err(|_| E::custom("token id over u32"))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Elem, E> {
                u32::try_from(v).map(Elem::Id).map_err(|_| E::custom("token id out of u32 range"))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Elem, A::Error> {
                Vec::<u32>::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(Elem::Ids)
            }
        }
        d.deserialize_any(V)
    }
}

fn yes() -> bool {
    true
}

/// `POST /embed`.
#[derive(Debug, Deserialize)]
pub(crate) struct EmbedRequest {
    pub inputs: Inputs,
    #[serde(default)]
    pub truncate: Option<bool>,
    #[serde(default)]
    pub truncation_direction: Option<Direction>,
    /// One of the model's prompts, prepended to every input.
    #[serde(default)]
    pub prompt_name: Option<String>,
    /// TEI's default is true.
    #[serde(default)]
    pub normalize: Option<bool>,
    #[serde(default)]
    pub dimensions: Option<usize>,
}

/// `encoding_format` of `/v1/embeddings`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum EncodingFormat {
    #[default]
    Float,
    Base64,
}

/// `POST /v1/embeddings` (OpenAI-compatible).
#[derive(Debug, Deserialize)]
pub(crate) struct OpenAiRequest {
    pub input: Inputs,
    /// Accepted and ignored: one model per server.
    #[serde(default)]
    #[allow(dead_code)]
    pub model: Option<String>,
    #[serde(default)]
    pub encoding_format: EncodingFormat,
    #[serde(default)]
    pub dimensions: Option<usize>,
}

/// `POST /tokenize`.
#[derive(Debug, Deserialize)]
pub(crate) struct TokenizeRequest {
    pub inputs: TextInputs,
    #[serde(default = "yes")]
    pub add_special_tokens: bool,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum TextInputs {
    Single(String),
    Batch(Vec<String>),
}

/// TEI's `error_type` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) enum ErrorType {
    Unhealthy,
    Backend,
    Overloaded,
    Validation,
    Tokenizer,
    Empty,
}

/// A failed request, rendered per route family.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ApiError {
    /// A TEI error with a JSON body.
    Typed { status: StatusCode, kind: ErrorType, message: String },
    /// A plain-text rejection (axum's extractors, the body limit).
    Plain { status: StatusCode, message: String },
    /// 401 with an empty body.
    Unauthorized,
}

impl ApiError {
    pub fn typed(status: StatusCode, kind: ErrorType, message: impl Into<String>) -> Self {
        Self::Typed { status, kind, message: message.into() }
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::typed(StatusCode::UNPROCESSABLE_ENTITY, ErrorType::Validation, message)
    }

    pub fn empty() -> Self {
        let message = "Input validation error: `inputs` cannot be empty";
        Self::typed(StatusCode::BAD_REQUEST, ErrorType::Empty, message)
    }

    pub fn overloaded() -> Self {
        Self::typed(StatusCode::TOO_MANY_REQUESTS, ErrorType::Overloaded, "Model is overloaded")
    }

    pub fn unhealthy() -> Self {
        Self::typed(StatusCode::SERVICE_UNAVAILABLE, ErrorType::Unhealthy, "unhealthy")
    }

    pub fn backend() -> Self {
        let message = "Inference failed: simulated backend error";
        Self::typed(StatusCode::FAILED_DEPENDENCY, ErrorType::Backend, message)
    }

    /// TEI's answer when the backend fails on a batch (cuBLAS refusing an input's shape, TEI #61).
    pub fn inference_failed() -> Self {
        let message = "Backend error: Inference error: CublasError(CUBLAS_STATUS_NOT_SUPPORTED)";
        Self::typed(StatusCode::FAILED_DEPENDENCY, ErrorType::Backend, message)
    }

    pub fn plain(status: StatusCode, message: impl Into<String>) -> Self {
        Self::Plain { status, message: message.into() }
    }

    /// Parses a JSON body the way axum's `Json` extractor (TEI's) rejects it: through
    /// `serde_path_to_error`, so a message names the field it is about (`inputs: EOF while
    /// parsing a list at line 1 column 14`, `encoding_format: unknown variant ...`); data errors
    /// are 422, syntax errors (trailing characters included) 400.
    pub fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
        let syntax = |e: &dyn fmt::Display| {
            ApiError::plain(StatusCode::BAD_REQUEST, format!("Failed to parse the request body as JSON: {e}"))
        };
        let de = &mut serde_json::Deserializer::from_slice(body);
        let value = serde_path_to_error::deserialize(&mut *de).map_err(|e| match e.inner().classify() {
            serde_json::error::Category::Data => ApiError::plain(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("Failed to deserialize the JSON body into the target type: {e}"),
            ),
            _ => syntax(&e),
        })?;
        de.end().map_err(|e| syntax(&e))?;
        Ok(value)
    }

    /// Native routes: `{"error": ..., "error_type": ...}`.
    pub fn native(&self) -> Resp {
        match self {
            Self::Typed { status, kind, message } => {
                #[derive(Serialize)]
                struct Body<'a> {
                    error: &'a str,
                    error_type: ErrorType,
                }
                json(*status, &Body { error: message, error_type: *kind })
            }
            other => other.bare(),
        }
    }

    /// OpenAI routes: `{"message": ..., "code": status, "type": ...}`.
    pub fn openai(&self) -> Resp {
        match self {
            Self::Typed { status, kind, message } => {
                #[derive(Serialize)]
                struct Body<'a> {
                    message: &'a str,
                    code: u16,
                    #[serde(rename = "type")]
                    kind: ErrorType,
                }
                json(*status, &Body { message, code: status.as_u16(), kind: *kind })
            }
            other => other.bare(),
        }
    }

    fn bare(&self) -> Resp {
        match self {
            Self::Plain { status, message } => text(*status, message.clone()),
            _ => empty(StatusCode::UNAUTHORIZED),
        }
    }
}

/// A JSON response of an already-serialized body.
pub(crate) fn json_bytes(status: StatusCode, body: Vec<u8>) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// A JSON response. Serializing these plain structs cannot fail; if it did, the body is `null`.
pub(crate) fn json<T: Serialize>(status: StatusCode, value: &T) -> Resp {
    json_bytes(status, serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec()))
}

pub(crate) fn text(status: StatusCode, body: String) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    let value = HeaderValue::from_static("text/plain; charset=utf-8");
    resp.headers_mut().insert(CONTENT_TYPE, value);
    resp
}

pub(crate) fn empty(status: StatusCode) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = status;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(json: &str) -> Inputs {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn inputs_shapes() {
        assert_eq!(inputs(r#""a""#).items, vec![Input::Text("a".into())]);
        assert!(!inputs(r#""a""#).batch);
        assert_eq!(inputs(r#"["a","b"]"#).items.len(), 2);
        assert_eq!(inputs("[1,2,3]").items, vec![Input::Ids(vec![1, 2, 3])]);
        assert!(!inputs("[1,2,3]").batch);
        let mixed = inputs(r#"[[1,2],"x"]"#);
        assert_eq!(mixed.items, vec![Input::Ids(vec![1, 2]), Input::Text("x".into())]);
        assert!(inputs("[]").items.is_empty());
        assert!(serde_json::from_str::<Inputs>(r#"[1,"a"]"#).is_err());
        assert!(serde_json::from_str::<Inputs>(r#"["a",1]"#).is_err());
        assert!(serde_json::from_str::<Inputs>("5").is_err());
    }
}
