//! The Parquet output end to end: workers write thousands of rows over several epochs with hot
//! and cold storage in different directories (on different file systems where /dev/shm allows),
//! seal, and the files are read back by our reader (ids, epochs and vectors exact) and checked by
//! pyarrow (`tests/py/check_parquet.py`). Also the forced cross-device copy, and a crash between
//! a seal and its checkpoint followed by a restart: every id still appears exactly once.
//! The test command installs pyarrow (`.ci/run`); without it these tests fail and say how.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use test_support::expect::pyarrow_check_as;

use tweet_embed_operators::dataflow::record::{DocMeta, EmbeddedRow, Origin, Rejection};
use tweet_embed_operators::table::checkpoint::{
    remove_stale, Checkpoint, CheckpointStore, CommitHistory, SourcePositions,
};
use tweet_embed_operators::table::output::{
    read_rejects, read_row_ids, read_rows, EpochWriter, FileKind, FileMeta, OutputConfig,
};

const DIM: usize = 64;
const MODEL: &str = "google/embeddinggemma-300m";

fn row(i: u64) -> EmbeddedRow {
    EmbeddedRow {
        doc: DocMeta {
            id: format!("{i:024x}"),
            lang: match i % 4 {
                0 => None,
                1 => Some("en".into()),
                2 => Some("ja".into()),
                _ => Some("ar".into()),
            },
            created_at_ms: (!i.is_multiple_of(7)).then_some(1_600_000_000_000 + i as i64 * 1000),
            origin: if i.is_multiple_of(3) { Origin::ChangeStream } else { Origin::Backfill },
        },
        // Values no rounding could reproduce by accident.
        embedding: (0..DIM as u64).map(|d| ((i * 31 + d * 17) % 1000) as f32 / 997.0 - 0.5).collect(),
        text_hash: i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        tokens: (i % 2048) as u32,
    }
}

fn reject(i: u64) -> Rejection {
    Rejection {
        doc: row(i).doc,
        reason: if i.is_multiple_of(2) { "empty text".into() } else { "no text field".into() },
    }
}

/// A temporary directory for hot storage on another file system than `cold`, when there is one.
fn hot_dir_apart_from(cold: &Path) -> (tempfile::TempDir, bool) {
    let cold_dev = std::fs::metadata(cold).expect("stat cold").dev();
    if let Ok(shm) = tempfile::tempdir_in("/dev/shm") {
        if std::fs::metadata(shm.path()).map(|m| m.dev() != cold_dev).unwrap_or(false) {
            return (shm, true);
        }
    }
    (tempfile::tempdir().expect("tempdir"), false)
}

/// Reads back every sealed file and checks ids, epochs and vectors against what was pushed.
fn verify(out_dir: &Path, files: &[FileMeta], pushed: &BTreeMap<String, (u64, EmbeddedRow)>, rejected: usize) {
    let mut rows = BTreeMap::new();
    let mut rejects = 0;
    for f in files {
        let path = out_dir.join(&f.path);
        assert_eq!(std::fs::metadata(&path).expect("sealed file exists").len(), f.bytes);
        match f.kind {
            FileKind::Rows => {
                let ids = read_row_ids(&path).expect("read ids");
                let full = read_rows(&path).expect("read rows");
                assert_eq!(ids.len() as u64, f.rows);
                for ((id, epoch), (epoch2, r)) in ids.into_iter().zip(full) {
                    assert_eq!((&id, epoch), (&r.doc.id, epoch2));
                    assert!(f.epoch_lo <= epoch && epoch <= f.epoch_hi);
                    assert!(rows.insert(id, (epoch, r)).is_none(), "an id in two files");
                }
            }
            FileKind::Rejects => rejects += read_rejects(&path).expect("read rejects").len(),
            FileKind::Deletions => panic!("the writer seals no deletions here"),
        }
    }
    assert_eq!(rejects, rejected);
    assert_eq!(rows.len(), pushed.len());
    for (id, expected) in pushed {
        assert_eq!(rows.get(id), Some(expected), "row {id} differs after the round trip");
    }
}

/// A writer's settings that seal straight into `out` (as staging), so these tests read what a seal
/// made durable where pyarrow reads a dataset.
fn sealing_into(out: &Path, hot: &Path, worker: usize) -> OutputConfig {
    let mut cfg = OutputConfig::new(out, hot, worker, DIM, MODEL);
    cfg.staging_dir = out.to_path_buf();
    cfg
}

