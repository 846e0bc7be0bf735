//! The embedding pipeline of one simulated GPU, shared by `POST /embed` and `POST /v1/embeddings`:
//! validate as TEI does, take permits, count tokens, run the inputs through the GPU queue, then
//! write the vectors straight into the response body.
//!
//! This module owns TEI's request-level rules (order of checks, messages, failure labels and the
//! `x-*` headers); it never touches sockets or faults. One bad input fails the whole request.

use std::ops::Range;
use std::time::{Duration, Instant};

use base64::Engine;
use hyper::header::HeaderValue;
use hyper::StatusCode;

use super::api::{self, ApiError, EncodingFormat, ErrorType, Input, Inputs, Resp};
use super::faults::returns_nan;
use super::state::GpuState;
use super::tokens::Direction;
use super::vectors;

/// TEI refuses inputs of more than `max_input_length × 250` chars when not truncating.
const MAX_CHAR_MULTIPLIER: usize = 250;
/// Upper bound of one JSON float and its comma, to size response bodies.
const FLOAT_BYTES: usize = 16;

/// A request that went through the GPU: its inputs, what of each was kept, and the timings.
pub(crate) struct Done {
    inputs: Vec<Input>,
    /// Byte range of a text, index range of ids.
    kept: Vec<Range<usize>>,
    method: &'static str,
    chars: usize,
    pub tokens: usize,
    start: Instant,
    tokenization: Duration,
    queue: Duration,
    inference: Duration,
    /// The NaN fault's rate when the request came in.
    nan_rate: f64,
}

/// How the vectors are wanted.
#[derive(Clone, Copy)]
pub(crate) struct Shape {
    pub dim: usize,
    pub normalize: bool,
}

/// Checks `dimensions` against the model's, with TEI 1.9's messages (`core/src/infer.rs`): they
/// do not say the model's width. TEI truncates to any width up to the model's, a Matryoshka
/// size or not.
pub(crate) fn shape(state: &GpuState, dimensions: Option<usize>, normalize: bool) -> Result<Shape, ApiError> {
    let dim = state.config.dim;
    let refuse = |message: &str| {
        state.metrics.failure("validation");
        Err(ApiError::validation(format!("Input validation error: {message}")))
    };
    match dimensions {
        Some(0) => refuse("`dimensions` should be positive"),
        Some(d) if d > dim => refuse("`dimensions` should be smaller than the maximum embedding dimension."),
        Some(d) => Ok(Shape { dim: d, normalize }),
        None => Ok(Shape { dim, normalize }),
    }
}

/// The text of the prompt a request names, or of the server's default prompt; `None` without
/// either. An unknown name is TEI's validation error (422), in TEI 1.9's words
/// (`core/src/tokenization.rs`, `prepare_pre_prompt`): they speak of `default-prompt-name`
/// even for a request's `prompt_name`, and list the prompts as a Rust debug list.
pub(crate) fn prompt(state: &GpuState, name: Option<&str>) -> Result<Option<String>, ApiError> {
    let config = &state.config;
    let Some(name) = name.or(config.default_prompt_name.as_deref()) else { return Ok(None) };
    match config.prompt(name) {
        Some(text) => Ok(Some(text.to_string())),
        None => {
            state.metrics.failure("validation");
            let known: Vec<&str> = config.prompts.iter().map(|(n, _)| n.as_str()).collect();
            let why = if known.is_empty() {
                format!(
                    "`default-prompt-name` is set to `{name}` but no prompts were found in the Sentence \
                     Transformers configuration"
                )
            } else {
                format!(
                    "`default-prompt-name` is set to `{name}` but it was not found in the Sentence Transformers \
                     prompts. Available prompts: {known:?}"
                )
            };
            Err(ApiError::validation(format!("Input validation error: {why}")))
        }
    }
}

