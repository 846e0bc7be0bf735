//! The legacy OP_QUERY handshake, spoken byte by byte as old clients (and pymongo's first
//! hello) send it, and a malformed message closing only its own connection.

use super::Fixture;
use mongodb::bson::{doc, Document};
use std::io::{Read, Write};

fn op_query(request_id: i32, ns: &str, query: &Document) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&0i32.to_le_bytes()); // flags
    body.extend_from_slice(ns.as_bytes());
    body.push(0);
    body.extend_from_slice(&0i32.to_le_bytes()); // numberToSkip
    body.extend_from_slice(&(-1i32).to_le_bytes()); // numberToReturn
    query.to_writer(&mut body).unwrap();
    let mut msg = Vec::new();
    msg.extend_from_slice(&((16 + body.len()) as i32).to_le_bytes());
    msg.extend_from_slice(&request_id.to_le_bytes());
    msg.extend_from_slice(&0i32.to_le_bytes());
    msg.extend_from_slice(&2004i32.to_le_bytes());
    msg.extend_from_slice(&body);
    msg
}

#[tokio::test]
async fn legacy_op_query_hello_gets_op_reply() {
    let f = Fixture::new().await;
    let addr = f.server.addr();
    let reply = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(&op_query(7, "admin.$cmd", &doc! {"isMaster": 1, "client": {"driver": {"name": "test"}}})).unwrap();
        let mut header = [0u8; 16];
        s.read_exact(&mut header).unwrap();
        let len = i32::from_le_bytes(header[0..4].try_into().unwrap()) as usize;
        let mut body = vec![0u8; len - 16];
        s.read_exact(&mut body).unwrap();
        // Garbage afterwards closes this connection only.
        s.write_all(&[9, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0xd5, 7, 0, 0]).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        (header, body, rest)
    })
    .await
    .unwrap();
    let (header, body, rest) = reply;
    assert_eq!(i32::from_le_bytes(header[8..12].try_into().unwrap()), 7, "responseTo");
    assert_eq!(i32::from_le_bytes(header[12..16].try_into().unwrap()), 1, "OP_REPLY");
    assert_eq!(i32::from_le_bytes(body[16..20].try_into().unwrap()), 1, "numberReturned");
    let d = Document::from_reader(&mut &body[20..]).unwrap();
    assert!(d.get_bool("ismaster").unwrap());
    assert_eq!(d.get_str("setName").unwrap(), "rs0");
    assert!(rest.is_empty());
    // The server is still fine for everyone else.
    f.coll("w").insert_one(doc! {"ok": true}).await.unwrap();
}
