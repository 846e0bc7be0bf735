//! `tweet-embed consolidate`: the flags of a consolidation, mapped onto the engine's
//! [`Settings`] (`tweet_embed_operators::table::consolidate`, which merges the files), its
//! progress on the terminal ([`progress`]) and its one-line summary. It owns no merging: every
//! rule about inputs, deletions, identities and the output is the engine's.

mod progress;

use std::path::PathBuf;

use anyhow::Result;
use tweet_embed_operators::table::consolidate::{self, Deletions, Settings, Summary};
use tweet_embed_operators::table::output::DELETIONS_DIR;

/// The column rows can be sorted and deduplicated by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Key {
    /// The `id` column (numbers by value, strings in byte order).
    Id,
}

/// Flags of `tweet-embed consolidate`.
#[derive(Debug, Clone, clap::Args)]
pub struct ConsolidateArgs {
    /// Directory of Parquet files to merge (searched recursively; `_`/`.`-prefixed names skipped).
    #[arg(long)]
    pub input: PathBuf,
    /// Directory for the large files (created if needed; the input directory itself only with
    /// --delete-inputs, never a folder inside it).
    #[arg(long)]
    pub output: PathBuf,
    /// Approximate size of each output file, e.g. `1GiB`, `512MiB`, `2GB` or bytes.
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    pub target_size: u64,
    /// Rows per row group of the output (default: 64 Ki rows or about 128 MiB, the fewer).
    #[arg(long)]
    pub row_group_rows: Option<usize>,
    /// Keep one row per key: the one read last (files in path order). Implies `--sort-by id`.
    #[arg(long, value_enum)]
    pub dedup_by: Option<Key>,
    /// Write rows in key order.
    #[arg(long, value_enum)]
    pub sort_by: Option<Key>,
    /// Memory for sorting before a run is spilled to disk under `--output`.
    #[arg(long, default_value = "256MiB", value_parser = parse_size)]
    pub sort_buffer: u64,
    /// Delete the input files once the output is written, verified and renamed into place
    /// (never `_deletions/`).
    #[arg(long)]
    pub delete_inputs: bool,
    /// Keep the rows that `--input`'s `_deletions/` records as deleted, instead of dropping
    /// them: for an audit copy of everything ever embedded. `_deletions/` stays as it is either
    /// way, so a later run without this flag still drops them.
    #[arg(long)]
    pub no_deletions: bool,
    /// Inputs of different dataset identities (another model, dimension, prompt … in their
    /// `tweet_embed.identity` metadata) are refused: their vectors cannot be compared. With this
    /// flag each identity is merged on its own, into a subfolder of --output named after it, and
    /// the files that record no identity into the subfolder `no-identity`.
    #[arg(long)]
    pub group_by_identity: bool,
}

impl ConsolidateArgs {
    /// The engine's settings for these flags.
    pub fn settings(&self) -> Settings {
        let key = |k: Option<Key>| k.map(|Key::Id| consolidate::Key::Id);
        Settings {
            input: self.input.clone(),
            output: self.output.clone(),
            target_size: self.target_size,
            row_group_rows: self.row_group_rows,
            dedup_by: key(self.dedup_by),
            sort_by: key(self.sort_by),
            sort_buffer: self.sort_buffer,
            delete_inputs: self.delete_inputs,
            no_deletions: self.no_deletions,
            group_by_identity: self.group_by_identity,
        }
    }
}

/// Parses `1GiB`, `512MiB`, `64KiB`, `2GB`, `10MB`, `1000B` or a bare number of bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (num, unit) = (&t[..split], t[split..].trim());
    let n: f64 = num.parse().map_err(|_| format!("`{s}` is not a size (e.g. 1GiB, 512MiB)"))?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (use B, KiB, MiB, GiB, KB, MB, GB)")),
    };
    let bytes = n * mult as f64;
    if !(bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(format!("`{s}` is not a positive size"));
    }
    Ok(bytes as u64)
}

/// Runs a consolidation with a progress display on stderr; see
/// `tweet_embed_operators::table::consolidate` for its steps and guarantees.
pub fn run(args: &ConsolidateArgs) -> Result<Summary> {
    consolidate::run(&args.settings(), progress::Reporter::start)
}

/// The one-line summary printed at the end.
pub fn summary_line(s: &Summary) -> String {
    use indicatif::HumanBytes;
    let mut line = format!(
        "consolidated {} files ({} rows, {}) into {} files ({} rows, {}) in {:.1} s",
        s.files_in,
        s.rows_in,
        HumanBytes(s.bytes_in),
        s.files_out.len(),
        s.rows_out,
        HumanBytes(s.bytes_out),
        s.elapsed.as_secs_f64()
    );
    if s.duplicates > 0 {
        line.push_str(&format!("; {} duplicate rows dropped", s.duplicates));
    }
    match s.deletions {
        Deletions::NoneRecorded => {}
        Deletions::Applied { .. } => {
            line.push_str(&format!("; {} deleted rows dropped (recorded in {DELETIONS_DIR}/)", s.deleted_rows))
        }
        Deletions::Skipped => line.push_str(&format!("; {DELETIONS_DIR}/ not applied (--no-deletions)")),
    }
    if s.inputs_deleted > 0 {
        line.push_str(&format!("; {} input files deleted", s.inputs_deleted));
    }
    if !s.groups.is_empty() {
        let names: Vec<String> = s.groups.iter().map(|g| g.display().to_string()).collect();
        line.push_str(&format!("; one folder per dataset identity: {}", names.join(", ")));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("0").is_err());
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("").is_err());
    }
}
