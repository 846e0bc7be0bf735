//! The exactly-once check: output rows read back from Parquet against the seeded documents and
//! their marks in Mongo. Every eligible document comes out exactly once, with its own text's
//! vector and marked `true`, or as a reject with a reason and marked `false`; nothing else is
//! written or marked.

use arrow::array::AsArray;
use arrow::datatypes::Float32Type;
use dev_tei::embedding_for;
use mongodb::bson::serde_helpers::Utf8LossyDeserialization;
use mongodb::bson::{doc, Bson, Document};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use tweet_embed_operators::table::output::{canonical_id, IdColumn, IdType};

use crate::seed::Seeded;
use crate::synth::{kind_of, Kind};
use crate::Stack;

/// Everything written: vectors by id, occurrences by id, reject reasons by id. Ids are in the
/// engine's form (`document_id::DocId`), as read back from a file: an Int32 `_id` as Int64
/// (compare through `output::canonical_id`).
pub struct Output {
    pub vectors: HashMap<String, Vec<f32>>,
    pub counts: BTreeMap<String, usize>,
    pub rejects: HashMap<String, String>,
}

/// Reads every committed row back as the dataset means it: the output directory `out` and the
/// staging directories of the tests' layout (`<out>/_staging`, and `<out>/../state/staging`
/// beside it), where committed epochs wait for compaction, less the rows that the deletions
/// recorded in `out/_deletions/` remove (as a reader's anti-join would).
pub fn read_rows(out: &Path) -> Output {
    let mut dirs = vec![out.to_path_buf(), out.join(tweet_embed_operators::table::output::STAGING_DIR)];
    if let Some(parent) = out.parent() {
        dirs.push(parent.join("state").join("staging"));
    }
    let deleted = tweet_embed_operators::table::output::DeletionSet::load(out).expect("read _deletions/");
    read_dirs(&dirs, &deleted)
}

/// Reads the rows a reader of the dataset sees: the files in `out` and `out/_rejects` only,
/// nothing removed.
pub fn read_visible(out: &Path) -> Output {
    read_dirs(&[out.to_path_buf()], &Default::default())
}

fn read_dirs(roots: &[std::path::PathBuf], deleted: &tweet_embed_operators::table::output::DeletionSet) -> Output {
    let mut vectors = HashMap::new();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut rejects = HashMap::new();
    let dirs = roots
        .iter()
        .flat_map(|r| [(r.clone(), false), (r.join(tweet_embed_operators::table::output::REJECTS_DIR), true)]);
    for (dir, is_rejects) in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().and_then(|x| x.to_str()) != Some("parquet") {
                continue;
            }
            let file = std::fs::File::open(&p).expect("open");
            let builder = ParquetRecordBatchReaderBuilder::try_new(file).expect("parquet");
            let kv = builder.metadata().file_metadata().key_value_metadata();
            let id_type = IdType::of_file(kv, builder.schema()).expect("id type");
            let reader = builder.build().expect("reader");
            for batch in reader {
                let batch = batch.expect("batch");
                // Ids in the engine's form, whatever the column's type (an Int32 `_id` as Int64).
                let column = IdColumn::new(&batch, id_type).expect("id column");
                let ids: Vec<String> = (0..batch.num_rows())
                    .map(|i| column.get(i).unwrap_or_else(|| panic!("{p:?}: a null id")))
                    .collect();
                let epochs = batch
                    .column_by_name("epoch")
                    .expect("epoch")
                    .as_primitive::<arrow::datatypes::UInt64Type>()
                    .clone();
                let gone = |i: usize| deleted.deletes(&ids[i], Some(epochs.value(i)));
                if is_rejects {
                    let reasons = batch.column_by_name("reason").expect("reason").as_string::<i32>().clone();
                    for i in (0..batch.num_rows()).filter(|i| !gone(*i)) {
                        *counts.entry(ids[i].clone()).or_default() += 1;
                        rejects.insert(ids[i].clone(), reasons.value(i).to_string());
                    }
                } else {
                    let emb = batch.column_by_name("embedding").expect("embedding").as_fixed_size_list().clone();
                    for i in (0..batch.num_rows()).filter(|i| !gone(*i)) {
                        let v = emb.value(i);
                        let v: Vec<f32> = v.as_primitive::<Float32Type>().values().to_vec();
                        *counts.entry(ids[i].clone()).or_default() += 1;
                        vectors.insert(ids[i].clone(), v);
                    }
                }
            }
        }
    }
    Output { vectors, counts, rejects }
}

