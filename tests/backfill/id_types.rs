//! Ids users can join on: collections whose `_id`s are Int64, Int32, strings or ObjectIds come
//! out with an `id` column of the natural type (Int64, the string as stored, 24-hex), which
//! DuckDB joins to a mongoexport of the collection without a cast; a crash between commit and
//! marks re-marks from those columns; an `_id` of another type is a rejection with its reason;
//! and a run cannot change a dataset's recorded id type.

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Int64Type};
use dev_tei::{embedding_for, FaultConfig};
use mongodb::bson::{doc, oid::ObjectId, Bson, Document};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use test_support::expect::{pyarrow_check, python_with, read_rows, Output};
use test_support::proc::{free_port, Proc};
use test_support::{insert_docs, wait, Fixture, Stack};
use tweet_embed_operators::mongo::document_id::DocId;
use tweet_embed_operators::run::Engine;
use tweet_embed_operators::table::checkpoint::CheckpointStore;
use tweet_embed_operators::table::output::{canonical_id, IdType, ID_TYPE_KEY, REJECTS_DIR};

use super::crash::backfill_cmd;

const BIN: &str = env!("CARGO_BIN_EXE_tweet-embed");
const MARK: &str = "gemma_embedded_768";

/// The `_id`s of a test collection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ids {
    Int64,
    Int32,
    Strings,
    Oids,
}

impl Ids {
    /// The `i`-th `_id`: tweet-sized Int64s beyond 2^53 (a double would lose them), negative
    /// Int32s, tweet ids as decimal strings (and one with quotes and an emoji, which
    /// extended JSON would escape), ObjectIds.
    fn id(self, i: u64) -> Bson {
        match self {
            Ids::Int64 => Bson::Int64(1_500_000_000_000_000_000 + i as i64 * 7_919),
            Ids::Int32 => Bson::Int32(i as i32 * 3 + 500),
            Ids::Strings if i == 7 => Bson::String("a \"quoted\" id ☀".into()),
            Ids::Strings => Bson::String((1_600_000_000_000_000_000u64 + i).to_string()),
            Ids::Oids => {
                let mut b = [0u8; 12];
                b[..4].copy_from_slice(&1_700_000_000u32.to_be_bytes());
                b[8..].copy_from_slice(&(i as u32).to_be_bytes());
                Bson::ObjectId(ObjectId::from_bytes(b))
            }
        }
    }

    fn id_type(self) -> IdType {
        match self {
            Ids::Int64 | Ids::Int32 => IdType::Int64,
            Ids::Strings => IdType::String,
            Ids::Oids => IdType::ObjectId,
        }
    }
}

/// `n` tweets with `_id`s of `ids`; every 25th has an empty text (a rejection).
fn tweets(ids: Ids, n: u64) -> Vec<Document> {
    (0..n)
        .map(|i| {
            let text =
                if i % 25 == 24 { String::new() } else { format!("tweet {i} of {ids:?}: ids users can join on") };
            doc! {"_id": ids.id(i), "lang": "en", "classified": true, "text": text}
        })
        .collect()
}

/// Every document of `coll`, read through the driver.
fn stored(stack: &Stack, coll: &mongodb::Collection<Document>) -> Vec<Document> {
    stack.rt.block_on(async {
        let mut c = coll.find(doc! {}).await.expect("find");
        let mut v = Vec::new();
        while c.advance().await.expect("advance") {
            v.push(c.deserialize_current().expect("doc"));
        }
        v
    })
}

