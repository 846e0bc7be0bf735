//! Consolidate benchmark (`cargo bench --bench consolidate`): generates about 5 GB of small
//! Parquet files at dim 768 (`BENCH_CONSOLIDATE_GB` overrides the size) — two thirds our schema
//! (zstd, as the backfill writes them), one third old-script shards (`_id` + `vector`
//! list<float>), with about 2% duplicate ids, pseudo-random vectors that do not compress — in a
//! temporary directory, then runs the `tweet-embed consolidate` binary as a child process on it,
//! plain and with `--sort-by id --dedup-by id`, sampling the child's `VmHWM` every 50 ms (as
//! benches/backfill.rs does) for its peak RSS, which must stay ≤ 1 GiB. Prints a markdown table.
//! Everything generated is deleted at the end.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use test_support::peak_rss::PeakRss;

use arrow::array::{
    Array, ArrayRef, DictionaryArray, FixedSizeListArray, Float32Array, ListArray, RecordBatch, StringArray,
    TimestampMillisecondArray, UInt32Array, UInt64Array,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Int32Type, Schema};
use parquet::arrow::ArrowWriter;
use tweet_embed_operators::table::output::schema::{embedding_item, rows_schema, writer_properties, UTC};
use tweet_embed_operators::table::output::FileKind;

const BIN: &str = env!("CARGO_BIN_EXE_tweet-embed");
const DIM: usize = 768;
/// Rows per input file: about 1 MiB of vectors, a typical shard of the old scripts.
const ROWS_PER_FILE: usize = 340;

fn ids(file: usize, rows: usize) -> Vec<String> {
    // Every 50th row repeats an id of an earlier file: ~2% duplicates, spread over the input.
    (0..rows)
        .map(|r| {
            let n = file * rows + r;
            let n = if n % 50 == 49 && file > 0 { (file - 1) * rows + r / 2 } else { n };
            format!("{:024x}", n as u64 * 0x9e37_79b9_7f4a_7c15 % (1 << 63))
        })
        .collect()
}

fn vectors(rng: &mut fastrand::Rng, rows: usize) -> Float32Array {
    Float32Array::from_iter_values((0..rows * DIM).map(|_| rng.f32() - 0.5))
}

fn ours(file: usize, rng: &mut fastrand::Rng) -> RecordBatch {
    let rows = ROWS_PER_FILE;
    let emb = FixedSizeListArray::try_new(embedding_item(), DIM as i32, Arc::new(vectors(rng, rows)), None);
    let dict =
        |v: &str| -> ArrayRef { Arc::new(vec![Some(v); rows].into_iter().collect::<DictionaryArray<Int32Type>>()) };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(ids(file, rows))),
        Arc::new(emb.expect("vectors")),
        dict("google/embeddinggemma-300m"),
        Arc::new(UInt64Array::from_iter_values((0..rows).map(|_| rng.u64(..)))),
        Arc::new(UInt32Array::from_iter_values((0..rows).map(|_| rng.u32(5..200)))),
        dict("en"),
        Arc::new(TimestampMillisecondArray::from(vec![Some(1_600_000_000_000); rows]).with_timezone(UTC)),
        dict("backfill"),
        Arc::new(UInt64Array::from(vec![file as u64; rows])),
    ];
    RecordBatch::try_new(rows_schema(DIM as i32), columns).expect("our batch")
}

fn old(file: usize, rng: &mut fastrand::Rng) -> RecordBatch {
    let rows = ROWS_PER_FILE;
    let item = Arc::new(Field::new("item", DataType::Float32, true));
    let list = ListArray::new(item, OffsetBuffer::from_lengths(vec![DIM; rows]), Arc::new(vectors(rng, rows)), None);
    let schema = Schema::new(vec![
        Field::new("_id", DataType::Utf8, true),
        Field::new("vector", list.data_type().clone(), true),
    ]);
    let columns: Vec<ArrayRef> = vec![Arc::new(StringArray::from(ids(file, rows))), Arc::new(list)];
    RecordBatch::try_new(Arc::new(schema), columns).expect("old batch")
}

