//! The pool of TEI endpoints, one per GPU: connected and checked at start, then used as one
//! embedding service that never fails as a whole.
//!
//! This module owns [`PoolConfig`], the start-up checks of [`EndpointPool::connect`] (every
//! endpoint reachable, one model, one dimension, the tightest limits) and
//! [`EndpointPool::embed`], which packs texts into requests and runs them concurrently until
//! every input has a vector or a reason. Per-request rules live in `request`, endpoint choice in
//! `dispatch`. It never loses an input and never logs a secret.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use super::batcher::{PackLimits, Request, RequestBatcher, RequestOrder};
use super::budget::TokenBudget;
use super::dispatch::{Dispatcher, Slot};
use super::endpoint::{http_client, Api, Endpoint};
use super::error::{CallError, FailureKind, TeiError};
use super::limiter::{Concurrency, ConcurrencyLimit, Floor};
use super::limits::{redact, ServerLimits, DEFAULT_PAYLOAD_LIMIT};
use super::options::EmbedOptions;
use super::request::{self, InputOutcome, Shared, Step};
use super::stats::{Counters, PoolStats};
use super::vectors;

/// The texts embedded on every endpoint at start to learn the vector dimension, one at a time:
/// the next is tried when a server returns an unusable vector (NaN, say) for one.
const PROBE_TEXTS: [&str; 3] = ["tweet-embed dimension probe", "hello world", "a third probe text, 42"];
/// Attempts of the probe when the server answers with a transient error (warming up).
const PROBE_ATTEMPTS: u32 = 5;

/// How to reach and use the endpoints.
#[derive(Clone)]
pub struct PoolConfig {
    /// One URL per TEI server, with or without a trailing `/embed`.
    pub urls: Vec<String>,
    /// Which embedding route to call.
    pub api: Api,
    /// Sent as `Authorization: Bearer <key>` when set.
    pub api_key: Option<String>,
    /// The servers' `--payload-limit` in bytes (`/info` does not report it).
    pub payload_limit: usize,
    /// At most this many texts per request (`--batch-size`); the servers'
    /// `max_client_batch_size` and permits always apply (see [`PackLimits::for_server_at`]).
    pub batch_size: Option<usize>,
    /// Requests in flight per endpoint: adaptive (the default) or pinned; either way capped so
    /// their inputs fit the server's permits.
    pub concurrency: Concurrency,
    /// Bounds the adaptive limit: it does not grow past what keeps request latency under this.
    /// Ignored when the concurrency is pinned.
    pub p95_slo: Option<Duration>,
    /// Time limit of one call, answer included.
    pub request_timeout: Duration,
    /// The model's `tokenizer.json`, to count tokens exactly; else a calibrated estimate.
    pub tokenizer: Option<PathBuf>,
    /// First retry delay after a transient failure.
    pub retry_initial: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// How the vectors are made: prompt, dimensions, normalization, truncation direction.
    pub options: EmbedOptions,
    /// The order texts waiting to be sent are cut into requests in (`--request-order`).
    pub order: RequestOrder,
    /// How long [`EndpointPool::connect`] waits for a first endpoint to answer `/info` when none
    /// does (servers still loading their model), with a warning every [`START_WARN_EVERY`]
    /// naming each endpoint and its error. Endpoints down while others answer never hold the
    /// start: they join when they answer (see `EndpointPool::connect`).
    pub start_wait: Duration,
}

/// How often connect says which endpoints it waits for.
pub const START_WARN_EVERY: Duration = Duration::from_secs(10);
/// How often endpoints out of rotation for an identity check (down at start, or back after a
/// connection failure) are tried again.
pub const JOIN_EVERY: Duration = Duration::from_secs(2);
/// How often every endpoint in rotation has its `/info` read again, to catch a server restarted
/// as another model between two requests that both succeeded.
pub const RECHECK_EVERY: Duration = Duration::from_secs(30);

impl PoolConfig {
    /// TEI's defaults for `urls`: the API chosen at connect (base64 vectors where the server
    /// can), no key, 2,000,000-byte payloads, adaptive concurrency without an SLO, 60 s per call,
    /// retries from 50 ms doubling to 5 s, the server's embedding options.
    pub fn new<S: Into<String>>(urls: impl IntoIterator<Item = S>) -> Self {
        Self {
            urls: urls.into_iter().map(Into::into).collect(),
            api: Api::Auto,
            api_key: None,
            payload_limit: DEFAULT_PAYLOAD_LIMIT,
            batch_size: None,
            concurrency: Concurrency::Adaptive,
            p95_slo: None,
            request_timeout: Duration::from_secs(60),
            tokenizer: None,
            retry_initial: Duration::from_millis(50),
            retry_max: Duration::from_secs(5),
            options: EmbedOptions::default(),
            order: RequestOrder::Length,
            start_wait: Duration::from_secs(600),
        }
    }

