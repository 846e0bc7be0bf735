//! The checkpoint file: one small JSON file on hot storage recording how far the run is committed
//! and marked, the files a restart must mark again, and where the sources resume ([`Checkpoint`],
//! in the format [`Stored`] says), with status's [`CommitHistory`] beside it. It is
//! replaced atomically (temp file, fsync, rename, fsync the directory), so a crash leaves the
//! old or the new checkpoint, never a mix. A checkpoint that exists but cannot be read is an
//! error, never "no checkpoint": that would silently redo and duplicate committed output.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::history::CommitHistory;
use super::state::{Checkpoint, Stored};
use crate::table::output::fsio::{ensure_writable_dir, sync_dir};
use crate::table::output::OutputError;

const FILE_NAME: &str = "checkpoint.json";
const TMP_NAME: &str = "checkpoint.json.tmp";

/// The checkpoint file of a state directory. One run at a time may use a state directory.
#[derive(Clone, Debug)]
pub struct CheckpointStore {
    dir: PathBuf,
    path: PathBuf,
}

impl CheckpointStore {
    /// Creates `state_dir` if needed and proves it writable.
    pub fn open(state_dir: impl Into<PathBuf>) -> Result<Self, OutputError> {
        let dir = state_dir.into();
        ensure_writable_dir(&dir, ".tweet-embed-probe-checkpoint")?;
        let path = dir.join(FILE_NAME);
        Ok(CheckpointStore { dir, path })
    }

    /// The checkpoint file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The checkpoint, or `None` when none was ever saved. A temporary file left by a crash
    /// during `save` is ignored: the rename that would have published it never happened.
    pub fn load(&self) -> Result<Option<Checkpoint>, OutputError> {
        Ok(self.load_with_history()?.map(|(checkpoint, _)| checkpoint))
    }

    /// The checkpoint and status's commit history saved beside it, or `None` when none was ever
    /// saved (see [`Self::load`]).
    pub fn load_with_history(&self) -> Result<Option<(Checkpoint, CommitHistory)>, OutputError> {
        let text = match fs::read(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(OutputError::io("read checkpoint", &self.path, e)),
        };
        let corrupt = |reason: String| OutputError::CorruptCheckpoint { path: self.path.clone(), reason };
        let stored: Stored = serde_json::from_slice(&text).map_err(|e| corrupt(e.to_string()))?;
        stored.into_parts().map(Some).map_err(corrupt)
    }

