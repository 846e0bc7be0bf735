//! `tweet-embed consolidate` end to end, through the binary: 5,000 small Parquet files — our
//! schema, and two shapes of the old Python scripts' shards (`_id` + `vector` list<double> +
//! an extra `text` column; `tweet_id` int64 + `embedding` list<float>), in nested directories,
//! with a `_rejects/` directory to skip and duplicate ids across and within files — merged into
//! a few large files. pyarrow (`tests/py/check_consolidate.py`) then reads inputs and outputs on
//! its own and checks the row multiset (plain, `--sort-by id`), and one row per id, the last one
//! read, in id order (`--dedup-by id`). Bad inputs (a corrupt file, a mismatched dimension in a
//! footer and in a later row) fail with the path, leave nothing in `--output` and the inputs as
//! they were; `--delete-inputs` deletes only after success. Deletions recorded under
//! `_deletions/` (written with the engine's `write_deletions`) drop exactly the rows the rule
//! says — a row of an epoch at most the deletion's, any row of a file without epochs — and
//! `--no-deletions` keeps them all.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, OnceLock};

use arrow::array::{
    ArrayRef, DictionaryArray, FixedSizeListArray, Float32Array, Float64Array, Int64Array, ListArray, RecordBatch,
    StringArray, TimestampMillisecondArray, UInt32Array, UInt64Array,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Int32Type, Schema};
use parquet::arrow::ArrowWriter;
use tweet_embed_operators::table::output::schema::{embedding_item, rows_schema, rows_schema_for, UTC};
use tweet_embed_operators::table::output::{write_deletions, Deletion, IdType, DELETIONS_DIR, ID_TYPE_KEY};

const BIN: &str = env!("CARGO_BIN_EXE_tweet-embed");
const DIM: usize = 16;
const FILES: usize = 5_000;

/// A vector no float rounding reproduces by accident; distinct per (file, row).
fn vector(file: usize, row: usize) -> Vec<f64> {
    (0..DIM).map(|d| ((file * 31 + row * 7 + d * 13) % 1000) as f64 / 997.0 - 0.5).collect()
}

fn write(path: &Path, batch: &RecordBatch) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut w = ArrowWriter::try_new(std::fs::File::create(path).unwrap(), batch.schema(), None).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
}

/// Our own file: DESIGN.md's schema, ids from a pool of 24-hex ids that the old `_id` shards share.
fn ours(file: usize, rows: usize) -> RecordBatch {
    let ids: Vec<String> = (0..rows).map(|r| format!("{:024x}", (file * 5 + r * 3) % 9000)).collect();
    let values: Vec<f32> = (0..rows).flat_map(|r| vector(file, r)).map(|v| v as f32).collect();
    let emb = FixedSizeListArray::try_new(embedding_item(), DIM as i32, Arc::new(Float32Array::from(values)), None);
    let dict = |v: Vec<Option<&str>>| -> ArrayRef { Arc::new(v.into_iter().collect::<DictionaryArray<Int32Type>>()) };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(ids)),
        Arc::new(emb.unwrap()),
        dict(vec![Some("google/embeddinggemma-300m"); rows]),
        Arc::new(UInt64Array::from_iter_values((0..rows).map(|r| (file * 1000 + r) as u64 * 0x9e37_79b9))),
        Arc::new(UInt32Array::from_iter_values((0..rows).map(|r| r as u32 + 1))),
        dict((0..rows).map(|r| [None, Some("en"), Some("ja")][r % 3]).collect()),
        Arc::new(TimestampMillisecondArray::from(vec![Some(1_600_000_000_000); rows]).with_timezone(UTC)),
        dict(vec![Some("backfill"); rows]),
        Arc::new(UInt64Array::from(vec![file as u64; rows])),
    ];
    RecordBatch::try_new(rows_schema(DIM as i32), columns).unwrap()
}

fn list<T: arrow::array::Array + 'static>(values: T, rows: usize, lens: impl Fn(usize) -> usize) -> ListArray {
    let item = Arc::new(Field::new("item", values.data_type().clone(), true));
    let offsets = OffsetBuffer::from_lengths((0..rows).map(lens));
    ListArray::new(item, offsets, Arc::new(values), None)
}

/// An old-script shard: `_id` string, `vector` list<double>, `lang` and `text` strings.
fn old_hex(file: usize, rows: usize, lens: impl Fn(usize) -> usize) -> RecordBatch {
    let ids: Vec<String> = (0..rows).map(|r| format!("{:024x}", (file * 7 + r) % 9000)).collect();
    let values: Vec<f64> = (0..rows).flat_map(|r| vector(file, r).into_iter().take(lens(r))).collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(ids)),
        Arc::new(list(Float64Array::from(values), rows, lens)),
        Arc::new(StringArray::from((0..rows).map(|r| ["es", "en"][r % 2]).collect::<Vec<_>>())),
        Arc::new(StringArray::from((0..rows).map(|r| format!("tweet {file} {r}")).collect::<Vec<_>>())),
    ];
    let schema = Schema::new(vec![
        Field::new("_id", DataType::Utf8, false),
        Field::new("vector", columns[1].data_type().clone(), true),
        Field::new("lang", DataType::Utf8, true),
        Field::new("text", DataType::Utf8, true),
    ]);
    RecordBatch::try_new(Arc::new(schema), columns).unwrap()
}