    fn validate(&self) -> Result<(), TeiError> {
        let fail = |m: &str| Err(TeiError::Config(m.to_string()));
        if self.urls.is_empty() {
            return fail("no TEI URL given: pass at least one endpoint");
        }
        if self.payload_limit == 0 || self.concurrency == Concurrency::Fixed(0) || self.batch_size == Some(0) {
            return fail("the TEI payload limit, batch size and concurrency must be at least 1");
        }
        if self.request_timeout.is_zero() || self.retry_initial.is_zero() || self.retry_max < self.retry_initial {
            return fail(
                "the TEI request timeout and retry delays must be positive, the longest retry at least the first",
            );
        }
        if self.p95_slo.is_some_and(|slo| slo.is_zero()) {
            return fail("the p95 latency SLO must be positive");
        }
        if self.options.dimensions == Some(0) {
            return fail("--dimensions must be at least 1");
        }
        if self.options.prompt_name.as_ref().is_some_and(|p| p.trim().is_empty()) {
            return fail("--prompt-name must not be empty");
        }
        let native = self.options.native_only();
        if self.api == Api::OpenAi && !native.is_empty() {
            return Err(TeiError::Config(format!(
                "{} {} TEI's native route (/embed), which /v1/embeddings is not: use --api tei (or auto)",
                native.join(", "),
                if native.len() == 1 { "needs" } else { "need" }
            )));
        }
        Ok(())
    }
}

impl Default for PoolConfig {
    /// [`PoolConfig::new`] without URLs, for `PoolConfig { urls, ..Default::default() }`.
    fn default() -> Self {
        Self::new(Vec::<String>::new())
    }
}

impl fmt::Debug for PoolConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let urls: Vec<String> = self.urls.iter().map(|u| redact(u)).collect();
        f.debug_struct("PoolConfig")
            .field("urls", &urls)
            .field("api", &self.api)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("payload_limit", &self.payload_limit)
            .field("batch_size", &self.batch_size)
            .field("concurrency", &self.concurrency)
            .field("p95_slo", &self.p95_slo)
            .field("request_timeout", &self.request_timeout)
            .field("tokenizer", &self.tokenizer)
            .field("retry_initial", &self.retry_initial)
            .field("retry_max", &self.retry_max)
            .field("order", &self.order)
            .field("start_wait", &self.start_wait)
            .finish()
    }
}

/// The TEI endpoints as one embedding service. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct EndpointPool {
    shared: Arc<Shared>,
    limits: Arc<ServerLimits>,
    batcher: RequestBatcher,
}

