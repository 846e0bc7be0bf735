//! The Arrow schemas of the output and rejects files, and the Parquet settings they are written
//! with. This is the file format users read with pyarrow, DuckDB or polars: changing a column
//! here changes the product, so it must follow DESIGN.md's "Output schema" table exactly.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use super::id_type::IdType;
use super::naming::FileKind;

/// Upper bound of a row group's encoded size: large enough for fast scans, small enough that an
/// open file's in-progress row group (held in memory until flushed) stays modest.
pub const ROW_GROUP_BYTES: usize = 128 << 20;
/// Upper bound of a row group's rows.
pub const ROW_GROUP_ROWS: usize = 64 * 1024;
/// zstd level: 3 is zstd's default, a good ratio at hundreds of MB/s per core.
const ZSTD_LEVEL: i32 = 3;

/// The timezone of `created_at`.
pub const UTC: &str = "UTC";

/// The dictionary-encoded string type of `model`, `lang` and `source`.
pub fn dict_utf8() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

/// The type of `created_at`.
pub fn timestamp_utc() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some(UTC.into()))
}

/// The item field of `embedding`: named `item` (Arrow's and pyarrow's default), never null.
pub fn embedding_item() -> Arc<Field> {
    Arc::new(Field::new("item", DataType::Float32, false))
}

/// The schema of embedded rows for vectors of `dim` dimensions (`dim` must fit an `i32`), with
/// a Utf8 `id` (the `extjson`, `string` and `objectid` id types).
pub fn rows_schema(dim: i32) -> SchemaRef {
    rows_schema_for(dim, IdType::ExtJson)
}

/// The schema of embedded rows of a dataset of `id_type` (see [`super::id_type`]).
pub fn rows_schema_for(dim: i32, id_type: IdType) -> SchemaRef {
    Arc::new(Schema::new(vec![
        id_type.id_field(false),
        Field::new("embedding", DataType::FixedSizeList(embedding_item(), dim), false),
        Field::new("model", dict_utf8(), false),
        Field::new("text_hash", DataType::UInt64, false),
        Field::new("tokens", DataType::UInt32, false),
        Field::new("lang", dict_utf8(), true),
        Field::new("created_at", timestamp_utc(), true),
        Field::new("source", dict_utf8(), false),
        Field::new("epoch", DataType::UInt64, false),
    ]))
}

/// The schema of rejections of an `extjson` dataset (and of every dataset before id types).
pub fn rejects_schema() -> SchemaRef {
    rejects_schema_for(IdType::ExtJson)
}

/// The schema of rejections of a dataset of `id_type`: a type with strays has a nullable `id`
/// and a last column `stray_id` (see [`super::id_type`]).
pub fn rejects_schema_for(id_type: IdType) -> SchemaRef {
    let mut fields = vec![
        id_type.id_field(true),
        Field::new("reason", DataType::Utf8, false),
        Field::new("lang", dict_utf8(), true),
        Field::new("created_at", timestamp_utc(), true),
        Field::new("source", dict_utf8(), false),
        Field::new("epoch", DataType::UInt64, false),
    ];
    if id_type.has_strays() {
        fields.push(IdType::stray_field());
    }
    Arc::new(Schema::new(fields))
}

/// Rows per row group for `dim`: 64 Ki rows, fewer when that would pass [`ROW_GROUP_BYTES`].
pub fn default_row_group_rows(dim: usize) -> usize {
    // A vector is `4 * dim` bytes and barely compresses; ~64 bytes cover the other columns.
    let row_bytes = dim.saturating_mul(4).saturating_add(64);
    (ROW_GROUP_BYTES / row_bytes.max(1)).clamp(1024, ROW_GROUP_ROWS)
}

/// Parquet settings for a file of `kind`: zstd, statistics, bounded row groups; dictionary
/// encoding only where values repeat, since it only costs time on unique ids and floats.
pub fn writer_properties(kind: FileKind, row_group_rows: usize) -> WriterProperties {
    let zstd = ZstdLevel::try_new(ZSTD_LEVEL).map(Compression::ZSTD).unwrap_or(Compression::ZSTD(ZstdLevel::default()));
    let mut props = WriterProperties::builder()
        .set_compression(zstd)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(row_group_rows.max(1)))
        .set_max_row_group_bytes(Some(ROW_GROUP_BYTES))
        .set_created_by(format!("tweet-embed {}", env!("CARGO_PKG_VERSION")))
        .set_column_dictionary_enabled(ColumnPath::from("id"), false);
    props = match kind {
        FileKind::Rows => {
            let item = ColumnPath::from(vec!["embedding".to_string(), "list".to_string(), "item".to_string()]);
            props
                .set_column_dictionary_enabled(item.clone(), false)
                // Min/max of vector components tell a reader nothing.
                .set_column_statistics_enabled(item, EnabledStatistics::None)
                .set_column_dictionary_enabled(ColumnPath::from("text_hash"), false)
        }
        FileKind::Rejects | FileKind::Deletions => props,
    };
    props.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_groups_stay_under_the_byte_bound() {
        assert_eq!(default_row_group_rows(768), ROW_GROUP_BYTES / (768 * 4 + 64));
        assert_eq!(default_row_group_rows(8), ROW_GROUP_ROWS);
        assert_eq!(default_row_group_rows(1 << 20), 1024);
    }

    #[test]
    fn schema_matches_the_design_table() {
        let s = rows_schema(768);
        let names: Vec<_> = s.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["id", "embedding", "model", "text_hash", "tokens", "lang", "created_at", "source", "epoch"]);
        assert_eq!(s.field(1).data_type(), &DataType::FixedSizeList(embedding_item(), 768));
        assert!(s.field_with_name("lang").map(|f| f.is_nullable()).unwrap_or(false));
        assert!(!s.field_with_name("source").map(|f| f.is_nullable()).unwrap_or(true));
        assert_eq!(s.field(0), &Field::new("id", DataType::Utf8, false));
    }

    #[test]
    fn the_id_column_takes_the_datasets_type() {
        let rows = rows_schema_for(8, IdType::Int64);
        assert_eq!(rows.field(0), &Field::new("id", DataType::Int64, false));
        let rejects = rejects_schema_for(IdType::Int64);
        assert_eq!(rejects.field(0), &Field::new("id", DataType::Int64, true));
        assert_eq!(rejects.fields().last().map(|f| f.name().as_str()), Some("stray_id"));
        // An extjson dataset keeps the layout files always had.
        assert_eq!(rejects_schema_for(IdType::ExtJson).field(0), &Field::new("id", DataType::Utf8, false));
        assert!(rejects_schema_for(IdType::ExtJson).field_with_name("stray_id").is_err());
    }
}
