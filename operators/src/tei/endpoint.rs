//! One TEI server as the client sees it: `GET /info`, and one embedding call by the native
//! (`POST /embed`) or the OpenAI-compatible (`POST /v1/embeddings`, base64) API.
//!
//! This module owns the wire format (request bodies, decoding vectors, `x-compute-tokens`) and
//! turns every failure into a classified [`CallError`]. It never retries, never splits a request
//! and never logs: one call, one answer. It never puts credentials in a message.

use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::error::{CallError, FailureKind, TeiError};
use super::limits::{base_url, redact, ServerLimits, DEFAULT_PAYLOAD_LIMIT};

/// Which of TEI's embedding routes to call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Api {
    /// Chosen by the pool at connect: [`Api::OpenAi`] (base64) when every server truncates on
    /// its own and answers that route, else [`Api::Tei`]. An [`Endpoint`] on its own calls the
    /// native route.
    #[default]
    Auto,
    /// `POST /embed {inputs, truncate: true}`, vectors as JSON float arrays.
    Tei,
    /// `POST /v1/embeddings {input, encoding_format: "base64"}`, vectors as little-endian f32.
    /// It cannot ask for truncation: the server's `--auto-truncate` decides.
    OpenAi,
}

/// A successful embedding call.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedReply {
    /// One vector per input, in input order.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens the server computed for the request (`x-compute-tokens`, else the OpenAI
    /// `usage`), when it said.
    pub compute_tokens: Option<u64>,
}

/// One TEI server. Cheap to clone (the HTTP client is shared).
#[derive(Debug, Clone)]
pub struct Endpoint {
    base: String,
    label: String,
    client: reqwest::Client,
    api: Api,
    api_key: Option<String>,
    payload_limit: usize,
}

/// An HTTP client for endpoints: `timeout` bounds each whole call (connect, send, answer).
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, TeiError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .tcp_nodelay(true)
        .build()
        .map_err(|e| TeiError::Config(format!("cannot build the HTTP client: {}", describe(&e))))
}

impl Endpoint {
    /// An endpoint at `url` (with or without a trailing `/embed`), using the native API, no API
    /// key and TEI's default payload limit until told otherwise.
    pub fn new(url: &str, client: reqwest::Client) -> Result<Self, TeiError> {
        let base = base_url(url)?;
        Ok(Self {
            label: redact(&base),
            base,
            client,
            api: Api::Tei,
            api_key: None,
            payload_limit: DEFAULT_PAYLOAD_LIMIT,
        })
    }

    /// Uses `api` for embedding calls.
    pub fn with_api(mut self, api: Api) -> Self {
        self.api = api;
        self
    }

    /// Sends `Authorization: Bearer <key>` on every call.
    pub fn with_api_key(mut self, key: Option<String>) -> Self {
        self.api_key = key;
        self
    }

    /// The server's `--payload-limit`: larger bodies are refused here, without a call.
    pub fn with_payload_limit(mut self, bytes: usize) -> Self {
        self.payload_limit = bytes;
        self
    }

    /// The base URL without credentials: what messages and logs show.
    pub fn url(&self) -> &str {
        &self.label
    }

    /// The API it calls.
    pub fn api(&self) -> Api {
        self.api
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self.client.request(method, format!("{}{path}", self.base));
        match &self.api_key {
            Some(key) => builder.bearer_auth(key),
            None => builder,
        }
    }

