//! A lost peer of a timely cluster: how to recognise it in what timely's transport reports, and
//! the one line a user reads. timely's TCP transport panics on any peer loss; a run turns that
//! into this error (and the binary's panic hook into an exit) rather than a trace.

/// Whether `message` (a worker's error or a panic's) is timely's transport losing a peer.
pub fn is_peer_loss(message: &str) -> bool {
    ["timely communication error", "MergeQueue poisoned", "Send thread panic", "Recv thread panic"]
        .iter()
        .any(|m| message.contains(m))
}

/// The error of a run whose cluster lost a process.
pub fn peer_lost() -> anyhow::Error {
    anyhow::anyhow!(
        "lost the connection to another process of the cluster, so this one stops too: start every process again \
         (each resumes from process 0's checkpoint; nothing committed is lost or repeated); if it happens at start, \
         every process needs the same --workers, --processes and hostfile"
    )
}
