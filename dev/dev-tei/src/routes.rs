//! Routing of one simulated GPU's HTTP requests: method and path, API key, body limit, faults,
//! then the route itself.
//!
//! This module owns what each route answers; [`GpuState`] (in `state`) is the state every request of a GPU
//! shares. It never owns sockets: a dropped connection is returned as [`Outcome::Drop`] for the
//! server to act on.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode};
use serde::Serialize;

use super::api::{self, ApiError, EmbedRequest, OpenAiRequest, Resp, TextInputs, TokenizeRequest};
use super::config::SimConfig;
use super::embed;
use super::faults::Verdict;
use super::state::{GpuState, Received};
use super::tokens::Direction;

/// The TEI version `/info` reports: the one whose answers the simulator was compared with.
pub(crate) const TEI_VERSION: &str = "1.9.3";

/// Past the payload limit, how much more of a body is read and discarded so the client gets its
/// 413 instead of a reset connection.
const DRAIN_LIMIT: usize = 64 << 20;

/// What the server does with a request.
pub(crate) enum Outcome {
    Respond(Resp),
    /// Close the connection without answering.
    Drop,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    Embed,
    OpenAi,
    Tokenize,
    Info,
    Health,
    Metrics,
}

/// Answers one request.
pub(crate) async fn handle(state: &GpuState, req: Request<Incoming>) -> Outcome {
    match route(state, req).await {
        Ok(outcome) => outcome,
        Err(err) => Outcome::Respond(err),
    }
}

async fn route(state: &GpuState, req: Request<Incoming>) -> Result<Outcome, Resp> {
    let start = Instant::now();
    let (route, method) = match req.uri().path() {
        "/embed" => (Route::Embed, Method::POST),
        "/v1/embeddings" => (Route::OpenAi, Method::POST),
        "/tokenize" => (Route::Tokenize, Method::POST),
        "/info" => (Route::Info, Method::GET),
        "/health" => (Route::Health, Method::GET),
        "/metrics" => (Route::Metrics, Method::GET),
        _ => return Err(api::empty(StatusCode::NOT_FOUND)),
    };
    if *req.method() != method {
        return Err(api::empty(StatusCode::METHOD_NOT_ALLOWED));
    }
    // As the notes say of TEI's `--api-key`: health and metrics stay open.
    if !matches!(route, Route::Health | Route::Metrics) && !authorized(state, &req) {
        return Err(ApiError::Unauthorized.native());
    }
    let render = |err: ApiError| {
        if route == Route::OpenAi {
            err.openai()
        } else {
            err.native()
        }
    };
    let resp = match route {
        Route::Info => api::json_bytes(StatusCode::OK, state.info.to_vec()),
        Route::Health => health(state).await,
        Route::Metrics => metrics(state),
        Route::Tokenize => {
            let body = read_json_body(state, req).await.map_err(render)?;
            tokenize(state, &body).unwrap_or_else(render)
        }
        Route::Embed | Route::OpenAi => {
            let body = read_json_body(state, req).await.map_err(render)?;
            let extra = match state.faults.decide() {
                Verdict::Drop => return Ok(Outcome::Drop),
                Verdict::Unhealthy => {
                    state.metrics.failure("unhealthy");
                    return Err(render(ApiError::unhealthy()));
                }
                Verdict::Backend => {
                    state.metrics.failure("backend");
                    return Err(render(ApiError::backend()));
                }
                Verdict::Serve { extra } => extra,
            };
            let result = if route == Route::Embed {
                embed_route(state, &body, start).await
            } else {
                openai_route(state, &body, start).await
            };
            let resp = result.unwrap_or_else(render);
            if !extra.is_zero() {
                tokio::time::sleep(extra).await;
            }
            resp
        }
    };
    Ok(Outcome::Respond(resp))
}

fn authorized<B>(state: &GpuState, req: &Request<B>) -> bool {
    let Some(key) = &state.config.api_key else {
        return true;
    };
    let Some(value) = req.headers().get(AUTHORIZATION) else {
        return false;
    };
    value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")) == Some(key.as_str())
}

