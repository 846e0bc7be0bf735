//! `Embed`: turns each distinct text ([`TextJob`]) into a vector through an [`Embedder`] (the TEI
//! endpoint pool) on a tokio runtime, and emits a row per document when its vector returns, or a
//! rejection when the server refuses its text. It holds each job's capability until the answer
//! arrives, so the frontier tracks completion, not submission: an epoch is complete only when
//! every text in it has its vector.
//!
//! Requests are cut by the embedder's [`RequestBatcher`] (the only place that cuts and orders,
//! counting each text once): jobs wait in its [`WaitingTexts`], which cuts each request from
//! neighbouring token lengths in one sweep across epochs. This operator decides only
//! *when* a request goes: at most `max_in_flight` per worker are outstanding, and texts are cut
//! just before they are needed, so a text answered meanwhile is not sent, and the texts that
//! wait meanwhile are the window the batcher orders. A text embedded recently is answered from the worker's
//! [`VectorCache`] (vector and token count, so it is not even counted), and a text already in an
//! earlier request waits for that answer (holding its own epoch's capability) instead of being
//! sent again: a text recurring across epochs goes to the GPUs once.
//!
//! Capabilities never enter the async task (they are not `Send`); the task answers over a
//! channel and wakes the operator.

use crate::dataflow::record::{EmbeddedRow, Rejection, TextJob, Written};
use crate::dataflow::vector_cache::VectorCache;
use crate::tei::{EndpointPool, InputOutcome, Request, RequestBatcher, WaitingKey, WaitingTexts};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;

/// The answer to one request: one outcome per text, in order.
pub type EmbedFuture = Pin<Box<dyn Future<Output = Vec<InputOutcome>> + Send + 'static>>;

/// What embeds texts: the TEI endpoint pool, or anything else with its contract.
pub trait Embedder: Send + Sync + 'static {
    /// Cuts texts into requests this embedder accepts whole.
    fn batcher(&self) -> &RequestBatcher;

    /// Embeds one request as [`Embedder::batcher`] cut it: one outcome per input, in order, and no
    /// failure of the whole call (transient errors are retried inside).
    fn embed(&self, request: Request) -> EmbedFuture;
}

impl Embedder for EndpointPool {
    fn batcher(&self) -> &RequestBatcher {
        EndpointPool::batcher(self)
    }

    fn embed(&self, request: Request) -> EmbedFuture {
        let pool = self.clone();
        Box::pin(async move { pool.embed_request(request).await })
    }
}

/// Extension trait: embedding.
pub trait Embed<'scope> {
    /// Embeds every job with `embedder` on `runtime`, at most `max_in_flight` requests at a time,
    /// keeping the vectors of about `cache_vectors` recent texts.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// use timely::dataflow::operators::capture::Event;
    /// use tweet_embed_operators::dataflow::embed::{Embed, EmbedFuture, Embedder};
    /// use tweet_embed_operators::dataflow::record::*;
    /// use tweet_embed_operators::tei::{PackLimits, Request, RequestBatcher, TokenBudget};
    /// struct Lengths(RequestBatcher);
    /// impl Embedder for Lengths {
    ///     fn batcher(&self) -> &RequestBatcher { &self.0 }
    ///     fn embed(&self, request: Request) -> EmbedFuture {
    ///         Box::pin(async move { request.texts.iter().map(|t| Ok(vec![t.len() as f32])).collect() })
    ///     }
    /// }
    /// let limits = PackLimits { max_items: 32, max_tokens: 16_384, max_bytes: 2_000_000 };
    /// let lengths = Lengths(RequestBatcher::new(limits, Arc::new(TokenBudget::estimated(512))));
    /// let rt = tokio::runtime::Runtime::new().unwrap();
    /// let handle = rt.handle().clone();
    /// let doc = DocMeta { id: "a".into(), lang: None, created_at_ms: None, origin: Origin::Backfill };
    /// let job = TextJob { text_hash: 1, text: "abc".into(), docs: vec![doc] };
    /// let out = timely::example(move |scope| {
    ///     vec![job].to_stream(scope).embed(Arc::new(lengths), handle, 4, 1_024).capture()
    /// });
    /// let rows: Vec<Written> = out.try_iter().flat_map(|e| match e { Event::Messages(_, d) => d, _ => vec![] }).collect();
    /// assert!(matches!(&rows[0], Written::Row(r) if r.embedding == vec![3.0] && r.tokens == 3));
    /// ```
    fn embed(
        self,
        embedder: Arc<dyn Embedder>,
        runtime: tokio::runtime::Handle,
        max_in_flight: usize,
        cache_vectors: usize,
    ) -> StreamVec<'scope, u64, Written>;
}