/// Validates, counts and runs `inputs` (each text behind `prompt`, as TEI prepends it: the
/// prompt's tokens count toward the input's length and the vector depends on it); errors are
/// already counted in the metrics.
pub(crate) async fn run(
    state: &GpuState,
    inputs: Inputs,
    truncate: bool,
    direction: Direction,
    prompt: Option<String>,
    start: Instant,
) -> Result<Done, ApiError> {
    let method = if inputs.batch { "batch" } else { "single" };
    let metrics = &state.metrics;
    metrics.request(method);
    let fail = |label: &'static str, err: ApiError| {
        metrics.failure(label);
        err
    };
    let config = &state.config;
    let mut items = inputs.items;
    if let Some(prompt) = &prompt {
        for item in &mut items {
            // An empty text stays empty: it is refused as TEI refuses it, prompt or not.
            if let Input::Text(text) = item {
                if !text.is_empty() {
                    text.insert_str(0, prompt);
                }
            }
        }
    }
    if items.is_empty() {
        return Err(fail("validation", ApiError::empty()));
    }
    if items.len() > config.max_client_batch_size {
        let message =
            format!("batch size {} > maximum allowed batch size {}", items.len(), config.max_client_batch_size);
        return Err(fail("batch_size", ApiError::validation(message)));
    }
    if let Some(poison) = state.faults.poison() {
        if items.iter().any(|i| matches!(i, Input::Text(t) if t.contains(poison.as_str()))) {
            return Err(fail("backend", ApiError::inference_failed()));
        }
    }
    // One permit per input, without waiting: over the limit is 429 at once (TEI 1.9).
    let wanted = u32::try_from(items.len()).unwrap_or(u32::MAX);
    let Ok(permits) = state.permits.try_acquire_many(wanted) else {
        return Err(fail("overloaded", ApiError::overloaded()));
    };

    let tokenize_start = Instant::now();
    let max = config.max_input_length;
    let mut kept = Vec::with_capacity(items.len());
    let mut counts = Vec::with_capacity(items.len());
    for item in &items {
        let (tokens, range) = match item {
            Input::Text(text) => {
                if text.is_empty() {
                    return Err(fail("validation", ApiError::empty()));
                }
                if !truncate && text.chars().count() > max * MAX_CHAR_MULTIPLIER {
                    let message = format!(
                        "Input validation error: `inputs` must have less than {} characters. Given: {}",
                        max * MAX_CHAR_MULTIPLIER,
                        text.chars().count()
                    );
                    return Err(fail("validation", ApiError::validation(message)));
                }
                let counted = state.tokenizer.count(text, truncate.then_some((max, direction))).map_err(|e| {
                    let err = ApiError::typed(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        ErrorType::Tokenizer,
                        format!("Tokenizer error: {e}"),
                    );
                    fail("tokenization", err)
                })?;
                (counted.tokens, counted.kept)
            }
            Input::Ids(ids) => {
                if ids.is_empty() {
                    return Err(fail("validation", ApiError::empty()));
                }
                match (truncate && ids.len() > max, direction) {
                    (false, _) => (ids.len(), 0..ids.len()),
                    (true, Direction::Right) => (max, 0..max),
                    (true, Direction::Left) => (max, ids.len() - max..ids.len()),
                }
            }
        };
        if tokens > max {
            let message = format!("Input validation error: `inputs` must have less than {max} tokens. Given: {tokens}");
            return Err(fail("validation", ApiError::validation(message)));
        }
        metrics.input_length.observe(tokens as f64);
        counts.push(tokens);
        kept.push(range);
    }
    let n = items.len() as u32;
    let tokenization = tokenize_start.elapsed() / n;
    state.max_request_tokens.fetch_max(counts.iter().sum(), std::sync::atomic::Ordering::Relaxed);

    let timing = state.queue.run(&counts).await.map_err(|_| fail("backend", ApiError::backend()))?;
    drop(permits);
    if let Some(seen) = state.texts.lock().as_mut() {
        for item in &items {
            if let Input::Text(t) = item {
                *seen.entry(t.clone()).or_insert(0) += 1;
            }
        }
    }
    for _ in 0..n {
        metrics.embed_count.inc();
    }
    Ok(Done {
        chars: items.iter().map(Input::chars).sum(),
        tokens: counts.iter().sum(),
        inputs: items,
        kept,
        method,
        start,
        tokenization,
        queue: timing.queue / n,
        inference: timing.inference / n,
        nan_rate: state.faults.nan_rate(),
    })
}

