//! Which row groups of one of our files can hold given ids, from the footer's `id` column
//! statistics alone (min, max, null count), without reading a data page. The deletion pass asks
//! this of every output file before it reads any `id` column: ids arrive time-ordered (ObjectIds,
//! snowflake ints) or in `_id` index order (the scan), so a row group spans a narrow range and
//! most files hold none of a few thousand deleted ids.
//!
//! Bounds as the Parquet format defines them (`parquet.thrift`, `Statistics`): `min_value` and
//! `max_value` are a lower and an upper bound (exact unless `is_*_value_exact` says otherwise,
//! as for truncated byte arrays), ordered as signed integers for INT64 and as unsigned bytes for
//! UTF8 byte arrays. A row group without statistics may hold anything.

use std::fs::File;
use std::path::Path;

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::statistics::Statistics;

use super::error::OutputError;
use super::id_type::{IdType, IdValue};

/// A sorted set of ids in the form one dataset's `id` column holds them.
#[derive(Debug, Default)]
pub struct IdProbe {
    ints: Vec<i64>,
    strs: Vec<Vec<u8>>,
    /// Some id does not fit the column (a stray): it sits in `stray_id` with a null `id`.
    strays: bool,
}

impl IdProbe {
    /// `ids` (the engine's form, `crate::mongo::document_id::DocId`) as `id_type`'s column holds them.
    pub fn new<'a>(id_type: IdType, ids: impl IntoIterator<Item = &'a str>) -> IdProbe {
        let mut probe = IdProbe::default();
        for id in ids {
            match id_type.value(id) {
                Ok(IdValue::Int(i)) => probe.ints.push(i),
                Ok(IdValue::Str(s)) => probe.strs.push(s.as_bytes().to_vec()),
                Err(_) => probe.strays = true,
            }
        }
        probe.ints.sort_unstable();
        probe.ints.dedup();
        probe.strs.sort_unstable();
        probe.strs.dedup();
        probe
    }

    /// Whether no id is probed.
    pub fn is_empty(&self) -> bool {
        self.ints.is_empty() && self.strs.is_empty() && !self.strays
    }

    /// Whether a row group with these `id` statistics may hold a probed id.
    fn may_hold(&self, stats: Option<&Statistics>) -> bool {
        let Some(stats) = stats else { return true };
        if self.strays && stats.null_count_opt().is_none_or(|n| n > 0) {
            return true;
        }
        match stats {
            Statistics::Int64(s) => match (s.min_opt(), s.max_opt()) {
                (Some(lo), Some(hi)) => any_within(&self.ints, lo, hi),
                _ => true,
            },
            Statistics::ByteArray(s) => match (s.min_opt(), s.max_opt()) {
                (Some(lo), Some(hi)) => any_within_bytes(&self.strs, lo.data(), hi.data()),
                _ => true,
            },
            _ => true,
        }
    }
}

fn any_within(sorted: &[i64], lo: &i64, hi: &i64) -> bool {
    let i = sorted.partition_point(|v| v < lo);
    sorted.get(i).is_some_and(|v| v <= hi)
}

fn any_within_bytes(sorted: &[Vec<u8>], lo: &[u8], hi: &[u8]) -> bool {
    let i = sorted.partition_point(|v| v.as_slice() < lo);
    sorted.get(i).is_some_and(|v| v.as_slice() <= hi)
}

/// Whether any row group of the file at `path` may hold an id of `probe`, reading its footer
/// only. The file's id type comes from its own metadata; `probe_type` is the type `probe` was
/// built for, and a file of another type is answered `true` (read it to know). Errors: the file
/// cannot be opened or its footer is not Parquet.
pub fn may_hold_any(path: &Path, probe: &IdProbe, probe_type: IdType) -> Result<bool, OutputError> {
    if probe.is_empty() {
        return Ok(false);
    }
    let file = File::open(path).map_err(|e| OutputError::io("open", path, e))?;
    let reader = SerializedFileReader::new(file).map_err(|e| OutputError::parquet("read the footer of", path, e))?;
    let meta = reader.metadata();
    let schema = meta.file_metadata().schema_descr();
    let Some(column) = (0..schema.num_columns()).find(|&i| schema.column(i).path().string() == "id") else {
        return Ok(true);
    };
    let arrow_schema = parquet::arrow::parquet_to_arrow_schema(schema, meta.file_metadata().key_value_metadata())
        .map_err(|e| OutputError::parquet("read the schema of", path, e))?;
    let file_type = IdType::of_file(meta.file_metadata().key_value_metadata(), &arrow_schema)
        .map_err(|reason| OutputError::Schema { path: path.to_path_buf(), reason })?;
    if file_type != probe_type {
        return Ok(true);
    }
    Ok(meta.row_groups().iter().any(|rg| probe.may_hold(rg.column(column).statistics())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_probes_find_ids_inside_a_range_and_only_there() {
        let ids = [5, 17, 90].map(|i| format!(r#"{{"$numberLong":"{i}"}}"#));
        let probe = IdProbe::new(IdType::Int64, ids.iter().map(String::as_str));
        assert_eq!(probe.ints, [5, 17, 90]);
        assert!(any_within(&probe.ints, &10, &20));
        assert!(any_within(&probe.ints, &17, &17));
        assert!(!any_within(&probe.ints, &18, &89));
        assert!(!any_within(&probe.ints, &91, &1000));
        assert!(!any_within(&probe.ints, &-10, &4));
        let probe = IdProbe::new(IdType::ObjectId, ["65a000000000000000000001", "65a0000000000000000000ff"]);
        assert!(any_within_bytes(&probe.strs, b"65a000000000000000000000", b"65a000000000000000000002"));
        assert!(!any_within_bytes(&probe.strs, b"65a000000000000000000002", b"65a0000000000000000000fe"));
        // A truncated upper bound (a prefix whose last byte was incremented) still bounds.
        assert!(any_within_bytes(&probe.strs, b"65a0000000000000000000f", b"65a1"));
    }

    #[test]
    fn a_stray_is_probed_where_ids_are_null() {
        // An ObjectId in an int64 dataset.
        let probe = IdProbe::new(IdType::Int64, ["65a000000000000000000001"]);
        assert!(probe.strays && !probe.is_empty() && probe.ints.is_empty());
    }
}