/// A request in flight: its jobs and, per job, its epoch's capability and the tokens the batcher
/// counted (the `tokens` column).
struct CutRequest {
    caps: Vec<Capability<u64>>,
    jobs: Vec<TextJob>,
    tokens: Vec<u32>,
}

impl<'scope> Embed<'scope> for StreamVec<'scope, u64, TextJob> {
    fn embed(
        self,
        embedder: Arc<dyn Embedder>,
        runtime: tokio::runtime::Handle,
        max_in_flight: usize,
        cache_vectors: usize,
    ) -> StreamVec<'scope, u64, Written> {
        let scope = self.scope();
        self.unary_frontier(Pipeline, "Embed", move |_cap, info| {
            let wake = scope.worker().sync_activator_for(info.address.to_vec());
            let (tx, rx) = crossbeam_channel::unbounded::<(u64, Vec<InputOutcome>)>();
            // Jobs not yet cut, ordered by the batcher, and the capability of each epoch in it.
            let mut waiting: WaitingTexts<TextJob> = WaitingTexts::new(embedder.batcher());
            let mut caps: HashMap<u64, Capability<u64>> = HashMap::new();
            // Requests in flight, by id.
            let mut requests: HashMap<u64, CutRequest> = HashMap::new();
            let mut in_flight = 0usize;
            let mut next_id = 0u64;
            let mut cache = VectorCache::new(cache_vectors);
            // Texts waiting or in flight, by hash: where the job that carries it is, and the jobs
            // with the same text that wait on its answer (each with its epoch's capability).
            let mut pending: HashMap<u64, (Leader, Waiters)> = HashMap::new();
            move |(input, _frontier), output| {
                input.for_each_stamp(|cap, data| {
                    let Some(c) = cap.retain_least(0) else { return };
                    let epoch = *c.time();
                    for jobs in data {
                        for job in std::mem::take(jobs) {
                            if let Some(hit) = cache.get(job.text_hash, &job.text) {
                                let mut session = output.session(&c);
                                emit(job, Some(Ok(hit.vector.to_vec())), hit.tokens, |w| session.give(w));
                                continue;
                            }
                            // The same text waiting or in flight? (Same hash and the leader's
                            // text, read where the leader is, so no text is copied to remember it;
                            // never a leader of a later epoch, which would hold this one back.)
                            let same = |leader: &Leader| match leader {
                                Leader::Waiting(key) => {
                                    key.epoch <= epoch && waiting.get(key).is_some_and(|l| l.text == job.text)
                                }
                                Leader::Sent(id, index) => requests
                                    .get(id)
                                    .and_then(|r| r.jobs.get(*index))
                                    .is_some_and(|l| l.text == job.text),
                            };
                            if let Some((_, waiters)) = pending.get_mut(&job.text_hash).filter(|(l, _)| same(l)) {
                                waiters.push((c.clone(), job));
                                continue;
                            }
                            let hash = job.text_hash;
                            let key = waiting.push(embedder.batcher(), epoch, job, |j| j.text.as_str());
                            // A hash collision with a pending text is sent on its own, unregistered.
                            pending.entry(hash).or_insert((Leader::Waiting(key), Vec::new()));
                        }
                    }
                    if waiting.holds_epoch(epoch) {
                        caps.entry(epoch).or_insert(c);
                    }
                });
                while let Ok((id, outcomes)) = rx.try_recv() {
                    in_flight = in_flight.saturating_sub(1);
                    let Some(request) = requests.remove(&id) else { continue };
                    let mut outcomes = outcomes.into_iter();
                    let jobs = request.jobs.into_iter().zip(request.caps).zip(request.tokens);
                    for (index, ((job, cap), tokens)) in jobs.enumerate() {
                        let outcome = outcomes.next();
                        let waiters = match pending.get(&job.text_hash) {
                            Some((leader, _)) if *leader == Leader::Sent(id, index) => {
                                pending.remove(&job.text_hash).map(|(_, w)| w)
                            }
                            _ => None,
                        };
                        if let Some(Ok(v)) = &outcome {
                            let copies = job.docs.len() + waiters.as_ref().map_or(0, Vec::len);
                            cache.offer(job.text_hash, &job.text, v, tokens, copies);
                        }
                        for (wcap, wjob) in waiters.unwrap_or_default() {
                            let mut session = output.session(&wcap);
                            emit(wjob, outcome.clone(), tokens, |w| session.give(w));
                        }
                        let mut session = output.session(&cap);
                        emit(job, outcome, tokens, |w| session.give(w));
                    }
                }
                while in_flight < max_in_flight.max(1) {
                    let mut index = 0;
                    let cut = waiting.next_request(embedder.batcher(), |key, job| {
                        let leads = matches!(pending.get(&job.text_hash), Some((l, _)) if *l == Leader::Waiting(key));
                        // Answered meanwhile (another text of the same hash came back): not sent.
                        if let (Some(hit), Some(cap)) = (cache.get(job.text_hash, &job.text), caps.get(&key.epoch)) {
                            let waiters = if leads { pending.remove(&job.text_hash).map(|(_, w)| w) } else { None };
                            let (vector, tokens) = (hit.vector.to_vec(), hit.tokens);
                            for (wcap, wjob) in waiters.unwrap_or_default() {
                                let mut session = output.session(&wcap);
                                emit(wjob, Some(Ok(vector.clone())), tokens, |w| session.give(w));
                            }
                            let mut session = output.session(cap);
                            emit(job, Some(Ok(vector)), tokens, |w| session.give(w));
                            return None;
                        }
                        if leads {
                            if let Some((leader, _)) = pending.get_mut(&job.text_hash) {
                                *leader = Leader::Sent(next_id, index);
                            }
                        }
                        index += 1;
                        Some(job)
                    });
                    let Some(cut) = cut else { break };
                    // A request may hold texts of several epochs (the sweep runs across them):
                    // each keeps its own epoch's capability until its answer.
                    let item_caps: Option<Vec<_>> = cut.epochs.iter().map(|e| caps.get(e).cloned()).collect();
                    caps.retain(|epoch, _| waiting.holds_epoch(*epoch));
                    let Some(item_caps) = item_caps else {
                        // Unreachable: an epoch's capability stays while its texts wait.
                        tracing::error!(epochs = ?cut.epochs, "embed: texts were cut without their epoch's capability");
                        break;
                    };
                    let texts = cut.items.iter().map(|j| j.text.clone()).collect();
                    let call = embedder.embed(Request { texts, raw_tokens: cut.raw_tokens });
                    requests.insert(next_id, CutRequest { caps: item_caps, jobs: cut.items, tokens: cut.tokens });
                    let (tx, wake, id) = (tx.clone(), wake.clone(), next_id);
                    next_id += 1;
                    in_flight += 1;
                    runtime.spawn(async move {
                        if tx.send((id, call.await)).is_ok() {
                            let _ = wake.activate();
                        }
                    });
                }
            }
        })
    }
}

/// Jobs waiting on another job's answer for the same text, each with its epoch's capability.
type Waiters = Vec<(Capability<u64>, TextJob)>;

/// Where the job that carries a text is: waiting to be cut, or in a request (id, index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leader {
    Waiting(WaitingKey),
    Sent(u64, usize),
}

/// Fans a job's outcome out to one record per document.
fn emit(job: TextJob, outcome: Option<InputOutcome>, tokens: u32, mut give: impl FnMut(Written)) {
    match outcome {
        Some(Ok(mut vector)) => {
            let mut docs = job.docs.into_iter().peekable();
            while let Some(doc) = docs.next() {
                // The last row takes the vector; only the others copy it.
                let embedding = if docs.peek().is_some() { vector.clone() } else { std::mem::take(&mut vector) };
                give(Written::Row(EmbeddedRow { doc, embedding, text_hash: job.text_hash, tokens }));
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
