//! Where every flag's value comes from: the command line, then the environment, then a TOML
//! file (`--config FILE` or `TWEET_EMBED_CONFIG`), then the default. It owns that precedence and
//! `tweet-embed config print`, and nothing about what the values mean.
//!
//! Every flag of every command gets an environment variable, `TWEET_EMBED_<FLAG>` (`--batch-size`
//! is `TWEET_EMBED_BATCH_SIZE`), unless it has a conventional one already (`MONGODB_URI`,
//! `TEI_API_KEY`). The file is a flat table of the same names in snake case (`batch_size = 32`,
//! `tei_urls = ["http://…", …]`); its values become clap's default values for those flags, which
//! gives flag > env > file > built-in default with clap's own parsing and errors, and changes no
//! process state (no environment variable is set).
//! A key no command knows is an error (a typo must not be silently ignored); a key only other
//! commands know is skipped, so one file can serve `run`, `status` and `autotune`.
//!
//! It must never print a secret: `config print` redacts passwords in URIs and any value of a
//! flag named like a key, token, password or secret.

use anyhow::{anyhow, bail, Context, Result};
use clap::parser::ValueSource;
use clap::{ArgMatches, Command};
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::PathBuf;

/// The environment variable naming the config file.
pub const CONFIG_ENV: &str = "TWEET_EMBED_CONFIG";

/// The flags that took their value from the config file, for `config print` to tell them apart.
#[derive(Debug, Default, Clone)]
pub struct FromFile {
    /// The file, if one was read.
    pub path: Option<PathBuf>,
    /// Ids of the flags it gave a default to.
    pub keys: BTreeSet<String>,
}

/// The CLI `cmd` (`crate::cli::command`) with the config file named by `argv` or the environment,
/// if any, layered in: each of its keys becomes the default value of that flag of the command
/// `argv` runs (or of a global flag). Errors: an unreadable file, invalid TOML, a key no command
/// knows.
pub fn layered(cmd: Command, argv: &[OsString]) -> Result<(Command, FromFile)> {
    let path = config_path(argv).or_else(|| std::env::var_os(CONFIG_ENV).map(PathBuf::from));
    let Some(path) = path else { return Ok((cmd, FromFile::default())) };
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read --config {}", path.display()))?;
    let pairs = parse(&text).with_context(|| format!("in --config {}", path.display()))?;
    let sub = subcommand_of(&cmd, argv).map(|s| s.get_name().to_string());
    let mut from_file = FromFile { path: Some(path.clone()), keys: BTreeSet::new() };
    let mut cmd = cmd;
    for (key, value) in pairs {
        let in_sub = sub.as_deref().and_then(|s| cmd.find_subcommand(s)).is_some_and(|s| takes(s, &key));
        if in_sub {
            let sub = sub.as_deref().unwrap_or_default().to_string();
            cmd = cmd.mut_subcommand(sub, |s| s.mut_arg(&key, |a| with_default(a, &value)));
        } else if takes(&cmd, &key) {
            cmd = cmd.mut_arg(&key, |a| with_default(a, &value));
        } else if known_anywhere(&cmd, &key) {
            continue;
        } else {
            bail!(
                "--config {}: unknown key `{key}` (keys are flag names in snake case, e.g. batch_size)",
                path.display()
            );
        }
        from_file.keys.insert(key);
    }
    Ok((cmd, from_file))
}

/// Whether `cmd` has a flag `--…` with id `key`.
fn takes(cmd: &Command, key: &str) -> bool {
    cmd.get_arguments().any(|a| a.get_id().as_str() == key && a.get_long().is_some())
}

/// `arg` with `value` (lists joined by `,`) as its default; no longer required, since the file
/// gives it.
fn with_default(arg: clap::Arg, value: &str) -> clap::Arg {
    let arg = arg.required(false);
    match arg.get_value_delimiter() {
        Some(d) => {
            let values: Vec<clap::builder::OsStr> = value.split(d).map(|v| v.to_string().into()).collect();
            arg.default_values(values)
        }
        None => arg.default_value(value.to_string()),
    }
}

fn config_path(argv: &[OsString]) -> Option<PathBuf> {
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = s.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
    }
    None
}

/// The subcommand `argv` runs (the first argument naming one), if any; for `config print X …`,
/// the command `X` whose settings are printed.
fn subcommand_of<'c>(cmd: &'c Command, argv: &[OsString]) -> Option<&'c Command> {
    let mut args = argv.iter().skip(1).map(|a| a.to_string_lossy());
    let first = args.by_ref().find_map(|s| cmd.find_subcommand(s.as_ref()))?;
    if first.get_name() != "config" {
        return Some(first);
    }
    args.by_ref().find(|s| s == "print")?;
    args.find_map(|s| cmd.find_subcommand(s.as_ref()))
}

fn known_anywhere(cmd: &Command, key: &str) -> bool {
    cmd.get_arguments().any(|a| a.get_id().as_str() == key) || cmd.get_subcommands().any(|s| known_anywhere(s, key))
}

/// The file's keys and values as clap reads them from the environment.
fn parse(text: &str) -> Result<Vec<(String, String)>> {
    let table: toml::Table = text.parse().map_err(|e| anyhow!("not valid TOML: {e}"))?;
    let mut out = Vec::new();
    for (key, value) in table {
        let v = scalar(&value)
            .or_else(|| match &value {
                toml::Value::Array(items) => items.iter().map(scalar).collect::<Option<Vec<_>>>().map(|v| v.join(",")),
                _ => None,
            })
            .ok_or_else(|| anyhow!("`{key}` must be a string, number, boolean or list of those"))?;
        out.push((key, v));
    }
    Ok(out)
}