/// The `id` values of every rows file in `out` as their natural type says, and that type.
fn natural_ids(out: &Path) -> (BTreeSet<String>, BTreeSet<DataType>) {
    let (mut ids, mut types) = (BTreeSet::new(), BTreeSet::new());
    for dir in [out.to_path_buf(), out.join(REJECTS_DIR)] {
        for e in std::fs::read_dir(&dir).expect("list output").flatten() {
            if e.path().extension().and_then(|x| x.to_str()) != Some("parquet") {
                continue;
            }
            let builder = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(e.path()).expect("open"))
                .expect("parquet");
            let kv = builder.metadata().file_metadata().key_value_metadata().cloned().unwrap_or_default();
            let recorded = kv.iter().find(|kv| kv.key == ID_TYPE_KEY).and_then(|kv| kv.value.clone());
            let field = builder.schema().field_with_name("id").expect("id").data_type().clone();
            types.insert(field.clone());
            let is_rows = dir == out;
            for batch in builder.build().expect("reader") {
                let col = batch.expect("batch").column_by_name("id").expect("id").clone();
                if is_rows {
                    match &field {
                        DataType::Int64 => {
                            ids.extend(col.as_primitive::<Int64Type>().iter().flatten().map(|n| n.to_string()))
                        }
                        _ => ids.extend(col.as_string::<i32>().iter().flatten().map(str::to_string)),
                    }
                }
            }
            assert!(recorded.is_some(), "{:?} records no id type", e.path());
        }
    }
    (ids, types)
}

/// The `_id` as a user's export holds it: a number, a string, or 24 hex digits.
fn plain(id: &Bson) -> String {
    match id {
        Bson::Int64(n) => n.to_string(),
        Bson::Int32(n) => n.to_string(),
        Bson::String(s) => s.clone(),
        Bson::ObjectId(o) => o.to_hex(),
        other => panic!("no plain form for {other:?}"),
    }
}

/// Every eligible document of `docs` (as stored in `coll`) exactly once in `out`, with its
/// text's vector and marked `true`, or rejected with a reason and marked `false`; the `id`
/// column of type `id_type` holding the natural ids. Returns (rows, rejections).
fn check_output(stack: &Stack, coll: &mongodb::Collection<Document>, out: &Path, id_type: IdType) -> (usize, usize) {
    let Output { vectors, counts, rejects } = read_rows(out);
    let repeated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "ids written more than once: {repeated:?}");
    let (mut rows, mut rejected, mut natural) = (0, 0, BTreeSet::new());
    for d in stored(stack, coll) {
        let id = d.get("_id").expect("_id");
        let key = canonical_id(&DocId::of(id).into_string()).into_owned();
        let text = d.get_str("text").expect("text");
        if text.is_empty() {
            rejected += 1;
            assert_eq!(rejects.get(&key).map(String::as_str), Some("empty text"), "{key}");
            assert_eq!(d.get_bool(MARK).ok(), Some(false), "mark of rejected {key}");
        } else {
            rows += 1;
            let v = vectors.get(&key).unwrap_or_else(|| panic!("no row for {key}"));
            assert_eq!(v, &embedding_for(text, 768), "vector of {key}");
            assert_eq!(d.get_bool(MARK).ok(), Some(true), "mark of {key}");
            natural.insert(plain(id));
        }
    }
    assert_eq!((vectors.len(), rejects.len()), (rows, rejected), "rows or rejections beyond the documents");
    let (ids, types) = natural_ids(out);
    assert_eq!(types, BTreeSet::from([id_type.data_type()]), "the id column's type");
    assert_eq!(ids, natural, "the id column holds the natural ids");
    (rows, rejected)
}

/// Writes `coll` as mongoexport would (relaxed extended JSON, one document a line) to `path`.
fn export(stack: &Stack, coll: &mongodb::Collection<Document>, path: &Path) {
    let mut f = std::fs::File::create(path).expect("export");
    for d in stored(stack, coll) {
        let line = Bson::Document(d).into_relaxed_extjson();
        writeln!(f, "{line}").expect("write export");
    }
}

/// DuckDB's join of `out` to the export at `export`: (rows, joined, rejections, joined, id
/// column type, key type).
fn duckdb_join(out: &Path, export: &Path, id_type: IdType) -> (u64, u64, u64, u64, String, String) {
    let py = python_with("duckdb");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/join_ids.py");
    let o = Command::new(&py).arg(script).arg(out).arg(export).arg(id_type.as_str()).output().expect("run python");
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "duckdb join failed:\n{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    let f: Vec<&str> = stdout.split_whitespace().collect();
    let n = |i: usize| f[i].parse::<u64>().expect("a count");
    (n(0), n(1), n(2), n(3), f[4].to_string(), f[5].to_string())
}

