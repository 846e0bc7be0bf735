//! One TEI server as the client sees it: `GET /info`, and one embedding call by the native
//! (`POST /embed`) or the OpenAI-compatible (`POST /v1/embeddings`, base64) API.
//!
//! This module owns the wire format (request bodies, decoding vectors, `x-compute-tokens`) and
//! turns every failure into a classified [`CallError`]. It never retries, never splits a request
//! and never logs: one call, one answer. It never puts credentials in a message.
//!
//! Vectors are decoded leniently and checked elsewhere (`vectors`): TEI writes a NaN or infinite
//! component as JSON `null` (serde_json's way), and some servers write bare `NaN`/`Infinity`;
//! both decode to NaN here, and a `null` vector to an empty one, so that one bad vector costs its
//! own input, never the whole answer.

use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::error::{CallError, FailureKind, TeiError};
use super::limits::{base_url, redact, ServerLimits, DEFAULT_PAYLOAD_LIMIT};
use super::options::{EmbedOptions, TruncationDirection};

/// Which of TEI's embedding routes to call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Api {
    /// Chosen by the pool at connect: [`Api::OpenAi`] (base64) when every server truncates on
    /// its own and answers that route, else [`Api::Tei`]. An [`Endpoint`] on its own calls the
    /// native route.
    #[default]
    Auto,
    /// `POST /embed {inputs, truncate: true, normalize: true}`, vectors as JSON float arrays.
    Tei,
    /// `POST /v1/embeddings {input, encoding_format: "base64"}`, vectors as little-endian f32.
    /// It cannot ask for truncation: the server's `--auto-truncate` decides.
    OpenAi,
}

/// A successful embedding call.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedReply {
    /// One vector per input, in input order, as the server sent it: not checked (a `null`
    /// component is NaN, a `null` vector is empty). The pool checks each before using it.
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
    options: EmbedOptions,
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
            options: EmbedOptions::default(),
        })
    }

    /// Sends `options` with every embedding call (those the route carries).
    pub fn with_options(mut self, options: EmbedOptions) -> Self {
        self.options = options;
        self
    }

    /// The embedding options it sends.
    pub fn options(&self) -> &EmbedOptions {
        &self.options
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

    /// Reads `GET /info`. Errors are for the operator: unreachable, refused key, an `https://`
    /// URL to a server speaking plain HTTP, not TEI (what `/info` answered, never the page).
    pub async fn info(&self) -> Result<ServerLimits, TeiError> {
        let url = self.label.clone();
        let resp = match self.request(reqwest::Method::GET, "/info").send().await {
            Ok(resp) => resp,
            Err(e) => return Err(self.unreachable(&e).await),
        };
        let status = resp.status();
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_string())
            .filter(|v| !v.is_empty());
        let body = resp.bytes().await.map_err(|e| TeiError::Unreachable { url: url.clone(), message: describe(&e) })?;
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            let message = format!("refused the API key ({status}): set the one the server was started with");
            return Err(TeiError::Protocol { url, message });
        }
        // TEI answers /info with a JSON object naming its model; anything else is another server
        // (a web page, a proxy's error, another API) at that host and port.
        let json: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
        let names_a_model = json.as_ref().and_then(|v| v.get("model_id")).is_some_and(serde_json::Value::is_string);
        if !status.is_success() || !names_a_model {
            let answered = answered(status, content_type.as_deref(), &body, json.is_some());
            return Err(TeiError::Config(format!(
                "{url} is not a TEI server: its /info answered {answered}; check the host and port in --tei-urls (TEI \
                 answers /info with JSON naming its model_id)"
            )));
        }
        ServerLimits::from_info(&body, self.payload_limit).map_err(|message| TeiError::Protocol { url, message })
    }

    /// Why `/info` could not be read: [`TeiError::Unreachable`] (down, loading, wrong port: the
    /// pool waits for it), or, for an `https://` URL whose TLS handshake read something that is
    /// not TLS from a server that answers plain HTTP at the same address, a configuration error
    /// saying to use `http://` (TEI serves plain HTTP; waiting would not fix it).
    async fn unreachable(&self, err: &reqwest::Error) -> TeiError {
        let message = describe(err);
        if let Some(rest) = self.base.strip_prefix("https://") {
            if !err.is_timeout() && not_tls(&message) {
                let plain = format!("http://{rest}");
                if self.client.get(format!("{plain}/info")).send().await.is_ok() {
                    return TeiError::Config(format!(
                        "{} speaks plain HTTP, not HTTPS (the TLS handshake read: {message}): use http://, as in \
                         --tei-urls {}",
                        self.label,
                        redact(&plain)
                    ));
                }
            }
        }
        TeiError::Unreachable { url: self.label.clone(), message }
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
            Api::Tei | Api::Auto => {
                let vectors: Vec<LenientVector> = parse_lenient(&bytes)?;
                (vectors.into_iter().map(|v| v.0).collect(), None)
            }
            Api::OpenAi => decode_openai(&bytes)?,
        };
        if vectors.len() != texts.len() {
            return Err(malformed(format!("{} vectors for {} inputs", vectors.len(), texts.len())));
        }
        Ok(EmbedReply { vectors, compute_tokens: header_tokens.or(usage_tokens) })
    }

    /// The request body, refused here when over the payload limit (the server would answer 413).
    fn body(&self, texts: &[String]) -> Result<Vec<u8>, CallError> {
        #[derive(Serialize)]
        struct Native<'a> {
            inputs: &'a [String],
            truncate: bool,
            normalize: bool,
            #[serde(skip_serializing_if = "Option::is_none")]
            prompt_name: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            dimensions: Option<usize>,
            #[serde(skip_serializing_if = "Option::is_none")]
            truncation_direction: Option<TruncationDirection>,
        }
        #[derive(Serialize)]
        struct OpenAi<'a> {
            input: &'a [String],
            encoding_format: &'static str,
            #[serde(skip_serializing_if = "Option::is_none")]
            dimensions: Option<usize>,
        }
        let o = &self.options;
        let body = match self.api {
            Api::Tei | Api::Auto => serde_json::to_vec(&Native {
                inputs: texts,
                truncate: true,
                normalize: o.normalized(),
                prompt_name: o.prompt_name.as_deref(),
                dimensions: o.dimensions,
                truncation_direction: o.truncation_direction,
            }),
            Api::OpenAi => {
                serde_json::to_vec(&OpenAi { input: texts, encoding_format: "base64", dimensions: o.dimensions })
            }
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
    Floats(LenientVector),
}

