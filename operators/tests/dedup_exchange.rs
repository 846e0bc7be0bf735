//! Dedup across workers, under `Config::process(2)` and under a serializing configuration
//! (`ProcessBinary`), where every exchanged record goes through bincode as it would between
//! processes of a cluster: each distinct text leaves once, carrying every document that had it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use timely::communication::Config as CommConfig;
use timely::dataflow::operators::{Inspect, ToStream};
use tweet_embed_operators::dataflow::dedup::Dedup;
use tweet_embed_operators::dataflow::record::{Candidate, DocMeta, Origin, Work};

fn run(config: timely::Config) -> BTreeMap<String, Vec<String>> {
    let seen: Arc<Mutex<BTreeMap<String, Vec<String>>>> = Arc::default();
    let s = seen.clone();
    timely::execute(config, move |worker| {
        let index = worker.index();
        let s = s.clone();
        worker.dataflow::<u64, _, _>(|scope| {
            // Each worker reads its own documents; texts repeat across workers.
            (0..200u32)
                .map(move |i| Candidate {
                    doc: DocMeta {
                        id: format!("w{index}-{i}"),
                        lang: None,
                        created_at_ms: None,
                        origin: Origin::Backfill,
                    },
                    text: if i % 50 == 0 { Err("empty text".into()) } else { Ok(format!("text {}", i % 7)) },
                })
                .to_stream(scope)
                .dedup()
                .inspect(move |w| {
                    let mut m = s.lock().unwrap();
                    match w {
                        Work::Job(j) => {
                            let e = m.entry(j.text.clone()).or_default();
                            assert!(e.is_empty(), "text {} left twice", j.text);
                            e.extend(j.docs.iter().map(|d| d.id.clone()));
                        }
                        Work::Reject(r) => m.entry(format!("reject:{}", r.doc.id)).or_default().push(r.reason.clone()),
                    }
                });
        });
    })
    .unwrap();
    let out = seen.lock().unwrap().clone();
    out
}

fn check(out: BTreeMap<String, Vec<String>>) {
    let texts: Vec<_> = out.keys().filter(|k| !k.starts_with("reject:")).collect();
    assert_eq!(texts.len(), 7);
    let docs: usize = out.iter().filter(|(k, _)| !k.starts_with("reject:")).map(|(_, v)| v.len()).sum();
    assert_eq!(docs, 2 * (200 - 4));
    assert_eq!(out.keys().filter(|k| k.starts_with("reject:")).count(), 2 * 4);
}

#[test]
fn dedup_under_process_2() {
    check(run(timely::Config::process(2)));
}

#[test]
fn dedup_under_a_serializing_config() {
    let config = timely::Config { communication: CommConfig::ProcessBinary(2), worker: Default::default() };
    check(run(config));
}