/// Another old shard: `tweet_id` int64 (ids 0..2500, so duplicates), `embedding` list<float>.
fn old_int(file: usize, rows: usize) -> RecordBatch {
    let values: Vec<f32> = (0..rows).flat_map(|r| vector(file, r)).map(|v| v as f32).collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values((0..rows).map(|r| ((file * 3 + r) % 2500) as i64))),
        Arc::new(list(Float32Array::from(values), rows, |_| DIM)),
    ];
    let schema = Schema::new(vec![
        Field::new("tweet_id", DataType::Int64, true),
        Field::new("embedding", columns[1].data_type().clone(), true),
    ]);
    RecordBatch::try_new(Arc::new(schema), columns).unwrap()
}

/// Writes `files` small files under `dir` (half ours, the rest old shards in subdirectories),
/// plus a `_rejects/` file that must be skipped; returns the number of rows.
fn generate(dir: &Path, files: usize) -> usize {
    let mut rows = 0;
    for f in 0..files {
        let n = f % 7; // 0..6 rows, so some files are empty
        rows += n;
        let (path, batch) = match f % 4 {
            0 | 1 => (dir.join(format!("part-{f:05}.parquet")), ours(f, n)),
            2 => (dir.join(format!("old/shard_{:03}/emb_{f:05}.parquet", f / 400)), old_hex(f, n, |_| DIM)),
            _ => (dir.join(format!("old-int/emb_{f:05}.parquet")), old_int(f, n)),
        };
        write(&path, &batch);
    }
    let rejects = RecordBatch::try_from_iter([("id", Arc::new(StringArray::from(vec!["x"])) as ArrayRef)]).unwrap();
    write(&dir.join("_rejects/part-0.parquet"), &rejects);
    rows
}

/// The shared input of the 5,000-file tests (read-only: no test deletes from it).
fn shared_input() -> &'static Path {
    static INPUT: OnceLock<(tempfile::TempDir, usize)> = OnceLock::new();
    let (dir, _) = INPUT.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let rows = generate(dir.path(), FILES);
        (dir, rows)
    });
    dir.path()
}

fn consolidate(input: &Path, output: &Path, extra: &[&str]) -> Output {
    Command::new(BIN)
        .args(["consolidate", "--log", "warn", "--input"])
        .arg(input)
        .arg("--output")
        .arg(output)
        .args(extra)
        .output()
        .expect("run tweet-embed")
}

fn succeed(out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "consolidate failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.lines().count(), 1, "one summary line: {stdout}");
    stdout
}

/// Runs check_consolidate.py; fails with install instructions when pyarrow is missing.
fn pyarrow_check(input: &Path, output: &Path, mode: &str, files: (usize, usize)) {
    let py = test_support::expect::python_with("pyarrow");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/check_consolidate.py");
    let out = Command::new(&py)
        .arg(script)
        .arg(input)
        .arg(output)
        .args(["--mode", mode, "--dim", &DIM.to_string()])
        .args(["--min-files", &files.0.to_string(), "--max-files", &files.1.to_string()])
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "pyarrow check failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.starts_with("ok"), "{stdout}");
    println!("{stdout}");
}

#[test]
fn five_thousand_files_become_a_few_with_the_same_rows() {
    let input = shared_input();
    let out = tempfile::tempdir().unwrap();
    let summary = succeed(consolidate(input, out.path(), &["--target-size", "256KiB", "--row-group-rows", "2000"]));
    assert!(summary.starts_with(&format!("consolidated {FILES} files")), "{summary}");
    pyarrow_check(input, out.path(), "plain", (2, 12));
}