impl EndpointPool {
    /// Connects to the endpoints: reads `/info`, embeds a probe text to learn the dimension,
    /// and checks that all serve the same model at the same dimension; disagreeing endpoints are
    /// an error naming them. Endpoints that do not answer yet (a server still loading its model)
    /// do not hold the start: the pool starts with those that answer, and the others join when
    /// they answer as the same model, revision and dimension (checked then; one that answers as
    /// another stays out with an ERROR). With none answering, it waits up to
    /// [`PoolConfig::start_wait`], warning every [`START_WARN_EVERY`] with each endpoint's error.
    pub async fn connect(config: PoolConfig) -> Result<Self, TeiError> {
        config.validate()?;
        let client = http_client(config.request_timeout)?;
        let mut endpoints = Vec::with_capacity(config.urls.len());
        for url in &config.urls {
            let endpoint = Endpoint::new(url, client.clone())?
                .with_options(config.options.clone())
                .with_api(config.api)
                .with_api_key(config.api_key.clone())
                .with_payload_limit(config.payload_limit);
            if endpoints.iter().any(|e: &Endpoint| e.url() == endpoint.url()) {
                return Err(TeiError::Config(format!("TEI URL {} is given twice", endpoint.url())));
            }
            endpoints.push(endpoint);
        }
        // Endpoints that answer now start the pool; the others join when they answer.
        let all = endpoints;
        let (mut endpoints, infos, late) = first_answers(all, config.start_wait).await?;
        let first = &infos[0];
        if let Some((i, other)) = infos.iter().enumerate().find(|(_, l)| l.model_id != first.model_id) {
            return Err(TeiError::Config(format!(
                "TEI endpoints serve different models: {} serves {:?}, {} serves {:?}",
                endpoints[0].url(),
                first.model_id,
                endpoints[i].url(),
                other.model_id
            )));
        }
        // The OpenAI route carries only `dimensions`: any other option needs the native one.
        let api = match config.api {
            Api::Auto if !config.options.native_only().is_empty() => Api::Tei,
            api => api,
        };
        if let Some((i, other)) = infos.iter().enumerate().find(|(_, l)| l.model_sha != first.model_sha) {
            return Err(TeiError::Config(format!(
                "TEI endpoints serve different revisions of {}: {} has model_sha {:?}, {} has {:?}",
                first.model_id,
                endpoints[0].url(),
                first.model_sha.as_deref().unwrap_or("none"),
                endpoints[i].url(),
                other.model_sha.as_deref().unwrap_or("none")
            )));
        }
        let (api, dims) = choose_api(api, &infos, &mut endpoints).await?;
        if let Some(wanted) = config.options.dimensions {
            if let Some(i) = dims.iter().position(|&d| d != wanted) {
                return Err(TeiError::Config(format!(
                    "TEI at {} returns vectors of {} dimensions for --dimensions {wanted}: it ignores the option \
                     (TEI before 1.7?) or cannot truncate this model's vectors",
                    endpoints[i].url(),
                    dims[i]
                )));
            }
        }
        if let Some(i) = dims.iter().position(|&d| d != dims[0]) {
            return Err(TeiError::Config(format!(
                "TEI endpoints return vectors of different dimensions: {} gives {}, {} gives {}",
                endpoints[0].url(),
                dims[0],
                endpoints[i].url(),
                dims[i]
            )));
        }
        let limits = infos.iter().skip(1).fold(first.clone(), |acc, l| acc.tightest(l));
        let pinned = match config.concurrency {
            Concurrency::Fixed(n) => Some(n),
            Concurrency::Adaptive => None,
        };
        let pack = PackLimits::for_server_at(&limits, config.batch_size, pinned);
        let wanted = config.batch_size.unwrap_or(limits.max_client_batch_size).min(limits.max_client_batch_size);
        if pack.max_items < wanted {
            let why = "TEI takes one permit per input and answers 429 to a request its free permits do not hold";
            if config.batch_size.is_some_and(|b| b > limits.max_concurrent_requests) {
                tracing::warn!(
                    batch_size = wanted,
                    permits = limits.max_concurrent_requests,
                    used = pack.max_items,
                    "--batch-size is over the server's permits (--max-concurrent-requests); {why}: requests carry at most {} inputs",
                    pack.max_items
                );
            } else {
                tracing::info!(
                    max_client_batch_size = limits.max_client_batch_size,
                    permits = limits.max_concurrent_requests,
                    used = pack.max_items,
                    "requests are cut smaller than the server's max_client_batch_size so that they fit its permits; {why}"
                );
            }
        }
        let mut budget = match &config.tokenizer {
            Some(path) => TokenBudget::from_tokenizer_file(path, limits.max_input_length)?,
            None => TokenBudget::estimated(limits.max_input_length),
        };
        if let Some(prompt) = &config.options.prompt_name {
            let tokens = prompt_tokens(&endpoints[0]).await;
            budget.set_prompt_tokens(tokens);
            tracing::info!(prompt = %prompt, tokens, "every input's token count includes the prompt TEI prepends");
        }
        if api == Api::OpenAi && !limits.auto_truncate {
            tracing::warn!(
                "TEI runs with --auto-truncate false and the OpenAI route cannot ask to truncate: \
                 texts over {} tokens will be rejected; use the native API to embed their beginning",
                limits.max_input_length
            );
        }
        if let (Concurrency::Fixed(_), Some(_)) = (config.concurrency, config.p95_slo) {
            tracing::warn!(
                "--p95-slo bounds the adaptive concurrency; --concurrency pins it, so the SLO is not enforced"
            );
        }
        let slots = endpoints
            .into_iter()
            .zip(&infos)
            .map(|(endpoint, info)| {
                // Inputs in flight must fit the server's permits, or it answers 429 at once.
                let fits = (info.max_concurrent_requests / pack.max_items).max(1);
                if let Concurrency::Fixed(n) = config.concurrency {
                    if n > fits {
                        tracing::warn!(
                            endpoint = endpoint.url(),
                            concurrency = n,
                            used = fits,
                            "--concurrency is over what the server's permits hold; using the most that fits"
                        );
                    }
                }
                let floor = Floor::batches(info.max_batch_tokens, info.max_batch_requests);
                let limit = ConcurrencyLimit::new(config.concurrency, fits, config.p95_slo).with_floor(floor);
                Slot::new(endpoint, limit)
            })
            .collect::<Vec<_>>();
        // Endpoints down at start: slots out of rotation until they answer as this pool's model.
        let mut slots = slots;
        for (endpoint, error) in late {
            let endpoint = endpoint.with_api(api);
            tracing::warn!(
                endpoint = endpoint.url(),
                %error,
                "TEI endpoint does not answer yet; starting without it, it joins when it answers as {} (checked then)",
                limits.model_id
            );
            let fits = (limits.max_concurrent_requests / pack.max_items).max(1);
            let floor = Floor::batches(limits.max_batch_tokens, limits.max_batch_requests);
            let limit = ConcurrencyLimit::new(config.concurrency, fits, config.p95_slo).with_floor(floor);
            slots.push(Slot::waiting(endpoint, limit, error));
        }
        tracing::info!(
            endpoints = slots.len(),
            model = %limits.model_id,
            version = %limits.version,
            dim = dims[0],
            api = ?api,
            concurrency = ?config.concurrency,
            max_items = pack.max_items,
            max_batch_tokens = pack.max_tokens,
            max_input_length = limits.max_input_length,
            exact_tokens = budget.is_exact(),
            "TEI endpoints ready"
        );
        let budget = Arc::new(budget);
        let batcher = RequestBatcher::new(pack, budget.clone()).with_order(config.order);
        let shared = Shared {
            dispatcher: Dispatcher::new(slots),
            budget,
            counters: Counters::new(),
            dim: dims[0],
            normalized: config.options.normalized(),
            options: config.options.clone(),
            retry_initial: config.retry_initial,
            retry_max: config.retry_max,
        };
        let shared = Arc::new(shared);
        let identity =
            Identity { model_id: limits.model_id.clone(), model_sha: limits.model_sha.clone(), dim: dims[0] };
        tokio::spawn(watch_identity(Arc::downgrade(&shared), identity));
        Ok(Self { shared, limits: Arc::new(limits), batcher })
    }

