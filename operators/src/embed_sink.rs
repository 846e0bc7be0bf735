//! `EmbedSink`: sends each [`EmbedBatch`] to the TEI endpoints through an [`Embedder`] (the
//! endpoint pool) on a tokio runtime, and emits a row per document when its vector returns, or a
//! rejection when the server refuses its text. It holds the batch's capability until the answer
//! arrives, so the frontier tracks completion, not submission: an epoch is complete only when
//! every text in it has its vector.
//!
//! Capabilities never enter the async task (they are not `Send`); the task answers over a
//! channel and wakes the operator. At most `max_in_flight` batches per worker are outstanding.
//!
//! A text embedded recently is answered from the worker's [`VectorCache`], and a text already
//! in flight in an earlier batch waits for that answer (holding its own epoch's capability)
//! instead of being sent again: a text recurring across epochs goes to the GPUs once.

use crate::record::{EmbedBatch, EmbeddedRow, Rejection, TextJob, Written};
use crate::vector_cache::VectorCache;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;

/// A vector, or why the server refused the text.
pub type Outcome = Result<Vec<f32>, String>;

/// What embeds texts: the TEI endpoint pool, or anything else with its contract: one outcome per
/// input, in order, and no failure of the whole call (transient errors are retried inside).
pub trait Embedder: Send + Sync + 'static {
    /// Embeds `texts`.
    fn embed(&self, texts: Vec<String>) -> Pin<Box<dyn Future<Output = Vec<Outcome>> + Send + 'static>>;
}

/// Extension trait: the TEI sink.
pub trait EmbedSink<'scope> {
    /// Embeds every batch with `embedder` on `runtime`, at most `max_in_flight` at a time,
    /// keeping the vectors of about `cache_vectors` recent texts.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// use timely::dataflow::operators::capture::Event;
    /// use tweet_embed_operators::embed_sink::{EmbedSink, Embedder, Outcome};
    /// use tweet_embed_operators::record::*;
    /// struct Lengths;
    /// impl Embedder for Lengths {
    ///     fn embed(&self, texts: Vec<String>) -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<Outcome>> + Send>> {
    ///         Box::pin(async move { texts.iter().map(|t| Ok(vec![t.len() as f32])).collect() })
    ///     }
    /// }
    /// let rt = tokio::runtime::Runtime::new().unwrap();
    /// let handle = rt.handle().clone();
    /// let doc = DocMeta { id: "a".into(), lang: None, created_at_ms: None, origin: Origin::Backfill };
    /// let job = TextJob { text_hash: 1, text: "abc".into(), tokens: 3, docs: vec![doc] };
    /// let out = timely::example(move |scope| {
    ///     vec![EmbedBatch { jobs: vec![job], rejects: vec![] }]
    ///         .to_stream(scope)
    ///         .embed_sink(Arc::new(Lengths), handle, 4, 1_024)
    ///         .capture()
    /// });
    /// let rows: Vec<Written> = out.try_iter().flat_map(|e| match e { Event::Messages(_, d) => d, _ => vec![] }).collect();
    /// assert!(matches!(&rows[0], Written::Row(r) if r.embedding == vec![3.0]));
    /// ```
    fn embed_sink(
        self,
        embedder: Arc<dyn Embedder>,
        runtime: tokio::runtime::Handle,
        max_in_flight: usize,
        cache_vectors: usize,
    ) -> StreamVec<'scope, u64, Written>;
}

