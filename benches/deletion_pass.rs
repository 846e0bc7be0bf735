//! What one deletion pass costs (`cargo bench --profile release --bench deletion_pass`): an output
//! directory of `BENCH_FILES` compacted files (default 40) of `BENCH_ROWS` rows each (default
//! 50,000; int64 ids in insert order, as snowflake ids or ObjectIds arrive; dim 64 to keep the
//! set-up short: the pass reads ids and footers, never vectors, until it rewrites), and 1,000
//! pending deletions placed three ways:
//! - `recent`: among the newest file's ids (fresh tweets deleted, the common case);
//! - `old`: among the oldest 5 % of ids (a compliance request for old tweets);
//! - `spread`: uniformly over every id (the worst case: every file holds one);
//! - `absent`: ids no file holds (tweets deleted before they were embedded): detection only.
//!
//! Reports per placement the pass's wall time (rewrites included), the files it read, rewrote
//! and left unread, next to the time to read the `id` column of every file: what finding the
//! rows cost before the footer's statistics were consulted (the rewrites were the same). The
//! `absent` row compares like with like. Median of `BENCH_REPEATS` (default 5). Real disk, page
//! cache warm (each directory was just written).

use std::path::Path;
use std::time::Instant;

use tweet_embed_operators::dataflow::record::{DocMeta, EmbeddedRow, Origin};
use tweet_embed_operators::table::checkpoint::{list_files, Checkpoint, CheckpointStore, Ledger, SourcePositions};
use tweet_embed_operators::table::compaction::{apply_pending, CompactionStats, DeletionIndex};
use tweet_embed_operators::table::output::{
    read_row_ids, write_deletions, Deletion, EpochWriter, FileKind, IdType, OutputConfig, PartName,
};

use test_support::bench::env_or;

fn int_id(i: u64) -> String {
    format!(r#"{{"$numberLong":"{i}"}}"#)
}

/// `files` files of `rows` rows, epoch `f + 1` holding ids `f * rows ..`.
fn build(out: &Path, tmp: &Path, files: u64, rows: u64) {
    for f in 0..files {
        let mut c = OutputConfig::new(out, tmp, 0, 64, "bench/model");
        c.staging_dir = out.to_path_buf();
        c.id_type = IdType::Int64;
        let mut w = EpochWriter::new(c).expect("writer");
        for i in f * rows..(f + 1) * rows {
            let doc = DocMeta { id: int_id(i), lang: None, created_at_ms: None, origin: Origin::Backfill };
            let embedding = (0..64).map(|d| ((i + d) % 97) as f32 / 97.0).collect();
            w.push_row(f + 1, &EmbeddedRow { doc, embedding, text_hash: i, tokens: 20 }).expect("push");
        }
        w.seal(f + 1).expect("seal");
    }
}

/// The `k`-th of 1,000 deleted ids.
type Placement = Box<dyn Fn(u64) -> u64>;

use test_support::bench::median;

fn main() {
    let files: u64 = env_or("BENCH_FILES", 40);
    let rows: u64 = env_or("BENCH_ROWS", 50_000);
    let repeats: usize = env_or("BENCH_REPEATS", 5);
    let base = std::env::var_os("BENCH_DIR").map(std::path::PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let total = files * rows;
    let placements: [(&str, Placement, u64); 4] = [
        ("recent", Box::new(move |k| total - rows + k * rows / 1000), 1000),
        ("old", Box::new(move |k| k * (total / 20) / 1000), 1000),
        ("spread", Box::new(move |k| k * total / 1000), 1000),
        ("absent", Box::new(move |k| total + 1 + k), 0),
    ];
    println!("{files} files x {rows} rows (int64 ids in insert order), 1,000 pending deletions; median of {repeats}");
    println!("placement | pass (s) | files read | rewritten | unread | rows deleted | every id column read (s)");
    for (name, place, expected) in &placements {
        let (mut pass, mut full) = (Vec::new(), Vec::new());
        let mut last = None;
        for _ in 0..repeats {
            let dir = tempfile::tempdir_in(&base).expect("tempdir");
            let (out, tmp, state) = (dir.path().join("out"), dir.path().join("tmp"), dir.path().join("state"));
            std::fs::create_dir_all(&out).expect("out");
            build(&out, &tmp, files, rows);
            let deleted_at = files + 1;
            let records: Vec<Deletion> = (0..1000)
                .map(|k| Deletion { id: int_id(place(k)), epoch: deleted_at, cluster_time_ms: None })
                .collect();
            let del_dir = out.join(FileKind::Deletions.subdir());
            std::fs::create_dir_all(&del_dir).expect("_deletions");
            let name = PartName { epoch_lo: deleted_at, epoch_hi: deleted_at, worker: 0, seq: 1 };
            write_deletions(&del_dir.join(name.file_name()), &records, IdType::Int64, &[]).expect("deletions");
            // Before: every file's ids read.
            let started = Instant::now();
            let mut ids = 0;
            for f in list_files(&out).expect("list").into_iter().filter(|f| f.kind == FileKind::Rows) {
                ids += read_row_ids(&out.join(&f.path)).expect("ids").len();
            }
            full.push(started.elapsed().as_secs_f64());
            assert_eq!(ids as u64, total);
            let cp = Checkpoint::new(deleted_at, deleted_at, Vec::new(), SourcePositions::default());
            let ledger = Ledger::new(CheckpointStore::open(&state).expect("state"), cp);
            ledger.set_id_type(IdType::Int64).expect("id type");
            ledger.note_deletions_recorded(1000, 1).expect("recorded");
            ledger.note_deletions_applied(files, 0).expect("applied");
            let mut index = DeletionIndex::default();
            index.refresh(&out, deleted_at, files).expect("refresh");
            let stats = CompactionStats::default();
            let started = Instant::now();
            let rewritten = apply_pending(&ledger, &out, 100_000, &mut index, &stats).expect("pass");
            pass.push(started.elapsed().as_secs_f64());
            let s = stats.snapshot();
            assert_eq!(s.deleted_rows, *expected, "every deletion found its row");
            last = Some((rewritten, s.files_unread, s.deleted_rows));
        }
        let (read, unread, deleted) = last.expect("a repeat");
        let (p, f) = (median(pass), median(full));
        println!("{name} | {p:.3} | {} | {read} | {unread} | {deleted} | {f:.3}", files - unread);
    }
}
