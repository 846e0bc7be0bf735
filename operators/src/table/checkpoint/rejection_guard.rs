//! `RejectionGuard`: the committer's check, before it commits an epoch, that the epoch's
//! rejections look like data and not like a mistake in the run's settings. A wrong
//! `--text-field` rejects every document ("no text field"), and an id column type chosen on an
//! empty collection makes every later document a stray; committing such an epoch would mark the
//! whole collection rejected (issue 18, items 7 and 8). The guard stops the run before the commit
//! instead, with one line naming the reason and the flag that likely fixes it: nothing of the
//! epoch is committed or marked, so fixing the flag and starting again loses nothing.
//!
//! The rules (each over one epoch, counting rows, rejections and strays together):
//! - strays are more than half of an epoch of at least [`MIN_STRAYS`] documents;
//! - before this run has committed any row, every document of an epoch of at least
//!   [`MIN_AT_START`] is rejected for one kind of reason (`reason_kind`);
//! - at least [`MASS_SHARE`] of an epoch of at least [`MIN_EPOCH`] documents is rejected for one
//!   kind of reason.
//!
//! `--allow-mass-rejection` turns it off, for a collection that really is like that.

use super::commit::reason_kind;
use crate::table::output::IdType;

/// Strays must be at least this many (and more than half of the epoch) to stop the run.
pub const MIN_STRAYS: usize = 5;
/// Documents of an epoch, all rejected for one reason before any row, that stop the run.
pub const MIN_AT_START: usize = 20;
/// The smallest epoch the share rule judges.
pub const MIN_EPOCH: usize = 100;
/// The share of an epoch rejected for one reason that stops the run.
pub const MASS_SHARE: f64 = 0.95;

/// The guard's settings.
#[derive(Clone, Debug)]
pub struct RejectionGuard {
    /// The run's `--text-field`, named in the hint.
    pub text_field: String,
    /// The dataset's id column type, named in the hint.
    pub id_type: IdType,
    /// `--allow-mass-rejection`: never stop.
    pub allow: bool,
}

/// Why an epoch must not be committed.
#[derive(Clone, Debug, PartialEq)]
pub struct MassRejection {
    /// The line for the user (without the fields of an example document).
    pub line: String,
    /// One rejected document's id (the engine's form), to show which fields documents have.
    pub example: Option<String>,
    /// Whether the text field is the likely cause (then the line gains the example's fields).
    pub text_field_suspect: bool,
}

impl RejectionGuard {
    /// Judges epoch `epoch`: `embedded` rows, `rejected` `(id, reason)` (strays included),
    /// `strays` of them, and `rows_before` rows this run committed before it.
    pub fn judge(
        &self,
        epoch: u64,
        embedded: usize,
        rejected: &[(String, String)],
        strays: usize,
        rows_before: u64,
    ) -> Result<(), MassRejection> {
        let n = embedded + rejected.len();
        if self.allow || rejected.is_empty() {
            return Ok(());
        }
        let stop = "stopped before committing or marking it: nothing of it is written or marked";
        if strays >= MIN_STRAYS && strays * 2 > n {
            let example = rejected.iter().find(|(_, r)| r.contains("id column") || r.contains("_id"));
            // "`_id` of type long does not fit this dataset's id column (…); …": its first words.
            let reason = example.map_or("", |(_, r)| r.split(" does not fit").next().unwrap_or(r));
            return Err(MassRejection {
                line: format!(
                    "{strays} of the {n} documents of epoch {epoch} have an _id that does not fit the output's id column \
                     ({id_type}; e.g. {reason}); {stop}. The id type is chosen when a dataset starts (on an empty \
                     collection it cannot be seen): pass --id-type for these documents (extjson holds any _id), or, \
                     while the output holds nothing, start again to choose it from the documents now there",
                    id_type = self.id_type,
                ),
                example: example.map(|(id, _)| id.clone()),
                text_field_suspect: false,
            });
        }
        let mut kinds: std::collections::BTreeMap<String, (usize, &str, &str)> = Default::default();
        for (id, reason) in rejected {
            let e = kinds.entry(reason_kind(reason)).or_insert((0, id, reason));
            e.0 += 1;
        }
        let Some((_, (count, id, reason))) = kinds.into_iter().max_by_key(|(_, (c, _, _))| *c) else { return Ok(()) };
        let at_start = rows_before == 0 && count == n && n >= MIN_AT_START;
        let mass = n >= MIN_EPOCH && count as f64 >= MASS_SHARE * n as f64;
        if !(at_start || mass) {
            return Ok(());
        }
        let field = &self.text_field;
        let suspect = reason == format!("no {field} field")
            || reason == format!("{field} is null")
            || reason.starts_with(&format!("{field} is not a string"));
        let hint = if suspect {
            format!("Check --text-field (now {field})")
        } else {
            "Check the run's flags and the documents".to_string()
        };
        Err(MassRejection {
            line: format!(
                "{count} of the {n} documents of epoch {epoch} were rejected for the same reason ({reason}); {stop}. \
                 {hint}, or pass --allow-mass-rejection to mark them rejected"
            ),
            example: Some(id.to_string()),
            text_field_suspect: suspect,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> RejectionGuard {
        RejectionGuard { text_field: "text".into(), id_type: IdType::ObjectId, allow: false }
    }

    fn rejections(n: usize, reason: &str) -> Vec<(String, String)> {
        (0..n).map(|i| (format!("id{i}"), reason.to_string())).collect()
    }

    #[test]
    fn a_wrong_text_field_stops_the_first_epoch_and_names_the_flag() {
        let err = guard().judge(1, 0, &rejections(3_000, "no text field"), 0, 0).unwrap_err();
        assert!(err
            .line
            .starts_with("3000 of the 3000 documents of epoch 1 were rejected for the same reason (no text field)"));
        assert!(err.line.contains("Check --text-field (now text)") && err.text_field_suspect, "{}", err.line);
        // Small at the start: a few empty tweets are data.
        assert!(guard().judge(1, 0, &rejections(19, "empty text"), 0, 0).is_ok());
        // Later in a run, only nearly all of a large epoch.
        assert!(guard().judge(9, 0, &rejections(60, "empty text"), 0, 500).is_ok());
        assert!(guard().judge(9, 4, &rejections(96, "empty text"), 0, 500).is_err());
        assert!(guard().judge(9, 10, &rejections(90, "empty text"), 0, 500).is_ok());
        let allowed = RejectionGuard { allow: true, ..guard() };
        assert!(allowed.judge(1, 0, &rejections(3_000, "no text field"), 0, 0).is_ok());
    }

    #[test]
    fn mostly_strays_stop_naming_the_id_type() {
        let strays = rejections(8, "_id 7 (int64) does not fit the output's id column (objectid)");
        let err = guard().judge(2, 2, &strays, 8, 0).unwrap_err();
        assert!(err.line.starts_with("8 of the 10 documents of epoch 2 have an _id that does not fit"), "{}", err.line);
        assert!(err.line.contains("--id-type"), "{}", err.line);
        assert!(guard().judge(2, 10, &strays[..4], 4, 0).is_ok(), "a few strays are data");
    }
}
