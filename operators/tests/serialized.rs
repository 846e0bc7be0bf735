//! The operators whose records cross workers, under a configuration that serializes every
//! exchanged record (`ProcessBinary`, as a cluster does) and under the one that does not
//! (`Process`): `deserialize_any`-style failures only show in the first (`notes/timely.md`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use timely::dataflow::operators::capture::Event;
use timely::dataflow::operators::{Capture, Input};
use timely::{CommunicationConfig, WorkerConfig};
use tweet_embed_operators::dataflow::dedup::Dedup;
use tweet_embed_operators::dataflow::epoch_clock::{EpochClock, StopSignal};
use tweet_embed_operators::dataflow::pass_control::{agree, PassRelay, PassStart};
use tweet_embed_operators::dataflow::record::{Candidate, DocMeta, Origin, Work};

fn configs() -> Vec<(&'static str, timely::Config)> {
    let with = |communication| timely::Config { communication, worker: WorkerConfig::default() };
    vec![
        ("Process(2)", with(CommunicationConfig::Process(2))),
        ("ProcessBinary(2)", with(CommunicationConfig::ProcessBinary(2))),
    ]
}

fn candidate(id: usize, text: Result<&str, &str>) -> Candidate {
    Candidate {
        doc: DocMeta {
            id: format!("id{id}"),
            lang: Some("en".into()),
            created_at_ms: Some(1),
            origin: Origin::ChangeStream,
        },
        text: text.map(String::from).map_err(String::from),
    }
}

#[test]
fn identical_texts_from_both_workers_meet_once() {
    for (name, config) in configs() {
        let (send, recv) = std::sync::mpsc::channel();
        let send = Arc::new(Mutex::new(send));
        timely::execute(config, move |worker| {
            let index = worker.index();
            let send = send.lock().expect("lock").clone();
            let mut input = worker.dataflow::<u64, _, _>(|scope| {
                let (input, stream) = scope.new_input::<Vec<Candidate>>();
                stream.dedup().capture_into(send);
                input
            });
            // Both workers send "gm" (and a reject); each sends a text of its own.
            for i in 0..50 {
                input.send(candidate(index * 100 + i, Ok("gm ☀️")));
            }
            input.send(candidate(index * 100 + 50, Ok(&format!("only on worker {index}"))));
            input.send(candidate(index * 100 + 51, Err("empty text")));
        })
        .expect("execute")
        .join()
        .into_iter()
        .for_each(|r| r.expect("worker"));
        let mut jobs: BTreeMap<String, usize> = BTreeMap::new();
        let mut rejects = 0;
        let works = recv.try_iter().flat_map(|e| match e {
            Event::Messages(_, d) => d,
            Event::Progress(_) => Vec::new(),
        });
        for w in works {
            match w {
                Work::Job(j) => *jobs.entry(j.text).or_default() += j.docs.len(),
                Work::Reject(r) => {
                    assert_eq!(r.reason, "empty text", "{name}");
                    rejects += 1;
                }
            }
        }
        assert_eq!(jobs.get("gm ☀️"), Some(&100), "{name}: one job with every document");
        assert_eq!(jobs.len(), 3, "{name}: {jobs:?}");
        assert_eq!(rejects, 2, "{name}");
    }
}

#[test]
fn a_pass_start_and_its_signals_reach_every_worker() {
    for (name, config) in configs() {
        let got = timely::execute(config, |worker| {
            let index = worker.index();
            let start = PassStart {
                start_epoch: 42,
                scan: Some(vec![0, 1, 2, 255]),
                streaming: true,
                finish: false,
                failed: Some("why".into()),
                out_marker: Some(".marker".into()),
                identity: Some("{\"dim\":256}".into()),
                id_type: tweet_embed_operators::table::output::IdType::Int64,
            };
            let received = agree(worker, (index == 0).then(|| start.clone()), &|| false);
            // Each worker its own stop and clock, as processes have.
            let (local, clock) = (StopSignal::default(), EpochClock::new(1));
            let mut relay = PassRelay::new(worker, local.clone(), clock.clone());
            let leader = StopSignal::default();
            leader.stop();
            if index == 1 {
                clock.advance_to(9);
            }
            while !local.is_stopped() || clock.now() < 9 {
                relay.poll(index, true, &leader, &clock);
                worker.step();
            }
            relay.close();
            while worker.step() {}
            (received == Some(start), clock.now())
        })
        .expect("execute")
        .join();
        for r in got {
            assert_eq!(r.expect("worker"), (true, 9), "{name}");
        }
    }
}