/// Every id of the Parquet file at `path` in the engine's form, whatever the id column's type
/// (an Int32 `_id` as Int64, a stray from `stray_id`); an error for a file that cannot be read
/// (one a run just removed, say).
pub fn file_ids(path: &Path) -> Result<Vec<String>, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| e.to_string())?;
    let id_type = IdType::of_file(builder.metadata().file_metadata().key_value_metadata(), builder.schema())?;
    let mut ids = Vec::new();
    for batch in builder.build().map_err(|e| e.to_string())? {
        let batch = batch.map_err(|e| e.to_string())?;
        let column = IdColumn::new(&batch, id_type)?;
        ids.extend((0..batch.num_rows()).filter_map(|i| column.get(i)));
    }
    Ok(ids)
}

/// The exactly-once check of the output in `out` against the in-process dev-mongo.
pub fn check_run(stack: &Stack, seeded: &Seeded, out: &Path) {
    check_run_in(stack, stack.coll(), seeded, out)
}

/// The exactly-once check of the output in `out` against the collection `coll`.
pub fn check_run_in(stack: &Stack, coll: mongodb::Collection<Document>, seeded: &Seeded, out: &Path) {
    check_run_after_deletes(stack, coll, seeded, out, 0)
}

/// [`check_run_in`] after a test deleted `deleted` of the seeded documents.
pub fn check_run_after_deletes(
    stack: &Stack,
    coll: mongodb::Collection<Document>,
    seeded: &Seeded,
    out: &Path,
    deleted: u64,
) {
    let Output { vectors, counts, rejects } = read_rows(out);
    let repeated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(repeated.is_empty(), "ids written more than once: {repeated:?}");
    let docs: Vec<Document> = stack.rt.block_on(async {
        let mut c = coll.find(doc! {}).await.expect("find");
        let mut v = Vec::new();
        while c.advance().await.expect("advance") {
            // Lossily: a test may have stored strings that are not UTF-8.
            let lossy = mongodb::bson::from_slice::<Utf8LossyDeserialization<Document>>(c.current().as_bytes());
            v.push(lossy.expect("doc").0);
        }
        v
    });
    let mut expected_rows = 0;
    let mut expected_rejects = 0;
    let mut synthetic = 0;
    for d in &docs {
        // Documents a test added besides the synthetic ones are checked by that test.
        let Ok(oid) = d.get_object_id("_id") else {
            let id = tweet_embed_operators::mongo::document_id::DocId::of(d.get("_id").expect("_id")).into_string();
            let id = canonical_id(&id).into_owned();
            if rejects.contains_key(&id) {
                expected_rejects += 1;
            }
            if vectors.contains_key(&id) {
                expected_rows += 1;
            }
            continue;
        };
        synthetic += 1;
        let id = oid.to_hex();
        let i = u32::from_be_bytes(oid.bytes()[8..12].try_into().expect("4 bytes")) as u64;
        let mark = d.get("gemma_embedded_768");
        match kind_of(i, seeded.seed) {
            Kind::Good => {
                expected_rows += 1;
                let v = vectors.get(&id).unwrap_or_else(|| panic!("no row for {id}"));
                let text = d.get_str("text").expect("text");
                assert_eq!(v, &embedding_for(text, 768), "vector of {id}");
                assert_eq!(mark, Some(&Bson::Boolean(true)), "mark of {id}");
            }
            Kind::Bad => {
                expected_rejects += 1;
                let reason = rejects.get(&id).unwrap_or_else(|| panic!("no reject for {id}"));
                assert!(!reason.is_empty());
                assert_eq!(mark, Some(&Bson::Boolean(false)), "mark of rejected {id}");
                assert_eq!(d.get_str("gemma_embedded_768_error").ok(), Some(reason.as_str()));
            }
            Kind::Retweet => {
                assert!(!counts.contains_key(&id), "retweet {id} written");
                assert_eq!(mark, None, "retweet {id} marked");
            }
            Kind::Marked => {
                assert!(!counts.contains_key(&id), "already-marked {id} written");
            }
        }
    }
    assert_eq!(synthetic, seeded.n - deleted);
    assert_eq!(vectors.len(), expected_rows);
    assert_eq!(rejects.len(), expected_rejects);
}

