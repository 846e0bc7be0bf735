//! Merge tests: row groups that keep every row are copied as encoded (same bytes, statistics and
//! page index), the others are encoded again, and the result reads back as the rows merged.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData};

use super::merge::merge_with;
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
        embedding: (0..DIM).map(|d| ((i * 7919 + d as u64 * 104_729) % 1_000_003) as f32 / 7.0).collect(),
        text_hash: i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        tokens: (i % 500) as u32,
    }
}

/// Staged files as a writer seals them: one per epoch, `sizes[e]` rows in epoch `e + 1`, with
/// row groups of at most `row_group_rows`; ids run on across files.
fn staged(dir: &Path, sizes: &[u64], row_group_rows: usize, id_type: IdType) -> Vec<PathBuf> {
    let tmp = dir.join("tmp");
    fs::create_dir_all(&tmp).unwrap();
    let mut cfg = OutputConfig::new(dir.join("out"), &tmp, 0, DIM, "test/model");
    cfg.staging_dir = dir.join("staged");
    cfg.row_group_rows = row_group_rows;
    cfg.id_type = id_type;
    cfg.key_values = vec![("tweet_embed.identity".into(), "test-identity".into())];
    let mut w = EpochWriter::new(cfg).unwrap();
    let mut next = 0;
    let mut paths = Vec::new();
    for (e, n) in sizes.iter().enumerate() {
        let epoch = e as u64 + 1;
        for i in next..next + n {
            let mut r = row(i);
            if id_type == IdType::Int64 {
                r.doc.id = format!(r#"{{"$numberLong":"{}"}}"#, 1000 + i);
            }
            w.push_row(epoch, &r).unwrap();
        }
        next += n;
        for f in w.seal(epoch).unwrap() {
            paths.push(dir.join("staged").join(f.path));
        }
    }
    paths
}

fn footer(path: &Path) -> Arc<ParquetMetaData> {
    let file = File::open(path).unwrap();
    let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Required);
    ArrowReaderMetadata::load(&file, options).unwrap().metadata().clone()
}

fn rows_of(paths: &[PathBuf]) -> Vec<(u64, EmbeddedRow)> {
    paths.iter().flat_map(|p| read_rows(p).unwrap()).collect()
}

fn kv(path: &Path, key: &str) -> Option<String> {
    let meta = footer(path);
    let kv = meta.file_metadata().key_value_metadata()?;
    kv.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.clone())
}

/// The encoded bytes of every column chunk of `path`, by row group.
fn chunks(path: &Path) -> Vec<Vec<Vec<u8>>> {
    let data = fs::read(path).unwrap();
    footer(path)
        .row_groups()
        .iter()
        .map(|rg| {
            rg.columns()
                .iter()
                .map(|c| {
                    let (start, len) = c.byte_range();
                    data[start as usize..(start + len) as usize].to_vec()
                })
                .collect()
        })
        .collect()
}

fn keep_all(_: &str, _: u64) -> bool {
    false
}

#[test]
fn with_nothing_to_drop_no_id_is_read_and_the_result_is_the_same() {
    // `None`: the compactor knows no deletion can reach these epochs. The epoch range then
    // comes from the footer's statistics; the file is what a keep-all filter makes.
    let d = tempfile::tempdir().unwrap();
    let inputs = staged(d.path(), &[700, 300, 1000], 500, IdType::Int64);
    let (filtered, unread) = (d.path().join("filtered.parquet"), d.path().join("unread.parquet"));
    let a = merge_with(&inputs, FileKind::Rows, &filtered, None, 4096, &[], Some(&keep_all), 0).unwrap();
    let b = merge_with(&inputs, FileKind::Rows, &unread, None, 4096, &[], None, 0).unwrap();
    assert_eq!((b.inputs_used, b.rows, b.dropped, b.epochs), (3, 2000, 0, Some((1, 3))));
    assert_eq!((a.rows, a.epochs, a.bytes), (b.rows, b.epochs, b.bytes));
    assert_eq!(read_rows(&unread).unwrap(), rows_of(&inputs));
    assert_eq!(chunks(&unread), chunks(&filtered));
}