    /// Reads `GET /info`. Errors are for the operator: unreachable, refused key, not TEI.
    pub async fn info(&self) -> Result<ServerLimits, TeiError> {
        let url = self.label.clone();
        let resp = self
            .request(reqwest::Method::GET, "/info")
            .send()
            .await
            .map_err(|e| TeiError::Unreachable { url: url.clone(), message: describe(&e) })?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| TeiError::Unreachable { url: url.clone(), message: describe(&e) })?;
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            let message = format!("refused the API key ({status}): set the one the server was started with");
            return Err(TeiError::Protocol { url, message });
        }
        if !status.is_success() {
            let err = CallError::from_status(status.as_u16(), &String::from_utf8_lossy(&body));
            return Err(TeiError::Protocol { url, message: format!("answered /info with {err}") });
        }
        ServerLimits::from_info(&body, self.payload_limit).map_err(|message| TeiError::Protocol { url, message })
    }

    /// Embeds `texts` in one call (the server truncates long ones). Any failure is classified.
    pub async fn embed(&self, texts: &[String]) -> Result<EmbedReply, CallError> {
        let body = self.body(texts)?;
        let path = match self.api {
            Api::Tei | Api::Auto => "/embed",
            Api::OpenAi => "/v1/embeddings",
        };
        let resp = self
            .request(reqwest::Method::POST, path)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| transport(&e))?;
        let status = resp.status();
        if !status.is_success() {
            // An unreadable error body still tells the status.
            let text = resp.text().await.unwrap_or_default();
            return Err(CallError::from_status(status.as_u16(), &text));
        }
        let header_tokens = resp
            .headers()
            .get("x-compute-tokens")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let bytes = resp.bytes().await.map_err(|e| {
            let err = transport(&e);
            CallError { cause: if err.cause == "timeout" { err.cause } else { "body".into() }, ..err }
        })?;
        let (vectors, usage_tokens) = match self.api {
            Api::Tei | Api::Auto => (serde_json::from_slice::<Vec<Vec<f32>>>(&bytes).map_err(decode)?, None),
            Api::OpenAi => decode_openai(&bytes)?,
        };
        if vectors.len() != texts.len() {
            return Err(malformed(format!("{} vectors for {} inputs", vectors.len(), texts.len())));
        }
        let dim = vectors.first().map_or(0, Vec::len);
        if dim == 0 || vectors.iter().any(|v| v.len() != dim) {
            return Err(malformed("vectors of different or zero dimensions".to_string()));
        }
        Ok(EmbedReply { vectors, compute_tokens: header_tokens.or(usage_tokens) })
    }

    /// The request body, refused here when over the payload limit (the server would answer 413).
    fn body(&self, texts: &[String]) -> Result<Vec<u8>, CallError> {
        #[derive(Serialize)]
        struct Native<'a> {
            inputs: &'a [String],
            truncate: bool,
        }
        #[derive(Serialize)]
        struct OpenAi<'a> {
            input: &'a [String],
            encoding_format: &'static str,
        }
        let body = match self.api {
            Api::Tei | Api::Auto => serde_json::to_vec(&Native { inputs: texts, truncate: true }),
            Api::OpenAi => serde_json::to_vec(&OpenAi { input: texts, encoding_format: "base64" }),
        }
        .map_err(|e| CallError::transport(FailureKind::InputRefused, "encode", e.to_string()))?;
        if body.len() > self.payload_limit {
            let message =
                format!("request body of {} bytes is over the payload limit of {}", body.len(), self.payload_limit);
            return Err(CallError::transport(FailureKind::TooLarge, "payload", message));
        }
        Ok(body)
    }
}

#[derive(Deserialize)]
struct OpenAiReply {
    data: Vec<OpenAiItem>,
    #[serde(default)]
    usage: Option<OpenAiUsage>,
}

#[derive(Deserialize)]
struct OpenAiItem {
    embedding: OpenAiVector,
    index: usize,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OpenAiVector {
    Base64(String),
    Floats(Vec<f32>),
}

#[derive(Deserialize)]
struct OpenAiUsage {
    total_tokens: u64,
}

fn decode_openai(bytes: &[u8]) -> Result<(Vec<Vec<f32>>, Option<u64>), CallError> {
    let mut reply: OpenAiReply = serde_json::from_slice(bytes).map_err(decode)?;
    // Items carry their index; order by it rather than trusting the list order.
    reply.data.sort_by_key(|item| item.index);
    if reply.data.iter().enumerate().any(|(i, item)| item.index != i) {
        return Err(malformed("indexes of /v1/embeddings data are not 0..n".to_string()));
    }
    let vectors = reply
        .data
        .into_iter()
        .map(|item| match item.embedding {
            OpenAiVector::Floats(v) => Ok(v),
            OpenAiVector::Base64(text) => {
                let raw = base64::engine::general_purpose::STANDARD.decode(text).map_err(decode)?;
                if raw.len() % 4 != 0 {
                    return Err(malformed(format!("base64 vector of {} bytes is not f32s", raw.len())));
                }
                Ok(raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((vectors, reply.usage.map(|u| u.total_tokens)))
}

fn decode(e: impl std::fmt::Display) -> CallError {
    CallError::transport(FailureKind::Transient, "decode", format!("cannot decode the answer: {e}"))
}

fn malformed(message: String) -> CallError {
    CallError::transport(FailureKind::Transient, "decode", message)
}

/// Classifies a transport failure: every one is transient; connection refused is told apart so
/// the pool can stop sending to a dead endpoint at once.
fn transport(err: &reqwest::Error) -> CallError {
    let cause = if err.is_timeout() {
        "timeout"
    } else if err.is_connect() {
        "connect"
    } else {
        "connection"
    };
    CallError::transport(FailureKind::Transient, cause, describe(err))
}

/// A reqwest error and its causes on one line, without the URL (it may hold credentials).
pub(crate) fn describe(err: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut source: Option<&dyn std::error::Error> = Some(err);
    while let Some(e) = source {
        let text = e.to_string();
        // reqwest's and hyper-util's wrappers repeat the URL or say nothing; causes tell.
        let wrapper = text.contains("for url (") || text.starts_with("client error (");
        if !wrapper && !parts.contains(&text) {
            parts.push(text);
        }
        source = e.source();
    }
    if parts.is_empty() {
        parts.push(if err.is_timeout() { "timed out".to_string() } else { "request failed".to_string() });
    }
    parts.join(": ")
}
