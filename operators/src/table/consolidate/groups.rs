//! Which inputs make one output: the files grouped by the dataset identity they record
//! (`tweet_embed.identity`), each group's output layout, and the checks and warnings about
//! identities and id types made before anything is written. It reads what the footers said
//! (`input`); it never reads rows or writes anything.

use std::path::Path;

use anyhow::{bail, Result};
use arrow::datatypes::DataType;

use super::input::{InputFile, Layout};

/// An input file as its footer describes it, and the length of its vectors (`None` for a file
/// without rows whose footer does not say it).
pub(super) struct Scanned {
    pub(super) file: InputFile,
    pub(super) dim: Option<usize>,
}

/// The inputs of one output: of one dataset identity, or of none recorded.
pub(super) struct IdentityGroup {
    /// The identity the output records: `None` unless every file of the group records this one.
    pub(super) identity: Option<String>,
    /// In path order.
    pub(super) files: Vec<Scanned>,
}

impl IdentityGroup {
    /// For people: the identity's summary line, or "no recorded identity".
    pub(super) fn label(&self) -> String {
        match self.identity.as_deref().map(serde_json::from_str::<crate::table::identity::DatasetIdentity>) {
            Some(Ok(i)) => i.summary(),
            Some(Err(_)) => "an unreadable identity".into(),
            None => "no recorded identity".into(),
        }
    }

    /// The subfolder name of the group: `dim768-prompt-document-<FNV-1a of the identity>`, or
    /// `no-identity`.
    pub(super) fn slug(&self) -> String {
        let Some(json) = &self.identity else { return NO_IDENTITY.into() };
        let hash = json.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        match serde_json::from_str::<crate::table::identity::DatasetIdentity>(json) {
            Ok(i) => format!("dim{}-prompt-{}-{hash:016x}", i.dim, i.prompt_name.as_deref().unwrap_or("none"))
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
                .collect(),
            Err(_) => format!("identity-{hash:016x}"),
        }
    }

    /// All `groups` as one output, in path order. It records the identity only when there is
    /// one group with one: an identity is never stamped on files that do not record it.
    pub(super) fn merge(groups: Vec<IdentityGroup>) -> IdentityGroup {
        let identity = match groups.as_slice() {
            [one] => one.identity.clone(),
            _ => None,
        };
        let mut files: Vec<Scanned> = groups.into_iter().flat_map(|g| g.files).collect();
        files.sort_by(|a, b| a.file.path.cmp(&b.file.path));
        IdentityGroup { identity, files }
    }

    /// The output's layout (`None` when no file has a row), after checking that every vector
    /// has one length and that no two files record different id types; says once when the
    /// output's `id` column changes some file's ids (integers written as decimal text).
    pub(super) fn layout(&self) -> Result<Option<Layout>> {
        let mut dim: Option<(usize, &Path)> = None;
        for s in &self.files {
            match (dim, s.dim) {
                (Some((d, first)), Some(fd)) if d != fd => bail!(
                    "{}: vectors have {fd} dimensions, but {} has {d}; consolidate files of one model at a time",
                    s.file.path.display(),
                    first.display()
                ),
                (None, Some(fd)) => dim = Some((fd, &s.file.path)),
                _ => {}
            }
        }
        let files: Vec<&InputFile> = self.files.iter().map(|s| &s.file).collect();
        check_id_types(&files)?;
        let layout = match dim {
            Some((d, _)) if files.iter().any(|f| f.rows > 0) => Layout::decide(&files, d)?,
            _ => return Ok(None),
        };
        warn_id_conversion(&files, &layout);
        Ok(Some(layout))
    }
}

/// The subfolder of `--group-by-identity` for the files that record no identity.
const NO_IDENTITY: &str = "no-identity";

/// The inputs grouped by identity, in order of first appearance, each group in path order.
/// Files that record no identity are a group of their own: nothing tells which model made them.
pub(super) fn by_identity(files: Vec<Scanned>) -> Vec<IdentityGroup> {
    let mut groups: Vec<IdentityGroup> = Vec::new();
    for s in files {
        match groups.iter_mut().find(|g| g.identity == s.file.identity) {
            Some(g) => g.files.push(s),
            None => groups.push(IdentityGroup { identity: s.file.identity.clone(), files: vec![s] }),
        }
    }
    groups
}

/// Says once, when some output holds files that record no identity, that it records none.
pub(super) fn warn_unknown_identity(groups: &[IdentityGroup], files_in: usize, grouped: bool) {
    for g in groups.iter().filter(|g| g.identity.is_none()) {
        let unknown: Vec<&Path> =
            g.files.iter().filter(|s| s.file.identity.is_none()).map(|s| s.file.path.as_path()).collect();
        let Some(example) = unknown.first() else { continue };
        let n = unknown.len();
        if grouped {
            tracing::warn!(
                "{n} of {files_in} input files record no dataset identity (e.g. {}): they are merged into the \
                 subfolder {NO_IDENTITY}, whose files record none either",
                example.display()
            );
        } else if n == files_in {
            tracing::warn!(
                "none of the {files_in} input files records a dataset identity (model, revision, dimension, prompt: \
                 tweet_embed.identity; e.g. {}): the output records none either",
                example.display()
            );
        } else {
            tracing::warn!(
                "{n} of {files_in} input files record no dataset identity (e.g. {}): the output cannot say which \
                 model made their vectors and records none; --group-by-identity keeps the identity of the others \
                 (the files without one go to the subfolder {NO_IDENTITY})",
                example.display()
            );
        }
    }
}

/// Refuses files that record different id types ([`crate::table::output::ID_TYPE_KEY`]): one `id`
/// column would hold ids that name documents differently (the number 5 and the string "5" would be
/// one id).
fn check_id_types(files: &[&InputFile]) -> Result<()> {
    let mut recorded = files.iter().filter_map(|f| f.id_type.map(|t| (f, t)));
    let Some((first, t)) = recorded.next() else { return Ok(()) };
    if let Some((other, u)) = recorded.find(|(_, u)| *u != t) {
        bail!(
            "the inputs' ids are of different types: {} records id type {t} ({} column) and {} records {u} ({} \
             column); one id column cannot hold both (the number 5 and the string \"5\" would be one id). \
             Consolidate each dataset on its own",
            first.path.display(),
            first.id_data_type(),
            other.path.display(),
            other.id_data_type()
        );
    }
    Ok(())
}

/// Says once when the output's `id` column is a string column but some file's ids are
/// integers, which are written as their decimal text.
fn warn_id_conversion(files: &[&InputFile], layout: &Layout) {
    if layout.schema.field(0).data_type() != &DataType::Utf8 {
        return;
    }
    let integer = |t: &DataType| match t {
        DataType::Dictionary(_, v) => v.is_integer(),
        t => t.is_integer(),
    };
    let integers: Vec<&&InputFile> = files.iter().filter(|f| integer(f.id_data_type())).collect();
    let Some(int_file) = integers.first() else { return };
    let other = files.iter().find(|f| f.id_data_type() != int_file.id_data_type());
    let beside = match other {
        Some(o) => format!(" and {} has {} ids", o.path.display(), o.id_data_type()),
        None => String::new(),
    };
    tracing::warn!(
        "the inputs' id columns differ: {} has {} ids{beside}; the output's id is a string column, the integer ids \
         of {} of {} files written as their decimal text",
        int_file.path.display(),
        int_file.id_data_type(),
        integers.len(),
        files.len()
    );
}