/// Reads the body within the payload limit and checks it is declared JSON, as axum's `Json` does.
async fn read_json_body(state: &GpuState, req: Request<Incoming>) -> Result<Bytes, ApiError> {
    let is_json = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
        .unwrap_or(false);
    let limit = state.config.payload_limit;
    let mut body = req.into_body();
    let mut buf = BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| ApiError::plain(StatusCode::BAD_REQUEST, format!("Failed to buffer the request body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen += data.len();
        if seen > limit.saturating_add(DRAIN_LIMIT) {
            break;
        }
        if seen <= limit {
            buf.extend_from_slice(&data);
        }
    }
    if seen > limit {
        let message = "Failed to buffer the request body: length limit exceeded";
        return Err(ApiError::plain(StatusCode::PAYLOAD_TOO_LARGE, message));
    }
    if !is_json {
        let message = "Expected request with `Content-Type: application/json`";
        return Err(ApiError::plain(StatusCode::UNSUPPORTED_MEDIA_TYPE, message));
    }
    Ok(buf.freeze())
}

async fn embed_route(state: &GpuState, body: &[u8], start: Instant) -> Result<Resp, ApiError> {
    let req: EmbedRequest = ApiError::parse_json(body)?;
    state.note_options(Received {
        prompt_name: req.prompt_name.clone(),
        dimensions: req.dimensions,
        normalize: req.normalize,
        truncation_direction: req.truncation_direction.map(|d| format!("{d:?}").to_ascii_lowercase()),
    });
    let prompt = embed::prompt(state, req.prompt_name.as_deref())?;
    let shape = embed::shape(state, req.dimensions, req.normalize.unwrap_or(true))?;
    let truncate = req.truncate.unwrap_or(state.config.auto_truncate);
    let direction = req.truncation_direction.unwrap_or_default();
    let done = embed::run(state, req.inputs, truncate, direction, prompt, start).await?;
    let body = done.native_body(shape).map_err(|_| ApiError::backend())?;
    Ok(done.respond(state, body))
}

async fn openai_route(state: &GpuState, body: &[u8], start: Instant) -> Result<Resp, ApiError> {
    let req: OpenAiRequest = ApiError::parse_json(body)?;
    state.note_options(Received { dimensions: req.dimensions, ..Received::default() });
    let shape = embed::shape(state, req.dimensions, true)?;
    let truncate = state.config.auto_truncate;
    // The server's default prompt applies here too: the route cannot name one.
    let prompt = embed::prompt(state, None)?;
    let done = embed::run(state, req.input, truncate, Direction::Right, prompt, start).await?;
    let model = &state.config.model_id;
    let body = done.openai_body(shape, req.encoding_format, model).map_err(|_| ApiError::backend())?;
    Ok(done.respond(state, body))
}

fn tokenize(state: &GpuState, body: &[u8]) -> Result<Resp, ApiError> {
    let req: TokenizeRequest = ApiError::parse_json(body)?;
    let texts = match req.inputs {
        TextInputs::Single(text) => vec![text],
        TextInputs::Batch(texts) => texts,
    };
    // As TEI 1.9.3: an empty string (or list) is 400 `Empty`, not the special tokens alone.
    if texts.is_empty() || texts.iter().any(String::is_empty) {
        return Err(ApiError::empty());
    }
    let max = state.config.max_client_batch_size;
    if texts.len() > max {
        let message = format!("batch size {} > maximum allowed batch size {max}", texts.len());
        return Err(ApiError::validation(message));
    }
    let tokens = texts
        .iter()
        .map(|text| state.tokenizer.tokenize(text, req.add_special_tokens))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            let message = format!("Tokenizer error: {e}");
            ApiError::typed(StatusCode::UNPROCESSABLE_ENTITY, api::ErrorType::Tokenizer, message)
        })?;
    Ok(api::json(StatusCode::OK, &tokens))
}

/// TEI's health check runs on the backend, behind the batch in flight: so does this one.
async fn health(state: &GpuState) -> Resp {
    state.queue.wait_running().await;
    if state.faults.is_unhealthy() {
        return ApiError::unhealthy().native();
    }
    api::empty(StatusCode::OK)
}

fn metrics(state: &GpuState) -> Resp {
    let mut resp = api::text(StatusCode::OK, state.metrics.render());
    let value = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
    resp.headers_mut().insert(CONTENT_TYPE, value);
    resp
}

/// `/info`'s body for a GPU of `config`.
pub(crate) fn info_body(config: &SimConfig) -> Bytes {
    #[derive(Serialize)]
    struct Info<'a> {
        model_id: &'a str,
        served_model_name: &'a str,
        model_sha: Option<&'a str>,
        model_dtype: &'a str,
        model_type: serde_json::Value,
        max_concurrent_requests: usize,
        max_input_length: usize,
        max_batch_tokens: usize,
        max_batch_requests: Option<usize>,
        max_client_batch_size: usize,
        auto_truncate: bool,
        tokenization_workers: usize,
        version: &'a str,
        sha: Option<&'a str>,
        docker_label: Option<&'a str>,
    }
    let info = Info {
        model_id: &config.model_id,
        served_model_name: config.served_model_name.as_deref().unwrap_or(&config.model_id),
        model_sha: config.model_sha.as_deref(),
        model_dtype: if config.cpu { "float32" } else { "float16" },
        model_type: serde_json::json!({"embedding": {"pooling": "mean"}}),
        max_concurrent_requests: config.max_concurrent_requests,
        max_input_length: config.max_input_length,
        max_batch_tokens: config.max_batch_tokens,
        max_batch_requests: config.batch_requests(),
        max_client_batch_size: config.max_client_batch_size,
        auto_truncate: config.auto_truncate,
        tokenization_workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
        version: TEI_VERSION,
        sha: Some("tweet-embed-devtei"),
        docker_label: Some("devtei-simulator"),
    };
    Bytes::from(serde_json::to_vec(&info).unwrap_or_default())
}
