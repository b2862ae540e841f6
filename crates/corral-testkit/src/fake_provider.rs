//! A local model provider for tests and benchmarks: speaks Anthropic's Messages API
//! (`POST /v1/messages`) and OpenAI's Chat Completions (`POST /v1/chat/completions`), JSON or
//! streamed as server-sent events, with fixed token counts, and records what it was sent
//! (path, key, model) so a test can check what reached "the provider".
//!
//! Streams are written one event per HTTP chunk, flushed as they are made, so latency
//! measured through a proxy is the proxy's.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// Input and output tokens every Anthropic response reports.
pub const ANTHROPIC_TOKENS: (i64, i64) = (11, 7);
/// Prompt and completion tokens every OpenAI response reports.
pub const OPENAI_TOKENS: (i64, i64) = (13, 5);
/// The text of every completion (streams send it in [`FakeProvider::chunks`] pieces).
pub const REPLY: &str = "Hello from the fake provider.";

/// One request the provider received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Request path.
    pub path: String,
    /// `x-api-key`, else the bearer token of `Authorization`.
    pub key: Option<String>,
    /// The body's `model`.
    pub model: Option<String>,
    /// The whole JSON body.
    pub body: Value,
}

/// How the provider answers.
#[derive(Debug, Clone, Copy)]
pub struct Behaviour {
    /// Content pieces per streamed answer.
    pub chunks: usize,
    /// Pause before each piece.
    pub chunk_delay: Duration,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            chunks: 5,
            chunk_delay: Duration::from_millis(0),
        }
    }
}

/// A running fake provider on 127.0.0.1; stops when dropped.
pub struct FakeProvider {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// How many content pieces a stream has.
    pub chunks: usize,
    seen: Arc<Mutex<Vec<Seen>>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl FakeProvider {
    /// Starts one with the default behaviour.
    pub fn start() -> Self {
        Self::start_with(Behaviour::default())
    }

    /// Starts one that answers as `behaviour` says.
    pub fn start_with(behaviour: Behaviour) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the fake provider");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let recorded = Arc::clone(&seen);
        std::thread::spawn(move || serve(listener, behaviour, recorded, stopped));
        Self {
            url,
            chunks: behaviour.chunks,
            seen,
            _stop: stop,
        }
    }

    /// Everything received so far, oldest first.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Serves until `stopped` fires (the provider was dropped).
pub fn serve(
    listener: std::net::TcpListener,
    behaviour: Behaviour,
    seen: Arc<Mutex<Vec<Seen>>>,
    stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("fake provider runtime");
    runtime.block_on(async move {
        listener.set_nonblocking(true).expect("nonblocking");
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        let accept = async {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let seen = Arc::clone(&seen);
                        async move { Ok::<_, Infallible>(answer(request, behaviour, &seen).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        };
        tokio::select! {
            () = accept => {}
            _ = stopped => {}
        }
    });
}

/// Serves forever on `address` (for the benchmark's standalone server).
pub fn serve_forever(address: SocketAddr, behaviour: Behaviour) {
    let listener = std::net::TcpListener::bind(address).expect("bind the fake provider");
    let (_stop, stopped) = tokio::sync::oneshot::channel();
    serve(listener, behaviour, Arc::default(), stopped);
}

async fn answer(
    request: Request<Incoming>,
    behaviour: Behaviour,
    seen: &Mutex<Vec<Seen>>,
) -> Response<ChunkBody> {
    let path = request.uri().path().to_string();
    let headers = request.headers().clone();
    let key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
        })
        .map(str::to_string);
    let bytes = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let model = body["model"].as_str().map(str::to_string);
    seen.lock().unwrap_or_else(|e| e.into_inner()).push(Seen {
        path: path.clone(),
        key,
        model: model.clone(),
        body: body.clone(),
    });
    let model = model.unwrap_or_default();
    let stream = body["stream"] == json!(true);
    match (path.as_str(), stream) {
        ("/v1/messages", false) => json_response(anthropic_message(&model)),
        ("/v1/messages", true) => {
            sse_response(anthropic_events(&model, behaviour.chunks), behaviour)
        }
        ("/v1/chat/completions", false) => json_response(openai_completion(&model)),
        ("/v1/chat/completions", true) => {
            let usage = body["stream_options"]["include_usage"] == json!(true);
            sse_response(openai_chunks(&model, behaviour.chunks, usage), behaviour)
        }
        ("/v1/models", _) => {
            json_response(json!({"data": [{"id": "fake-model", "object": "model"}]}))
        }
        _ => {
            let mut response =
                json_response(json!({"error": {"message": format!("no route {path}")}}));
            *response.status_mut() = hyper::StatusCode::NOT_FOUND;
            response
        }
    }
}

fn anthropic_message(model: &str) -> Value {
    let (input, output) = ANTHROPIC_TOKENS;
    json!({
        "id": "msg_fake", "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": REPLY}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": input, "output_tokens": output},
    })
}

