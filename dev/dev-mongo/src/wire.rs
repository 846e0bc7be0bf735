//! MongoDB wire-protocol framing: reading requests (OP_MSG, and the legacy OP_QUERY that some
//! clients still use for their first `hello`) and writing replies (OP_MSG, OP_REPLY).
//!
//! This module owns bytes on the socket only; it never interprets commands.

use mongodb::bson::{Bson, Document};
use tokio::io::{AsyncRead, AsyncReadExt};

/// OP_REPLY, the legacy reply to OP_QUERY.
pub const OP_REPLY: i32 = 1;
/// OP_QUERY, legacy; clients send only the handshake with it today.
pub const OP_QUERY: i32 = 2004;
/// OP_COMPRESSED; never offered by this server, so refused.
pub const OP_COMPRESSED: i32 = 2012;
/// OP_MSG, every modern command.
pub const OP_MSG: i32 = 2013;

/// Largest message accepted, as advertised in `hello` (`maxMessageSizeBytes`).
pub const MAX_MESSAGE_SIZE: usize = 48_000_000;

/// A request read off the wire.
#[derive(Debug)]
pub struct Request {
    /// The request's id, echoed as `responseTo`.
    pub request_id: i32,
    /// `OP_MSG` or `OP_QUERY`.
    pub op_code: i32,
    /// The command document, with kind-1 sections merged in under their identifiers.
    pub command: Document,
    /// For OP_QUERY: the namespace it was addressed to (`admin.$cmd`).
    pub query_namespace: Option<String>,
    /// OP_MSG `moreToCome`: the client expects no reply.
    pub more_to_come: bool,
}

/// Why a message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The socket failed or closed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// The bytes are not a message this server understands.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The message is framed well but a document in it is not BSON: answered with an error
    /// (InvalidBSON) naming the document; the connection stays open.
    #[error("request {request_id}: {message}")]
    BadDocument {
        /// The request's id, echoed as `responseTo`.
        request_id: i32,
        /// Its opcode, to answer in kind.
        op_code: i32,
        /// What is wrong, naming the document.
        message: String,
    },
}

impl WireError {
    /// For a [`WireError::BadDocument`]: the request to answer and the error reply.
    pub fn reply(&self) -> Option<(Request, Document)> {
        let WireError::BadDocument { request_id, op_code, message } = self else { return None };
        let request = Request {
            request_id: *request_id,
            op_code: *op_code,
            command: Document::new(),
            query_namespace: None,
            more_to_come: false,
        };
        let reply = mongodb::bson::doc! {"ok": 0.0, "code": 22, "codeName": "InvalidBSON", "errmsg": message.clone()};
        Some((request, reply))
    }
}

fn malformed(msg: impl Into<String>) -> WireError {
    WireError::Malformed(msg.into())
}

/// Reads one message. `Ok(None)` means the peer closed the connection between messages.
pub async fn read_request<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Option<Request>, WireError> {
    let mut header = [0u8; 16];
    match reader.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = i32_at(&header, 0);
    let request_id = i32_at(&header, 4);
    let op_code = i32_at(&header, 12);
    if len < 16 || len as usize > MAX_MESSAGE_SIZE {
        return Err(malformed(format!("message length {len} out of range")));
    }
    let mut body = vec![0u8; len as usize - 16];
    reader.read_exact(&mut body).await?;
    let parsed = match op_code {
        OP_MSG => parse_op_msg(request_id, &body),
        OP_QUERY => parse_op_query(request_id, &body),
        OP_COMPRESSED => Err(malformed("OP_COMPRESSED was not negotiated")),
        other => Err(malformed(format!("unsupported opcode {other}"))),
    };
    match parsed {
        Err(WireError::BadDocument { message, .. }) => Err(WireError::BadDocument { request_id, op_code, message }),
        other => other.map(Some),
    }
}

fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn read_doc(bytes: &[u8]) -> Result<(Document, usize), WireError> {
    if bytes.len() < 5 {
        return Err(malformed("truncated document"));
    }
    let len = i32_at(bytes, 0);
    if len < 5 || len as usize > bytes.len() {
        return Err(malformed("document length out of range"));
    }
    // Strings that are not UTF-8 are kept (see `invalid_utf8`); anything else unreadable is
    // answered with an error naming the document.
    let doc = crate::invalid_utf8::decode(&bytes[..len as usize]).map_err(|message| WireError::BadDocument {
        request_id: 0,
        op_code: 0,
        message,
    })?;
    Ok((doc, len as usize))
}