    /// The tightest limits across the endpoints (with the configured payload limit).
    pub fn limits(&self) -> &ServerLimits {
        &self.limits
    }

    /// The bounds of one request to these servers.
    pub fn pack_limits(&self) -> PackLimits {
        self.batcher.limits()
    }

    /// The batcher that cuts texts into requests for these servers, counting with
    /// [`EndpointPool::budget`].
    pub fn batcher(&self) -> &RequestBatcher {
        &self.batcher
    }

    /// The vector dimension every endpoint returns.
    pub fn dim(&self) -> usize {
        self.shared.dim
    }

    /// The embedding options every request carries.
    pub fn options(&self) -> &EmbedOptions {
        &self.shared.options
    }

    /// The model every endpoint serves.
    pub fn model_id(&self) -> &str {
        &self.limits.model_id
    }

    /// The token budget requests are counted with (shared with the pool's calibration).
    pub fn budget(&self) -> &Arc<TokenBudget> {
        &self.shared.budget
    }

    /// The endpoints' base URLs, credentials removed.
    pub fn urls(&self) -> Vec<String> {
        self.shared.dispatcher.slots.iter().map(|s| s.endpoint.url().to_string()).collect()
    }

    /// The API the endpoints are called with (resolved from [`Api::Auto`] at connect).
    pub fn api(&self) -> Api {
        self.shared.dispatcher.slots.first().map_or(Api::Tei, |s| s.endpoint.api())
    }

    /// Requests in flight the endpoints' limits may ever allow together: what callers need
    /// outstanding so an adaptive limit can grow to its most.
    pub fn max_in_flight(&self) -> usize {
        self.shared.dispatcher.slots.iter().map(|s| s.limit.max()).sum()
    }

