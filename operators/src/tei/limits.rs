//! What a TEI server allows, read from `GET /info`, and the URLs of the servers.
//!
//! This module owns [`ServerLimits`] (parsing `/info`, combining several servers into the
//! tightest limits) and the normalization of endpoint URLs; it never sends a request itself and
//! never logs a URL with its credentials.

use serde::Deserialize;

use super::error::TeiError;

/// TEI's default `--payload-limit`, in bytes. `/info` does not report it.
pub const DEFAULT_PAYLOAD_LIMIT: usize = 2_000_000;

/// The limits and identity of a TEI server (or the tightest of several).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLimits {
    /// `model_id`, e.g. `google/embeddinggemma-300m`.
    pub model_id: String,
    /// `model_sha`: the model's revision, when the server says.
    pub model_sha: Option<String>,
    /// TEI's version, e.g. `1.9.0` (empty when the server does not say).
    pub version: String,
    /// Most inputs in one request.
    pub max_client_batch_size: usize,
    /// Token budget of one server batch.
    pub max_batch_tokens: usize,
    /// Most inputs in one server batch, when the server caps it (`/info.max_batch_requests`;
    /// TEI's candle CPU backend forces 4, ORT 8; None on CUDA by default).
    pub max_batch_requests: Option<usize>,
    /// Most tokens of one input, special tokens included; longer inputs are truncated.
    pub max_input_length: usize,
    /// Concurrency permits of the server, one per input in flight.
    pub max_concurrent_requests: usize,
    /// Largest request body in bytes: configured by the client, as `/info` does not report it.
    pub payload_limit: usize,
    /// Whether the server truncates when a request does not say (`/v1/embeddings` cannot say).
    pub auto_truncate: bool,
}

/// `/info` as TEI 1.x returns it; fields missing from older versions take TEI's defaults.
#[derive(Debug, Deserialize)]
struct Info {
    model_id: String,
    #[serde(default)]
    model_sha: Option<String>,
    #[serde(default)]
    version: String,
    #[serde(default = "default_client_batch")]
    max_client_batch_size: usize,
    #[serde(default = "default_batch_tokens")]
    max_batch_tokens: usize,
    #[serde(default)]
    max_batch_requests: Option<usize>,
    max_input_length: usize,
    #[serde(default = "default_concurrent")]
    max_concurrent_requests: usize,
    #[serde(default)]
    auto_truncate: bool,
}

fn default_client_batch() -> usize {
    32
}

fn default_batch_tokens() -> usize {
    16_384
}

fn default_concurrent() -> usize {
    512
}

impl ServerLimits {
    /// A server started with TEI 1.9's defaults serving `model_id` (32 inputs a request, 16,384
    /// tokens a batch, 512 tokens an input, 512 permits, 2,000,000-byte bodies, auto-truncate).
    pub fn tei_defaults(model_id: &str) -> Self {
        Self {
            model_id: model_id.to_string(),
            model_sha: None,
            version: String::new(),
            max_client_batch_size: default_client_batch(),
            max_batch_tokens: default_batch_tokens(),
            max_batch_requests: None,
            max_input_length: 512,
            max_concurrent_requests: default_concurrent(),
            payload_limit: DEFAULT_PAYLOAD_LIMIT,
            auto_truncate: true,
        }
    }

    /// Parses `/info`'s body; `payload_limit` is the client's setting.
    pub fn from_info(body: &[u8], payload_limit: usize) -> Result<Self, String> {
        let info: Info = serde_json::from_slice(body).map_err(|e| format!("answered /info with no model: {e}"))?;
        let positive = [
            ("max_client_batch_size", info.max_client_batch_size),
            ("max_batch_tokens", info.max_batch_tokens),
            ("max_input_length", info.max_input_length),
            ("max_concurrent_requests", info.max_concurrent_requests),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!(
                "reports {name} = 0 in /info: no request can ever fit; restart it with a positive value"
            ));
        }
        Ok(Self {
            model_id: info.model_id,
            model_sha: info.model_sha.filter(|s| !s.is_empty()),
            version: info.version,
            max_client_batch_size: info.max_client_batch_size,
            max_batch_tokens: info.max_batch_tokens,
            max_batch_requests: info.max_batch_requests.filter(|&n| n > 0),
            max_input_length: info.max_input_length,
            max_concurrent_requests: info.max_concurrent_requests,
            payload_limit,
            auto_truncate: info.auto_truncate,
        })
    }

    /// The limits every one of `self` and `other` accepts (same model assumed; the version is
    /// `self`'s, and auto-truncation holds only if both do it).
    pub fn tightest(&self, other: &ServerLimits) -> ServerLimits {
        ServerLimits {
            model_id: self.model_id.clone(),
            model_sha: self.model_sha.clone(),
            version: self.version.clone(),
            max_client_batch_size: self.max_client_batch_size.min(other.max_client_batch_size),
            max_batch_tokens: self.max_batch_tokens.min(other.max_batch_tokens),
            max_batch_requests: match (self.max_batch_requests, other.max_batch_requests) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            max_input_length: self.max_input_length.min(other.max_input_length),
            max_concurrent_requests: self.max_concurrent_requests.min(other.max_concurrent_requests),
            payload_limit: self.payload_limit.min(other.payload_limit),
            auto_truncate: self.auto_truncate && other.auto_truncate,
        }
    }
}

