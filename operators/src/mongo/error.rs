//! MongoDB errors as the run treats them: said in words ([`describe`]: code name, code number,
//! message — never the driver's dump of the server's reply), told apart into those that heal by
//! themselves and those that cannot ([`transient`]), and ridden out with backoff ([`retry`],
//! [`Attempts`]) while a run shows what it waits for ([`Waits`]).
//!
//! **What heals** (retried for as long as it lasts, a WARN when it starts and every 30 s while it
//! goes on): a replica-set election or step-down (NotWritablePrimary 10107, NotPrimaryNoSecondaryOk
//! 13435, NotPrimaryOrSecondary 13436, InterruptedDueToReplStateChange 11602, PrimarySteppedDown
//! 189, shutdown codes 11600/91), network and time-limit errors (I/O, a cleared pool, no server to
//! select, HostUnreachable 6, HostNotFound 7, NetworkTimeout 89, SocketException 9001,
//! ExceededTimeLimit 262), a lost cursor (CursorNotFound 43), WriteConflict 112,
//! WriteConcernFailed 64, and anything the server labels `RetryableWriteError`, `RetryableError`,
//! `SystemOverloadedError` or `ResumableChangeStreamError`.
//! **What cannot** (the run stops with one line): authentication, a missing collection or index,
//! a bad query, a document the server refuses (a write error), and every other code.
//!
//! Everything here uses the driver's public error API (`ErrorKind`, codes, labels); it never
//! parses an error's text.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mongodb::error::{
    Error, ErrorKind, WriteFailure, RESUMABLE_CHANGE_STREAM_ERROR, RETRYABLE_ERROR, RETRYABLE_WRITE_ERROR,
    SYSTEM_OVERLOADED_ERROR,
};
use parking_lot::Mutex;

/// Codes of a replica set changing its primary (SDAM's "not writable primary" and "recovering").
pub const ELECTION_CODES: [i32; 8] = [10107, 13435, 10058, 11600, 11602, 13436, 189, 91];
/// Codes of a network or time-limit failure on the server's side.
pub const NETWORK_CODES: [i32; 6] = [6, 7, 89, 9001, 262, 134];

/// A WARN at most this often per waiting operation (and when it starts).
const WARN_EVERY: Duration = Duration::from_secs(30);

/// An error in words: `CodeName (code): message`, the kind of failure otherwise, then the
/// server's labels. Never the server's raw reply.
pub fn describe(e: &Error) -> String {
    let coded = |code: i32, name: &str, message: &str| {
        let name = if name.is_empty() { code_name(code) } else { name };
        format!("{name} ({code}): {}", message.trim())
    };
    let mut out = match e.kind.as_ref() {
        ErrorKind::Command(c) => coded(c.code, &c.code_name, &c.message),
        ErrorKind::Write(WriteFailure::WriteError(w)) => {
            format!("the server refused the write: {}", coded(w.code, w.code_name.as_deref().unwrap_or(""), &w.message))
        }
        ErrorKind::Write(WriteFailure::WriteConcernError(w)) => {
            format!("write concern not satisfied: {}", coded(w.code, &w.code_name, &w.message))
        }
        ErrorKind::InsertMany(m) => match (&m.write_errors, &m.write_concern_error) {
            (Some(errs), _) if !errs.is_empty() => format!(
                "the server refused {} of the inserts, first: {}",
                errs.len(),
                coded(errs[0].code, errs[0].code_name.as_deref().unwrap_or(""), &errs[0].message)
            ),
            (_, Some(w)) => format!("write concern not satisfied: {}", coded(w.code, &w.code_name, &w.message)),
            _ => "insert failed".to_string(),
        },
        ErrorKind::BulkWrite(_) => "bulk write failed".to_string(),
        ErrorKind::Io(io) => format!("network error: {io}"),
        ErrorKind::ConnectionPoolCleared { message, .. } => format!("connection pool cleared: {message}"),
        ErrorKind::ServerSelection { message, .. } => {
            format!("no MongoDB server available: {}", server_selection_cause(message))
        }
        ErrorKind::Authentication { message, .. } => format!("authentication failed: {message}"),
        // The remaining kinds' own text carries no server reply.
        other => other.to_string(),
    };
    let mut labels: Vec<&String> = e.labels().iter().collect();
    labels.sort();
    if !labels.is_empty() {
        out.push_str(&format!(" [{}]", labels.iter().map(|l| l.as_str()).collect::<Vec<_>>().join(", ")));
    }
    out
}

/// The code of a command, write-concern or write error.
pub fn code(e: &Error) -> Option<i32> {
    match e.kind.as_ref() {
        ErrorKind::Command(c) => Some(c.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(w)) => Some(w.code),
        ErrorKind::Write(WriteFailure::WriteError(w)) => Some(w.code),
        ErrorKind::InsertMany(m) => m.write_concern_error.as_ref().map(|w| w.code),
        _ => None,
    }
}