#[test]
fn sort_orders_ids_and_dedup_keeps_the_last_row_of_each() {
    let input = shared_input();
    // A 64 KiB sort buffer makes over a hundred runs: more than one merge pass.
    let sorted = tempfile::tempdir().unwrap();
    succeed(consolidate(input, sorted.path(), &["--sort-by", "id", "--sort-buffer", "64KiB"]));
    pyarrow_check(input, sorted.path(), "sort", (1, 1));
    let dedup = tempfile::tempdir().unwrap();
    let args = ["--dedup-by", "id", "--sort-buffer", "64KiB", "--target-size", "32KiB", "--row-group-rows", "1000"];
    let summary = succeed(consolidate(input, dedup.path(), &args));
    assert!(summary.contains("duplicate rows dropped"), "{summary}");
    pyarrow_check(input, dedup.path(), "dedup", (2, 20));
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// Runs consolidate on `input` (expecting failure), and checks the error names `culprit` and
/// says `what`, and that `--output` holds nothing and the inputs are byte for byte as before.
fn fails_cleanly(input: &Path, culprit: &Path, what: &str) {
    let before = snapshot(input);
    let out = tempfile::tempdir().unwrap();
    let output = out.path().join("merged");
    let result = consolidate(input, &output, &["--target-size", "1KiB", "--delete-inputs"]);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success(), "consolidate should fail: {stderr}");
    let line = stderr.lines().last().unwrap_or_default();
    assert!(line.starts_with("tweet-embed: ") && line.contains(&culprit.display().to_string()), "{stderr}");
    assert!(line.contains(what), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(&output).map(|d| d.map(|e| e.unwrap().path()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "left in --output: {left:?}");
    assert!(snapshot(input) == before, "inputs changed");
}

#[test]
fn bad_inputs_fail_with_the_path_and_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path();
    generate(input, 200);

    let corrupt = input.join("part-00100.parquet");
    let mut bytes = std::fs::read(&corrupt).unwrap();
    bytes.truncate(bytes.len() - 9); // no footer
    std::fs::write(&corrupt, &bytes).unwrap();
    fails_cleanly(input, &corrupt, "not a readable Parquet file");
    std::fs::write(&corrupt, b"not parquet at all").unwrap();
    fails_cleanly(input, &corrupt, "not a readable Parquet file");
    write(&corrupt, &ours(100, 3));

    // Another dimension in a footer: caught before anything is written.
    let wide = input.join("part-00999.parquet");
    let schema = Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("embedding", DataType::FixedSizeList(embedding_item(), 8), false),
    ]);
    let emb = FixedSizeListArray::try_new(embedding_item(), 8, Arc::new(Float32Array::from(vec![0.5f32; 8])), None);
    let cols: Vec<ArrayRef> = vec![Arc::new(StringArray::from(vec!["a"])), Arc::new(emb.unwrap())];
    write(&wide, &RecordBatch::try_new(Arc::new(schema), cols).unwrap());
    fails_cleanly(input, &wide, "vectors have 8 dimensions");
    std::fs::remove_file(&wide).unwrap();

    // A short vector in a later row of the last file: caught while streaming, after parts were
    // written (1 KiB target), which must all go.
    let ragged = input.join("zz-last.parquet");
    write(&ragged, &old_hex(7, 5, |r| if r == 3 { DIM - 1 } else { DIM }));
    fails_cleanly(input, &ragged, "row 3: the vector has 15 values, expected 16");
}

#[test]
fn delete_inputs_deletes_only_after_success() {
    let dir = tempfile::tempdir().unwrap();
    let (input, reference) = (dir.path().join("in"), dir.path().join("reference"));
    generate(&input, 120);
    generate(&reference, 120);
    let bad = input.join("part-00048.parquet");
    std::fs::write(&bad, b"PAR1 broken").unwrap();
    fails_cleanly(&input, &bad, "not a readable Parquet file");
    write(&bad, &ours(48, 48 % 7));

    let out = dir.path().join("out");
    let summary = succeed(consolidate(&input, &out, &["--delete-inputs"]));
    assert!(summary.contains("120 input files deleted"), "{summary}");
    let left: Vec<_> = snapshot(&input).into_iter().map(|(p, _)| p).collect();
    assert_eq!(left, [input.join("_rejects/part-0.parquet")], "only the skipped _rejects file stays");
    pyarrow_check(&reference, &out, "plain", (1, 1));
}

/// Our own file's rows with these `ids`, all of `epoch`.
fn ours_with(ids: &[&str], epoch: u64) -> RecordBatch {
    let base = ours(0, ids.len());
    let mut columns = base.columns().to_vec();
    columns[0] = Arc::new(StringArray::from(ids.to_vec()));
    columns[8] = Arc::new(UInt64Array::from(vec![epoch; ids.len()]));
    RecordBatch::try_new(base.schema(), columns).unwrap()
}

/// Writes a deletion file `name` under `dir/_deletions/` with the engine's writer.
fn record_deletions(dir: &Path, name: &str, deletions: &[(&str, u64)]) {
    record_typed_deletions(dir, name, IdType::ExtJson, deletions);
}

/// Writes a deletion file of a dataset of `id_type` (ids in the engine's form).
fn record_typed_deletions(dir: &Path, name: &str, id_type: IdType, deletions: &[(&str, u64)]) {
    let d = dir.join(DELETIONS_DIR);
    std::fs::create_dir_all(&d).unwrap();
    let deletions: Vec<Deletion> = deletions
        .iter()
        .map(|(id, epoch)| Deletion { id: id.to_string(), epoch: *epoch, cluster_time_ms: Some(1_700_000_000_000) })
        .collect();
    write_deletions(&d.join(name), &deletions, id_type, &[]).unwrap();
}