/// Two workers, epochs 1..=8, seals at 3, 5 and 8.
fn write_run(cfg: impl Fn(usize) -> OutputConfig) -> (Vec<FileMeta>, BTreeMap<String, (u64, EmbeddedRow)>, usize) {
    let mut workers: Vec<_> = (0..2).map(|w| EpochWriter::new(cfg(w)).expect("writer")).collect();
    let (mut files, mut pushed, mut rejected) = (Vec::new(), BTreeMap::new(), 0);
    let mut next = 0u64;
    for epoch in 1..=8u64 {
        // Some epochs are empty on one worker; epoch 6 is empty everywhere.
        let n = if epoch == 6 { 0 } else { 300 + 100 * epoch };
        for _ in 0..n {
            let (i, w) = (next, (next % 2) as usize);
            next += 1;
            if i.is_multiple_of(97) {
                workers[w].push_reject(epoch, &reject(i)).expect("push reject");
                rejected += 1;
            } else if !(epoch == 2 && w == 1) {
                workers[w].push_row(epoch, &row(i)).expect("push row");
                pushed.insert(row(i).doc.id.clone(), (epoch, row(i)));
            }
        }
        if [3, 5, 8].contains(&epoch) {
            for w in &mut workers {
                files.extend(w.seal(epoch).expect("seal"));
            }
        }
    }
    (files, pushed, rejected)
}

#[test]
fn rows_round_trip_and_pyarrow_reads_them() {
    let out = tempfile::tempdir().expect("tempdir");
    let (hot, apart) = hot_dir_apart_from(out.path());
    println!("hot storage on another file system: {apart}");
    let (files, pushed, rejected) = write_run(|w| sealing_into(out.path(), hot.path(), w));
    assert!(pushed.len() > 3000, "{}", pushed.len());
    assert!(files.iter().all(|f| f.epoch_lo == f.epoch_hi && f.epoch_lo != 6));
    verify(out.path(), &files, &pushed, rejected);
    assert_eq!(std::fs::read_dir(hot.path()).expect("list hot").count(), 0, "hot storage is left empty");
    println!("{}", pyarrow_check_as(out.path(), pushed.len() as u64, rejected as u64, DIM, Some(MODEL)));
}

#[test]
fn forced_cross_device_copy_leaves_the_same_output() {
    let (out, hot) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let (files, pushed, rejected) = write_run(|w| {
        let mut cfg = sealing_into(out.path(), hot.path(), w);
        cfg.force_copy = true;
        cfg
    });
    verify(out.path(), &files, &pushed, rejected);
    assert_eq!(std::fs::read_dir(hot.path()).expect("list hot").count(), 0);
    println!("{}", pyarrow_check_as(out.path(), pushed.len() as u64, rejected as u64, DIM, Some(MODEL)));
}

#[test]
fn a_crash_between_seal_and_checkpoint_leaves_each_row_once() {
    let (out, hot, state) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cfg = || sealing_into(out.path(), hot.path(), 0);
    let store = CheckpointStore::open(state.path()).unwrap();
    let mut pushed = BTreeMap::new();

    // First run: epochs 1-2 committed; epoch 3 sealed, then killed before its checkpoint, with
    // epoch 4 half written on hot storage and a copy half done in the output directory.
    let mut w = EpochWriter::new(cfg()).unwrap();
    for i in 0..400u64 {
        let epoch = 1 + i / 100;
        w.push_row(epoch, &row(i)).unwrap();
        if epoch <= 2 {
            pushed.insert(row(i).doc.id.clone(), (epoch, row(i)));
        }
    }
    let committed_files = w.seal(2).unwrap();
    store
        .save(&Checkpoint::new(2, 2, committed_files.clone(), SourcePositions::default()), &CommitHistory::default())
        .unwrap();
    let lost = w.seal(3).unwrap();
    assert_eq!(lost.len(), 1);
    std::fs::write(out.path().join(".part-e000000000004-e000000000004-w000-0009.parquet.partial"), b"half").unwrap();
    drop(w);

    // Restart: clean up by the checkpoint, replay epochs 3-4 from the sources.
    let cp = store.load().unwrap().expect("checkpoint");
    let removed = remove_stale(out.path(), cp.committed()).unwrap();
    assert_eq!(removed.len(), 2, "{removed:?}");
    let mut w = EpochWriter::new(cfg()).unwrap();
    for i in 200..400u64 {
        let epoch = 1 + i / 100;
        w.push_row(epoch, &row(i)).unwrap();
        pushed.insert(row(i).doc.id.clone(), (epoch, row(i)));
    }
    let mut files = committed_files;
    files.extend(w.seal(4).unwrap());
    verify(out.path(), &files, &pushed, 0);
    println!("{}", pyarrow_check_as(out.path(), 400, 0, DIM, Some(MODEL)));
}
