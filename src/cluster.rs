//! Running as a timely cluster: one `tweet-embed` process per machine, each with `--workers`
//! threads and its own TEI endpoints, joined over TCP by timely's own runtime.
//!
//! Process 0 leads: it owns the checkpoint, recovery, the change stream and every decision about
//! passes, and hands each pass's start to the others through the dataflow
//! (`tweet_embed_operators::dataflow::pass_control`). The other processes follow until it says the run is
//! over. This module owns the flags, the hostfile and the panic hook for a lost peer; it never decides
//! anything about the work.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use tweet_embed_operators::run::{is_peer_loss, peer_lost, ClusterConfig};

/// Flags for running as one process of a cluster.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// Processes in the cluster (each with `--workers` threads); 1 runs alone.
    #[arg(long, default_value_t = 1)]
    pub processes: usize,
    /// This process's index in the hostfile; process 0 leads (checkpoint, stream, decisions).
    #[arg(long, default_value_t = 0)]
    pub process: usize,
    /// One `host:port` per line, a line per process, in process order (timely's hostfile).
    #[arg(long)]
    pub hostfile: Option<PathBuf>,
}

impl Default for ClusterArgs {
    fn default() -> ClusterArgs {
        ClusterArgs { processes: 1, process: 0, hostfile: None }
    }
}

impl ClusterArgs {
    /// Whether this process decides (the only process when running alone).
    pub fn leads(&self) -> bool {
        self.process == 0
    }

    /// Whether this runs as one process of several.
    pub fn is_cluster(&self) -> bool {
        self.processes > 1
    }

    /// This process's place in the cluster, the hostfile read and checked.
    pub fn resolve(&self) -> Result<ClusterConfig> {
        Ok(ClusterConfig { process: self.process, addresses: self.addresses()? })
    }

    /// Checks the flags and reads the hostfile: the addresses of every process.
    pub fn addresses(&self) -> Result<Vec<String>> {
        if self.processes == 0 {
            bail!("--processes must be at least 1");
        }
        if self.process >= self.processes {
            bail!(
                "--process {} is out of range: --processes {} numbers them 0..{}",
                self.process,
                self.processes,
                self.processes
            );
        }
        if !self.is_cluster() {
            return Ok(Vec::new());
        }
        let Some(path) = &self.hostfile else {
            bail!("--processes {} needs --hostfile: one host:port per line, a line per process", self.processes)
        };
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read --hostfile {}", path.display()))?;
        let addresses: Vec<String> =
            text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect();
        if addresses.len() != self.processes {
            bail!(
                "--hostfile {} lists {} addresses but --processes is {}: a line per process, in process order",
                path.display(),
                addresses.len(),
                self.processes
            );
        }
        for (i, a) in addresses.iter().enumerate() {
            if a.rsplit_once(':').and_then(|(_, port)| port.parse::<u16>().ok()).is_none() {
                bail!("--hostfile {} line {}: `{a}` is not host:port", path.display(), i + 1);
            }
        }
        Ok(addresses)
    }
}

/// Turns a lost peer into one line and exit status 1. timely's transport panics when another
/// process goes away, and its worker threads then panic too — sometimes again while unwinding,
/// which aborts — so the first sign of it ends the process, before any of that: nothing here needs
/// an orderly shutdown, the checkpoint protocol makes any stop safe. Other panics report as
/// before. For the binary: a library should not own the process's panic hook.
pub fn exit_on_lost_peer() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        // Any panic on timely's transport threads is the cluster failing, e.g. processes started
        // with different --workers (the transport then indexes past its peers).
        let transport =
            std::thread::current().name().is_some_and(|n| n.starts_with("timely:recv") || n.starts_with("timely:send"));
        if is_peer_loss(&message) || transport {
            tracing::error!(cause = %message, "lost the connection to another process of the cluster");
            tweet_embed_operators::run::failure::to_stderr(&format!("tweet-embed: {:#}", peer_lost()));
            std::process::exit(1);
        }
        previous(info);
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(processes: usize, process: usize, hosts: &str) -> (ClusterArgs, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("hosts");
        std::fs::write(&path, hosts).expect("write");
        (ClusterArgs { processes, process, hostfile: Some(path) }, dir)
    }

    #[test]
    fn hostfile_is_read_and_checked() {
        let (c, _d) = cluster(2, 1, "127.0.0.1:4000\n# comment\n\n127.0.0.1:4001\n");
        assert_eq!(c.addresses().expect("ok"), vec!["127.0.0.1:4000", "127.0.0.1:4001"]);
        let (c, _d) = cluster(3, 0, "127.0.0.1:4000\n127.0.0.1:4001\n");
        assert!(c.addresses().unwrap_err().to_string().contains("lists 2 addresses but --processes is 3"));
        let (c, _d) = cluster(2, 2, "a:1\nb:2\n");
        assert!(c.addresses().unwrap_err().to_string().contains("out of range"));
        let (c, _d) = cluster(2, 0, "a:1\nb\n");
        assert!(c.addresses().unwrap_err().to_string().contains("line 2"));
        let alone = ClusterArgs { processes: 2, process: 0, hostfile: None };
        assert!(alone.addresses().unwrap_err().to_string().contains("needs --hostfile"));
        assert!(ClusterArgs { processes: 1, ..ClusterArgs::default() }.addresses().expect("alone").is_empty());
    }
}