    /// The latencies of every successful call since connect, from dispatch to answer, in
    /// microseconds, all endpoints together. Two snapshots subtracted give a window's.
    pub fn request_latencies(&self) -> hdrhistogram::Histogram<u64> {
        let mut all = super::stats::latency_histogram();
        for slot in &self.shared.dispatcher.slots {
            slot.add_latencies(&mut all);
        }
        all
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> PoolStats {
        let mut stats = self.shared.counters.snapshot();
        stats.token_scale = self.shared.budget.scale();
        stats.endpoints = self.shared.dispatcher.slots.iter().map(Slot::stats).collect();
        stats.requests_waiting = self.shared.dispatcher.waiting();
        stats
    }

    /// Embeds `texts`: one outcome per text, in order. The batcher cuts them into requests, which
    /// run concurrently. Never fails as a whole: transient failures are retried until an endpoint
    /// answers, so this waits while every endpoint is down; a text the servers refuse gets
    /// `Err(reason)` and the others still get vectors. Dropping the future cancels its requests.
    pub async fn embed(&self, texts: Vec<String>) -> Vec<InputOutcome> {
        let cut = self.batcher.cut(texts.iter().map(String::as_str));
        self.run(Request { texts, raw_tokens: cut.raw_tokens }, cut.requests).await
    }

    /// Embeds one request as the batcher cut it ([`RequestBatcher::cut`]): sent whole, split only
    /// if a server refuses it for size or for one input. Outcomes as for [`EndpointPool::embed`].
    pub async fn embed_request(&self, request: Request) -> Vec<InputOutcome> {
        let all = 0..request.texts.len();
        self.run(request, if all.is_empty() { Vec::new() } else { vec![all] }).await
    }

    /// Runs `requests` (ranges of `request`'s texts) and the smaller ones they split into.
    async fn run(&self, request: Request, requests: Vec<Range<usize>>) -> Vec<InputOutcome> {
        let mut outcomes: Vec<Option<InputOutcome>> = (0..request.texts.len()).map(|_| None).collect();
        let request = Arc::new(request);
        let mut tasks = JoinSet::new();
        let mut running: HashMap<tokio::task::Id, Range<usize>> = HashMap::new();
        let spawn = |tasks: &mut JoinSet<Step>, running: &mut HashMap<_, _>, range: Range<usize>| {
            let handle = tasks.spawn(request::run(self.shared.clone(), request.clone(), range.clone()));
            running.insert(handle.id(), range);
        };
        for range in requests {
            spawn(&mut tasks, &mut running, range);
        }
        while let Some(joined) = tasks.join_next_with_id().await {
            match joined {
                Ok((id, Step::Done(range, done))) => {
                    running.remove(&id);
                    for (slot, outcome) in outcomes[range].iter_mut().zip(done) {
                        *slot = Some(outcome);
                    }
                }
                Ok((id, Step::Split(parts))) => {
                    running.remove(&id);
                    for part in parts {
                        spawn(&mut tasks, &mut running, part);
                    }
                }
                // A request task panicked: a bug, but its inputs still get an outcome.
                Err(err) => {
                    let reason = format!("internal error embedding this text: {err}");
                    tracing::error!(%reason, "TEI request task failed");
                    if let Some(range) = running.remove(&err.id()) {
                        for slot in &mut outcomes[range] {
                            *slot = Some(Err(reason.clone()));
                        }
                    }
                }
            }
        }
        outcomes.into_iter().map(|o| o.unwrap_or_else(|| Err("internal error: no outcome".to_string()))).collect()
    }
}

/// What a late endpoint must serve to join: the pool's model, revision and dimension.
#[derive(Debug, Clone)]
struct Identity {
    model_id: String,
    model_sha: Option<String>,
    dim: usize,
}

/// The endpoints that answer `/info` (with their limits) and those that do not (with why), in
/// the configured order. When none answers, waits up to `wait`, trying every [`JOIN_EVERY`] and
/// naming each endpoint and its error every [`START_WARN_EVERY`]; then the first one's error. A
/// server that answers but is not usable (no model in `/info`, an unauthorized key) is an error
/// at once: waiting would not fix it.
async fn first_answers(
    endpoints: Vec<Endpoint>,
    wait: Duration,
) -> Result<(Vec<Endpoint>, Vec<ServerLimits>, Vec<(Endpoint, String)>), TeiError> {
    let started = tokio::time::Instant::now();
    let mut warned: Option<tokio::time::Instant> = None;
    loop {
        let results = each_result(&endpoints, |e| async move { e.info().await }).await?;
        let (mut up, mut infos, mut down) = (Vec::new(), Vec::new(), Vec::new());
        for (endpoint, result) in endpoints.iter().zip(results) {
            match result {
                Ok(info) => {
                    up.push(endpoint.clone());
                    infos.push(info);
                }
                Err(err @ TeiError::Unreachable { .. }) => down.push((endpoint.clone(), err)),
                Err(err) => return Err(err),
            }
        }
        if !up.is_empty() {
            let down = down.into_iter().map(|(e, err)| (e, err.to_string())).collect();
            return Ok((up, infos, down));
        }
        let now = tokio::time::Instant::now();
        if now.saturating_duration_since(started) >= wait {
            let first = down.into_iter().next().map(|(_, err)| err);
            return Err(first.unwrap_or_else(|| TeiError::Config("no TEI URL given".to_string())));
        }
        if warned.is_none_or(|at| now.saturating_duration_since(at) >= START_WARN_EVERY) {
            let each: Vec<String> = down.iter().map(|(e, err)| format!("{} ({err})", e.url())).collect();
            tracing::warn!(
                endpoints = %each.join("; "),
                waited_s = now.saturating_duration_since(started).as_secs(),
                gives_up_after_s = wait.as_secs(),
                "no TEI endpoint answers yet (loading its model?); waiting for one"
            );
            warned = Some(now);
        }
        tokio::time::sleep(JOIN_EVERY).await;
    }
}

/// Keeps every endpoint in rotation serving `identity` (`/info`'s model and revision, and a probe
/// vector's dimension on the pool's API), so no other model's vector reaches the output:
/// - a slot out of rotation for a check (down at start, or back after a connection failure: a
///   server that went away may come back as another model) is checked every [`JOIN_EVERY`] and
///   joins when it answers as `identity`;
/// - every slot in rotation has its `/info` read every [`RECHECK_EVERY`]; one that now serves
///   another model leaves rotation.
///
/// One that answers as another model stays out with an ERROR naming both (said again only when
/// what it serves changes). Ends when the pool is gone.
async fn watch_identity(shared: std::sync::Weak<Shared>, identity: Identity) {
    let mut told: HashMap<usize, String> = HashMap::new();
    let mut last_recheck = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(JOIN_EVERY).await;
        let Some(pool) = shared.upgrade() else { return };
        let recheck = last_recheck.elapsed() >= RECHECK_EVERY;
        if recheck {
            last_recheck = tokio::time::Instant::now();
        }
        for (index, slot) in pool.dispatcher.slots.iter().enumerate() {
            let waiting = slot.is_waiting();
            if !waiting && !recheck {
                continue;
            }
            let endpoint = slot.endpoint.clone();
            let verdict = match endpoint.info().await {
                Err(err) => Err((false, err.to_string())),
                Ok(info) if info.model_id != identity.model_id || info.model_sha != identity.model_sha => Err((
                    true,
                    format!(
                        "serves {} revision {}, not this run's {} revision {}",
                        info.model_id,
                        info.model_sha.as_deref().unwrap_or("none"),
                        identity.model_id,
                        identity.model_sha.as_deref().unwrap_or("none")
                    ),
                )),
                // In rotation and still our model: nothing more to check.
                Ok(_) if !waiting => Ok(()),
                Ok(_) => match probe_dim(&endpoint).await {
                    Ok(dim) if dim == identity.dim => Ok(()),
                    Ok(dim) => Err((true, format!("returns vectors of {dim} dimensions, not {}", identity.dim))),
                    Err(err) => Err((false, err.to_string())),
                },
            };
            match verdict {
                Ok(()) if waiting => {
                    slot.join();
                    told.remove(&index);
                    pool.dispatcher.wake();
                    tracing::info!(endpoint = endpoint.url(), "TEI endpoint answers as this run's model; in rotation");
                }
                Ok(()) => {}
                // A server in rotation that does not answer /info now: the breaker sees its
                // requests fail; nothing to decide here.
                Err((false, _)) if !waiting => {}
                Err((wrong, why)) => {
                    slot.hold_out(&why);
                    if wrong && told.get(&index) != Some(&why) {
                        tracing::error!(
                            endpoint = endpoint.url(),
                            "TEI endpoint {why}: out of rotation, none of its vectors is used"
                        );
                        told.insert(index, why);
                    }
                }
            }
        }
    }
}