/// Writes files until `bytes` are on disk; two threads. Returns (files, rows, bytes).
fn generate(dir: &Path, bytes: u64) -> (usize, u64, u64) {
    let per_file = (ROWS_PER_FILE * DIM * 4) as u64;
    let files = (bytes / per_file).max(1) as usize;
    let written = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..2 {
            let written = &written;
            s.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(t as u64);
                for f in (t..files).step_by(2) {
                    let (path, batch, props) = if f % 3 == 2 {
                        (dir.join(format!("old/shard_{:04}.parquet", f)), old(f, &mut rng), None)
                    } else {
                        let props = writer_properties(FileKind::Rows, ROWS_PER_FILE);
                        (dir.join(format!("part-{f:06}.parquet")), ours(f, &mut rng), Some(props))
                    };
                    let file = std::fs::File::create(&path).expect("create input");
                    let mut w = ArrowWriter::try_new(file, batch.schema(), props).expect("writer");
                    w.write(&batch).expect("write");
                    w.close().expect("close");
                    written.fetch_add(std::fs::metadata(&path).expect("stat").len(), Ordering::Relaxed);
                }
            });
        }
    });
    (files, (files * ROWS_PER_FILE) as u64, written.load(Ordering::Relaxed))
}

struct Measured {
    wall: Duration,
    peak_rss_kib: i64,
    summary: String,
}

fn run(input: &Path, output: &Path, extra: &[&str]) -> Measured {
    let _ = std::fs::remove_dir_all(output);
    let started = Instant::now();
    let child = Command::new(BIN)
        .args(["consolidate", "--log", "warn", "--input"])
        .arg(input)
        .arg("--output")
        .arg(output)
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn consolidate");
    let peak = PeakRss::watch(child.id());
    let out = child.wait_with_output().expect("wait for consolidate");
    let wall = started.elapsed();
    let peak_rss_kib = peak.finish();
    assert!(out.status.success(), "consolidate failed: {:?}", out.status);
    let summary = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Measured { wall, peak_rss_kib, summary }
}

fn main() {
    let gb: f64 = std::env::var("BENCH_CONSOLIDATE_GB").ok().and_then(|v| v.parse().ok()).unwrap_or(5.0);
    let base = std::env::var("BENCH_CONSOLIDATE_DIR").unwrap_or_else(|_| std::env::temp_dir().display().to_string());
    let dir = tempfile::tempdir_in(base).expect("tempdir");
    let input = dir.path().join("in");
    std::fs::create_dir_all(input.join("old")).expect("input dir");
    let t = Instant::now();
    let (files, rows, bytes) = generate(&input, (gb * 1e9) as u64);
    eprintln!(
        "generated {files} files, {rows} rows, {:.2} GB in {:.0} s",
        bytes as f64 / 1e9,
        t.elapsed().as_secs_f64()
    );
    let output = dir.path().join("out");
    let mut table = Vec::new();
    for (mode, extra) in
        [("plain", &[][..]), ("--sort-by id --dedup-by id", &["--sort-by", "id", "--dedup-by", "id"][..])]
    {
        let m = run(&input, &output, extra);
        eprintln!("{mode}: {}", m.summary);
        table.push((mode, m));
        let _ = std::fs::remove_dir_all(&output);
    }
    println!("\nconsolidate, dim 768, {files} input files of {ROWS_PER_FILE} rows (2/3 ours, 1/3 old shards), ~2% duplicate ids");
    println!("| mode | input GB | files | rows | wall (s) | MB/s | peak RSS (MiB) | summary |");
    println!("|---|---:|---:|---:|---:|---:|---:|---|");
    for (mode, m) in &table {
        println!(
            "| {mode} | {:.2} | {files} | {rows} | {:.1} | {:.0} | {:.0} | {} |",
            bytes as f64 / 1e9,
            m.wall.as_secs_f64(),
            bytes as f64 / 1e6 / m.wall.as_secs_f64(),
            m.peak_rss_kib as f64 / 1024.0,
            m.summary
        );
    }
    for (mode, m) in &table {
        assert!(m.peak_rss_kib <= 1 << 20, "{mode}: peak RSS {} KiB is over 1 GiB", m.peak_rss_kib);
    }
}
