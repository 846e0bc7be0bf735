//! Writer-level tests: sealing, rolling, naming in the directories, errors.

use std::fs;
use std::path::Path;

use super::*;
use crate::dataflow::record::{DocMeta, EmbeddedRow, Origin, Rejection};

const DIM: usize = 16;

fn row(i: u64) -> EmbeddedRow {
    EmbeddedRow {
        doc: DocMeta {
            id: format!("{i:024x}"),
            lang: (!i.is_multiple_of(3)).then(|| ["en", "ja"][(i % 2) as usize].to_string()),
            created_at_ms: (!i.is_multiple_of(5)).then_some(1_700_000_000_000 + i as i64),
            origin: if i.is_multiple_of(2) { Origin::Backfill } else { Origin::ChangeStream },
        },
        embedding: (0..DIM).map(|d| (i * 100 + d as u64) as f32 / 7.0).collect(),
        text_hash: i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        tokens: (i % 500) as u32,
    }
}

fn reject(i: u64) -> Rejection {
    Rejection { doc: row(i).doc, reason: "empty text".into() }
}

struct Dirs {
    out: tempfile::TempDir,
    tmp: tempfile::TempDir,
}

fn dirs() -> Dirs {
    Dirs { out: tempfile::tempdir().unwrap(), tmp: tempfile::tempdir().unwrap() }
}

/// Seals straight into `out`, so these tests read what a seal made durable where they look.
fn config(d: &Dirs, worker: usize) -> OutputConfig {
    let mut c = OutputConfig::new(d.out.path(), d.tmp.path(), worker, DIM, "test/model");
    c.staging_dir = d.out.path().to_path_buf();
    c
}

fn names(dir: &Path) -> Vec<String> {
    let mut n: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    n.sort();
    n
}

#[test]
fn seal_moves_exactly_the_epochs_up_to_the_bound() {
    let d = dirs();
    let mut w = EpochWriter::new(config(&d, 3)).unwrap();
    for i in 0..300 {
        w.push_row(1 + i % 3, &row(i)).unwrap();
    }
    w.push_reject(2, &reject(1000)).unwrap();
    let files = w.seal(2).unwrap();
    assert_eq!(files.len(), 3, "{files:?}");
    let mut seen = Vec::new();
    for f in &files {
        assert_eq!(f.epoch_lo, f.epoch_hi, "a file holds one epoch");
        assert_eq!(f.worker, 3);
        assert!(f.epoch_hi <= 2);
        let path = d.out.path().join(&f.path);
        assert_eq!(fs::metadata(&path).unwrap().len(), f.bytes);
        match f.kind {
            FileKind::Rows => {
                let ids = read_row_ids(&path).unwrap();
                assert_eq!(ids.len() as u64, f.rows);
                assert!(ids.iter().all(|(_, e)| *e == f.epoch_lo));
                seen.extend(ids);
            }
            FileKind::Rejects => {
                assert!(f.path.starts_with(REJECTS_DIR));
                let rejects = read_rejects(&path).unwrap();
                assert_eq!(rejects, [(format!("{:024x}", 1000), "empty text".to_string(), 2)]);
            }
            FileKind::Deletions => panic!("no deletions were sealed"),
        }
    }
    seen.sort();
    let mut expected: Vec<_> = (0..300).filter(|i| i % 3 < 2).map(|i| (format!("{i:024x}"), 1 + i % 3)).collect();
    expected.sort();
    assert_eq!(seen, expected);

    let late = w.push_row(2, &row(1)).unwrap_err();
    assert!(matches!(late, OutputError::LateEpoch { epoch: 2, sealed: 2, .. }), "{late}");
    w.push_row(4, &row(5000)).unwrap();
    let files = w.seal(4).unwrap();
    let ranges: Vec<_> = files.iter().map(|f| (f.epoch_lo, f.rows)).collect();
    assert_eq!(ranges, [(3, 100), (4, 1)]);
    assert!(names(d.tmp.path()).is_empty(), "{:?}", names(d.tmp.path()));
    let snap = w.stats().snapshot();
    assert_eq!((snap.rows_pushed, snap.rows_sealed, snap.rejects_sealed, snap.files_sealed), (301, 301, 1, 5));
}

