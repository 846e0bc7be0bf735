//! Arrow builders that stage rows or rejections in memory until they become a `RecordBatch`.
//! A stage validates a row completely before appending any column, so a refused row can never
//! leave columns of different lengths behind.

use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, ArrayRef, FixedSizeListBuilder, Float32Builder, RecordBatch, StringBuilder, StringDictionaryBuilder,
    TimestampMillisecondBuilder, UInt32Builder, UInt64Builder,
};
use arrow::datatypes::{Int32Type, SchemaRef};

use super::error::OutputError;
use super::id_type::{IdBuilder, IdType};
use super::schema::{embedding_item, rejects_schema_for, rows_schema_for, UTC};
use crate::dataflow::record::{DocMeta, EmbeddedRow, Rejection};

/// Rows or rejections being staged for one epoch.
pub(crate) trait Stage: Sized {
    /// What is pushed.
    type Item;
    /// An empty stage with the same settings.
    fn fresh(&self) -> Self;
    /// The schema of the batches it makes.
    fn schema(&self) -> SchemaRef;
    /// Appends one item of `epoch`.
    fn push(&mut self, epoch: u64, item: &Self::Item) -> Result<(), OutputError>;
    /// Items staged.
    fn len(&self) -> usize;
    /// Takes everything staged as one batch and empties the stage.
    fn take_batch(&mut self) -> Result<RecordBatch, OutputError>;
}

/// The columns every kind shares: `lang`, `created_at`, `source`, `epoch`.
struct MetaColumns {
    lang: StringDictionaryBuilder<Int32Type>,
    created_at: TimestampMillisecondBuilder,
    source: StringDictionaryBuilder<Int32Type>,
    epoch: UInt64Builder,
}

impl MetaColumns {
    fn new() -> Self {
        MetaColumns {
            lang: StringDictionaryBuilder::new(),
            created_at: TimestampMillisecondBuilder::new().with_timezone(UTC),
            source: StringDictionaryBuilder::new(),
            epoch: UInt64Builder::new(),
        }
    }

    fn push(&mut self, epoch: u64, doc: &DocMeta) -> Result<(), OutputError> {
        match &doc.lang {
            Some(lang) => {
                self.lang.append(lang)?;
            }
            None => self.lang.append_null(),
        }
        self.created_at.append_option(doc.created_at_ms);
        self.source.append(doc.origin.as_str())?;
        self.epoch.append_value(epoch);
        Ok(())
    }
}

/// Stages embedded rows.
pub(crate) struct RowStage {
    dim: usize,
    model: Arc<str>,
    schema: SchemaRef,
    id: IdBuilder,
    embedding: FixedSizeListBuilder<Float32Builder>,
    model_col: StringDictionaryBuilder<Int32Type>,
    text_hash: UInt64Builder,
    tokens: UInt32Builder,
    meta: MetaColumns,
}

impl RowStage {
    /// A stage for `dim`-dimensional vectors of `model` with ids of `id_type`. `dim` must fit
    /// an `i32` (checked by the writer's configuration).
    pub(crate) fn new(dim: i32, model: Arc<str>, id_type: IdType) -> Self {
        RowStage {
            dim: usize::try_from(dim).unwrap_or(0),
            model,
            schema: rows_schema_for(dim, id_type),
            id: IdBuilder::new(id_type, false),
            embedding: FixedSizeListBuilder::new(Float32Builder::new(), dim).with_field(embedding_item()),
            model_col: StringDictionaryBuilder::new(),
            text_hash: UInt64Builder::new(),
            tokens: UInt32Builder::new(),
            meta: MetaColumns::new(),
        }
    }
}

impl Stage for RowStage {
    type Item = EmbeddedRow;