/// Our own file of a dataset of `id_type` whose `id` column is `ids`, all of `epoch`, with the
/// id type in its metadata as the engine writes it.
fn write_typed(path: &Path, id_type: IdType, ids: ArrayRef, epoch: u64) {
    let base = ours(0, ids.len());
    let mut columns = base.columns().to_vec();
    columns[0] = ids;
    columns[8] = Arc::new(UInt64Array::from(vec![epoch; base.num_rows()]));
    let batch = RecordBatch::try_new(rows_schema_for(DIM as i32, id_type), columns).unwrap();
    let kv = parquet::file::metadata::KeyValue::new(ID_TYPE_KEY.into(), id_type.to_string());
    let props = parquet::file::properties::WriterProperties::builder().set_key_value_metadata(Some(vec![kv])).build();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut w = ArrowWriter::try_new(std::fs::File::create(path).unwrap(), batch.schema(), Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// The `id` column of the consolidated files in `dir`, in file and row order, as text, with
/// its type and the id type the files record.
fn output_ids(dir: &Path) -> (Vec<String>, DataType, Option<String>) {
    use arrow::array::AsArray;
    let (mut ids, mut ty, mut recorded) = (Vec::new(), DataType::Null, None);
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.retain(|p| p.file_name().unwrap().to_string_lossy().starts_with("consolidated-"));
    files.sort();
    for path in files {
        let file = std::fs::File::open(&path).unwrap();
        let b = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        let kv = b.metadata().file_metadata().key_value_metadata().cloned().unwrap_or_default();
        recorded = kv.into_iter().find(|kv| kv.key == ID_TYPE_KEY).and_then(|kv| kv.value);
        for batch in b.build().unwrap() {
            let col = batch.unwrap().column(0).clone();
            ty = col.data_type().clone();
            match col.as_primitive_opt::<arrow::datatypes::Int64Type>() {
                Some(ints) => ids.extend(ints.values().iter().map(|n| n.to_string())),
                None => ids.extend(col.as_string::<i32>().iter().flatten().map(str::to_string)),
            }
        }
    }
    (ids, ty, recorded)
}

#[test]
fn int64_and_string_datasets_keep_their_ids_and_lose_their_deleted_rows() {
    let dir = tempfile::tempdir().unwrap();
    // An int64 dataset: ids stay Int64 and sort by value (byte order would put 10 before 9); a
    // deletion names a row as the engine does, {"$numberLong":"9"}.
    let input = dir.path().join("int64");
    write_typed(&input.join("part-e1.parquet"), IdType::Int64, Arc::new(Int64Array::from(vec![100, 9, 10])), 1);
    write_typed(&input.join("part-e2.parquet"), IdType::Int64, Arc::new(Int64Array::from(vec![5, 1000])), 2);
    let long = |n: i64| format!(r#"{{"$numberLong":"{n}"}}"#);
    // 1000's row is of epoch 2, after its deletion's: a re-insert, it stays.
    record_typed_deletions(&input, "d.parquet", IdType::Int64, &[(&long(9), 1), (&long(1000), 1)]);
    let out = dir.path().join("int64-out");
    let summary = succeed(consolidate(&input, &out, &["--sort-by", "id"]));
    assert!(summary.contains("; 1 deleted rows dropped"), "{summary}");
    let want: Vec<String> = ["5", "10", "100", "1000"].map(String::from).to_vec();
    assert_eq!(output_ids(&out), (want, DataType::Int64, Some("int64".to_string())));

    // A string dataset: the strings as stored; a deletion names `c` as the JSON string "c".
    let input = dir.path().join("string");
    let strings = Arc::new(StringArray::from(vec!["b", "a \"q\"", "c"]));
    write_typed(&input.join("part-e1.parquet"), IdType::String, strings, 1);
    record_typed_deletions(&input, "d.parquet", IdType::String, &[(r#""c""#, 1), (r#""a \"q\"""#, 1)]);
    let out = dir.path().join("string-out");
    let summary = succeed(consolidate(&input, &out, &["--sort-by", "id"]));
    assert!(summary.contains("; 2 deleted rows dropped"), "{summary}");
    assert_eq!(output_ids(&out), (vec!["b".to_string()], DataType::Utf8, Some("string".to_string())));
}

/// `(id, epoch)` of every row of the `consolidated-*.parquet` files directly in `dir`, sorted;
/// `None` for a null epoch or no epoch column.
fn output_rows(dir: &Path) -> Vec<(String, Option<u64>)> {
    use arrow::array::{Array, AsArray};
    let mut rows = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !(name.starts_with("consolidated-") && name.ends_with(".parquet")) {
            continue;
        }
        let file = std::fs::File::open(&path).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build();
        for batch in reader.unwrap() {
            let batch = batch.unwrap();
            let ids = batch.column_by_name("id").unwrap().as_string::<i32>().clone();
            let epochs =
                batch.column_by_name("epoch").map(|c| c.as_primitive::<arrow::datatypes::UInt64Type>().clone());
            for i in 0..batch.num_rows() {
                let epoch = epochs.as_ref().and_then(|e| e.is_valid(i).then(|| e.value(i)));
                rows.push((ids.value(i).to_string(), epoch));
            }
        }
    }
    rows.sort();
    rows
}

fn expect_rows(rows: &[(&str, Option<u64>)]) -> Vec<(String, Option<u64>)> {
    let mut rows: Vec<_> = rows.iter().map(|(id, e)| (id.to_string(), *e)).collect();
    rows.sort();
    rows
}

/// The ids pyarrow reads from `dir` as one dataset (`_`-prefixed folders skipped), sorted.
fn pyarrow_dataset_ids(dir: &Path) -> Vec<String> {
    let py = test_support::expect::python_with("pyarrow");
    let code = "import sys, pyarrow.parquet as pq\nfor i in sorted(pq.read_table(sys.argv[1], columns=['id']).column('id').to_pylist()): print(i)";
    let out = Command::new(&py).args(["-c", code]).arg(dir).output().expect("run python");
    assert!(out.status.success(), "pyarrow failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

/// Our files of three epochs and deletions at, above and below the rows' epochs.
fn epochs_and_deletions(input: &Path) {
    write(&input.join("part-e1.parquet"), &ours_with(&["a1", "a2", "a3", "a4"], 1));
    write(&input.join("part-e5.parquet"), &ours_with(&["b1", "b2", "a2", "c1"], 5));
    write(&input.join("part-e9.parquet"), &ours_with(&["c1", "a3"], 9));
    let rejects = RecordBatch::try_from_iter([("id", Arc::new(StringArray::from(vec!["a4"])) as ArrayRef)]).unwrap();
    write(&input.join("_rejects/part-0.parquet"), &rejects);
    // a1 at its row's epoch; a2 after both of its rows; a3 between its rows (a3 of epoch 9 is a
    // re-insert after the delete); b1 after its row; b2 first below its row, then (another file)
    // above; an id no file has.
    record_deletions(input, "d-0001.parquet", &[("a1", 1), ("a2", 5), ("a3", 4), ("b2", 2), ("zz", 3)]);
    record_deletions(input, "d-0002.parquet", &[("b1", 7), ("b2", 6)]);
    // A file being copied in: hidden, never read.
    std::fs::write(input.join(DELETIONS_DIR).join(".d-0003.parquet.partial"), b"half").unwrap();
}

#[test]
fn recorded_deletions_drop_the_rows_up_to_their_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    epochs_and_deletions(&input);
    let deletions_before = snapshot(&input.join(DELETIONS_DIR));

    let out = dir.path().join("out");
    let summary = succeed(consolidate(&input, &out, &[]));
    assert!(summary.starts_with("consolidated 3 files (10 rows,"), "{summary}");
    assert!(summary.contains("into 1 files (4 rows,"), "{summary}");
    assert!(summary.contains("; 6 deleted rows dropped (recorded in _deletions/)"), "{summary}");
    let kept = [("a4", Some(1)), ("c1", Some(5)), ("c1", Some(9)), ("a3", Some(9))];
    assert_eq!(output_rows(&out), expect_rows(&kept));

    // Dedup after the deletions: rows in = rows out + duplicates + deleted rows.
    let dedup = dir.path().join("dedup");
    let summary = succeed(consolidate(&input, &dedup, &["--dedup-by", "id"]));
    assert!(summary.contains("(3 rows,") && summary.contains("; 1 duplicate rows dropped"), "{summary}");
    assert!(summary.contains("; 6 deleted rows dropped"), "{summary}");
    assert_eq!(output_rows(&dedup), expect_rows(&[("a4", Some(1)), ("c1", Some(9)), ("a3", Some(9))]));

    // `--no-deletions` keeps every row.
    let all = dir.path().join("all");
    let summary = succeed(consolidate(&input, &all, &["--no-deletions"]));
    assert!(summary.contains("into 1 files (10 rows,"), "{summary}");
    assert!(summary.contains("; _deletions/ not applied (--no-deletions)"), "{summary}");
    assert!(!summary.contains("deleted rows dropped"), "{summary}");
    let every = [
        ("a1", Some(1)),
        ("a2", Some(1)),
        ("a3", Some(1)),
        ("a4", Some(1)),
        ("b1", Some(5)),
        ("b2", Some(5)),
        ("a2", Some(5)),
        ("c1", Some(5)),
        ("c1", Some(9)),
        ("a3", Some(9)),
    ];
    assert_eq!(output_rows(&all), expect_rows(&every));

    // In place with `--delete-inputs`: the rows files go, `_deletions/` stays byte for byte, and
    // pyarrow reading the folder as a dataset sees only the kept rows.
    let summary = succeed(consolidate(&input, &input, &["--delete-inputs"]));
    assert!(summary.contains("; 6 deleted rows dropped") && summary.contains("; 3 input files deleted"), "{summary}");
    assert!(snapshot(&input.join(DELETIONS_DIR)) == deletions_before, "_deletions/ changed");
    assert_eq!(output_rows(&input), expect_rows(&kept));
    assert_eq!(pyarrow_dataset_ids(&input), ["a3", "a4", "c1", "c1"]);

    // Applying the same deletions again drops nothing more: kept rows keep their epochs.
    let again = dir.path().join("again");
    let summary = succeed(consolidate(&input, &again, &[]));
    assert!(summary.contains("(4 rows,") && summary.contains("; 0 deleted rows dropped"), "{summary}");
    assert_eq!(output_rows(&again), expect_rows(&kept));
}

#[test]
fn rows_without_an_epoch_lose_every_row_of_a_deleted_id() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    // An old `_id` shard (no epoch column) and an old `tweet_id` shard (ids "0", "1", "2").
    let shard = old_hex(0, 3, |_| DIM);
    let ids: ArrayRef = Arc::new(StringArray::from(vec!["x1", "x2", "x3"]));
    let shard = RecordBatch::try_new(shard.schema(), [vec![ids], shard.columns()[1..].to_vec()].concat()).unwrap();
    write(&input.join("old/emb_0.parquet"), &shard);
    write(&input.join("old/emb_1.parquet"), &old_int(0, 3));
    write(&input.join("part-e10.parquet"), &ours_with(&["x1", "y1"], 10));
    record_deletions(&input, "d.parquet", &[("x1", 3), ("x2", 0), ("1", 0)]);

    let out = dir.path().join("out");
    let summary = succeed(consolidate(&input, &out, &[]));
    assert!(summary.contains("(5 rows,") && summary.contains("; 3 deleted rows dropped"), "{summary}");
    // x1 of epoch 10 was written after the delete of epoch 3; the shards' x1, x2 and 1 have no
    // epoch to compare, so they go.
    let kept = [("x3", None), ("0", None), ("2", None), ("x1", Some(10)), ("y1", Some(10))];
    assert_eq!(output_rows(&out), expect_rows(&kept));

    let all = dir.path().join("all");
    let summary = succeed(consolidate(&input, &all, &["--no-deletions"]));
    assert!(summary.contains("(8 rows,"), "{summary}");
    assert_eq!(output_rows(&all).len(), 8);
}

#[test]
fn a_foreign_deletion_file_fails_with_its_path_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path();
    write(&input.join("part-e1.parquet"), &ours_with(&["a", "b"], 1));
    record_deletions(input, "d-0001.parquet", &[("a", 1)]);
    // A rows file dropped into `_deletions/` by mistake.
    let foreign = input.join(DELETIONS_DIR).join("d-0002.parquet");
    write(&foreign, &ours_with(&["b"], 1));
    fails_cleanly(input, &foreign, "no column cluster_time");
    std::fs::write(&foreign, b"PAR1 broken").unwrap();
    fails_cleanly(input, &foreign, "parquet");
}

/// Writes `batch` with `identity` as its `tweet_embed.identity` metadata.
fn write_with_identity(
    path: &Path,
    batch: &RecordBatch,
    identity: &tweet_embed_operators::table::identity::DatasetIdentity,
) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let kv: Vec<parquet::file::metadata::KeyValue> =
        identity.key_values().into_iter().map(|(k, v)| parquet::file::metadata::KeyValue::new(k, v)).collect();
    let props = parquet::file::properties::WriterProperties::builder().set_key_value_metadata(Some(kv)).build();
    let mut w = ArrowWriter::try_new(std::fs::File::create(path).unwrap(), batch.schema(), Some(props)).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
}

#[test]
fn files_of_different_identities_are_refused_unless_grouped() {
    use tweet_embed_operators::table::identity::DatasetIdentity;
    use tweet_embed_operators::tei::EmbedOptions;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    let doc = EmbedOptions { prompt_name: Some("document".into()), ..EmbedOptions::default() };
    let a = DatasetIdentity::new("google/embeddinggemma-300m", Some("sha1"), DIM, &doc, "text", "mark");
    let b =
        DatasetIdentity::new("google/embeddinggemma-300m", Some("sha1"), DIM, &EmbedOptions::default(), "text", "mark");
    for f in 0..4 {
        write_with_identity(&input.join(format!("part-{f}.parquet")), &ours(f, 10), if f < 2 { &a } else { &b });
    }
    let out = consolidate(&input, &dir.path().join("out"), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("2 dataset identities") && err.contains("--group-by-identity"), "{err}");
    assert!(err.contains("prompt document") && err.contains("prompt none"), "{err}");
    assert!(!dir.path().join("out").join("part-00000.parquet").exists());
    let line = succeed(consolidate(&input, &dir.path().join("out"), &["--group-by-identity"]));
    assert!(line.contains("one folder per dataset identity"), "{line}");
    // Two folders, each one identity's rows, each file saying which.
    let mut folders: Vec<PathBuf> =
        std::fs::read_dir(dir.path().join("out")).unwrap().flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
    folders.sort();
    assert_eq!(folders.len(), 2, "{folders:?}");
    for folder in &folders {
        let files: Vec<PathBuf> = std::fs::read_dir(folder)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
            .collect();
        assert_eq!(files.len(), 1);
        let reader = parquet::file::reader::SerializedFileReader::new(std::fs::File::open(&files[0]).unwrap()).unwrap();
        let meta = parquet::file::reader::FileReader::metadata(&reader).file_metadata().clone();
        assert_eq!(meta.num_rows(), 20);
        let ident = meta.key_value_metadata().unwrap().iter().find(|kv| kv.key == "tweet_embed.identity").cloned();
        let ident: DatasetIdentity = serde_json::from_str(&ident.unwrap().value.unwrap()).unwrap();
        assert!(ident == a || ident == b);
        let name = folder.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            name.starts_with(&format!("dim{DIM}-prompt-{}", ident.prompt_name.as_deref().unwrap_or("none"))),
            "{name}"
        );
    }
}

#[test]
fn an_output_beside_or_inside_its_inputs_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    write(&input.join("part-0.parquet"), &ours(0, 10));
    let out = consolidate(&input, &input, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("readers would see every row twice"), "{err}");
    let out = consolidate(&input, &input.join("sub"), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("is inside --input"), "{err}");
    assert_eq!(std::fs::read_dir(&input).unwrap().count(), 1, "nothing written");
    // In place with --delete-inputs: the inputs are replaced.
    succeed(consolidate(&input, &input, &["--delete-inputs"]));
}

#[test]
fn identities_of_different_widths_group_into_their_own_folders() {
    use arrow::array::AsArray;
    use tweet_embed_operators::table::identity::DatasetIdentity;
    use tweet_embed_operators::tei::EmbedOptions;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    let wide = DatasetIdentity::new("m", None, DIM, &EmbedOptions::default(), "text", "mark");
    let narrow_options = EmbedOptions { dimensions: Some(8), ..EmbedOptions::default() };
    let narrow = DatasetIdentity::new("m", None, 8, &narrow_options, "text", "mark");
    write_with_identity(&input.join("a.parquet"), &ours(0, 10), &wide);
    // The same rows cut to 8 dimensions.
    let batch = ours(1, 10);
    let emb = batch.column(1).as_fixed_size_list();
    let values: Vec<f32> = (0..10)
        .flat_map(|r| emb.value(r).as_primitive::<arrow::datatypes::Float32Type>().values()[..8].to_vec())
        .collect();
    let cut = FixedSizeListArray::try_new(embedding_item(), 8, Arc::new(Float32Array::from(values)), None).unwrap();
    let mut columns = batch.columns().to_vec();
    columns[1] = Arc::new(cut);
    let narrow_batch = RecordBatch::try_new(rows_schema(8), columns).unwrap();
    write_with_identity(&input.join("b.parquet"), &narrow_batch, &narrow);
    let out = consolidate(&input, &dir.path().join("out"), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("2 dataset identities"), "{err}");
    let line = succeed(consolidate(&input, &dir.path().join("out"), &["--group-by-identity"]));
    assert!(line.contains("consolidated 2 files (20 rows"), "{line}");
}

/// The key-value metadata of the one `consolidated-*.parquet` file in `dir`.
fn output_metadata(dir: &Path) -> Vec<(String, Option<String>)> {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("consolidated-"))
        .collect();
    assert_eq!(files.len(), 1, "one output file in {}: {files:?}", dir.display());
    let reader = parquet::file::reader::SerializedFileReader::new(std::fs::File::open(&files[0]).unwrap()).unwrap();
    let meta = parquet::file::reader::FileReader::metadata(&reader).file_metadata().clone();
    meta.key_value_metadata().cloned().unwrap_or_default().into_iter().map(|kv| (kv.key, kv.value)).collect()
}

