"""A second, independent client against tweet-embed dev-mongo: pymongo 4.x (which sends its
first hello as legacy OP_QUERY) inserts, finds, counts on a hinted partial index, watches a
change stream and resumes it from a token. Exits non-zero with a message on any mismatch.

Usage: python pymongo_check.py mongodb://127.0.0.1:PORT/?directConnection=true
"""
import sys

import pymongo
from pymongo import MongoClient


def check(cond, what):
    if not cond:
        print(f"pymongo check failed: {what}", file=sys.stderr)
        sys.exit(1)


def main(uri):
    client = MongoClient(uri, serverSelectionTimeoutMS=5000)
    check(client.admin.command("ping")["ok"] == 1.0, "ping")
    hello = client.admin.command("hello")
    check(hello.get("setName") == "rs0", f"setName in {hello}")
    coll = client.twitter_data.pymongo_tweets
    coll.drop()
    coll.create_index(
        [("lang", 1), ("classified", 1), ("_id", 1)],
        name="embedding_work_queue",
        partialFilterExpression={"retweeted": None, "gemma_embedded_768": None},
    )
    with coll.watch(full_document="updateLookup", max_await_time_ms=200) as stream:
        docs = [{"_id": i, "lang": "en", "classified": True, "text": f"t{i} \U0001F600"} for i in range(50)]
        res = coll.insert_many(docs)
        check(len(res.inserted_ids) == 50, "insert_many")
        found = list(coll.find({"_id": {"$gte": 10}}).sort("_id", 1).batch_size(7))
        check([d["_id"] for d in found] == list(range(10, 50)), "find in _id order")
        check(found[0]["text"] == "t10 \U0001F600", "unicode round trip")
        n = coll.count_documents(
            {"lang": "en", "classified": True, "retweeted": None, "gemma_embedded_768": None},
            hint="embedding_work_queue",
        )
        check(n == 50, f"hinted count {n}")
        coll.update_many({"_id": {"$lt": 5}}, {"$set": {"gemma_embedded_768": True}})
        check(coll.count_documents({"gemma_embedded_768": None}) == 45, "update_many")
        events = []
        while len(events) < 5:
            change = stream.try_next()
            if change is not None:
                events.append(change)
        check([e["documentKey"]["_id"] for e in events] == [0, 1, 2, 3, 4], "insert events in order")
        check(events[0]["fullDocument"]["text"] == "t0 \U0001F600", "fullDocument")
        token = stream.resume_token
    with coll.watch(resume_after=token, max_await_time_ms=200) as resumed:
        change = None
        while change is None:
            change = resumed.try_next()
        check(change["documentKey"]["_id"] == 5, f"resumed at {change['documentKey']}")
    try:
        coll.find_one({}, hint="no_such_index")
        check(False, "hint on a missing index must fail")
    except pymongo.errors.OperationFailure as e:
        check(e.code == 2, f"hint error code {e.code}")
    invalid_utf8(client)
    print(f"pymongo {pymongo.version}: insert, find, count, update, watch, resume, invalid UTF-8: ok")


def invalid_utf8(client):
    """A string that is not UTF-8, sent as raw BSON, comes back byte-for-byte, as from mongod."""
    from bson.codec_options import CodecOptions
    from bson.raw_bson import RawBSONDocument

    bad = b"caf\xe9 \xff\xfe"
    body = b"\x10_id\x00" + (7).to_bytes(4, "little")
    body += b"\x02text\x00" + (len(bad) + 1).to_bytes(4, "little") + bad + b"\x00"
    raw = (len(body) + 5).to_bytes(4, "little") + body + b"\x00"
    coll = client.twitter_data.get_collection("raw", codec_options=CodecOptions(document_class=RawBSONDocument))
    coll.insert_one(RawBSONDocument(raw))
    back = coll.find_one({"_id": 7})
    check(back.raw == raw, f"stored bytes {back.raw!r}")
    escaped = client.twitter_data.get_collection(
        "raw", codec_options=CodecOptions(unicode_decode_error_handler="surrogateescape")
    )
    check(escaped.find_one({"_id": 7})["text"].encode("utf-8", "surrogateescape") == bad, "decoded with surrogateescape")


if __name__ == "__main__":
    main(sys.argv[1])