/// The API to call and the dimension every endpoint gives with it. [`Api::Auto`] takes the
/// OpenAI route's base64 vectors (4 bytes a value instead of about 10 of JSON, and no float
/// parsing) when every server truncates on its own (that route cannot ask to) and answers it;
/// the native route otherwise.
async fn choose_api(
    api: Api,
    infos: &[ServerLimits],
    endpoints: &mut [Endpoint],
) -> Result<(Api, Vec<usize>), TeiError> {
    let probe = |endpoints: &[Endpoint], api: Api| {
        let endpoints: Vec<Endpoint> = endpoints.iter().map(|e| e.clone().with_api(api)).collect();
        async move {
            let dims = on_each(&endpoints, |e| async move { probe_dim(&e).await }).await;
            (endpoints, dims)
        }
    };
    let (chosen, dims) = match api {
        Api::Auto if infos.iter().all(|i| i.auto_truncate) => match probe(endpoints, Api::OpenAi).await {
            (chosen, Ok(dims)) => (chosen, dims),
            (_, Err(err)) => {
                // The native route decides. When it refuses too, its refusal is the one to tell:
                // an impossible --dimensions is refused on both routes, and is not about base64.
                let (chosen, dims) = probe(endpoints, Api::Tei).await;
                let dims = dims?;
                tracing::info!(error = %err, "TEI's /v1/embeddings with base64 is not usable; using /embed");
                (chosen, dims)
            }
        },
        Api::Auto => {
            let (chosen, dims) = probe(endpoints, Api::Tei).await;
            (chosen, dims?)
        }
        api => {
            let (chosen, dims) = probe(endpoints, api).await;
            (chosen, dims?)
        }
    };
    let api = chosen.first().map_or(Api::Tei, Endpoint::api);
    endpoints.clone_from_slice(&chosen);
    Ok((api, dims))
}