fn parse_op_msg(request_id: i32, body: &[u8]) -> Result<Request, WireError> {
    if body.len() < 5 {
        return Err(malformed("OP_MSG too short"));
    }
    let flags = u32::from_le_bytes([body[0], body[1], body[2], body[3]]);
    let checksum = flags & 1 != 0;
    let more_to_come = flags & 2 != 0;
    let end = if checksum { body.len().saturating_sub(4) } else { body.len() };
    let mut at = 4;
    let mut command: Option<Document> = None;
    let mut sequences: Vec<(String, Vec<Bson>)> = Vec::new();
    while at < end {
        let kind = body[at];
        at += 1;
        match kind {
            0 => {
                let (doc, n) = read_doc(&body[at..end])?;
                if command.replace(doc).is_some() {
                    return Err(malformed("more than one kind-0 section"));
                }
                at += n;
            }
            1 => {
                if at + 4 > end {
                    return Err(malformed("truncated kind-1 section"));
                }
                let size = i32_at(body, at) as usize;
                if size < 4 || at + size > end {
                    return Err(malformed("kind-1 section size out of range"));
                }
                let section = &body[at + 4..at + size];
                let nul = section.iter().position(|&b| b == 0).ok_or_else(|| malformed("unterminated identifier"))?;
                let ident =
                    String::from_utf8(section[..nul].to_vec()).map_err(|_| malformed("identifier not UTF-8"))?;
                let mut docs = Vec::new();
                let mut p = nul + 1;
                while p < section.len() {
                    let (doc, n) = read_doc(&section[p..])?;
                    docs.push(Bson::Document(doc));
                    p += n;
                }
                sequences.push((ident, docs));
                at += size;
            }
            other => return Err(malformed(format!("unknown section kind {other}"))),
        }
    }
    let mut command = command.ok_or_else(|| malformed("OP_MSG without a kind-0 section"))?;
    for (ident, docs) in sequences {
        command.insert(ident, docs);
    }
    Ok(Request { request_id, op_code: OP_MSG, command, query_namespace: None, more_to_come })
}

fn parse_op_query(request_id: i32, body: &[u8]) -> Result<Request, WireError> {
    if body.len() < 4 {
        return Err(malformed("OP_QUERY too short"));
    }
    let rest = &body[4..];
    let nul = rest.iter().position(|&b| b == 0).ok_or_else(|| malformed("unterminated namespace"))?;
    let ns = String::from_utf8(rest[..nul].to_vec()).map_err(|_| malformed("namespace not UTF-8"))?;
    let at = nul + 1 + 8; // numberToSkip, numberToReturn
    if rest.len() < at {
        return Err(malformed("OP_QUERY too short"));
    }
    let (mut query, _) = read_doc(&rest[at..])?;
    // Legacy clients may wrap the command as {$query: {...}, $readPreference: ...}.
    if let Ok(inner) = query.get_document("$query") {
        query = inner.clone();
    }
    Ok(Request { request_id, op_code: OP_QUERY, command: query, query_namespace: Some(ns), more_to_come: false })
}

/// Encodes the reply to `request` carrying `reply`: OP_MSG for OP_MSG, OP_REPLY for OP_QUERY.
pub fn encode_reply(request: &Request, response_id: i32, reply: &Document, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&[0u8; 16]);
    if request.op_code == OP_QUERY {
        out.extend_from_slice(&0i32.to_le_bytes()); // responseFlags
        out.extend_from_slice(&0i64.to_le_bytes()); // cursorID
        out.extend_from_slice(&0i32.to_le_bytes()); // startingFrom
        out.extend_from_slice(&1i32.to_le_bytes()); // numberReturned
    } else {
        out.extend_from_slice(&0u32.to_le_bytes()); // flagBits
        out.push(0); // kind-0 section
    }
    // Strings stored as not UTF-8 go back as their original bytes.
    crate::invalid_utf8::encode(reply, out);
    let len = out.len() as i32;
    out[0..4].copy_from_slice(&len.to_le_bytes());
    out[4..8].copy_from_slice(&response_id.to_le_bytes());
    out[8..12].copy_from_slice(&request.request_id.to_le_bytes());
    let op = if request.op_code == OP_QUERY { OP_REPLY } else { OP_MSG };
    out[12..16].copy_from_slice(&op.to_le_bytes());
}