fn identity_of(dir: &Path) -> Option<String> {
    output_metadata(dir).into_iter().find(|(k, _)| k == "tweet_embed.identity").and_then(|(_, v)| v)
}

/// The WARN lines of `stderr` that contain `needle`.
fn warnings<'a>(stderr: &'a str, needle: &str) -> Vec<&'a str> {
    stderr.lines().filter(|l| l.contains(" WARN ") && l.contains(needle)).collect()
}

#[test]
fn inputs_without_an_identity_are_written_without_one_said_once() {
    use tweet_embed_operators::table::identity::DatasetIdentity;
    use tweet_embed_operators::tei::EmbedOptions;
    let dir = tempfile::tempdir().unwrap();
    // Six old-script shards, none with an identity, each with a `text` column no output has.
    let old = dir.path().join("old");
    for f in 0..6 {
        write(&old.join(format!("emb_{f}.parquet")), &old_hex(f, 5, |_| DIM));
    }
    let out = dir.path().join("old-out");
    let result = consolidate(&old, &out, &[]);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(0), "{stderr}");
    assert_eq!(identity_of(&out), None, "an identity was invented: {:?}", output_metadata(&out));
    let said = warnings(&stderr, "record");
    assert_eq!(said.len(), 1, "the missing identity is said once:\n{stderr}");
    assert!(said[0].contains("none of the 6 input files records a dataset identity"), "{stderr}");
    assert!(said[0].contains("the output records none either"), "{stderr}");
    let dropped = warnings(&stderr, "columns dropped");
    assert_eq!(dropped.len(), 1, "the dropped column is said once, not per file or per scan:\n{stderr}");
    assert!(dropped[0].contains("text (Utf8) in 6 files"), "{stderr}");

    // Beside files of one identity: the merged output cannot say which model made the old
    // vectors, so it records none (the identity is not spread onto them), said once.
    let doc = EmbedOptions { prompt_name: Some("document".into()), ..EmbedOptions::default() };
    let gemma = DatasetIdentity::new("google/embeddinggemma-300m", Some("sha1"), DIM, &doc, "text", "mark");
    let mixed = dir.path().join("mixed");
    for f in 0..3 {
        write(&mixed.join(format!("old/emb_{f}.parquet")), &old_hex(f, 5, |_| DIM));
        write_with_identity(&mixed.join(format!("part-{f}.parquet")), &ours(f, 10), &gemma);
    }
    let out = dir.path().join("mixed-out");
    let result = consolidate(&mixed, &out, &[]);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(0), "{stderr}");
    assert_eq!(identity_of(&out), None, "an identity was stamped on files without one");
    let said = warnings(&stderr, "no dataset identity");
    assert_eq!(said.len(), 1, "{stderr}");
    assert!(said[0].contains("3 of 6 input files record no dataset identity"), "{stderr}");
    assert!(said[0].contains("--group-by-identity"), "{stderr}");

    // Grouped: the identity's files keep it, the others go to `no-identity` without one.
    let grouped = dir.path().join("grouped");
    let result = consolidate(&mixed, &grouped, &["--group-by-identity"]);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(0), "{stderr}");
    assert_eq!(identity_of(&grouped.join("no-identity")), None);
    let mut folders: Vec<PathBuf> =
        std::fs::read_dir(&grouped).unwrap().flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
    folders.sort();
    assert_eq!(folders.len(), 2, "{folders:?}");
    let named = folders.iter().find(|p| !p.ends_with("no-identity")).expect("the identity's folder");
    let recorded: DatasetIdentity = serde_json::from_str(&identity_of(named).expect("its identity")).unwrap();
    assert_eq!(recorded, gemma);
    let said = warnings(&stderr, "no dataset identity");
    assert_eq!(said.len(), 1, "{stderr}");
    assert!(said[0].contains("3 of 6") && said[0].contains("no-identity"), "{stderr}");

    // Files that all record the same identity keep it, with nothing to say.
    let ours_only = dir.path().join("ours");
    for f in 0..3 {
        write_with_identity(&ours_only.join(format!("part-{f}.parquet")), &ours(f, 10), &gemma);
    }
    let out = dir.path().join("ours-out");
    let result = consolidate(&ours_only, &out, &[]);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(0), "{stderr}");
    let recorded: DatasetIdentity = serde_json::from_str(&identity_of(&out).expect("the identity")).unwrap();
    assert_eq!(recorded, gemma);
    assert!(warnings(&stderr, "").is_empty(), "{stderr}");
}

