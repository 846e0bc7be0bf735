//! Errors of the TEI client: [`TeiError`] for what stops a run before it starts (configuration,
//! an endpoint that cannot be used), [`CallError`] for one failed HTTP call, classified so the
//! pool knows whether to retry, split the request or isolate an input.
//!
//! This module owns the classification of TEI's answers by status and message, across TEI
//! versions (`shared/notes/tei.md`); it never retries or decides what happens to an input.

use std::fmt;

/// Why a pool or an endpoint cannot be used: a clear one-line message for the operator.
#[derive(Debug, thiserror::Error)]
pub enum TeiError {
    /// A configuration that cannot work, whatever the servers do (bad URL, no endpoints,
    /// endpoints serving different models, an unreadable tokenizer).
    #[error("{0}")]
    Config(String),
    /// An endpoint could not be reached or refused to serve at start.
    #[error("TEI at {url} is not reachable: {message}")]
    Unreachable {
        /// The endpoint's base URL, credentials removed.
        url: String,
        /// What failed.
        message: String,
    },
    /// An endpoint answered, but not as TEI does.
    #[error("TEI at {url} {message}")]
    Protocol {
        /// The endpoint's base URL, credentials removed.
        url: String,
        /// What was wrong, phrased to follow the URL.
        message: String,
    },
}

/// What the pool should do about a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Retry later, on this or another endpoint: 429, 503, 424, other 5xx, timeouts, connection
    /// errors, truncated or malformed bodies.
    Transient,
    /// The request is too big for the server (payload limit, or more items than
    /// `max_client_batch_size`): split it.
    TooLarge,
    /// The server refuses one of the inputs (empty, too long, tokenizer failure): isolate it.
    InputRefused,
    /// The server refuses this client (bad API key, wrong route): the endpoint is misconfigured;
    /// another endpoint may still serve the request.
    Rejected,
}

/// One failed call to an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    /// What to do about it.
    pub kind: FailureKind,
    /// A short label for counters: the HTTP status (`"429"`), or `connect`, `timeout`,
    /// `connection`, `body`, `decode`.
    pub cause: String,
    /// The server's message, or the transport error, in one line.
    pub message: String,
}

impl CallError {
    /// A failure without an HTTP status.
    pub fn transport(kind: FailureKind, cause: &str, message: impl Into<String>) -> Self {
        Self { kind, cause: cause.to_string(), message: message.into() }
    }

    /// Classifies a non-success answer from its status and body, as TEI 1.0–1.9 send them.
    pub fn from_status(status: u16, body: &str) -> Self {
        let message = error_message(body);
        let kind = classify(status, &message);
        let message = if message.is_empty() { format!("HTTP {status}") } else { message };
        Self { kind, cause: status.to_string(), message }
    }

    /// Whether the endpoint could not be connected to at all (down, wrong port): the pool stops
    /// sending to it for a while at once instead of after several failures.
    pub fn is_connect(&self) -> bool {
        self.cause == "connect"
    }

    /// Whether the server had no free permits for the request's inputs (429 "Model is
    /// overloaded"): it is up and busy, so this is a cue to send less, not a sign of failure.
    pub fn is_overloaded(&self) -> bool {
        self.cause == "429"
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.cause, self.message)
    }
}

impl std::error::Error for CallError {}

/// The kind of a failure from its status and the server's message.
///
/// TEI moved its codes between versions: "batch size" was 413 up to 1.8.3 and is 422 since;
/// "input too long" was 413 before 1.9.0 and is 422 since; the payload limit is always 413 with a
/// plain-text body. So 413 and 422 are told apart by their message.
fn classify(status: u16, message: &str) -> FailureKind {
    let lower = message.to_ascii_lowercase();
    let about_batch = lower.contains("batch size");
    // Messages of an input over the length limits: "must have less than N tokens/characters".
    let about_input = lower.contains("must have less than") || lower.contains("tokeniz");
    match status {
        400 => FailureKind::InputRefused,
        413 | 422 if about_batch => FailureKind::TooLarge,
        413 if about_input => FailureKind::InputRefused,
        413 => FailureKind::TooLarge,
        422 => FailureKind::InputRefused,
        408 | 429 => FailureKind::Transient,
        401 | 403 | 404 | 405 | 406 | 415 => FailureKind::Rejected,
        500..=599 => FailureKind::Transient,
        // Anything else is unexpected of TEI; a retry elsewhere is the safe choice.
        _ => FailureKind::Transient,
    }
}

/// Longest message kept from a body, so a proxy's HTML page does not flood the logs.
const MAX_MESSAGE: usize = 300;

/// The message of an error body: TEI's native `{"error"}`, OpenAI's `{"message"}`, or the plain
/// text of axum's rejections, on one line.
fn error_message(body: &str) -> String {
    let parsed = serde_json::from_str::<serde_json::Value>(body).ok();
    let text = parsed
        .as_ref()
        .and_then(|v| v.get("error").or_else(|| v.get("message")))
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .unwrap_or_else(|| body.to_string());
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(MAX_MESSAGE) {
        Some((cut, _)) => format!("{}…", &one_line[..cut]),
        None => one_line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(status: u16, body: &str) -> FailureKind {
        CallError::from_status(status, body).kind
    }

    #[test]
    fn tei_codes_across_versions() {
        let native = |msg: &str, kind: &str| format!(r#"{{"error":"{msg}","error_type":"{kind}"}}"#);
        let batch = native("batch size 40 > maximum allowed batch size 32", "Validation");
        assert_eq!(kind(422, &batch), FailureKind::TooLarge); // >= 1.8.3
        assert_eq!(kind(413, &batch), FailureKind::TooLarge); // < 1.8.3
        let long = native("Input validation error: `inputs` must have less than 512 tokens. Given: 600", "Validation");
        assert_eq!(kind(422, &long), FailureKind::InputRefused); // >= 1.9.0
        assert_eq!(kind(413, &long), FailureKind::InputRefused); // < 1.9.0
        assert_eq!(kind(413, "Failed to buffer the request body: length limit exceeded"), FailureKind::TooLarge);
        let empty = native("Input validation error: `inputs` cannot be empty", "Empty");
        assert_eq!(kind(400, &empty), FailureKind::InputRefused);
        assert_eq!(kind(422, &native("Tokenizer error: bad", "Tokenizer")), FailureKind::InputRefused);
        for status in [429, 503, 424, 500, 502, 504, 408] {
            assert_eq!(kind(status, &native("x", "Overloaded")), FailureKind::Transient, "{status}");
        }
        assert_eq!(kind(401, ""), FailureKind::Rejected);
        let openai = r#"{"message":"batch size 40 > maximum allowed batch size 32","code":422,"type":"Validation"}"#;
        assert_eq!(kind(422, openai), FailureKind::TooLarge);
    }

    #[test]
    fn messages_are_one_short_line() {
        let err = CallError::from_status(503, r#"{"error":"unhealthy","error_type":"Unhealthy"}"#);
        assert_eq!(err.to_string(), "503: unhealthy");
        assert_eq!(CallError::from_status(401, "").message, "HTTP 401");
        let long = "x\n".repeat(1000);
        let msg = CallError::from_status(500, &long).message;
        assert!(!msg.contains('\n') && msg.chars().count() <= MAX_MESSAGE + 1);
    }
}
