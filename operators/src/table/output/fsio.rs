//! Durable file-system steps: fsync a directory, prove a directory writable, and move a finished
//! file from hot to cold storage so that a crash leaves either no file or the whole file under
//! its final name, never a partial one.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::Path;

use super::error::OutputError;

/// fsyncs a directory, making the names created, renamed or removed in it durable.
pub fn sync_dir(dir: &Path) -> Result<(), OutputError> {
    let handle = File::open(dir).map_err(|e| OutputError::io("open directory", dir, e))?;
    handle.sync_all().map_err(|e| OutputError::io("fsync directory", dir, e))
}

/// Creates `dir` if needed and proves we can create files in it, so a bad directory fails at
/// start with its name instead of at the first seal, minutes of GPU time later.
pub(crate) fn ensure_writable_dir(dir: &Path, probe_name: &str) -> Result<(), OutputError> {
    fs::create_dir_all(dir).map_err(|e| OutputError::io("create directory", dir, e))?;
    // One name per process and call: two processes probing one directory at once (a `status`
    // beside a running `run`, a test beside its pipeline) must not remove each other's probe.
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = dir.join(format!("{probe_name}-{}-{call}", std::process::id()));
    File::create(&probe).map_err(|e| OutputError::io("create a file in directory", dir, e))?;
    fs::remove_file(&probe).map_err(|e| OutputError::io("remove", &probe, e))
}

/// Moves the finished, fsynced file `src` to `dest_dir/final_name`. A `rename` when both are on
/// one file system; else (or when `force_copy`) a copy to `dest_dir/partial_name`, fsync,
/// rename, then removal of `src`. The caller fsyncs `dest_dir` once after its moves.
pub(crate) fn durable_move(
    src: &Path,
    dest_dir: &Path,
    final_name: &str,
    partial_name: &str,
    force_copy: bool,
) -> Result<(), OutputError> {
    let dest = dest_dir.join(final_name);
    if dest.symlink_metadata().is_ok() {
        // Names are unique per run and stale ones are removed at start, so this is another
        // run's file: overwriting it could destroy committed output.
        return Err(OutputError::io(
            "move a file to",
            &dest,
            io::Error::new(io::ErrorKind::AlreadyExists, "it exists already; is another run writing here?"),
        ));
    }
    if !force_copy {
        match fs::rename(src, &dest) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::CrossesDevices => {}
            Err(e) => return Err(OutputError::io("move a file to", &dest, e)),
        }
    }
    let partial = dest_dir.join(partial_name);
    copy_synced(src, &partial)?;
    fs::rename(&partial, &dest).map_err(|e| OutputError::io("rename into place", &partial, e))?;
    // Losing `src` before `dest_dir` is synced is harmless: nothing is committed until the
    // caller has synced it, and an uncommitted epoch is written again after a crash.
    fs::remove_file(src).map_err(|e| OutputError::io("remove moved file", src, e))
}

fn copy_synced(src: &Path, dest: &Path) -> Result<(), OutputError> {
    let mut from = File::open(src).map_err(|e| OutputError::io("open", src, e))?;
    let mut to = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(dest)
        .map_err(|e| OutputError::io("create", dest, e))?;
    io::copy(&mut from, &mut to).map_err(|e| OutputError::io("copy to", dest, e))?;
    to.sync_all().map_err(|e| OutputError::io("fsync", dest, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_path_leaves_only_the_final_name() {
        let (hot, cold) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let src = hot.path().join("a.tmp");
        fs::write(&src, b"data").unwrap();
        durable_move(&src, cold.path(), "a.parquet", ".a.parquet.partial", true).unwrap();
        assert!(!src.exists());
        assert_eq!(fs::read(cold.path().join("a.parquet")).unwrap(), b"data");
        let names: Vec<_> = fs::read_dir(cold.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["a.parquet"]);
    }

    #[test]
    fn an_existing_destination_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("a.tmp");
        fs::write(&src, b"new").unwrap();
        fs::write(dir.path().join("a.parquet"), b"old").unwrap();
        let err = durable_move(&src, dir.path(), "a.parquet", ".a.partial", false).unwrap_err();
        assert!(err.to_string().contains("exists already"), "{err}");
        assert_eq!(fs::read(dir.path().join("a.parquet")).unwrap(), b"old");
    }

    #[test]
    fn an_unwritable_directory_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        fs::write(&file, b"").unwrap();
        let err = ensure_writable_dir(&file.join("sub"), ".probe").unwrap_err();
        assert!(err.to_string().contains("not-a-dir"), "{err}");
    }
}
