//! The type of the output's `id` column, one per dataset, so that users join the output to their
//! tweets on `id` without knowing anything of ours:
//!
//! | id type    | `_id`s it holds      | `id` column                           |
//! |------------|----------------------|---------------------------------------|
//! | `int64`    | Int32 and Int64      | Int64, the number                     |
//! | `string`   | strings              | Utf8, the string as stored            |
//! | `objectid` | ObjectIds            | Utf8, 24 lowercase hex digits         |
//! | `extjson`  | anything             | Utf8, canonical extended JSON (24-hex for an ObjectId) |
//!
//! `extjson` is the encoding every file had before id types existed, kept for collections whose
//! `_id`s are of mixed types; files without the [`ID_TYPE_KEY`] metadata are read as `extjson`.
//! Which type a dataset has is decided once, at its first start, and recorded in its checkpoint
//! (`crate::run`); every file says it in its key-value metadata ([`ID_TYPE_KEY`]).
//!
//! Inside the engine an id is always the unambiguous string of
//! [`crate::mongo::document_id::DocId`] (24-hex for an ObjectId, canonical extended JSON otherwise):
//! this module converts only at the Parquet boundary, [`IdType::value`] on the way in and
//! [`IdColumn`] on the way out. An id read back is that same string, except that an Int32 `_id`
//! comes back as Int64 (one `int64` column holds both; MongoDB matches numbers by value, so
//! either marks the same document): compare ids that went through a file with [`canonical_id`].
//!
//! **Strays.** A document whose `_id` does not fit the dataset's type (a double or a string in an
//! `int64` dataset, …) cannot be a row: it becomes a rejection whose reason says so
//! ([`IdType::value`]'s error), marked `false` in MongoDB like any other. Rejections and
//! deletions therefore keep, next to an `id` of the dataset's type, a nullable Utf8 column
//! [`STRAY_ID`]: for a stray, `id` is null and `stray_id` holds its extended JSON; for every
//! other document `stray_id` is null. This keeps both things that matter working:
//! - joins: `_rejects/` and `_deletions/` join to the tweets (and anti-join to the rows) on `id`
//!   with the same type as the rows, never through an encoding of ours;
//! - recovery: every rejection, stray or not, reads back as an unambiguous id, so re-marking it
//!   after a crash marks exactly that document (writing a stray's id as, say, the decimal text of
//!   a number would make the string `"5"` and the number `5` one id).
//!
//! An `extjson` dataset has no strays, and its files keep exactly the layout they always had.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, Int64Builder, RecordBatch, StringArray, StringBuilder};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use mongodb::bson::spec::ElementType;
use mongodb::bson::Bson;
use parquet::file::metadata::KeyValue;
use serde::{Deserialize, Serialize};

use crate::mongo::document_id::DocId;

/// The key of the id type in every file's key-value metadata.
pub const ID_TYPE_KEY: &str = "tweet_embed.id_type";
/// The column of rejections and deletions that holds a stray's `_id` as extended JSON.
pub const STRAY_ID: &str = "stray_id";

/// The type of a dataset's `id` column (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdType {
    /// Int32 and Int64 `_id`s, as an Int64 column.
    Int64,
    /// String `_id`s, as they are.
    String,
    /// ObjectIds, as 24 hex digits.
    ObjectId,
    /// Any `_id`, as canonical extended JSON (an ObjectId as 24 hex digits): mixed collections.
    ExtJson,
}

/// An id as the `id` column holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdValue<'a> {
    /// In an Int64 column.
    Int(i64),
    /// In a Utf8 column.
    Str(Cow<'a, str>),
}

impl IdType {
    /// Every type, in the order the flag lists them.
    pub const ALL: [IdType; 4] = [IdType::Int64, IdType::String, IdType::ObjectId, IdType::ExtJson];