#[test]
fn whole_row_groups_are_copied_byte_for_byte_with_their_statistics() {
    let d = tempfile::tempdir().unwrap();
    let inputs = staged(d.path(), &[700, 300, 1000], 500, IdType::ObjectId);
    let dest = d.path().join("merged.parquet");
    let kv_in = key_values(&inputs[0]).unwrap();
    let merged = merge_with(&inputs, FileKind::Rows, &dest, None, 4096, &kv_in, Some(&keep_all), 0).unwrap();
    assert_eq!((merged.inputs_used, merged.rows, merged.dropped, merged.epochs), (3, 2000, 0, Some((1, 3))));
    assert_eq!(merged.bytes, fs::metadata(&dest).unwrap().len());
    assert_eq!(read_rows(&dest).unwrap(), rows_of(&inputs));
    // The row groups are the staged ones, in order, with the same encoded bytes.
    let expected: Vec<_> = inputs.iter().flat_map(|p| chunks(p)).collect();
    assert_eq!(chunks(&dest).len(), 5);
    assert_eq!(chunks(&dest), expected);
    // Statistics and page indexes come along; the id ranges skip row groups as before.
    let out = footer(&dest);
    let ins: Vec<_> = inputs.iter().map(|p| footer(p)).collect();
    let in_groups: Vec<_> = ins.iter().flat_map(|m| m.row_groups().iter()).collect();
    for (a, b) in out.row_groups().iter().zip(&in_groups) {
        assert_eq!(a.num_rows(), b.num_rows());
        for (x, y) in a.columns().iter().zip(b.columns()) {
            assert_eq!(x.statistics(), y.statistics());
            assert_eq!(x.num_values(), y.num_values());
        }
    }
    let page_index = out.page_index().expect("a page index");
    let id = 0;
    assert!(page_index.column_index(4, id).is_some());
    let offsets = page_index.offset_index(4, id).expect("an offset index");
    assert!(offsets.page_locations.iter().all(|p| p.offset as u64 >= out.row_group(4).column(id).byte_range().0));
    let probe = IdProbe::new(IdType::ObjectId, [format!("{:024x}", 1500).as_str()]);
    assert!(may_hold_any(&dest, &probe, IdType::ObjectId).unwrap());
    let probe = IdProbe::new(IdType::ObjectId, ["ffffffffffffffffffffffff"]);
    assert!(!may_hold_any(&dest, &probe, IdType::ObjectId).unwrap());
    // The footer: the schema readers restore, the dataset's keys and the epoch range.
    assert_eq!(kv(&dest, "tweet_embed.identity").as_deref(), Some("test-identity"));
    assert_eq!(kv(&dest, ID_TYPE_KEY).as_deref(), Some("objectid"));
    assert_eq!(kv(&dest, "tweet_embed.epoch_lo").as_deref(), Some("1"));
    assert_eq!(kv(&dest, "tweet_embed.epoch_hi").as_deref(), Some("3"));
    assert!(kv(&dest, "ARROW:schema").is_some());
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&dest).unwrap()).unwrap();
    let types = |s: &arrow::datatypes::Schema| -> Vec<_> {
        s.fields().iter().map(|f| (f.name().clone(), f.data_type().clone(), f.is_nullable())).collect()
    };
    assert_eq!(types(reader.schema()), types(&schema::rows_schema_for(DIM as i32, IdType::ObjectId)));
}