/// Runs `call` on every endpoint concurrently; the first error in endpoint order wins.
async fn on_each<T, F, Fut>(endpoints: &[Endpoint], call: F) -> Result<Vec<T>, TeiError>
where
    T: Send + 'static,
    F: Fn(Endpoint) -> Fut,
    Fut: std::future::Future<Output = Result<T, TeiError>> + Send + 'static,
{
    each_result(endpoints, call).await?.into_iter().collect()
}

/// Runs `call` on every endpoint concurrently: each endpoint's result, in endpoint order. Errs
/// only when a task itself fails.
async fn each_result<T, F, Fut>(endpoints: &[Endpoint], call: F) -> Result<Vec<Result<T, TeiError>>, TeiError>
where
    T: Send + 'static,
    F: Fn(Endpoint) -> Fut,
    Fut: std::future::Future<Output = Result<T, TeiError>> + Send + 'static,
{
    let mut tasks = JoinSet::new();
    for (i, endpoint) in endpoints.iter().enumerate() {
        let fut = call(endpoint.clone());
        tasks.spawn(async move { (i, fut.await) });
    }
    let mut results: Vec<Option<Result<T, TeiError>>> = (0..endpoints.len()).map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        let (i, result) = joined.map_err(|e| TeiError::Config(format!("TEI start-up check failed: {e}")))?;
        results[i] = Some(result);
    }
    Ok(results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(TeiError::Config("TEI start-up check lost a result".to_string()))))
        .collect())
}

/// The dimension of `endpoint`'s vectors, from a probe text (retried a few times while the
/// server answers with a transient error, as it may while warming up). The vector must pass the
/// check every vector passes (finite, non-zero, of unit norm as normalization was asked for); the
/// next probe text is tried when it does not, and a server that fails them all cannot be used.
async fn probe_dim(endpoint: &Endpoint) -> Result<usize, TeiError> {
    let url = endpoint.url().to_string();
    let mut refused = String::new();
    for text in PROBE_TEXTS {
        let texts = [text.to_string()];
        let mut attempt = 0;
        let vector = loop {
            attempt += 1;
            let err = match endpoint.embed(&texts).await {
                Ok(reply) => break reply.vectors.into_iter().next().unwrap_or_default(),
                Err(err) => err,
            };
            if err.is_connect() {
                return Err(TeiError::Unreachable { url, message: err.message });
            }
            if err.kind != FailureKind::Transient || attempt >= PROBE_ATTEMPTS {
                let message = if err.is_overloaded() {
                    format!(
                        "answers a one-input probe with 429 (no free permit) {attempt} times: \
                         its permits (--max-concurrent-requests) are all taken, so no request can fit"
                    )
                } else if !endpoint.options().describe().is_empty() && err.kind != FailureKind::Transient {
                    refused_options(endpoint, &err).await
                } else {
                    format!("cannot embed a probe text: {err}")
                };
                return Err(TeiError::Protocol { url, message });
            }
            tokio::time::sleep(request::backoff(attempt, Duration::from_millis(200), Duration::from_secs(2))).await;
        };
        match vectors::check(&vector, vector.len(), endpoint.options().normalized()) {
            Ok(()) => return Ok(vector.len()),
            Err(reason) => refused = reason,
        }
    }
    Err(TeiError::Protocol { url, message: format!("returns no usable vector for its probe texts: {refused}") })
}