    /// Its name: `int64`, `string`, `objectid` or `extjson`.
    pub fn as_str(self) -> &'static str {
        match self {
            IdType::Int64 => "int64",
            IdType::String => "string",
            IdType::ObjectId => "objectid",
            IdType::ExtJson => "extjson",
        }
    }

    /// The Arrow type of the `id` column.
    pub fn data_type(self) -> DataType {
        match self {
            IdType::Int64 => DataType::Int64,
            _ => DataType::Utf8,
        }
    }

    /// Whether an `_id` can fail to fit, so rejections and deletions carry [`STRAY_ID`].
    pub fn has_strays(self) -> bool {
        self != IdType::ExtJson
    }

    /// The type of a collection whose smallest `_id` is `min` and largest `max` (`None` for an
    /// empty collection). MongoDB orders `_id`s by type class first (numbers < strings < objects
    /// < … < ObjectId < …), so two edges of one class mean every `_id` has that class: numbers
    /// give `int64` (a double among them is a stray), strings `string`, ObjectIds `objectid`;
    /// anything else, or edges of two classes, `extjson`. An empty collection gets `objectid`,
    /// MongoDB's own `_id`.
    pub fn of_edges(min: Option<&Bson>, max: Option<&Bson>) -> IdType {
        let (min, max) = match (min, max) {
            (None, None) => return IdType::ObjectId,
            (Some(a), None) | (None, Some(a)) => (a, a),
            (Some(a), Some(b)) => (a, b),
        };
        match (class(min), class(max)) {
            (Some(a), Some(b)) if a == b => a,
            _ => IdType::ExtJson,
        }
    }

    /// The type recorded in a file's key-value metadata `kv`; a file without it was written
    /// before id types existed and is `extjson`, unless its `id` column in `schema` is Int64.
    /// Errors: a value no build knows.
    pub fn of_file(kv: Option<&Vec<KeyValue>>, schema: &Schema) -> Result<IdType, String> {
        let recorded = kv.into_iter().flatten().find(|kv| kv.key == ID_TYPE_KEY).and_then(|kv| kv.value.as_deref());
        match recorded {
            Some(v) => v.parse(),
            None if schema.field_with_name("id").is_ok_and(|f| f.data_type() == &DataType::Int64) => Ok(IdType::Int64),
            None => Ok(IdType::ExtJson),
        }
    }

    /// The value the `id` column holds for the engine's id `id` (see
    /// [`crate::mongo::document_id::DocId`]), or, for a stray, the reason of its rejection.
    pub fn value(self, id: &str) -> Result<IdValue<'_>, String> {
        let fits = match self {
            IdType::ExtJson => Some(IdValue::Str(Cow::Borrowed(id))),
            IdType::ObjectId => is_object_id(id).then_some(IdValue::Str(Cow::Borrowed(id))),
            IdType::Int64 => integer(id).map(IdValue::Int),
            // A string's canonical extended JSON is a JSON string, and nothing else is.
            IdType::String => id
                .starts_with('"')
                .then(|| serde_json::from_str::<String>(id).ok())
                .flatten()
                .map(|s| IdValue::Str(s.into())),
        };
        fits.ok_or_else(|| self.stray_reason(id))
    }

    /// Whether `id` fits the column.
    pub fn fits(self, id: &str) -> bool {
        self.value(id).is_ok()
    }

    /// Why `id` does not fit.
    fn stray_reason(self, id: &str) -> String {
        format!(
            "`_id` of type {} does not fit this dataset's id column ({self}); its extended JSON is in {STRAY_ID} of _rejects",
            type_name(id)
        )
    }

    /// The `id` field: not null in rows, nullable in rejections and deletions of a type with
    /// strays.
    pub fn id_field(self, nullable: bool) -> Field {
        Field::new("id", self.data_type(), nullable && self.has_strays())
    }

    /// The [`STRAY_ID`] field.
    pub fn stray_field() -> Field {
        Field::new(STRAY_ID, DataType::Utf8, true)
    }
}

impl fmt::Display for IdType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for IdType {
    type Err = String;

    fn from_str(s: &str) -> Result<IdType, String> {
        let s = s.trim().to_ascii_lowercase();
        IdType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| format!("`{s}` is not an id type: use int64, string, objectid or extjson"))
    }
}

/// The id type class of an `_id` (`None`: extended JSON only).
fn class(b: &Bson) -> Option<IdType> {
    match b {
        Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_) => Some(IdType::Int64),
        Bson::String(_) => Some(IdType::String),
        Bson::ObjectId(_) => Some(IdType::ObjectId),
        _ => None,
    }
}