#[test]
fn only_row_groups_that_lose_rows_are_encoded_again() {
    let d = tempfile::tempdir().unwrap();
    let inputs = staged(d.path(), &[400, 400, 400], 400, IdType::Int64);
    let dest = d.path().join("merged.parquet");
    // Three rows of the middle file, and the whole last one but its first row.
    let gone = |id: &str, epoch: u64| {
        let n: u64 = id.trim_start_matches(r#"{"$numberLong":""#).trim_end_matches(r#""}"#).parse().unwrap();
        [1400, 1401, 1799].contains(&n) || (epoch == 3 && n > 1800)
    };
    let merged = merge_with(&inputs, FileKind::Rows, &dest, None, 4096, &[], Some(&gone), 0).unwrap();
    assert_eq!((merged.rows, merged.dropped, merged.epochs), (798, 402, Some((1, 3))));
    let before = rows_of(&inputs);
    let expected: Vec<_> = before.iter().filter(|(e, r)| !gone(&r.doc.id, *e)).cloned().collect();
    assert_eq!(read_rows(&dest).unwrap(), expected);
    // The first file's row group is copied; the rest were encoded again into one row group.
    let (ins, out) = (chunks(&inputs[0]), chunks(&dest));
    assert_eq!(out.len(), 2);
    assert_eq!(out[0], ins[0]);
    assert_ne!(out[1], chunks(&inputs[1])[0]);
    let meta = footer(&dest);
    assert_eq!(meta.row_group(1).num_rows(), 397 + 1);
    let probe = IdProbe::new(IdType::Int64, [r#"{"$numberLong":"1500"}"#]);
    assert!(may_hold_any(&dest, &probe, IdType::Int64).unwrap());
    let probe = IdProbe::new(IdType::Int64, [r#"{"$numberLong":"1900"}"#]);
    assert!(!may_hold_any(&dest, &probe, IdType::Int64).unwrap(), "the re-encoded row group's id range is new");
}

#[test]
fn small_row_groups_are_encoded_together_and_big_ones_keep_their_place() {
    let d = tempfile::tempdir().unwrap();
    let inputs = staged(d.path(), &[20, 30, 600, 10, 10], 1000, IdType::ObjectId);
    let dest = d.path().join("merged.parquet");
    let big = footer(&inputs[2]).row_group(0).compressed_size() as u64;
    let merged = merge_with(&inputs, FileKind::Rows, &dest, None, 4096, &[], Some(&keep_all), big).unwrap();
    assert_eq!(merged.rows, 670);
    assert_eq!(read_rows(&dest).unwrap(), rows_of(&inputs), "rows keep their order");
    let out = chunks(&dest);
    let rows: Vec<_> = footer(&dest).row_groups().iter().map(|rg| rg.num_rows()).collect();
    assert_eq!(rows, [50, 600, 20]);
    assert_eq!(out[1], chunks(&inputs[2])[0]);
    // By default (64 KiB) the small ones are small: one row group.
    let small = [&inputs[..2], &inputs[3..]].concat();
    let dest = d.path().join("default.parquet");
    merge_files(&small, FileKind::Rows, &dest, None, 4096, &[], Some(&keep_all)).unwrap();
    assert_eq!(footer(&dest).num_row_groups(), 1);
    assert_eq!(read_rows(&dest).unwrap(), rows_of(&small));
}

#[test]
fn encoded_rows_respect_the_row_group_size() {
    let d = tempfile::tempdir().unwrap();
    let inputs = staged(d.path(), &[250, 250, 250], 1000, IdType::ObjectId);
    let dest = d.path().join("merged.parquet");
    merge_with(&inputs, FileKind::Rows, &dest, None, 300, &[], Some(&keep_all), u64::MAX).unwrap();
    let rows: Vec<_> = footer(&dest).row_groups().iter().map(|rg| rg.num_rows()).collect();
    assert_eq!(rows, [300, 300, 150]);
    assert_eq!(read_rows(&dest).unwrap(), rows_of(&inputs));
}

#[test]
fn the_target_stops_after_the_input_that_reaches_it() {
    let d = tempfile::tempdir().unwrap();
    let inputs = staged(d.path(), &[500, 500, 500, 500], 1000, IdType::ObjectId);
    let one = fs::metadata(&inputs[0]).unwrap().len();
    let dest = d.path().join("merged.parquet");
    let merged = merge_with(&inputs, FileKind::Rows, &dest, Some(one * 3 / 2), 4096, &[], Some(&keep_all), 0).unwrap();
    assert_eq!((merged.inputs_used, merged.rows, merged.epochs), (2, 1000, Some((1, 2))));
    assert_eq!(read_rows(&dest).unwrap(), rows_of(&inputs[..2]));
}

#[test]
fn a_rewrite_without_rows_copies_the_rest_and_keeps_the_metadata() {
    let d = tempfile::tempdir().unwrap();
    // Row groups of 1,000 rows: above the 64 KiB a row group must hold to be copied.
    let inputs = staged(d.path(), &[3000], 1000, IdType::ObjectId);
    let path = &inputs[0];
    let before = chunks(path);
    let rows = read_rows(path).unwrap();
    let victim = format!("{:024x}", 1500);
    let merged = rewrite_without(path, FileKind::Rows, &d.path().join("scratch"), 1000, &|id, _| id == victim).unwrap();
    assert_eq!((merged.rows, merged.dropped), (2999, 1));
    let after = chunks(path);
    assert_eq!(after.len(), 3);
    assert_eq!((&after[0], &after[2]), (&before[0], &before[2]));
    let expected: Vec<_> = rows.into_iter().filter(|(_, r)| r.doc.id != victim).collect();
    assert_eq!(read_rows(path).unwrap(), expected);
    assert_eq!(kv(path, "tweet_embed.identity").as_deref(), Some("test-identity"));
    assert_eq!(kv(path, "tweet_embed.model").as_deref(), kv(&inputs[0], "tweet_embed.model").as_deref());
}

#[test]
fn rejects_merge_too() {
    let d = tempfile::tempdir().unwrap();
    let tmp = d.path().join("tmp");
    fs::create_dir_all(&tmp).unwrap();
    let mut cfg = OutputConfig::new(d.path().join("out"), &tmp, 0, DIM, "test/model");
    cfg.staging_dir = d.path().join("staged");
    cfg.id_type = IdType::Int64;
    let mut w = EpochWriter::new(cfg).unwrap();
    let mut paths = Vec::new();
    for epoch in 1..=3u64 {
        for i in 0..5 {
            let id =
                if i == 4 { format!("{:024x}", epoch) } else { format!(r#"{{"$numberLong":"{}"}}"#, epoch * 10 + i) };
            let doc = DocMeta { id, ..row(i).doc };
            w.push_reject(epoch, &Rejection { doc, reason: "empty text".into() }).unwrap();
        }
        paths.extend(w.seal(epoch).unwrap().into_iter().map(|f| d.path().join("staged").join(f.path)));
    }
    let before: Vec<_> = paths.iter().flat_map(|p| read_rejects(p).unwrap()).collect();
    assert_eq!(before.len(), 15);
    let dest = d.path().join("merged.parquet");
    let stray = format!("{:024x}", 2);
    let merged = merge_with(&paths, FileKind::Rejects, &dest, None, 4096, &[], Some(&|id, _| id == stray), 0).unwrap();
    assert_eq!((merged.rows, merged.dropped), (14, 1));
    let expected: Vec<_> = before.into_iter().filter(|r| r.0 != stray).collect();
    assert_eq!(read_rejects(&dest).unwrap(), expected);
}