/// One vector of a JSON answer: a `null` component (how TEI writes NaN and ±infinity) reads as
/// NaN and a `null` vector as an empty one, for the check to refuse that input alone.
struct LenientVector(Vec<f32>);

impl<'de> Deserialize<'de> for LenientVector {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = LenientVector;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of numbers")
            }

            fn visit_unit<E: serde::de::Error>(self) -> Result<LenientVector, E> {
                Ok(LenientVector(Vec::new()))
            }

            fn visit_none<E: serde::de::Error>(self) -> Result<LenientVector, E> {
                Ok(LenientVector(Vec::new()))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<LenientVector, A::Error> {
                let mut values = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
                while let Some(v) = seq.next_element::<Option<f32>>()? {
                    values.push(v.unwrap_or(f32::NAN));
                }
                Ok(LenientVector(values))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Parses a JSON answer; one with bare `NaN`, `Infinity` or `-Infinity` (not JSON, but what
/// Python's `json` writes) is parsed again with those read as `null`.
fn parse_lenient<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, CallError> {
    match serde_json::from_slice(bytes) {
        Ok(value) => Ok(value),
        Err(err) => match null_non_finite(bytes) {
            Some(fixed) => serde_json::from_slice(&fixed).map_err(decode),
            None => Err(decode(err)),
        },
    }
}

/// `bytes` with every bare `NaN`, `Infinity` and `-Infinity` outside a JSON string replaced by
/// `null`; None when there is none.
fn null_non_finite(bytes: &[u8]) -> Option<Vec<u8>> {
    const TOKENS: [&[u8]; 3] = [b"-Infinity", b"Infinity", b"NaN"];
    let mut out = Vec::with_capacity(bytes.len());
    let (mut in_string, mut escaped, mut changed) = (false, false, false);
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if let Some(token) = TOKENS.iter().find(|t| bytes[i..].starts_with(t)) {
            out.extend_from_slice(b"null");
            i += token.len();
            changed = true;
            continue;
        }
        out.push(b);
        i += 1;
    }
    changed.then_some(out)
}

#[derive(Deserialize)]
struct OpenAiUsage {
    total_tokens: u64,
}

fn decode_openai(bytes: &[u8]) -> Result<(Vec<Vec<f32>>, Option<u64>), CallError> {
    let mut reply: OpenAiReply = parse_lenient(bytes)?;
    // Items carry their index; order by it rather than trusting the list order.
    reply.data.sort_by_key(|item| item.index);
    if reply.data.iter().enumerate().any(|(i, item)| item.index != i) {
        return Err(malformed("indexes of /v1/embeddings data are not 0..n".to_string()));
    }
    let vectors = reply
        .data
        .into_iter()
        .map(|item| match item.embedding {
            OpenAiVector::Floats(v) => Ok(v.0),
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

/// Whether a failed TLS handshake read bytes that are not TLS (rustls: "received corrupt
/// message of type InvalidContentType"; OpenSSL: "wrong version number"), as it does from a
/// plain HTTP server.
fn not_tls(message: &str) -> bool {
    ["InvalidContentType", "corrupt message", "wrong version number", "http request"]
        .iter()
        .any(|sign| message.to_ascii_lowercase().contains(&sign.to_ascii_lowercase()))
}

/// Most characters of a non-TEI answer quoted in a message.
const GLIMPSE: usize = 80;

/// What a server that is not TEI answered `/info`: its status, content type and, instead of the
/// body, an HTML page's title or the first [`GLIMPSE`] characters of anything else, on one line.
fn answered(status: reqwest::StatusCode, content_type: Option<&str>, body: &[u8], json: bool) -> String {
    let text = String::from_utf8_lossy(body);
    let one_line = |s: &str| -> String {
        let words: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
        let clean: String = words.chars().filter(|c| !c.is_control()).collect();
        match clean.char_indices().nth(GLIMPSE) {
            Some((cut, _)) => format!("{:?}…", &clean[..cut]),
            None => format!("{clean:?}"),
        }
    };
    let html = content_type.is_some_and(|t| t.contains("html")) || text.trim_start().starts_with('<');
    let what = if text.trim().is_empty() {
        "an empty body".to_string()
    } else if html {
        let lower = text.to_ascii_lowercase();
        let title = lower.find("<title").and_then(|open| {
            let start = open + lower[open..].find('>')? + 1;
            let end = start + lower[start..].find("</title")?;
            text.get(start..end).filter(|t| !t.trim().is_empty())
        });
        match title {
            Some(title) => format!("an HTML page titled {}", one_line(title)),
            None => "an HTML page".to_string(),
        }
    } else if json && status.is_success() {
        format!("JSON without a model_id: {}", one_line(&text))
    } else {
        one_line(&text)
    };
    let status = match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    };
    match content_type {
        Some(t) => format!("{status} ({t}) with {what}"),
        None => format!("{status} with {what}"),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_server_that_is_not_tei_answered_fits_a_line() {
        let page = format!(
            "<!DOCTYPE html>\n<HTML><head><Title>\n Welcome to nginx! </title></head>{}",
            "<p>x</p>".repeat(999)
        );
        let said = answered(reqwest::StatusCode::OK, Some("text/html"), page.as_bytes(), false);
        assert_eq!(said, r#"200 OK (text/html) with an HTML page titled "Welcome to nginx!""#);
        let said = answered(reqwest::StatusCode::NOT_FOUND, None, b"<html><body>gone</body></html>", false);
        assert_eq!(said, "404 Not Found with an HTML page");
        let long = "no such route ".repeat(50);
        let said = answered(reqwest::StatusCode::NOT_FOUND, Some("text/plain"), long.as_bytes(), false);
        assert!(said.starts_with(r#"404 Not Found (text/plain) with "no such route"#) && said.ends_with('…'), "{said}");
        assert!(said.chars().count() < 130, "{said}");
        let said = answered(reqwest::StatusCode::OK, Some("application/json"), br#"{"status":"ok"}"#, true);
        assert_eq!(said, r#"200 OK (application/json) with JSON without a model_id: "{\"status\":\"ok\"}""#);
        assert_eq!(answered(reqwest::StatusCode::BAD_GATEWAY, None, b"", false), "502 Bad Gateway with an empty body");
        assert!(not_tls("error sending request: received corrupt message of type InvalidContentType"));
        assert!(!not_tls("invalid peer certificate: UnknownIssuer"));
    }

    #[test]
    fn a_null_or_bare_nan_costs_one_vector_not_the_answer() {
        let vectors: Vec<LenientVector> = parse_lenient(br#"[[0.6,0.8],[null,null],null,[1e0,-0.0]]"#).unwrap();
        let vectors: Vec<Vec<f32>> = vectors.into_iter().map(|v| v.0).collect();
        assert_eq!(vectors[0], vec![0.6, 0.8]);
        assert!(vectors[1].len() == 2 && vectors[1].iter().all(|v| v.is_nan()));
        assert!(vectors[2].is_empty());
        assert_eq!(vectors[3], vec![1.0, 0.0]);
        // Python's json writes bare NaN and Infinity; strings keep theirs.
        let python = br#"{"data":[{"embedding":[NaN,Infinity,-Infinity,0.5],"index":0},
            {"embedding":"AADAfw==","index":1}],"model":"NaN \" Infinity"}"#;
        assert_eq!(null_non_finite(b"[[1.0]]"), None);
        let fixed = String::from_utf8(null_non_finite(python).unwrap()).unwrap();
        assert!(fixed.contains("[null,null,null,0.5]") && fixed.contains(r#""NaN \" Infinity""#), "{fixed}");
        let (vectors, _) = decode_openai(python).unwrap();
        assert!(vectors[0][..3].iter().all(|v| v.is_nan()) && vectors[0][3] == 0.5);
        assert!(vectors[1].len() == 1 && vectors[1][0].is_nan(), "base64 NaN bytes decode to NaN");
    }
}