impl Done {
    /// The vector of input `i` into `buf` (already sized to the wanted dimension); all NaN for
    /// a text the NaN fault picks.
    fn fill(&self, i: usize, normalize: bool, buf: &mut [f32]) {
        let range = self.kept[i].clone();
        match &self.inputs[i] {
            Input::Text(text) if returns_nan(text, self.nan_rate) => buf.fill(f32::NAN),
            // Ranges come from the counter and are valid; `get` keeps a bug from panicking.
            Input::Text(text) => vectors::fill_text(text.get(range).unwrap_or(text), normalize, buf),
            Input::Ids(ids) => vectors::fill_ids(ids.get(range).unwrap_or(ids), normalize, buf),
        }
    }

    /// `/embed`'s body: `[[f32, ...], ...]`, floats written straight from a reused buffer.
    pub fn native_body(&self, shape: Shape) -> Result<Vec<u8>, serde_json::Error> {
        // Shortest f32 text is at most ~15 bytes with its comma: size once, never reallocate.
        let mut out = Vec::with_capacity(self.inputs.len() * (shape.dim * FLOAT_BYTES + 2) + 2);
        let mut buf = vec![0f32; shape.dim];
        out.push(b'[');
        for i in 0..self.inputs.len() {
            if i > 0 {
                out.push(b',');
            }
            self.fill(i, shape.normalize, &mut buf);
            serde_json::to_writer(&mut out, &buf)?;
        }
        out.push(b']');
        Ok(out)
    }

    /// `/v1/embeddings`' body; base64 is the little-endian f32 bytes of each vector.
    pub fn openai_body(&self, shape: Shape, format: EncodingFormat, model: &str) -> Result<Vec<u8>, serde_json::Error> {
        let mut out = Vec::with_capacity(self.inputs.len() * (shape.dim * FLOAT_BYTES + 64) + 128);
        let mut buf = vec![0f32; shape.dim];
        out.extend_from_slice(br#"{"object":"list","data":["#);
        for i in 0..self.inputs.len() {
            if i > 0 {
                out.push(b',');
            }
            self.fill(i, shape.normalize, &mut buf);
            out.extend_from_slice(br#"{"object":"embedding","embedding":"#);
            match format {
                EncodingFormat::Float => serde_json::to_writer(&mut out, &buf)?,
                EncodingFormat::Base64 => {
                    let bytes: Vec<u8> = buf.iter().flat_map(|v| v.to_le_bytes()).collect();
                    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
                    serde_json::to_writer(&mut out, &encoded)?;
                }
            }
            out.extend_from_slice(format!(r#","index":{i}}}"#).as_bytes());
        }
        out.extend_from_slice(br#"],"model":"#);
        serde_json::to_writer(&mut out, model)?;
        let usage = format!(r#","usage":{{"prompt_tokens":{0},"total_tokens":{0}}}}}"#, self.tokens);
        out.extend_from_slice(usage.as_bytes());
        Ok(out)
    }

    /// A 200 response with TEI's `x-*` headers, recording success and the request histograms.
    pub fn respond(&self, state: &GpuState, body: Vec<u8>) -> Resp {
        let metrics = &state.metrics;
        let total = self.start.elapsed();
        metrics.success(self.method);
        metrics.request_duration.observe(total.as_secs_f64());
        metrics.tokenization_duration.observe(self.tokenization.as_secs_f64());
        metrics.queue_duration.observe(self.queue.as_secs_f64());
        metrics.inference_duration.observe(self.inference.as_secs_f64());
        let mut resp = api::json_bytes(StatusCode::OK, body);
        let headers = resp.headers_mut();
        headers.insert("x-compute-type", HeaderValue::from_static("gpu+optimized"));
        let ms = |d: Duration| HeaderValue::from(d.as_millis() as u64);
        headers.insert("x-compute-time", ms(total));
        headers.insert("x-compute-characters", HeaderValue::from(self.chars));
        headers.insert("x-compute-tokens", HeaderValue::from(self.tokens));
        headers.insert("x-total-time", ms(total));
        headers.insert("x-tokenization-time", ms(self.tokenization));
        headers.insert("x-queue-time", ms(self.queue));
        headers.insert("x-inference-time", ms(self.inference));
        resp
    }
}