fn openai_completion(model: &str) -> Value {
    let (prompt, completion) = OPENAI_TOKENS;
    json!({
        "id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": REPLY}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    })
}

/// The reply cut into `n` pieces.
fn pieces(n: usize) -> Vec<String> {
    let n = n.max(1);
    let chars: Vec<char> = REPLY.chars().collect();
    let size = chars.len().div_ceil(n);
    chars
        .chunks(size.max(1))
        .map(|c| c.iter().collect())
        .collect()
}

fn event(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

fn anthropic_events(model: &str, chunks: usize) -> Vec<String> {
    let (input, output) = ANTHROPIC_TOKENS;
    let mut events = vec![
        event(
            "message_start",
            &json!({"type": "message_start", "message": {
            "id": "msg_fake", "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": input, "output_tokens": 1}}}),
        ),
        event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}}),
        ),
    ];
    for piece in pieces(chunks) {
        events.push(event(
            "content_block_delta",
            &json!({"type": "content_block_delta",
            "index": 0, "delta": {"type": "text_delta", "text": piece}}),
        ));
    }
    events.push(event(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push(event(
        "message_delta",
        &json!({"type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": null},
        "usage": {"output_tokens": output}}),
    ));
    events.push(event("message_stop", &json!({"type": "message_stop"})));
    events
}

fn openai_chunks(model: &str, chunks: usize, usage: bool) -> Vec<String> {
    let (prompt, completion) = OPENAI_TOKENS;
    let chunk = |delta: Value, finish: Value| {
        let mut c = json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0,
            "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        if usage {
            c["usage"] = Value::Null;
        }
        format!("data: {c}\n\n")
    };
    let mut out = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    for piece in pieces(chunks) {
        out.push(chunk(json!({"content": piece}), Value::Null));
    }
    out.push(chunk(json!({}), json!("stop")));
    if usage {
        let last = json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0,
            "model": model, "choices": [],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}});
        out.push(format!("data: {last}\n\n"));
    }
    out.push("data: [DONE]\n\n".into());
    out
}

fn json_response(value: Value) -> Response<ChunkBody> {
    let (sender, receiver) = mpsc::unbounded_channel();
    let _ = sender.send(Bytes::from(value.to_string()));
    let mut response = Response::new(ChunkBody(receiver));
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn sse_response(events: Vec<String>, behaviour: Behaviour) -> Response<ChunkBody> {
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        for event in events {
            if !behaviour.chunk_delay.is_zero() {
                tokio::time::sleep(behaviour.chunk_delay).await;
            }
            if sender.send(Bytes::from(event)).is_err() {
                return;
            }
        }
    });
    let mut response = Response::new(ChunkBody(receiver));
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("text/event-stream"),
    );
    response
}

/// A body sent chunk by chunk as the pieces are made.
pub struct ChunkBody(mpsc::UnboundedReceiver<Bytes>);

impl hyper::body::Body for ChunkBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}