/// Why `e` is expected to heal by itself, or `None` when retrying cannot help.
pub fn transient(e: &Error) -> Option<&'static str> {
    // A write error is about the document, whatever its code: retrying sends the same document.
    if matches!(e.kind.as_ref(), ErrorKind::Write(WriteFailure::WriteError(_))) {
        return None;
    }
    match e.kind.as_ref() {
        ErrorKind::Io(_) | ErrorKind::ConnectionPoolCleared { .. } => {
            return Some("the connection to MongoDB failed (network, or the server restarting)")
        }
        ErrorKind::ServerSelection { .. } => {
            return Some("no MongoDB server can serve it now (no primary during an election, or the server is down)")
        }
        _ => {}
    }
    match code(e) {
        Some(c) if ELECTION_CODES.contains(&c) => return Some("the replica set is electing a primary"),
        Some(c) if NETWORK_CODES.contains(&c) => return Some("a network or time-limit error inside MongoDB"),
        Some(43) => return Some("the server lost the cursor (restart or failover)"),
        Some(112) => return Some("a write conflict"),
        Some(64) => return Some("the write concern was not satisfied in time"),
        _ => {}
    }
    if e.contains_label(RETRYABLE_WRITE_ERROR) || e.contains_label(RETRYABLE_ERROR) {
        return Some("MongoDB says it can be retried");
    }
    if e.contains_label(SYSTEM_OVERLOADED_ERROR) {
        return Some("MongoDB is overloaded");
    }
    if e.contains_label(RESUMABLE_CHANGE_STREAM_ERROR) {
        return Some("the change stream can be resumed");
    }
    None
}

/// A name for the codes the run deals with, when the server sent none.
pub fn code_name(code: i32) -> &'static str {
    match code {
        2 => "BadValue",
        6 => "HostUnreachable",
        7 => "HostNotFound",
        11 => "UserNotFound",
        13 => "Unauthorized",
        18 => "AuthenticationFailed",
        26 => "NamespaceNotFound",
        43 => "CursorNotFound",
        50 => "MaxTimeMSExpired",
        64 => "WriteConcernFailed",
        89 => "NetworkTimeout",
        91 => "ShutdownInProgress",
        112 => "WriteConflict",
        134 => "ReadConcernMajorityNotAvailableYet",
        189 => "PrimarySteppedDown",
        260 => "InvalidResumeToken",
        262 => "ExceededTimeLimit",
        280 => "ChangeStreamFatalError",
        286 => "ChangeStreamHistoryLost",
        9001 => "SocketException",
        10058 => "LegacyNotPrimary",
        10107 => "NotWritablePrimary",
        11000 => "DuplicateKey",
        11600 => "InterruptedAtShutdown",
        11602 => "InterruptedDueToReplStateChange",
        13435 => "NotPrimaryNoSecondaryOk",
        13436 => "NotPrimaryOrSecondary",
        _ => "error",
    }
}

/// How long to wait between tries of an operation that failed with an error that heals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first wait; it doubles after each failure.
    pub first: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Default for RetryPolicy {
    /// 100 ms, doubling up to 5 s: an election (about 10 s) costs a few tries.
    fn default() -> Self {
        RetryPolicy { first: Duration::from_millis(100), max: Duration::from_secs(5) }
    }
}

/// An operation waiting for MongoDB to heal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    /// Why it is expected to heal.
    pub why: String,
    /// The last error, in words.
    pub error: String,
    /// Failed tries so far.
    pub attempts: u64,
    /// Since when it has been waiting.
    pub since: Instant,
}

/// What a run is waiting for right now, by operation, for the stall report and `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct Waits(Arc<Mutex<BTreeMap<String, Waiting>>>);

impl Waits {
    /// Notes that `what` failed again with `error`, for `why`.
    pub fn waiting(&self, what: &str, why: &str, error: String) {
        let mut map = self.0.lock();
        let w = map.entry(what.to_string()).or_insert_with(|| Waiting {
            why: why.to_string(),
            error: String::new(),
            attempts: 0,
            since: Instant::now(),
        });
        w.why = why.to_string();
        w.error = error;
        w.attempts += 1;
    }

    /// Notes that `what` no longer waits.
    pub fn done(&self, what: &str) {
        self.0.lock().remove(what);
    }

    /// Everything waiting now, oldest first.
    pub fn snapshot(&self) -> Vec<(String, Waiting)> {
        let mut v: Vec<(String, Waiting)> = self.0.lock().iter().map(|(k, w)| (k.clone(), w.clone())).collect();
        v.sort_by_key(|(_, w)| w.since);
        v
    }

    /// Whether anything waits.
    pub fn is_empty(&self) -> bool {
        self.0.lock().is_empty()
    }
}

/// Where a run's MongoDB operations note their waits, and how they back off.
#[derive(Clone, Debug, Default)]
pub struct MongoRetry {
    /// The run's waits.
    pub waits: Waits,
    /// The backoff.
    pub policy: RetryPolicy,
}

/// The tries of one operation: backoff, the WARN, the entry in [`Waits`] (removed when it
/// succeeds, gives up or is dropped).
pub struct Attempts {
    what: String,
    retry: MongoRetry,
    backoff: Duration,
    failures: u64,
    started: Option<Instant>,
    warned: Option<Instant>,
}