/// What to say of a server refusing the run's embedding options (after "TEI at <url>"): TEI's
/// reason made into what the user can do. TEI 1.9 words an unknown `prompt_name` as a
/// `default-prompt-name` server flag the user never set, with the prompts it has as a debug
/// list (`core/src/tokenization.rs`); `/info` does not list them. It refuses `dimensions` over the
/// model's width without saying the width (`core/src/infer.rs`), so a probe without it learns it.
async fn refused_options(endpoint: &Endpoint, err: &CallError) -> String {
    let options = endpoint.options();
    let reason = err.message.trim_start_matches("Input validation error:").trim().trim_end_matches('.');
    let about = |word: &str| err.message.to_ascii_lowercase().contains(word);
    if let Some(name) = options.prompt_name.as_deref().filter(|_| about("prompt")) {
        return match server_prompts(&err.message) {
            Some(prompts) if prompts.is_empty() => format!(
                "has no prompts, so no --prompt-name {name}: its model's config_sentence_transformers.json names \
                 none; drop --prompt-name, or serve a model whose configuration has prompts"
            ),
            Some(prompts) => format!(
                "has no prompt named {name:?}: its model's prompts are {}; give one of them to --prompt-name",
                prompts.join(", ")
            ),
            None => format!(
                "refuses --prompt-name {name}: {reason} (the prompts a TEI server has are those of its model's \
                 config_sentence_transformers.json)"
            ),
        };
    }
    if let Some(wanted) = options.dimensions.filter(|_| about("dimension")) {
        let sizes = "a size the model was trained to be cut to (EmbeddingGemma: 768, 512, 256 or 128)";
        let plain = endpoint.clone().with_options(EmbedOptions { dimensions: None, ..options.clone() });
        let width = plain
            .embed(&[PROBE_TEXTS[0].to_string()])
            .await
            .ok()
            .and_then(|reply| reply.vectors.first().map(Vec::len))
            .filter(|&width| width > 0);
        return match width {
            Some(width) if width < wanted => format!(
                "refuses --dimensions {wanted} ({reason}): its model's vectors have {width} dimensions; use \
                 --dimensions {width} or fewer, {sizes}"
            ),
            _ => format!("refuses --dimensions {wanted} ({reason}): use fewer dimensions, {sizes}"),
        };
    }
    format!("refuses the embedding options {}: {err}", options.describe())
}

/// The prompts a server has, from TEI's refusal of an unknown one: its "Available prompts:
/// [\"query\", \"document\"]", or none when it found "no prompts"; None when the message says
/// neither.
fn server_prompts(message: &str) -> Option<Vec<String>> {
    if message.contains("no prompts were found") {
        return Some(Vec::new());
    }
    let listed = message.split("Available prompts:").nth(1)?.trim();
    let inner = listed.strip_prefix('[')?.split(']').next()?;
    Some(inner.split(',').map(|p| p.trim().trim_matches('"').to_string()).filter(|p| !p.is_empty()).collect())
}

/// Tokens of the prompt the server prepends to every input: a one-input request with and without
/// `prompt_name`, compared by the tokens the server says it computed (`x-compute-tokens`). A
/// server that does not say gets [`PROMPT_TOKENS_UNKNOWN`], with a warning: too many only costs a
/// little batch room, too few could overrun the server's budgets.
async fn prompt_tokens(endpoint: &Endpoint) -> u32 {
    let texts = [PROBE_TEXTS[0].to_string()];
    let plain = endpoint.clone().with_options(EmbedOptions { prompt_name: None, ..endpoint.options().clone() });
    let with = endpoint.embed(&texts).await.ok().and_then(|r| r.compute_tokens);
    let without = plain.embed(&texts).await.ok().and_then(|r| r.compute_tokens);
    match (with, without) {
        (Some(w), Some(wo)) if w >= wo => u32::try_from(w - wo).unwrap_or(u32::MAX),
        _ => {
            tracing::warn!(
                endpoint = endpoint.url(),
                tokens = PROMPT_TOKENS_UNKNOWN,
                "the server does not report the tokens it computed (x-compute-tokens), so the prompt's length is \
                 unknown: every input counts this many tokens for it"
            );
            PROMPT_TOKENS_UNKNOWN
        }
    }
}

/// Tokens counted for a prompt whose length the server does not tell.
pub const PROMPT_TOKENS_UNKNOWN: u32 = 32;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prompts_a_server_has_are_read_from_its_refusal() {
        // TEI 1.9's words (`core/src/tokenization.rs`), after "Input validation error: ".
        let some = "Input validation error: `default-prompt-name` is set to `nope` but it was not found in the \
                    Sentence Transformers prompts. Available prompts: [\"query\", \"document\"]";
        assert_eq!(server_prompts(some), Some(vec!["query".to_string(), "document".to_string()]));
        let none = "Input validation error: `default-prompt-name` is set to `nope` but no prompts were found in \
                    the Sentence Transformers configuration";
        assert_eq!(server_prompts(none), Some(Vec::new()));
        assert_eq!(server_prompts("Input validation error: bad prompt"), None);
    }
}