/// pyarrow, a reader nobody here wrote, checks the output in `out`: schema, row counts, unique
/// ids (`tests/py/check_parquet.py`, run with `$TWEET_EMBED_PYTHON`, else `python3`), for
/// 768-dimension vectors of any model.
pub fn pyarrow_check(out: &Path, rows: u64, rejects: u64) {
    pyarrow_check_as(out, rows, rejects, 768, None);
}

/// [`pyarrow_check`] of `dim`-dimension vectors, and, given `model`, of rows of that model only;
/// returns the script's `ok …` line (it panics with the script's output unless the check
/// passed).
pub fn pyarrow_check_as(out: &Path, rows: u64, rejects: u64, dim: usize, model: Option<&str>) -> String {
    let py = python_with("pyarrow");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/py/check_parquet.py");
    let mut cmd = std::process::Command::new(&py);
    cmd.arg(script).arg(out).args([
        "--rows",
        &rows.to_string(),
        "--dim",
        &dim.to_string(),
        "--rejects",
        &rejects.to_string(),
    ]);
    if let Some(model) = model {
        cmd.args(["--model", model]);
    }
    let o = cmd.output().expect("run python");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "pyarrow check failed:\n{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.starts_with("ok"), "{stdout}");
    stdout.trim_end().to_string()
}

/// The Python interpreter the tests use (`$TWEET_EMBED_PYTHON`, else `python3`), once it has shown
/// it can import `module`; a panic saying how to install it otherwise.
pub fn python_with(module: &str) -> String {
    let py = std::env::var("TWEET_EMBED_PYTHON").unwrap_or_else(|_| "python3".to_string());
    match std::process::Command::new(&py).args(["-c", &format!("import {module}")]).output() {
        Ok(o) if o.status.success() => py,
        _ => panic!("{py} cannot import {module}: run `.ci/run` (it installs it) or `pip install {module}`"),
    }
}

/// pyarrow, DuckDB and polars reading `out` as a dataset over and over while a run writes it
/// (`tests/py/poll_dataset.py`): [`DatasetPoller::finish`] says whether any read failed or saw
/// an id twice.
pub struct DatasetPoller {
    child: std::process::Child,
    stop_file: std::path::PathBuf,
}

impl DatasetPoller {
    /// Starts polling `out`; its stop file goes in `scratch`.
    pub fn start(out: &Path, scratch: &Path) -> DatasetPoller {
        let py = python_with("duckdb, polars, pyarrow");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/py/poll_dataset.py");
        let stop_file = scratch.join("poll-stop");
        let child = std::process::Command::new(&py)
            .arg(script)
            .arg(out)
            .arg(&stop_file)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start the dataset poller");
        DatasetPoller { child, stop_file }
    }

    /// Stops after one more round; panics with its findings if any read failed or saw a
    /// duplicate id. Returns its summary line.
    pub fn finish(self) -> String {
        std::fs::write(&self.stop_file, b"stop").expect("stop file");
        let o = self.child.wait_with_output().expect("poller");
        let stdout = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(
            o.status.success(),
            "a reader failed or saw a duplicate:\n{stdout}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        stdout.lines().last().unwrap_or_default().to_string()
    }
}