impl Attempts {
    /// The tries of `what` (a phrase: "marking epoch 7").
    pub fn new(retry: &MongoRetry, what: impl Into<String>) -> Attempts {
        Attempts {
            what: what.into(),
            retry: retry.clone(),
            backoff: retry.policy.first.min(retry.policy.max),
            failures: 0,
            started: None,
            warned: None,
        }
    }

    /// After a failure: how long to wait before the next try when `e` heals by itself (with a
    /// WARN when the wait starts and every 30 s after), or `e` back when it cannot.
    pub fn failed(&mut self, e: Error) -> Result<Duration, Error> {
        let Some(why) = transient(&e) else {
            self.retry.waits.done(&self.what);
            return Err(e);
        };
        self.failures += 1;
        let started = *self.started.get_or_insert_with(Instant::now);
        let error = describe(&e);
        if self.warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            tracing::warn!(
                waiting = %self.what,
                attempts = self.failures,
                waited_s = started.elapsed().as_secs(),
                "{} waits for MongoDB: {why}: {error}; retrying with backoff until it heals",
                self.what
            );
            self.warned = Some(Instant::now());
        }
        self.retry.waits.waiting(&self.what, why, error);
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(self.retry.policy.max);
        Ok(wait)
    }

    /// After a success (or progress): the backoff starts over, the wait is over.
    pub fn succeeded(&mut self) {
        if let Some(started) = self.started.take() {
            tracing::info!(
                waited_s = started.elapsed().as_secs(),
                attempts = self.failures,
                "{}: MongoDB answers again",
                self.what
            );
        }
        self.retry.waits.done(&self.what);
        self.backoff = self.retry.policy.first.min(self.retry.policy.max);
        self.failures = 0;
        self.warned = None;
    }
}

impl Drop for Attempts {
    fn drop(&mut self) {
        if self.started.is_some() {
            self.retry.waits.done(&self.what);
        }
    }
}

/// Runs `op` until it succeeds or fails with an error that cannot heal (returned), waiting with
/// backoff after each error that heals.
pub async fn retry<T, F, Fut>(retry: &MongoRetry, what: &str, mut op: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let mut attempts = Attempts::new(retry, what);
    loop {
        match op().await {
            Ok(v) => {
                attempts.succeeded();
                return Ok(v);
            }
            Err(e) => tokio::time::sleep(attempts.failed(e)?).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::doc;

    fn command_error(code: i32, name: &str) -> Error {
        // The driver builds errors from a server reply; so does this, through its public API.
        let reply = doc! {"ok": 0, "code": code, "codeName": name, "errmsg": "boom"};
        let c: mongodb::error::CommandError = mongodb::bson::from_document(reply).expect("command error");
        Error::from(ErrorKind::Command(c))
    }

    #[test]
    fn elections_heal_and_bad_queries_do_not() {
        assert!(transient(&command_error(11602, "InterruptedDueToReplStateChange")).is_some());
        assert!(transient(&command_error(10107, "NotWritablePrimary")).is_some());
        assert!(transient(&command_error(2, "BadValue")).is_none());
        assert!(transient(&command_error(13, "Unauthorized")).is_none());
        assert!(transient(&command_error(26, "NamespaceNotFound")).is_none());
        let io = Error::from(ErrorKind::Io(Arc::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset))));
        assert!(transient(&io).is_some());
    }

    #[test]
    fn errors_read_as_words() {
        let e = command_error(11602, "InterruptedDueToReplStateChange");
        assert_eq!(describe(&e), "InterruptedDueToReplStateChange (11602): boom");
        let e = command_error(43, "");
        assert_eq!(describe(&e), "CursorNotFound (43): boom");
    }
}

/// The cause in a server-selection message, without the driver's topology dump: `Server
/// selection timeout: No available servers. Topology: { … Error: Kind: I/O error: Connection
/// refused (os error 111), labels: … }` → `Connection refused (os error 111)`.
fn server_selection_cause(message: &str) -> String {
    let Some(at) = message.find("Error: Kind: ") else {
        return message.split(" Topology:").next().unwrap_or(message).trim().to_string();
    };
    let cause = &message[at + "Error: Kind: ".len()..];
    let cause = cause.split(", labels:").next().unwrap_or(cause);
    let cause = cause.strip_prefix("I/O error: ").unwrap_or(cause);
    let head = message.split(" Topology:").next().unwrap_or("").trim().trim_end_matches('.');
    if head.is_empty() {
        cause.trim().to_string()
    } else {
        format!("{head} ({})", cause.trim())
    }
}

#[cfg(test)]
mod server_selection_tests {
    #[test]
    fn the_topology_dump_becomes_its_cause() {
        let message = "Server selection timeout: No available servers. Topology: { Type: Single, Servers: [ { Address: 127.0.0.1:27098, Type: Unknown, Error: Kind: I/O error: Connection refused (os error 111), labels: {\"SystemOverloadedError\", \"RetryableError\"}, source: None, server response: None } ] }";
        assert_eq!(
            super::server_selection_cause(message),
            "Server selection timeout: No available servers (Connection refused (os error 111))"
        );
        assert_eq!(super::server_selection_cause("no servers"), "no servers");
    }
}
