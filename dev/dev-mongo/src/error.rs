//! Command errors as mongod reports them: a numeric code, its name, a message and optional
//! labels. Everything a command can refuse turns into one of these, never a panic or a dropped
//! connection.

use mongodb::bson::{doc, Bson, Document};

/// A command failure, sent to the client as `{ok: 0, code, codeName, errmsg, errorLabels?}`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code_name} ({code}): {message}")]
pub struct CommandError {
    /// mongod's numeric error code.
    pub code: i32,
    /// mongod's name for that code.
    pub code_name: &'static str,
    /// Human-readable message.
    pub message: String,
    /// Error labels such as `ResumableChangeStreamError`.
    pub labels: Vec<String>,
}

/// The codes this server uses, with mongod's names.
pub mod code {
    pub const BAD_VALUE: i32 = 2;
    pub const FAILED_TO_PARSE: i32 = 9;
    pub const TYPE_MISMATCH: i32 = 14;
    pub const INDEX_NOT_FOUND: i32 = 27;
    pub const NAMESPACE_NOT_FOUND: i32 = 26;
    pub const CURSOR_NOT_FOUND: i32 = 43;
    pub const COMMAND_NOT_FOUND: i32 = 59;
    pub const IMMUTABLE_FIELD: i32 = 66;
    pub const INVALID_OPTIONS: i32 = 72;
    pub const INDEX_OPTIONS_CONFLICT: i32 = 85;
    pub const INDEX_KEY_SPECS_CONFLICT: i32 = 86;
    pub const QUERY_PLAN_KILLED: i32 = 175;
    pub const INVALID_RESUME_TOKEN: i32 = 260;
    pub const CHANGE_STREAM_FATAL: i32 = 280;
    pub const CHANGE_STREAM_HISTORY_LOST: i32 = 286;
    pub const DUPLICATE_KEY: i32 = 11000;
    pub const BSON_OBJECT_TOO_LARGE: i32 = 10334;
    pub const LOCATION_40324: i32 = 40324;
}

/// mongod's name for a code (used for codes that arrive through fault hooks too).
pub fn code_name(code: i32) -> &'static str {
    match code {
        1 => "InternalError",
        2 => "BadValue",
        6 => "HostUnreachable",
        7 => "HostNotFound",
        9 => "FailedToParse",
        11 => "UserNotFound",
        13 => "Unauthorized",
        14 => "TypeMismatch",
        26 => "NamespaceNotFound",
        27 => "IndexNotFound",
        43 => "CursorNotFound",
        50 => "MaxTimeMSExpired",
        59 => "CommandNotFound",
        66 => "ImmutableField",
        72 => "InvalidOptions",
        85 => "IndexOptionsConflict",
        86 => "IndexKeySpecsConflict",
        89 => "NetworkTimeout",
        91 => "ShutdownInProgress",
        175 => "QueryPlanKilled",
        189 => "PrimarySteppedDown",
        260 => "InvalidResumeToken",
        262 => "ExceededTimeLimit",
        280 => "ChangeStreamFatalError",
        286 => "ChangeStreamHistoryLost",
        10107 => "NotWritablePrimary",
        10334 => "BSONObjectTooLarge",
        11000 => "DuplicateKey",
        11600 => "InterruptedAtShutdown",
        11602 => "InterruptedDueToReplStateChange",
        13435 => "NotPrimaryNoSecondaryOk",
        _ => "Location",
    }
}

impl CommandError {
    /// An error with the given code and message.
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        CommandError { code, code_name: code_name(code), message: message.into(), labels: Vec::new() }
    }

    /// `BadValue` (2): the most common refusal of a malformed request.
    pub fn bad_value(message: impl Into<String>) -> Self {
        Self::new(code::BAD_VALUE, message)
    }

    /// `FailedToParse` (9).
    pub fn parse(message: impl Into<String>) -> Self {
        Self::new(code::FAILED_TO_PARSE, message)
    }

    /// `TypeMismatch` (14) for a field of the wrong BSON type.
    pub fn type_mismatch(field: &str, expected: &str, got: &Bson) -> Self {
        Self::new(
            code::TYPE_MISMATCH,
            format!("BSON field '{field}' is the wrong type '{}', expected type '{expected}'", type_name(got)),
        )
    }

    /// Adds an error label.
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.labels.push(label.into());
        self
    }

    /// The reply document for this error.
    pub fn to_document(&self) -> Document {
        let mut d = doc! { "ok": 0.0, "errmsg": self.message.clone(), "code": self.code, "codeName": self.code_name };
        if !self.labels.is_empty() {
            d.insert("errorLabels", self.labels.iter().cloned().map(Bson::String).collect::<Vec<_>>());
        }
        d
    }
}

/// mongod's alias for a BSON type, used in messages.
pub fn type_name(v: &Bson) -> &'static str {
    match v {
        Bson::Double(_) => "double",
        Bson::String(_) => "string",
        Bson::Document(_) => "object",
        Bson::Array(_) => "array",
        Bson::Binary(_) => "binData",
        Bson::Undefined => "undefined",
        Bson::ObjectId(_) => "objectId",
        Bson::Boolean(_) => "bool",
        Bson::DateTime(_) => "date",
        Bson::Null => "null",
        Bson::RegularExpression(_) => "regex",
        Bson::DbPointer(_) => "dbPointer",
        Bson::JavaScriptCode(_) => "javascript",
        Bson::Symbol(_) => "symbol",
        Bson::JavaScriptCodeWithScope(_) => "javascriptWithScope",
        Bson::Int32(_) => "int",
        Bson::Timestamp(_) => "timestamp",
        Bson::Int64(_) => "long",
        Bson::Decimal128(_) => "decimal",
        Bson::MinKey => "minKey",
        Bson::MaxKey => "maxKey",
    }
}

/// Result of a command.
pub type CmdResult<T = Document> = Result<T, CommandError>;