fn is_object_id(id: &str) -> bool {
    id.len() == 24 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The number of an Int32 or Int64 `_id` in the engine's form.
fn integer(id: &str) -> Option<i64> {
    let digits = id
        .strip_prefix(r#"{"$numberLong":""#)
        .or_else(|| id.strip_prefix(r#"{"$numberInt":""#))
        .and_then(|rest| rest.strip_suffix(r#""}"#))?;
    digits.parse().ok()
}

/// MongoDB's name (`$type` alias) of the type of the engine's id `id`.
fn type_name(id: &str) -> &'static str {
    let Some(b) = DocId::decode(id) else { return "unknown" };
    match b.element_type() {
        ElementType::Double => "double",
        ElementType::String => "string",
        ElementType::EmbeddedDocument => "object",
        ElementType::Array => "array",
        ElementType::Binary => "binData",
        ElementType::Undefined => "undefined",
        ElementType::ObjectId => "objectId",
        ElementType::Boolean => "bool",
        ElementType::DateTime => "date",
        ElementType::Null => "null",
        ElementType::RegularExpression => "regex",
        ElementType::DbPointer => "dbPointer",
        ElementType::JavaScriptCode => "javascript",
        ElementType::Symbol => "symbol",
        ElementType::JavaScriptCodeWithScope => "javascriptWithScope",
        ElementType::Int32 => "int",
        ElementType::Timestamp => "timestamp",
        ElementType::Int64 => "long",
        ElementType::Decimal128 => "decimal",
        ElementType::MaxKey => "maxKey",
        ElementType::MinKey => "minKey",
    }
}

/// `id` (the engine's form) as it reads back from a file: an Int32 `_id` as Int64, everything
/// else unchanged. Compare an id that did not go through a file with one that did through this.
pub fn canonical_id(id: &str) -> Cow<'_, str> {
    match id.strip_prefix(r#"{"$numberInt":""#) {
        Some(rest) => Cow::Owned(format!(r#"{{"$numberLong":"{rest}"#)),
        None => Cow::Borrowed(id),
    }
}

/// Builds the id columns of a batch: `id`, and [`STRAY_ID`] when `strays` is set.
pub(crate) struct IdBuilder {
    id_type: IdType,
    ids: Ids,
    stray: Option<StringBuilder>,
}

enum Ids {
    Int(Int64Builder),
    Str(StringBuilder),
}

impl IdBuilder {
    /// Columns of `id_type`; with `strays`, a stray is kept in [`STRAY_ID`] (only for a type
    /// that has strays: rejections and deletions); without, it is refused (rows).
    pub(crate) fn new(id_type: IdType, strays: bool) -> IdBuilder {
        let ids = match id_type.data_type() {
            DataType::Int64 => Ids::Int(Int64Builder::new()),
            _ => Ids::Str(StringBuilder::new()),
        };
        let stray = (strays && id_type.has_strays()).then(StringBuilder::new);
        IdBuilder { id_type, ids, stray }
    }

    /// The type it builds.
    pub(crate) fn id_type(&self) -> IdType {
        self.id_type
    }

    /// Appends `id`; a stray is refused with its reason (nothing appended) unless this builder
    /// keeps strays.
    pub(crate) fn append(&mut self, id: &str) -> Result<(), String> {
        match (self.id_type.value(id), &mut self.stray) {
            (Ok(value), stray) => {
                match (value, &mut self.ids) {
                    (IdValue::Int(n), Ids::Int(b)) => b.append_value(n),
                    (IdValue::Str(s), Ids::Str(b)) => b.append_value(s),
                    // `value` gives an Int exactly for the Int64 column.
                    (_, Ids::Int(b)) => b.append_null(),
                    (_, Ids::Str(b)) => b.append_null(),
                }
                if let Some(stray) = stray {
                    stray.append_null();
                }
                Ok(())
            }
            (Err(_), Some(stray)) => {
                match &mut self.ids {
                    Ids::Int(b) => b.append_null(),
                    Ids::Str(b) => b.append_null(),
                }
                stray.append_value(id);
                Ok(())
            }
            (Err(reason), None) => Err(reason),
        }
    }

    /// The `id` column built so far, and the [`STRAY_ID`] column if it keeps strays; empties it.
    pub(crate) fn finish(&mut self) -> (ArrayRef, Option<ArrayRef>) {
        let ids: ArrayRef = match &mut self.ids {
            Ids::Int(b) => Arc::new(b.finish()),
            Ids::Str(b) => Arc::new(b.finish()),
        };
        (ids, self.stray.as_mut().map(|s| Arc::new(s.finish()) as ArrayRef))
    }
}

/// Reads the ids of a batch back into the engine's form (see the module doc).
pub struct IdColumn<'a> {
    ids: IdArray<'a>,
    stray: Option<&'a StringArray>,
    quoted: bool,
}

enum IdArray<'a> {
    Int(&'a Int64Array),
    Str(&'a StringArray),
}

impl<'a> IdColumn<'a> {
    /// The ids of `batch`, from a file of `id_type` (see [`IdType::of_file`]). Errors: no `id`
    /// column, or one of another type than `id_type`'s, or a [`STRAY_ID`] that is not Utf8.
    pub fn new(batch: &'a RecordBatch, id_type: IdType) -> Result<IdColumn<'a>, String> {
        let col = batch.column_by_name("id").ok_or("no column id")?;
        let ids = match (id_type.data_type(), col.data_type()) {
            (DataType::Int64, DataType::Int64) => IdArray::Int(col.as_primitive::<Int64Type>()),
            (DataType::Utf8, DataType::Utf8) => IdArray::Str(col.as_string::<i32>()),
            (want, got) => return Err(format!("id is {got}, but the file's id type {id_type} needs {want}")),
        };
        let stray = match batch.column_by_name(STRAY_ID) {
            Some(c) => Some(c.as_string_opt::<i32>().ok_or_else(|| format!("{STRAY_ID} is not a string column"))?),
            None => None,
        };
        Ok(IdColumn { ids, stray, quoted: id_type == IdType::String })
    }

    /// The id of row `i` in the engine's form, written into `buf`; `false` (and `buf` empty)
    /// when the row has none (a null `id` and no [`STRAY_ID`]).
    pub fn read_into(&self, i: usize, buf: &mut String) -> bool {
        use std::fmt::Write;
        buf.clear();
        match self.ids {
            IdArray::Int(a) if a.is_valid(i) => {
                let _ = write!(buf, r#"{{"$numberLong":"{}"}}"#, a.value(i));
            }
            IdArray::Str(a) if a.is_valid(i) => {
                if self.quoted {
                    // Serializing a string to JSON cannot fail.
                    buf.push_str(&serde_json::to_string(a.value(i)).unwrap_or_default());
                } else {
                    buf.push_str(a.value(i));
                }
            }
            _ => match self.stray {
                Some(s) if s.is_valid(i) => buf.push_str(s.value(i)),
                _ => return false,
            },
        }
        true
    }

    /// The id of row `i` in the engine's form, if it has one.
    pub fn get(&self, i: usize) -> Option<String> {
        let mut buf = String::new();
        self.read_into(i, &mut buf).then_some(buf)
    }

    /// Rows.
    pub fn len(&self) -> usize {
        match self.ids {
            IdArray::Int(a) => a.len(),
            IdArray::Str(a) => a.len(),
        }
    }

    /// Whether it has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::oid::ObjectId;

    #[test]
    fn names_round_trip_through_str_and_serde() {
        for t in IdType::ALL {
            assert_eq!(t.to_string().parse::<IdType>(), Ok(t));
            assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{t}\""));
        }
        assert_eq!(" Int64 ".parse::<IdType>(), Ok(IdType::Int64));
        assert!("auto".parse::<IdType>().unwrap_err().contains("int64, string, objectid or extjson"));
    }

    #[test]
    fn edges_of_one_class_decide_it() {
        let oid = Bson::ObjectId(ObjectId::new());
        let cases = [
            (Some(Bson::Int32(1)), Some(Bson::Int64(1 << 40)), IdType::Int64),
            (Some(Bson::Double(0.5)), Some(Bson::Int64(7)), IdType::Int64),
            (Some(Bson::String("a".into())), Some(Bson::String("z".into())), IdType::String),
            (Some(oid.clone()), Some(oid.clone()), IdType::ObjectId),
            (Some(Bson::Int64(1)), Some(Bson::String("x".into())), IdType::ExtJson),
            (Some(Bson::String("x".into())), Some(oid.clone()), IdType::ExtJson),
            (Some(Bson::Boolean(false)), Some(Bson::Boolean(true)), IdType::ExtJson),
            (Some(Bson::Document(Default::default())), Some(Bson::Document(Default::default())), IdType::ExtJson),
            (None, None, IdType::ObjectId),
        ];
        for (min, max, want) in cases {
            assert_eq!(IdType::of_edges(min.as_ref(), max.as_ref()), want, "{min:?} {max:?}");
        }
    }

    #[test]
    fn values_fit_their_type_and_strays_say_why() {
        let oid = ObjectId::new();
        let int = DocId::of(&Bson::Int64(-42)).into_string();
        let small = DocId::of(&Bson::Int32(7)).into_string();
        let s = DocId::of(&Bson::String("12\"3 ☀".into())).into_string();
        let hex = DocId::of(&Bson::ObjectId(oid)).into_string();
        let dbl = DocId::of(&Bson::Double(1.5)).into_string();
        assert_eq!(IdType::Int64.value(&int), Ok(IdValue::Int(-42)));
        assert_eq!(IdType::Int64.value(&small), Ok(IdValue::Int(7)));
        assert_eq!(IdType::String.value(&s), Ok(IdValue::Str("12\"3 ☀".into())));
        assert_eq!(IdType::ObjectId.value(&hex), Ok(IdValue::Str(oid.to_hex().into())));
        for id in [&int, &small, &s, &hex, &dbl] {
            assert_eq!(IdType::ExtJson.value(id), Ok(IdValue::Str(id.as_str().into())), "extjson takes every id");
        }
        let reason = IdType::Int64.value(&dbl).unwrap_err();
        assert!(reason.starts_with("`_id` of type double does not fit this dataset's id column (int64)"), "{reason}");
        assert!(IdType::Int64.value(&s).unwrap_err().contains("type string"));
        assert!(IdType::String.value(&int).unwrap_err().contains("type long"));
        assert!(IdType::String.value(&hex).unwrap_err().contains("type objectId"));
        assert!(IdType::ObjectId.value(&s).unwrap_err().contains("(objectid)"));
        // A 24-hex string `_id` is a string, not an ObjectId.
        assert!(!IdType::ObjectId.fits(&DocId::of(&Bson::String(oid.to_hex())).into_string()));
    }

    #[test]
    fn columns_read_back_as_the_engines_ids() {
        let ids = [
            (
                IdType::Int64,
                vec![
                    DocId::of(&Bson::Int64(5)).into_string(),
                    DocId::of(&Bson::Int32(-3)).into_string(),
                    DocId::of(&Bson::Double(2.5)).into_string(),
                ],
            ),
            (
                IdType::String,
                vec![DocId::of(&Bson::String("a\"b".into())).into_string(), DocId::of(&Bson::Int64(1)).into_string()],
            ),
            (IdType::ObjectId, vec![ObjectId::new().to_hex(), DocId::of(&Bson::String("x".into())).into_string()]),
            (IdType::ExtJson, vec![DocId::of(&Bson::Double(2.5)).into_string(), ObjectId::new().to_hex()]),
        ];
        for (t, ids) in ids {
            let mut b = IdBuilder::new(t, true);
            for id in &ids {
                b.append(id).unwrap();
            }
            let (col, stray) = b.finish();
            assert_eq!(col.data_type(), &t.data_type());
            assert_eq!(stray.is_some(), t.has_strays());
            let mut fields = vec![t.id_field(true)];
            let mut cols = vec![col];
            if let Some(s) = stray {
                fields.push(IdType::stray_field());
                cols.push(s);
            }
            let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap();
            let read = IdColumn::new(&batch, t).unwrap();
            let back: Vec<String> = (0..read.len()).map(|i| read.get(i).unwrap()).collect();
            let want: Vec<String> = ids.iter().map(|id| canonical_id(id).into_owned()).collect();
            assert_eq!(back, want, "{t}");
            // Rows refuse strays.
            let mut rows = IdBuilder::new(t, false);
            for id in &ids {
                assert_eq!(rows.append(id).is_ok(), t.fits(id), "{t} {id}");
            }
        }
    }

    #[test]
    fn canonical_ids_read_int32_as_int64() {
        assert_eq!(canonical_id(&DocId::of(&Bson::Int32(9)).into_string()), DocId::of(&Bson::Int64(9)).into_string());
        for id in [DocId::of(&Bson::Int64(9)).into_string(), "\"x\"".to_string(), ObjectId::new().to_hex()] {
            assert_eq!(canonical_id(&id), id);
        }
    }

    #[test]
    fn files_without_the_key_are_extjson_unless_their_ids_are_numbers() {
        let utf8 = Schema::new(vec![Field::new("id", DataType::Utf8, false)]);
        let int = Schema::new(vec![Field::new("id", DataType::Int64, false)]);
        assert_eq!(IdType::of_file(None, &utf8), Ok(IdType::ExtJson));
        assert_eq!(IdType::of_file(None, &int), Ok(IdType::Int64));
        let kv = vec![KeyValue::new(ID_TYPE_KEY.into(), "string".to_string())];
        assert_eq!(IdType::of_file(Some(&kv), &utf8), Ok(IdType::String));
        let bad = vec![KeyValue::new(ID_TYPE_KEY.into(), "uuid".to_string())];
        assert!(IdType::of_file(Some(&bad), &utf8).is_err());
    }
}
