//! pymongo, a client nobody here wrote, against dev-mongo: the script in this crate's `tests/py/`
//! inserts, finds, counts on a hinted partial index, watches and resumes. The test command
//! installs pymongo (`.ci/run`, from the workspace's `tests/py/requirements.txt`); without it
//! this test fails and says how to install it.

use dev_mongo::{DevMongo, DevMongoConfig};
use std::process::Command;

fn python() -> String {
    std::env::var("TWEET_EMBED_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

#[test]
fn pymongo_inserts_finds_watches_and_resumes() {
    let server = DevMongo::start(DevMongoConfig::default()).expect("start dev-mongo");
    let py = python();
    let probe = Command::new(&py).args(["-c", "import pymongo"]).output();
    match probe {
        Ok(o) if o.status.success() => {}
        _ => panic!("{py} cannot import pymongo: run `.ci/run` (it installs it) or `pip install pymongo`"),
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/pymongo_check.py");
    let out = Command::new(&py).arg(script).arg(server.uri()).output().expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pymongo check failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("ok"), "{stdout}");
    println!("{stdout}");
}