#[test]
fn empty_epochs_make_no_files() {
    let d = dirs();
    let mut w = EpochWriter::new(config(&d, 0)).unwrap();
    assert!(w.seal(10).unwrap().is_empty());
    w.push_reject(11, &reject(1)).unwrap();
    let files = w.seal(12).unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].kind, FileKind::Rejects);
    assert_eq!(names(d.out.path()), Vec::<String>::new());
    assert_eq!(names(&d.out.path().join(REJECTS_DIR)).len(), 1);
}

#[test]
fn files_roll_at_the_target_size_and_never_mix_epochs() {
    let d = dirs();
    let mut cfg = config(&d, 1);
    cfg.target_file_bytes = 20 << 10;
    cfg.row_group_rows = 100;
    let mut w = EpochWriter::new(cfg).unwrap();
    for i in 0..2000 {
        w.push_row(7, &row(i)).unwrap();
        if i.is_multiple_of(10) {
            w.push_row(8, &row(10_000 + i)).unwrap();
        }
    }
    assert!(!names(d.tmp.path()).is_empty(), "rolled files wait on hot storage until their seal");
    assert!(names(d.out.path()).is_empty());
    let files = w.seal(7).unwrap();
    assert!(files.len() >= 4, "{} files", files.len());
    assert!(files.iter().all(|f| f.epoch_lo == 7 && f.epoch_hi == 7));
    assert_eq!(files.iter().map(|f| f.rows).sum::<u64>(), 2000);
    let seqs: Vec<_> = files.iter().map(|f| PartName::parse(&f.path.to_string_lossy()).unwrap().seq).collect();
    assert!(seqs.windows(2).all(|s| s[0] < s[1]), "{seqs:?}");
    // One batch of slack past the target at most.
    assert!(files.iter().all(|f| f.bytes < 2 * (20 << 10)), "{files:?}");
    let later = w.seal(8).unwrap();
    assert_eq!(later.iter().map(|f| f.rows).sum::<u64>(), 200);
}

#[test]
fn copy_path_gives_the_same_files() {
    let d = dirs();
    let mut cfg = config(&d, 2);
    cfg.force_copy = true;
    let mut w = EpochWriter::new(cfg).unwrap();
    for i in 0..50 {
        w.push_row(1, &row(i)).unwrap();
    }
    let files = w.seal(1).unwrap();
    assert_eq!(names(d.out.path()), [files[0].path.to_string_lossy().into_owned()]);
    assert!(names(d.tmp.path()).is_empty());
    let back = read_rows(&d.out.path().join(&files[0].path)).unwrap();
    let expected: Vec<_> = (0..50).map(|i| (1, row(i))).collect();
    assert_eq!(back, expected);
}

#[test]
fn a_wrong_dimension_is_refused_and_the_writer_goes_on() {
    let d = dirs();
    let mut w = EpochWriter::new(config(&d, 0)).unwrap();
    let bad = EmbeddedRow { embedding: vec![0.0; DIM + 1], ..row(1) };
    assert!(matches!(w.push_row(1, &bad), Err(OutputError::Dim { .. })));
    w.push_row(1, &row(2)).unwrap();
    assert_eq!(w.seal(1).unwrap()[0].rows, 1);
}

#[test]
fn only_this_workers_leftovers_are_removed_at_start() {
    let d = dirs();
    fs::write(d.tmp.path().join("tmp-w001-000009.parquet"), b"crash").unwrap();
    fs::write(d.tmp.path().join("tmp-w002-000009.parquet"), b"other worker").unwrap();
    fs::write(d.tmp.path().join("model.safetensors"), b"not ours").unwrap();
    let _w = EpochWriter::new(config(&d, 1)).unwrap();
    assert_eq!(names(d.tmp.path()), ["model.safetensors", "tmp-w002-000009.parquet"]);
}

#[test]
fn unusable_directories_and_settings_are_clear_errors() {
    let d = dirs();
    let file = d.out.path().join("plain-file");
    fs::write(&file, b"").unwrap();
    let cfg = OutputConfig::new(file.join("out"), d.tmp.path(), 0, DIM, "m");
    let err = EpochWriter::new(cfg).err().unwrap();
    assert!(err.to_string().contains("plain-file"), "{err}");
    let cfg = OutputConfig::new(d.out.path(), d.tmp.path(), 0, 0, "m");
    assert!(matches!(EpochWriter::new(cfg), Err(OutputError::Config(_))));
}