impl<'scope> EmbedSink<'scope> for StreamVec<'scope, u64, EmbedBatch> {
    fn embed_sink(
        self,
        embedder: Arc<dyn Embedder>,
        runtime: tokio::runtime::Handle,
        max_in_flight: usize,
        cache_vectors: usize,
    ) -> StreamVec<'scope, u64, Written> {
        let scope = self.scope();
        self.unary_frontier(Pipeline, "EmbedSink", move |_cap, info| {
            let wake = scope.worker().sync_activator_for(info.address.to_vec());
            let (tx, rx) = crossbeam_channel::unbounded::<(u64, Vec<Outcome>)>();
            let mut in_flight: HashMap<u64, (Capability<u64>, Vec<TextJob>)> = HashMap::new();
            let mut queued: VecDeque<(Capability<u64>, Vec<TextJob>)> = VecDeque::new();
            let mut next_id = 0u64;
            let mut cache = VectorCache::new(cache_vectors);
            // Texts in flight, by hash: where the job that carries it sits (batch, index), and the
            // jobs of later batches waiting on its answer.
            type Waiting = Vec<(Capability<u64>, TextJob)>;
            let mut pending: HashMap<u64, ((u64, usize), Waiting)> = HashMap::new();
            move |(input, _frontier), output| {
                input.for_each_stamp(|cap, data| {
                    let Some(c) = cap.retain_least(0) else { return };
                    for batch in data.flat_map(|d| d.drain(..)) {
                        if !batch.rejects.is_empty() {
                            output.session(&c).give_iterator(batch.rejects.into_iter().map(Written::Reject));
                        }
                        if !batch.jobs.is_empty() {
                            queued.push_back((c.clone(), batch.jobs));
                        }
                    }
                });
                while let Ok((id, outcomes)) = rx.try_recv() {
                    let Some((cap, jobs)) = in_flight.remove(&id) else { continue };
                    let mut outcomes = outcomes.into_iter();
                    for (index, job) in jobs.into_iter().enumerate() {
                        let outcome = outcomes.next();
                        let waiting = match pending.get(&job.text_hash) {
                            Some((leader, _)) if *leader == (id, index) => {
                                pending.remove(&job.text_hash).map(|(_, w)| w)
                            }
                            _ => None,
                        };
                        if let Some(Ok(v)) = &outcome {
                            let copies = job.docs.len() + waiting.as_ref().map_or(0, Vec::len);
                            cache.offer(job.text_hash, &job.text, v, copies);
                        }
                        for (wcap, wjob) in waiting.unwrap_or_default() {
                            let mut session = output.session(&wcap);
                            emit(wjob, outcome.clone(), |w| session.give(w));
                        }
                        let mut session = output.session(&cap);
                        emit(job, outcome, |w| session.give(w));
                    }
                }
                while in_flight.len() < max_in_flight.max(1) {
                    let Some((cap, jobs)) = queued.pop_front() else { break };
                    let mut send = Vec::with_capacity(jobs.len());
                    for job in jobs {
                        if let Some(v) = cache.get(job.text_hash, &job.text) {
                            let mut session = output.session(&cap);
                            emit(job, Some(Ok(v.to_vec())), |w| session.give(w));
                            continue;
                        }
                        // The same text in flight? (Same hash and the leader's text, read where the
                        // leader sits, so no text is copied to remember it.)
                        let same = pending.get(&job.text_hash).map(|((batch, index), _)| {
                            let leader = if *batch == next_id {
                                send.get(*index)
                            } else {
                                in_flight.get(batch).and_then(|(_, jobs)| jobs.get(*index))
                            };
                            leader.is_some_and(|l: &TextJob| l.text == job.text)
                        });
                        match (same, pending.get_mut(&job.text_hash)) {
                            (Some(true), Some((_, waiting))) => waiting.push((cap.clone(), job)),
                            (Some(_), _) => send.push(job), // a hash collision: sent on its own
                            (None, _) => {
                                pending.insert(job.text_hash, ((next_id, send.len()), Vec::new()));
                                send.push(job);
                            }
                        }
                    }
                    if send.is_empty() {
                        continue;
                    }
                    let jobs = send;
                    let texts: Vec<String> = jobs.iter().map(|j| j.text.clone()).collect();
                    let id = next_id;
                    next_id += 1;
                    in_flight.insert(id, (cap, jobs));
                    let (tx, wake, embedder) = (tx.clone(), wake.clone(), embedder.clone());
                    runtime.spawn(async move {
                        let outcomes = embedder.embed(texts).await;
                        if tx.send((id, outcomes)).is_ok() {
                            let _ = wake.activate();
                        }
                    });
                }
            }
        })
    }
}

/// Fans a job's outcome out to one record per document.
fn emit(job: TextJob, outcome: Option<Outcome>, mut give: impl FnMut(Written)) {
    match outcome {
        Some(Ok(mut vector)) => {
            let mut docs = job.docs.into_iter().peekable();
            while let Some(doc) = docs.next() {
                // The last row takes the vector; only the others copy it.
                let embedding = if docs.peek().is_some() { vector.clone() } else { std::mem::take(&mut vector) };
                give(Written::Row(EmbeddedRow { doc, embedding, text_hash: job.text_hash, tokens: job.tokens }));
            }
        }
        Some(Err(reason)) => {
            for doc in job.docs {
                give(Written::Reject(Rejection { doc, reason: reason.clone() }));
            }
        }
        None => {
            for doc in job.docs {
                give(Written::Reject(Rejection {
                    doc,
                    reason: "the embedder returned no vector for this text".into(),
                }));
            }
        }
    }
}
