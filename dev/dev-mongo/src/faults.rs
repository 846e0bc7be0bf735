//! Fault injection: a fail point that fails the next N commands with a given code and labels
//! (or closes the connection), set from tests through the Rust API or by clients through
//! mongod's own `configureFailPoint: "failCommand"` command.
//!
//! Handshake and monitoring commands are never failed unless named explicitly, so the driver's
//! topology stays up while operations fail, as with mongod's fail point.

use super::error::{CmdResult, CommandError};
use mongodb::bson::{doc, Bson, Document};

/// An armed fail point.
#[derive(Debug, Clone, PartialEq)]
pub struct FailPoint {
    /// How many more commands to fail.
    pub times: u32,
    /// Error code to answer with (none: only close the connection).
    pub code: Option<i32>,
    /// Labels on the error.
    pub labels: Vec<String>,
    /// Commands affected; empty means every command but the handshake and monitoring ones.
    pub commands: Vec<String>,
    /// Close the connection instead of answering.
    pub close_connection: bool,
}

/// What a fail point makes of a command.
#[derive(Debug, PartialEq)]
pub enum Injected {
    /// Answer with this error.
    Error(CommandError),
    /// Close the connection without answering.
    Close,
}

const NEVER_BY_DEFAULT: &[&str] =
    &["hello", "ismaster", "isMaster", "ping", "buildInfo", "buildinfo", "endSessions", "configureFailPoint"];

impl FailPoint {
    /// Fails the next `times` commands with `code` and `labels`.
    pub fn error(times: u32, code: i32, labels: &[&str]) -> FailPoint {
        FailPoint {
            times,
            code: Some(code),
            labels: labels.iter().map(|s| s.to_string()).collect(),
            commands: Vec::new(),
            close_connection: false,
        }
    }

    /// Decides whether `command` is failed, consuming one use.
    pub fn take(slot: &mut Option<FailPoint>, command: &str) -> Option<Injected> {
        let fp = slot.as_mut()?;
        let applies = if fp.commands.is_empty() {
            !NEVER_BY_DEFAULT.contains(&command)
        } else {
            fp.commands.iter().any(|c| c == command)
        };
        if !applies || fp.times == 0 {
            return None;
        }
        fp.times -= 1;
        let out = if fp.close_connection {
            Injected::Close
        } else {
            let code = fp.code.unwrap_or(1);
            let mut err = CommandError::new(code, format!("Failing command {command} via 'failCommand' failpoint"));
            err.labels = fp.labels.clone();
            Injected::Error(err)
        };
        if fp.times == 0 {
            *slot = None;
        }
        Some(out)
    }

    /// Parses mongod's `{configureFailPoint: "failCommand", mode, data}`; `None` turns it off.
    pub fn from_command(cmd: &Document) -> CmdResult<Option<FailPoint>> {
        let name = cmd.get_str("configureFailPoint").unwrap_or_default();
        if name != "failCommand" {
            return Err(CommandError::bad_value(format!(
                "tweet-embed dev-mongo supports only the failCommand fail point, not {name}"
            )));
        }
        let times = match cmd.get("mode") {
            Some(Bson::String(m)) if m == "off" => return Ok(None),
            Some(Bson::String(m)) if m == "alwaysOn" => u32::MAX,
            Some(Bson::Document(m)) => match m.get("times") {
                Some(Bson::Int32(n)) => *n as u32,
                Some(Bson::Int64(n)) => *n as u32,
                _ => return Err(CommandError::bad_value("mode.times must be a number")),
            },
            _ => return Err(CommandError::bad_value("mode must be \"off\", \"alwaysOn\" or {times: N}")),
        };
        let data = cmd.get_document("data").cloned().unwrap_or_default();
        let commands = match data.get("failCommands") {
            Some(Bson::Array(a)) => a.iter().filter_map(|b| b.as_str().map(str::to_string)).collect(),
            _ => Vec::new(),
        };
        let code = match data.get("errorCode") {
            Some(Bson::Int32(c)) => Some(*c),
            Some(Bson::Int64(c)) => Some(*c as i32),
            _ => None,
        };
        let labels = match data.get("errorLabels") {
            Some(Bson::Array(a)) => a.iter().filter_map(|b| b.as_str().map(str::to_string)).collect(),
            _ => Vec::new(),
        };
        let close_connection = data.get_bool("closeConnection").unwrap_or(false);
        if code.is_none() && !close_connection {
            return Err(CommandError::bad_value("data needs errorCode or closeConnection: true"));
        }
        Ok(Some(FailPoint { times, code, labels, commands, close_connection }))
    }
}

/// The reply to `configureFailPoint`.
pub fn configured_reply(count: u32) -> Document {
    doc! {"count": count as i64, "ok": 1.0}
}