#[test]
fn each_id_type_round_trips_in_its_natural_column_and_duckdb_joins_it_without_a_cast() {
    for ids in [Ids::Int64, Ids::Int32, Ids::Strings, Ids::Oids] {
        let Fixture { stack, dir, args, .. } = Fixture::unseeded(Stack::start(2, FaultConfig::default()), 2);
        insert_docs(&stack, &tweets(ids, 400));
        let summary = Engine::connect(args.clone()).and_then(Engine::backfill).expect("backfill");
        assert_eq!(summary.id_type, Some(ids.id_type()), "{ids:?}: auto chose from the _id edges");
        assert_eq!((summary.embedded, summary.rejected, summary.strays), (384, 16, 0), "{ids:?}");
        let cp = CheckpointStore::open(&args.state_dir).unwrap().load().unwrap().expect("checkpoint");
        assert_eq!(cp.id_type(), Some(ids.id_type()), "{ids:?}: recorded");
        let coll = stack.coll();
        assert_eq!(check_output(&stack, &coll, &args.out, ids.id_type()), (384, 16), "{ids:?}");
        pyarrow_check(&args.out, summary.embedded, summary.rejected);

        let file = dir.path().join("tweets.jsonl");
        export(&stack, &coll, &file);
        let (rows, joined, rejects, rejects_joined, id_sql, key_sql) = duckdb_join(&args.out, &file, ids.id_type());
        assert_eq!((rows, joined), (384, 384), "{ids:?}: every row joins");
        assert_eq!((rejects, rejects_joined), (16, 16), "{ids:?}: every rejection joins");
        let natural = if ids.id_type() == IdType::Int64 { "BIGINT" } else { "VARCHAR" };
        assert_eq!((id_sql.as_str(), key_sql.as_str()), (natural, natural), "{ids:?}: one type on both sides");
    }
}