#[test]
fn different_id_types_are_refused_and_a_changed_id_column_is_said_once() {
    let dir = tempfile::tempdir().unwrap();
    // Two of our datasets: one records int64 ids, the other string ids. The number 5 and the
    // string "5" cannot share one id column: refused, naming both files and their types.
    let input = dir.path().join("typed");
    let ints = input.join("a-int64.parquet");
    let strings = input.join("b-string.parquet");
    write_typed(&ints, IdType::Int64, Arc::new(Int64Array::from(vec![5, 6])), 1);
    write_typed(&strings, IdType::String, Arc::new(StringArray::from(vec!["5", "x"])), 1);
    fails_cleanly(&input, &ints, "records id type int64 (Int64 column)");
    let result = consolidate(&input, &dir.path().join("typed-out"), &[]);
    assert_eq!(result.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&result.stderr);
    let line = stderr.lines().last().unwrap_or_default();
    assert!(line.contains(&strings.display().to_string()) && line.contains("string (Utf8 column)"), "{stderr}");
    assert_eq!(stderr.lines().filter(|l| l.starts_with("tweet-embed: ")).count(), 1, "one line: {stderr}");

    // Old shards whose id columns differ (`tweet_id` int64, `_id` strings) record no id type:
    // merged into a string id, the change said once however many files there are.
    let shards = dir.path().join("shards");
    for f in 0..4 {
        write(&shards.join(format!("int/emb_{f}.parquet")), &old_int(f, 3));
        write(&shards.join(format!("hex/emb_{f}.parquet")), &old_hex(f, 3, |_| DIM));
    }
    let out = dir.path().join("shards-out");
    let result = consolidate(&shards, &out, &[]);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(0), "{stderr}");
    let said = warnings(&stderr, "id columns differ");
    assert_eq!(said.len(), 1, "said once:\n{stderr}");
    assert!(said[0].contains("has Int64 ids") && said[0].contains("has Utf8 ids"), "{stderr}");
    assert!(said[0].contains("integer ids of 4 of 8 files written as their decimal text"), "{stderr}");
    let (ids, ty, recorded) = output_ids(&out);
    assert_eq!((ids.len(), ty, recorded), (24, DataType::Utf8, None));
    assert!(ids.contains(&"0".to_string()), "the integer 0 as its decimal text: {ids:?}");
}