/// The base URL of an endpoint as users write it: with or without a trailing `/embed` (the old
/// script's form), `/v1/embeddings` or `/`. A path prefix (a proxy's route) is kept.
pub fn base_url(url: &str) -> Result<String, TeiError> {
    let trimmed = url.trim();
    if !trimmed.contains("://") {
        // `127.0.0.1:8080` does not parse, and `gpu0:8080` parses as the scheme `gpu0`: say
        // what to write either way (without any password the text holds).
        let http = redact(&format!("http://{trimmed}"));
        let shown = http.trim_start_matches("http://");
        return Err(TeiError::Config(format!(
            "TEI URL {shown:?} has no scheme: TEI serves plain HTTP, so write {http} (https:// only for a TLS proxy \
             in front of it)"
        )));
    }
    let parsed = reqwest::Url::parse(trimmed)
        .map_err(|e| TeiError::Config(format!("TEI URL {:?} is not a URL: {e}", redact(trimmed))))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(TeiError::Config(format!(
            "TEI URL {:?} must be http://host[:port] (https:// for a TLS proxy in front of TEI)",
            redact(trimmed)
        )));
    }
    let mut base = trimmed.split(['?', '#']).next().unwrap_or(trimmed).trim_end_matches('/');
    for suffix in ["/v1/embeddings", "/embed"] {
        if let Some(stripped) = base.strip_suffix(suffix) {
            base = stripped.trim_end_matches('/');
            break;
        }
    }
    Ok(base.to_string())
}

/// `url` without its user and password, for messages and logs. Works on text, so even a URL
/// that does not parse never leaks its credentials.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}{}", &url[..scheme_end], &rest[at + 1..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_with_or_without_embed() {
        for url in [
            "http://localhost:18080",
            "http://localhost:18080/",
            "http://localhost:18080/embed",
            " http://localhost:18080/embed/ ",
            "http://localhost:18080/v1/embeddings",
        ] {
            assert_eq!(base_url(url).unwrap(), "http://localhost:18080", "{url}");
        }
        assert_eq!(base_url("https://gpu/tei0/embed").unwrap(), "https://gpu/tei0");
        // No scheme: the fix is said, with the URL as it should be written.
        for (url, fixed) in
            [("localhost:18080", "http://localhost:18080"), ("127.0.0.1:8080/embed", "http://127.0.0.1:8080/embed")]
        {
            let err = base_url(url).unwrap_err().to_string();
            assert!(err.contains("has no scheme") && err.contains(&format!("write {fixed} ")), "{err}");
        }
        let err = base_url("alice:pw@gpu0:8080").unwrap_err().to_string();
        assert!(!err.contains("pw") && err.contains("http://gpu0:8080"), "{err}");
        assert!(base_url("ftp://host/embed").is_err());
        let err = base_url("http://user:secret@").unwrap_err().to_string();
        assert!(!err.contains("secret"), "{err}");
        assert_eq!(redact("http://user:secret@host:1/embed"), "http://host:1/embed");
        assert_eq!(redact("http://host:1"), "http://host:1");
    }

    #[test]
    fn info_and_tightest() {
        let a = br#"{"model_id":"m","version":"1.9.0","max_client_batch_size":32,"max_batch_tokens":16384,
            "max_input_length":512,"max_concurrent_requests":512,"auto_truncate":true,"model_type":{}}"#;
        let b = br#"{"model_id":"m","max_input_length":256,"max_client_batch_size":8}"#;
        let a = ServerLimits::from_info(a, DEFAULT_PAYLOAD_LIMIT).unwrap();
        let b = ServerLimits::from_info(b, 1000).unwrap();
        let t = a.tightest(&b);
        assert_eq!((t.max_client_batch_size, t.max_input_length, t.max_batch_tokens), (8, 256, 16_384));
        assert_eq!((t.payload_limit, t.auto_truncate, t.version.as_str()), (1000, false, "1.9.0"));
        assert!(ServerLimits::from_info(b"{}", 1).is_err());
        assert!(ServerLimits::from_info(br#"{"model_id":"m","max_input_length":0}"#, 1).is_err());
        // No permits: every request is answered 429; that is a start-up error, not a stall.
        let none = br#"{"model_id":"m","max_input_length":512,"max_concurrent_requests":0}"#;
        let err = ServerLimits::from_info(none, 1).unwrap_err();
        assert!(err.starts_with("reports max_concurrent_requests = 0 in /info: no request can ever fit"), "{err}");
    }
}