/// dev-mongo in its own process with `--data`, reachable at the returned URI, holding `docs`
/// and the indexes.
fn mongo_process(dir: &Path, stack: &Stack, docs: Vec<Document>) -> (Proc, String) {
    let port = free_port();
    let mongo = Proc(
        Command::new(BIN)
            .args(["dev-mongo", "--port", &port.to_string(), "--save-every", "1"])
            .arg("--data")
            .arg(dir.join("mongo.bson"))
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn dev-mongo"),
    );
    let uri = format!("mongodb://127.0.0.1:{port}/?directConnection=true");
    stack.rt.block_on(async {
        let client = mongodb::Client::with_uri_str(&uri).await.expect("client");
        let coll = client.database("twitter_data").collection::<Document>("tweets");
        let deadline = Instant::now() + Duration::from_secs(20);
        while coll.estimated_document_count().await.is_err() {
            assert!(Instant::now() < deadline, "dev-mongo did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        coll.insert_many(docs).await.expect("insert");
    });
    let st = Command::new(BIN).args(["indexes", "--mongo-uri", &uri]).stdout(Stdio::null()).status().expect("indexes");
    assert!(st.success());
    (mongo, uri)
}

#[test]
fn a_crash_between_commit_and_marks_re_marks_from_natural_id_columns() {
    for ids in [Ids::Int64, Ids::Strings, Ids::Int32] {
        let dir = tempfile::tempdir().expect("tempdir");
        let stack = Stack::start(2, FaultConfig::default());
        let (_mongo, uri) = mongo_process(dir.path(), &stack, tweets(ids, 3_000));
        let mut args = stack.args(dir.path(), 2);
        args.mongo.uri = uri.clone();
        let coll = stack.coll_at(&uri);

        // Dies right after the first commit is saved, before its documents are marked.
        let status = backfill_cmd(&args).env("TWEET_EMBED_CRASH_AFTER_COMMIT", "1").status().expect("run to the hook");
        assert_eq!(status.signal(), Some(6), "{ids:?}: the crash hook aborts the run: {status:?}");
        let cp = CheckpointStore::open(&args.state_dir).unwrap().load().unwrap().expect("checkpoint");
        assert!(cp.committed() > cp.marked(), "{ids:?}: crashed between commit and marks");
        assert_eq!(cp.id_type(), Some(ids.id_type()), "{ids:?}");
        let marked =
            stack.rt.block_on(async { coll.count_documents(doc! {MARK: {"$ne": null}}).await }).expect("count");
        assert_eq!(marked, 0, "{ids:?}: nothing marked before the crash");

        let out = backfill_cmd(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).output().expect("restart");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{ids:?}: restart failed: {}", String::from_utf8_lossy(&out.stderr));
        let remarked: u64 = stdout
            .lines()
            .find_map(|l| l.split(", ").nth(1)?.strip_suffix(" documents re-marked")?.parse().ok())
            .unwrap_or_else(|| panic!("{ids:?}: no re-marking in the summary:\n{stdout}"));
        assert!(remarked > 0, "{ids:?}: {stdout}");
        let cp = CheckpointStore::open(&args.state_dir).unwrap().load().unwrap().expect("checkpoint");
        assert_eq!(cp.committed(), cp.marked(), "{ids:?}");
        assert_eq!(check_output(&stack, &coll, &args.out, ids.id_type()), (2_880, 120), "{ids:?}");
    }
}

#[test]
fn strays_of_another_type_are_rejections_with_the_reason_and_nothing_is_lost() {
    let Fixture { stack, dir: _dir, args, .. } = Fixture::unseeded(Stack::start(2, FaultConfig::default()), 2);
    insert_docs(&stack, &tweets(Ids::Int64, 100));
    let first = Engine::connect(args.clone()).and_then(Engine::backfill).expect("first backfill");
    assert_eq!((first.id_type, first.strays), (Some(IdType::Int64), 0));

    // Later, a double and a string `_id` arrive among Int64 ones: `auto` does not decide again.
    let more: Vec<Document> = (100..110)
        .map(|i| doc! {"_id": Ids::Int64.id(i), "lang": "en", "classified": true, "text": format!("a later tweet {i}")})
        .chain([
            doc! {"_id": 2.5, "lang": "en", "classified": true, "text": "a tweet whose _id is a double"},
            doc! {"_id": "not-a-number", "lang": "en", "classified": true, "text": "a tweet whose _id is a string"},
        ])
        .collect();
    insert_docs(&stack, &more);
    let second = Engine::connect(args.clone()).and_then(Engine::backfill).expect("strays never fail a run");
    assert_eq!(second.id_type, Some(IdType::Int64));
    assert_eq!((second.embedded, second.rejected, second.strays), (10, 2, 2));

    let coll = stack.coll();
    for (id, ty) in [(Bson::Double(2.5), "double"), (Bson::String("not-a-number".into()), "string")] {
        let d =
            stack.rt.block_on(async { coll.find_one(doc! {"_id": id.clone()}).await }).expect("find").expect("stored");
        assert_eq!(d.get_bool(MARK).ok(), Some(false), "{id}: marked rejected");
        let reason = d.get_str(format!("{MARK}_error")).expect("reason");
        let want = format!("`_id` of type {ty} does not fit this dataset's id column (int64)");
        assert!(reason.starts_with(&want), "{reason}");
        let rows = read_rows(&args.out);
        assert_eq!(
            rows.rejects.get(&DocId::of(&id).into_string()).map(String::as_str),
            Some(reason),
            "{id} in _rejects"
        );
    }
    // Everything else exactly once and marked; the strays are in `_rejects/` under `stray_id`,
    // with a null `id`, beside the Int64 ids of the other rejections.
    let Output { vectors, counts, rejects } = read_rows(&args.out);
    assert!(counts.values().all(|n| *n == 1), "an id written twice");
    assert_eq!((vectors.len(), rejects.len()), (106, 6));
    let unmarked = stack.rt.block_on(async { coll.count_documents(doc! {MARK: null}).await }).expect("count");
    assert_eq!(unmarked, 0, "every document is marked");
    let mut strays = BTreeSet::new();
    for e in std::fs::read_dir(args.out.join(REJECTS_DIR)).expect("_rejects").flatten() {
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(e.path()).expect("open"))
            .expect("parquet")
            .build()
            .expect("reader");
        for batch in reader {
            let batch = batch.expect("batch");
            let (ids, stray) =
                (batch.column_by_name("id").expect("id"), batch.column_by_name("stray_id").expect("stray_id"));
            assert_eq!(ids.data_type(), &DataType::Int64);
            for i in 0..batch.num_rows() {
                assert_ne!(ids.is_null(i), stray.is_null(i), "one of id and stray_id");
                if stray.is_valid(i) {
                    strays.insert(stray.as_string::<i32>().value(i).to_string());
                }
            }
        }
    }
    let want: BTreeSet<String> =
        [DocId::of(&Bson::Double(2.5)).into_string(), DocId::of(&Bson::String("not-a-number".into())).into_string()]
            .into();
    assert_eq!(strays, want);
    pyarrow_check(&args.out, 106, 6);
}

#[test]
fn another_id_type_than_the_recorded_one_is_refused_with_one_line_naming_both() {
    let Fixture { stack, dir: _dir, mut args, .. } = Fixture::unseeded(Stack::start(1, FaultConfig::default()), 1);
    insert_docs(&stack, &tweets(Ids::Int64, 50));
    Engine::connect(args.clone()).and_then(Engine::backfill).expect("backfill records int64");

    args.id_type = Some(IdType::String);
    // Log lines quiet: what is left is what the user reads.
    let out = backfill_cmd(&args).args(["--log", "warn"]).stderr(Stdio::piped()).output().expect("run the binary");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(lines[0].starts_with("tweet-embed: "), "{stderr}");
    assert!(lines[0].contains("--id-type string") && lines[0].contains("(int64)"), "{stderr}");
    let err = Engine::connect(args.clone()).and_then(Engine::backfill).expect_err("refused in the engine too");
    assert!(format!("{err:#}").contains("--id-type string"), "{err:#}");

    // The recorded type, given explicitly, is fine.
    args.id_type = Some(IdType::Int64);
    Engine::connect(args).and_then(Engine::backfill).expect("--id-type int64 as recorded");
}

/// Deletes from the change stream (one of a tweet inserted and deleted within its epoch) and from
/// `reconcile`, on Int32 `_id`s: `_deletions/` has the rows' Int64 `id`, the rows leave `--out`,
/// the cancelled tweet is never written — the Int32 ids compared with what reads back as Int64.
#[test]
fn deletes_and_reconcile_work_on_int32_ids_in_an_int64_column() {
    use tweet_embed_operators::dataflow::epoch_clock::StopSignal;
    use tweet_embed_operators::run::Continuous;
    use tweet_embed_operators::table::output::read_deletion_dir;
    use tweet_embed_operators::table::reconcile::{reconcile, ReconcileTarget};

    let Fixture { stack, dir: _dir, mut args, .. } = Fixture::unseeded(Stack::start(2, FaultConfig::default()), 2);
    insert_docs(&stack, &tweets(Ids::Int32, 200));
    args.checkpoint_interval = Duration::from_secs(1);
    args.max_file_age = Duration::from_millis(200);
    args.delete_within = Duration::from_secs(1);
    let (out, coll) = (args.out.clone(), stack.coll());
    let stop = StopSignal::default();
    let run = {
        let (args, stop) = (args.clone(), stop.clone());
        std::thread::spawn(move || Engine::connect(args).and_then(|e| e.continuous(Continuous::default(), stop)))
    };
    let unmarked = || stack.rt.block_on(async { coll.count_documents(doc! {MARK: null}).await }).expect("count");
    wait::until("the backfill drained", Duration::from_secs(60), || unmarked() == 0);
    // Ten embedded tweets go; one tweet comes and goes within an epoch.
    let gone: Vec<Bson> = (0..10).map(|i| Ids::Int32.id(i)).collect();
    let flash = Bson::Int32(99_999);
    stack.rt.block_on(async {
        coll.delete_many(doc! {"_id": {"$in": gone.clone()}}).await.expect("delete");
        let d = doc! {"_id": flash.clone(), "lang": "en", "classified": true, "text": "a tweet deleted at once"};
        coll.insert_one(d).await.expect("insert");
        coll.delete_one(doc! {"_id": flash.clone()}).await.expect("delete at once");
    });
    let keys: Vec<String> = gone.iter().map(|id| canonical_id(&DocId::of(id).into_string()).into_owned()).collect();
    let visible = || test_support::expect::read_visible(&out);
    // Recorded, and gone from --out (rows still staged would only leave it at their compaction).
    wait::until("the deleted rows left --out", Duration::from_secs(60), || {
        let recorded: Vec<String> = read_deletion_dir(&out).unwrap_or_default().into_iter().map(|d| d.id).collect();
        let v = visible();
        keys.iter().all(|k| recorded.contains(k))
            && !v.vectors.is_empty()
            && keys.iter().all(|k| !v.counts.contains_key(k))
    });
    stop.stop();
    run.join().expect("run thread").expect("run");
    let recorded: Vec<String> = read_deletion_dir(&out).expect("_deletions").into_iter().map(|d| d.id).collect();
    for k in &keys {
        assert!(recorded.contains(k), "deletion of {k} not recorded: {recorded:?}");
    }
    let flash_key = canonical_id(&DocId::of(&flash).into_string()).into_owned();
    assert!(!visible().counts.contains_key(&flash_key), "the cancelled tweet was written");
    for e in std::fs::read_dir(out.join("_deletions")).expect("_deletions").flatten() {
        let b =
            ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(e.path()).expect("open")).expect("parquet");
        assert_eq!(b.schema().field_with_name("id").expect("id").data_type(), &DataType::Int64);
    }

    // Five more go while nothing follows the stream: reconcile finds them through the _id index.
    let more: Vec<Bson> = (10..15).map(|i| Ids::Int32.id(i)).collect();
    stack.rt.block_on(async { coll.delete_many(doc! {"_id": {"$in": more.clone()}}).await }).expect("delete");
    let target = ReconcileTarget {
        out: out.clone(),
        state_dir: args.state_dir.clone(),
        staging_dir: args.staging_dir(),
        dry_run: false,
        force: false,
    };
    let found = reconcile(&target, &coll, stack.rt.handle()).expect("reconcile");
    assert_eq!((found.missing, found.unreadable), (5, 0), "{found:?}");
    let v = visible();
    for id in &more {
        let key = canonical_id(&DocId::of(id).into_string()).into_owned();
        if v.counts.contains_key(&key) {
            let mut files = Vec::new();
            for e in std::fs::read_dir(&out).expect("out").flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "parquet") {
                    let ids = test_support::expect::file_ids(&p).unwrap_or_default();
                    if ids.contains(&key) {
                        files.push(p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
                    }
                }
            }
            let dels: Vec<String> = read_deletion_dir(&out)
                .unwrap_or_default()
                .into_iter()
                .filter(|d| d.id == key)
                .map(|d| format!("epoch {}", d.epoch))
                .collect();
            let cp = tweet_embed_operators::table::checkpoint::CheckpointStore::open(&args.state_dir)
                .and_then(|s| s.load())
                .ok()
                .flatten()
                .map(|c| (c.committed(), c.marked(), c.deletions_recorded(), c.deletions_done()));
            panic!("{id} still in --out: in files {files:?}, deletions {dels:?}, checkpoint {cp:?}, found {found:?}");
        }
    }
    // Everything else: every eligible tweet left once.
    assert_eq!(v.vectors.len() + v.rejects.len(), 200 - 15, "{} rows, {} rejections", v.vectors.len(), v.rejects.len());
}