    /// Replaces the checkpoint, and the commit history saved beside it, atomically and durably.
    pub fn save(&self, checkpoint: &Checkpoint, history: &CommitHistory) -> Result<(), OutputError> {
        if checkpoint.marked() > checkpoint.committed() {
            return Err(OutputError::Config(format!(
                "refusing to save a checkpoint marked at {} above committed {}",
                checkpoint.marked(),
                checkpoint.committed()
            )));
        }
        let text = serde_json::to_vec_pretty(&Stored::new(checkpoint, history))
            .map_err(|e| OutputError::io("encode checkpoint", &self.path, io::Error::other(e)))?;
        let tmp = self.dir.join(TMP_NAME);
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| OutputError::io("create", &tmp, e))?;
        file.write_all(&text).map_err(|e| OutputError::io("write", &tmp, e))?;
        file.sync_all().map_err(|e| OutputError::io("fsync", &tmp, e))?;
        drop(file);
        fs::rename(&tmp, &self.path).map_err(|e| OutputError::io("replace checkpoint with", &tmp, e))?;
        sync_dir(&self.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::checkpoint::SourcePositions;
    use crate::table::identity::DatasetIdentity;
    use crate::table::output::naming::FileKind;
    use crate::table::output::{FileMeta, IdType};
    use crate::tei::TruncationDirection;

    fn sample() -> Checkpoint {
        let mut sources = SourcePositions::default();
        sources.backfill.insert("en/false".into(), r#"{"$oid":"65a1b2c3d4e5f60718293a4b"}"#.into());
        sources.resume_token = Some(r#"{"_data":"8265"}"#.into());
        sources.cluster_time = Some((1_700_000_000, 3));
        let file = FileMeta {
            path: "part-e000000000007-e000000000007-w000-0001.parquet".into(),
            kind: FileKind::Rows,
            epoch_lo: 7,
            epoch_hi: 7,
            rows: 10,
            bytes: 1000,
            worker: 0,
            staged_at_ms: 0,
        };
        Checkpoint::new(7, 6, vec![file], sources)
    }

    fn identity() -> DatasetIdentity {
        DatasetIdentity {
            model_id: "m".into(),
            model_sha: None,
            dim: 4,
            prompt_name: None,
            normalize: true,
            truncation_direction: TruncationDirection::Right,
            text_field: "text".into(),
            mark_field: "mark".into(),
            id_type: None,
        }
    }

    /// The file `store` holds, as JSON.
    fn on_disk(store: &CheckpointStore) -> serde_json::Value {
        serde_json::from_slice(&fs::read(store.path()).unwrap()).unwrap()
    }

    #[test]
    fn missing_is_none_and_saved_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path().join("state")).unwrap();
        assert_eq!(store.load().unwrap(), None);
        let mut cp = sample();
        let history = CommitHistory::new(5_000, vec![(1_000, 4_000), (2_000, 5_000)]);
        store.save(&cp, &history).unwrap();
        assert_eq!(store.load_with_history().unwrap(), Some((cp.clone(), history.clone())));
        cp.commit(8, Vec::new(), 0, None);
        cp.mark(8);
        store.save(&cp, &history).unwrap();
        assert_eq!(store.load().unwrap(), Some(cp));
    }

    #[test]
    fn the_file_keeps_the_names_earlier_builds_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        let mut cp = sample();
        cp.set_identity(Some(identity()));
        cp.set_id_type(IdType::Int64);
        store.save(&cp, &CommitHistory::new(3, vec![(1, 3)])).unwrap();
        let json = on_disk(&store);
        let mut keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "committed",
                "compacting",
                "compactions",
                "deletions_applied",
                "deletions_done",
                "deletions_recorded",
                "documents_marked",
                "files",
                "id_type",
                "identity",
                "marked",
                "next_file_seq",
                "recent",
                "sources",
                "staged",
                "updated_at_ms",
                "version"
            ]
        );
        assert_eq!((json["version"].as_u64(), json["documents_marked"].as_u64()), (Some(2), Some(3)));
        // Earlier builds read the id type from either place.
        assert_eq!((json["id_type"].as_str(), json["identity"]["id_type"].as_str()), (Some("int64"), Some("int64")));
    }

    #[test]
    fn the_id_type_is_kept_once_and_read_from_either_place_of_an_older_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        let mut cp = sample();
        cp.set_identity(Some(DatasetIdentity { id_type: Some(IdType::String), ..identity() }));
        // The identity's own id type is not taken: the checkpoint's is the one.
        assert_eq!((cp.id_type(), cp.identity().and_then(|i| i.id_type)), (None, None));
        cp.set_id_type(IdType::Int64);
        assert_eq!(cp.identity().and_then(|i| i.id_type), Some(IdType::Int64));
        store.save(&cp, &CommitHistory::default()).unwrap();
        assert_eq!(store.load().unwrap().and_then(|c| c.recorded_id_type()), Some(IdType::Int64));
        let saved = on_disk(&store);
        let load = |json: &serde_json::Value| {
            fs::write(store.path(), json.to_string()).unwrap();
            store.load().unwrap().unwrap()
        };
        // Only at the top (a build that recorded the identity without it).
        let mut top = saved.clone();
        top["identity"].as_object_mut().unwrap().remove("id_type");
        let loaded = load(&top);
        assert_eq!(
            (loaded.id_type(), loaded.identity().and_then(|i| i.id_type)),
            (Some(IdType::Int64), Some(IdType::Int64))
        );
        // Only in the identity.
        let mut inner = saved.clone();
        inner.as_object_mut().unwrap().remove("id_type");
        assert_eq!(load(&inner).id_type(), Some(IdType::Int64));
        // In neither (a build before id types): extjson once epochs are committed.
        inner["identity"].as_object_mut().unwrap().remove("id_type");
        let loaded = load(&inner);
        assert_eq!((loaded.id_type(), loaded.recorded_id_type()), (None, Some(IdType::ExtJson)));
        let fresh = Checkpoint::new(0, 0, Vec::new(), SourcePositions::default());
        assert_eq!(fresh.recorded_id_type(), None);
    }

    #[test]
    fn a_version_1_checkpoint_has_everything_applied_and_nothing_staged() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        let v1 = r#"{"version":1,"committed":9,"marked":9,"files":[],"sources":{"backfill":{},"resume_token":null,"cluster_time":null},"updated_at_ms":5}"#;
        fs::write(store.path(), v1).unwrap();
        let (cp, history) = store.load_with_history().unwrap().unwrap();
        assert_eq!((cp.committed(), cp.deletions_applied(), cp.staged().len()), (9, 9, 0));
        assert_eq!(history, CommitHistory::default());
        let mut to_mark: serde_json::Value = serde_json::from_str(v1).unwrap();
        to_mark["marked"] = 8.into();
        to_mark["files"] = serde_json::to_value(sample().files()).unwrap();
        fs::write(store.path(), to_mark.to_string()).unwrap();
        assert!(store.load().unwrap_err().to_string().contains("previous release"));
    }

    #[test]
    fn a_stray_temp_file_from_a_crash_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        fs::write(dir.path().join(TMP_NAME), b"{\"version\":1,\"committ").unwrap();
        assert_eq!(store.load().unwrap(), None);
        let cp = sample();
        store.save(&cp, &CommitHistory::default()).unwrap();
        fs::write(dir.path().join(TMP_NAME), b"garbage").unwrap();
        assert_eq!(store.load().unwrap(), Some(cp));
    }

    #[test]
    fn a_corrupt_checkpoint_is_an_error_not_empty() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        for bad in [&b""[..], b"{", b"{\"version\":99}"] {
            fs::write(store.path(), bad).unwrap();
            let err = store.load().unwrap_err();
            assert!(matches!(err, OutputError::CorruptCheckpoint { .. }), "{err}");
            assert!(err.to_string().contains("checkpoint.json"), "{err}");
        }
        store.save(&sample(), &CommitHistory::default()).unwrap();
        let mut wrong_version = on_disk(&store);
        wrong_version["version"] = 3.into();
        fs::write(store.path(), wrong_version.to_string()).unwrap();
        assert!(store.load().unwrap_err().to_string().contains("format version 3"));
        wrong_version["version"] = 2.into();
        wrong_version["marked"] = 8.into();
        fs::write(store.path(), wrong_version.to_string()).unwrap();
        assert!(store.load().unwrap_err().to_string().contains("marked 8 is above committed 7"));
    }

    #[test]
    fn marked_above_committed_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        let cp = Checkpoint::new(7, 9, Vec::new(), SourcePositions::default());
        assert!(store.save(&cp, &CommitHistory::default()).is_err());
        assert_eq!(store.load().unwrap(), None);
    }
}
