//! `Embed`: turns each distinct text ([`TextJob`]) into a vector through an [`Embedder`] (the TEI
//! endpoint pool) on a tokio runtime, and emits a row per document when its vector returns, or a
//! rejection when the server refuses its text. It holds each job's capability until the answer
//! arrives, so the frontier tracks completion, not submission: an epoch is complete only when
//! every text in it has its vector.
//!
//! Requests are cut by the embedder's [`RequestBatcher`] (the only place that cuts, counting
//! each text once); this operator decides only *when* a request goes: at most `max_in_flight`
//! per worker are outstanding, and texts are cut just before they are needed, so a text answered
//! meanwhile is not sent. A text embedded recently is answered from the worker's
//! [`VectorCache`] (vector and token count, so it is not even counted), and a text already in an
//! earlier request waits for that answer (holding its own epoch's capability) instead of being
//! sent again: a text recurring across epochs goes to the GPUs once.
//!
//! Capabilities never enter the async task (they are not `Send`); the task answers over a
//! channel and wakes the operator.

use crate::record::{EmbeddedRow, Rejection, TextJob, Written};
use crate::tei::{EndpointPool, InputOutcome, Request, RequestBatcher};
use crate::vector_cache::VectorCache;
use std::collections::{HashMap, VecDeque};
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
    /// use tweet_embed_operators::embed::{Embed, EmbedFuture, Embedder};
    /// use tweet_embed_operators::record::*;
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

/// A request as cut: its jobs and, per job, the counts the batcher made.
struct CutRequest {
    cap: Capability<u64>,
    jobs: Vec<TextJob>,
    tokens: Vec<u32>,
    raw_tokens: Vec<u32>,
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
            // Jobs not yet cut, as they arrived.
            let mut arrived: VecDeque<(Capability<u64>, Vec<TextJob>)> = VecDeque::new();
            // Cut requests by id, waiting (`ready`, in order) or in flight.
            let mut requests: HashMap<u64, CutRequest> = HashMap::new();
            let mut ready: VecDeque<u64> = VecDeque::new();
            let mut in_flight = 0usize;
            let mut next_id = 0u64;
            let mut cache = VectorCache::new(cache_vectors);
            // Texts in a cut request, by hash: where the job that carries it sits (request, index),
            // and the jobs of later epochs waiting on its answer.
            type Waiting = Vec<(Capability<u64>, TextJob)>;
            let mut pending: HashMap<u64, ((u64, usize), Waiting)> = HashMap::new();
            move |(input, _frontier), output| {
                input.for_each_stamp(|cap, data| {
                    let Some(c) = cap.retain_least(0) else { return };
                    for jobs in data {
                        arrived.push_back((c.clone(), std::mem::take(jobs)));
                    }
                });
                while let Ok((id, outcomes)) = rx.try_recv() {
                    in_flight = in_flight.saturating_sub(1);
                    let Some(request) = requests.remove(&id) else { continue };
                    let mut outcomes = outcomes.into_iter();
                    for (index, (job, tokens)) in request.jobs.into_iter().zip(request.tokens).enumerate() {
                        let outcome = outcomes.next();
                        let waiting = match pending.get(&job.text_hash) {
                            Some((leader, _)) if *leader == (id, index) => {
                                pending.remove(&job.text_hash).map(|(_, w)| w)
                            }
                            _ => None,
                        };
                        if let Some(Ok(v)) = &outcome {
                            let copies = job.docs.len() + waiting.as_ref().map_or(0, Vec::len);
                            cache.offer(job.text_hash, &job.text, v, tokens, copies);
                        }
                        for (wcap, wjob) in waiting.unwrap_or_default() {
                            let mut session = output.session(&wcap);
                            emit(wjob, outcome.clone(), tokens, |w| session.give(w));
                        }
                        let mut session = output.session(&request.cap);
                        emit(job, outcome, tokens, |w| session.give(w));
                    }
                }
                while in_flight < max_in_flight.max(1) {
                    if let Some(id) = ready.pop_front() {
                        let Some(request) = requests.get(&id) else { continue };
                        let texts = request.jobs.iter().map(|j| j.text.clone()).collect();
                        let call = embedder.embed(Request { texts, raw_tokens: request.raw_tokens.clone() });
                        in_flight += 1;
                        let (tx, wake) = (tx.clone(), wake.clone());
                        runtime.spawn(async move {
                            if tx.send((id, call.await)).is_ok() {
                                let _ = wake.activate();
                            }
                        });
                        continue;
                    }
                    let Some((cap, jobs)) = arrived.pop_front() else { break };
                    let mut fresh = Vec::with_capacity(jobs.len());
                    for job in jobs {
                        if let Some(hit) = cache.get(job.text_hash, &job.text) {
                            let mut session = output.session(&cap);
                            emit(job, Some(Ok(hit.vector.to_vec())), hit.tokens, |w| session.give(w));
                            continue;
                        }
                        // The same text in an earlier request? (Same hash and the leader's text,
                        // read where the leader sits, so no text is copied to remember it.)
                        let waits_on = pending.get_mut(&job.text_hash).filter(|((id, index), _)| {
                            requests.get(id).and_then(|r| r.jobs.get(*index)).is_some_and(|l| l.text == job.text)
                        });
                        match waits_on {
                            Some((_, waiting)) => waiting.push((cap.clone(), job)),
                            None => fresh.push(job),
                        }
                    }
                    let cut = embedder.batcher().cut(fresh.iter().map(|j| j.text.as_str()));
                    let mut fresh = fresh.into_iter();
                    for range in cut.requests {
                        let jobs: Vec<TextJob> = fresh.by_ref().take(range.len()).collect();
                        for (index, job) in jobs.iter().enumerate() {
                            // A hash collision with a pending text is sent on its own, unregistered.
                            pending.entry(job.text_hash).or_insert(((next_id, index), Vec::new()));
                        }
                        let request = CutRequest {
                            cap: cap.clone(),
                            jobs,
                            tokens: cut.tokens[range.clone()].to_vec(),
                            raw_tokens: cut.raw_tokens[range].to_vec(),
                        };
                        requests.insert(next_id, request);
                        ready.push_back(next_id);
                        next_id += 1;
                    }
                }
            }
        })
    }
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