    fn fresh(&self) -> Self {
        RowStage::new(i32::try_from(self.dim).unwrap_or(0), self.model.clone(), self.id.id_type())
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn push(&mut self, epoch: u64, row: &EmbeddedRow) -> Result<(), OutputError> {
        if row.embedding.len() != self.dim {
            return Err(OutputError::Dim { id: row.doc.id.clone(), got: row.embedding.len(), dim: self.dim });
        }
        // The id goes first: a stray is refused before any column is touched.
        self.id.append(&row.doc.id).map_err(|reason| OutputError::Stray { id: row.doc.id.clone(), reason })?;
        self.embedding.values().append_slice(&row.embedding);
        self.embedding.append(true);
        self.model_col.append(&*self.model)?;
        self.text_hash.append_value(row.text_hash);
        self.tokens.append_value(row.tokens);
        self.meta.push(epoch, &row.doc)
    }

    fn len(&self) -> usize {
        self.text_hash.len()
    }

    fn take_batch(&mut self) -> Result<RecordBatch, OutputError> {
        let columns: Vec<ArrayRef> = vec![
            self.id.finish().0,
            Arc::new(self.embedding.finish()),
            Arc::new(self.model_col.finish()),
            Arc::new(self.text_hash.finish()),
            Arc::new(self.tokens.finish()),
            Arc::new(self.meta.lang.finish()),
            Arc::new(self.meta.created_at.finish()),
            Arc::new(self.meta.source.finish()),
            Arc::new(self.meta.epoch.finish()),
        ];
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

/// Stages rejections.
pub(crate) struct RejectStage {
    schema: SchemaRef,
    id: IdBuilder,
    reason: StringBuilder,
    meta: MetaColumns,
}

impl RejectStage {
    /// An empty stage for ids of `id_type` (strays included).
    pub(crate) fn new(id_type: IdType) -> Self {
        RejectStage {
            schema: rejects_schema_for(id_type),
            id: IdBuilder::new(id_type, true),
            reason: StringBuilder::new(),
            meta: MetaColumns::new(),
        }
    }
}

impl Stage for RejectStage {
    type Item = Rejection;

    fn fresh(&self) -> Self {
        RejectStage::new(self.id.id_type())
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn push(&mut self, epoch: u64, rejection: &Rejection) -> Result<(), OutputError> {
        // Keeps a stray in `stray_id`: never refused.
        self.id
            .append(&rejection.doc.id)
            .map_err(|reason| OutputError::Stray { id: rejection.doc.id.clone(), reason })?;
        self.reason.append_value(&rejection.reason);
        self.meta.push(epoch, &rejection.doc)
    }

    fn len(&self) -> usize {
        self.meta.epoch.len()
    }

    fn take_batch(&mut self) -> Result<RecordBatch, OutputError> {
        let (id, stray) = self.id.finish();
        let mut columns: Vec<ArrayRef> = vec![
            id,
            Arc::new(self.reason.finish()),
            Arc::new(self.meta.lang.finish()),
            Arc::new(self.meta.created_at.finish()),
            Arc::new(self.meta.source.finish()),
            Arc::new(self.meta.epoch.finish()),
        ];
        columns.extend(stray);
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataflow::record::Origin;

    fn doc(id: &str) -> DocMeta {
        DocMeta { id: id.into(), lang: Some("en".into()), created_at_ms: None, origin: Origin::Backfill }
    }

    #[test]
    fn a_wrong_dimension_is_refused_without_touching_the_columns() {
        let mut stage = RowStage::new(3, "m".into(), IdType::ExtJson);
        let good = EmbeddedRow { doc: doc("a"), embedding: vec![1.0, 2.0, 3.0], text_hash: 1, tokens: 2 };
        let bad = EmbeddedRow { embedding: vec![1.0], ..good.clone() };
        stage.push(5, &good).unwrap();
        assert!(matches!(stage.push(5, &bad), Err(OutputError::Dim { got: 1, dim: 3, .. })));
        let batch = stage.take_batch().unwrap();
        assert_eq!(batch.num_rows(), 1);
        assert_eq!(stage.len(), 0);
        assert_eq!(stage.take_batch().unwrap().num_rows(), 0);
    }

    #[test]
    fn rejects_batch_has_the_rejects_schema() {
        let mut stage = RejectStage::new(IdType::ExtJson);
        stage.push(1, &Rejection { doc: doc("x"), reason: "empty text".into() }).unwrap();
        let batch = stage.take_batch().unwrap();
        assert_eq!(batch.schema(), super::super::schema::rejects_schema());
    }

    #[test]
    fn a_stray_row_is_refused_untouched_and_a_stray_rejection_kept() {
        let mut stage = RowStage::new(1, "m".into(), IdType::Int64);
        let row = |id: &str| EmbeddedRow { doc: doc(id), embedding: vec![1.0], text_hash: 1, tokens: 2 };
        stage.push(1, &row(r#"{"$numberLong":"5"}"#)).unwrap();
        let err = stage.push(1, &row(r#""five""#)).unwrap_err();
        assert!(matches!(&err, OutputError::Stray { reason, .. } if reason.contains("type string")), "{err}");
        let batch = stage.take_batch().unwrap();
        assert_eq!(batch.num_rows(), 1);
        assert_eq!(batch.column(0).data_type(), &arrow::datatypes::DataType::Int64);

        let mut rejects = RejectStage::new(IdType::Int64);
        rejects.push(1, &Rejection { doc: doc(r#""five""#), reason: "r".into() }).unwrap();
        rejects.push(1, &Rejection { doc: doc(r#"{"$numberLong":"6"}"#), reason: "r".into() }).unwrap();
        let batch = rejects.take_batch().unwrap();
        assert_eq!(batch.schema(), rejects_schema_for(IdType::Int64));
        let read = super::super::id_type::IdColumn::new(&batch, IdType::Int64).unwrap();
        assert_eq!(
            (read.get(0).as_deref(), read.get(1).as_deref()),
            (Some(r#""five""#), Some(r#"{"$numberLong":"6"}"#))
        );
    }
}