fn scalar(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Flags of `tweet-embed config`.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: ConfigAction,
}

/// `config` actions.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ConfigAction {
    /// Prints the effective settings of a command (`config print run --tei-urls …`), each with
    /// where it came from, secrets redacted.
    Print {
        /// The command and its flags.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<OsString>,
    },
}

/// Runs `tweet-embed config`: `cmd` is the CLI with the config file layered in ([`layered`]).
pub fn run(args: ConfigArgs, cmd: &Command, from_file: &FromFile) -> Result<()> {
    let ConfigAction::Print { command: rest } = args.action;
    let mut argv = vec![OsString::from("tweet-embed")];
    argv.extend(rest);
    let matches = cmd.clone().try_get_matches_from(&argv).map_err(|e| anyhow!("{}", e.render().to_string().trim()))?;
    let Some((name, sub)) = matches.subcommand() else { bail!("name a command: `config print run …`") };
    crate::say_raw!("{}", render(name, sub, cmd, from_file));
    Ok(())
}

/// The effective settings of subcommand `name` as TOML, with their sources.
pub fn render(name: &str, m: &ArgMatches, cmd: &Command, from_file: &FromFile) -> String {
    let mut out = format!("# effective settings of `tweet-embed {name}`\n");
    if let Some(p) = &from_file.path {
        out.push_str(&format!("# config file: {}\n", p.display()));
    }
    let Some(sub) = cmd.find_subcommand(name) else { return out };
    for arg in sub.get_arguments() {
        let id = arg.get_id().as_str();
        if matches!(id, "help" | "version" | "config") {
            continue;
        }
        let Ok(Some(raw)) = m.try_get_raw(id) else { continue };
        let values: Vec<String> = raw.map(|v| v.to_string_lossy().into_owned()).collect();
        let values: Vec<String> = values.iter().map(|v| redact_value(id, v)).collect();
        let source = match m.value_source(id) {
            Some(ValueSource::CommandLine) => "flag",
            Some(ValueSource::EnvVariable) => "env",
            Some(ValueSource::DefaultValue) if from_file.keys.contains(id) => "file",
            _ => "default",
        };
        let value = match values.len() {
            1 => toml_str(&values[0]),
            _ => format!("[{}]", values.iter().map(|v| toml_str(v)).collect::<Vec<_>>().join(", ")),
        };
        out.push_str(&format!("{id} = {value}  # {source}\n"));
    }
    out
}

/// A value as TOML: numbers and booleans bare, everything else a string.
fn toml_str(v: &str) -> String {
    if v.parse::<i64>().is_ok() || v.parse::<f64>().is_ok_and(f64::is_finite) || v == "true" || v == "false" {
        return v.to_string();
    }
    toml::Value::String(v.to_string()).to_string()
}

/// A flag value as it may be shown: secrets hidden, URI passwords replaced.
pub fn redact_value(id: &str, v: &str) -> String {
    let lower = id.to_lowercase();
    if ["key", "token", "password", "secret"].iter().any(|w| lower.contains(w)) {
        return "****".into();
    }
    redact_uri(v)
}

/// `scheme://user:password@host…` → `scheme://user:****@host…`; anything else unchanged.
pub fn redact_uri(v: &str) -> String {
    let Some(scheme_end) = v.find("://") else { return v.to_string() };
    let rest = &v[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else { return v.to_string() };
    let userinfo = &authority[..at];
    let user = userinfo.split(':').next().unwrap_or("");
    let redacted = if userinfo.contains(':') { format!("{user}:****") } else { user.to_string() };
    format!("{}://{}{}", &v[..scheme_end], redacted, &rest[at..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_lose_their_passwords() {
        assert_eq!(redact_uri("mongodb://u:s3cret@h:27017/?x=1"), "mongodb://u:****@h:27017/?x=1");
        assert_eq!(redact_uri("mongodb+srv://u@h/db"), "mongodb+srv://u@h/db");
        assert_eq!(redact_uri("http://h:1/embed"), "http://h:1/embed");
        assert_eq!(redact_value("api_key", "abc"), "****");
    }

    #[test]
    fn file_values_become_clap_strings() {
        let p = parse("batch_size = 32\ntei_urls = [\"http://a\", \"http://b\"]\nclassified = true\n").expect("parse");
        assert_eq!(
            p,
            vec![
                ("batch_size".to_string(), "32".to_string()),
                ("classified".to_string(), "true".to_string()),
                ("tei_urls".to_string(), "http://a,http://b".to_string()),
            ]
        );
        assert!(parse("[run]\nx = 1").is_err());
        assert!(parse("x = ").is_err());
    }

    #[test]
    fn every_flag_has_an_environment_variable() {
        let cmd = crate::cli::command();
        let run = cmd.find_subcommand("run").expect("run");
        for a in run.get_arguments().filter(|a| a.get_long().is_some() && a.get_id() != "help") {
            assert!(a.get_env().is_some(), "--{} has no env", a.get_id());
        }
        let env = |id: &str| run.get_arguments().find(|a| a.get_id() == id).and_then(|a| a.get_env());
        assert_eq!(env("mongo_uri"), Some(std::ffi::OsStr::new("MONGODB_URI")));
        assert_eq!(env("batch_size"), Some(std::ffi::OsStr::new("TWEET_EMBED_BATCH_SIZE")));
    }
}
