//! A Lambda Runtime API emulator on loopback, so the real function binaries can be driven
//! the way Lambda (and `sam local invoke`) drives them: the binary long-polls
//! `/runtime/invocation/next`, answers on `/response` (buffered or streamed) or `/error`.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, Notify};

struct Pending {
    id: String,
    event: Value,
}

struct Waiting {
    chunks: mpsc::UnboundedSender<(Instant, Bytes)>,
    done: oneshot::Sender<Outcome>,
}

#[derive(Default)]
struct Inner {
    queue: VecDeque<Pending>,
    waiting: HashMap<String, Waiting>,
    first_poll: Option<Instant>,
    init_error: Option<Value>,
}

type Shared = Arc<(Mutex<Inner>, Notify)>;

/// How an invocation ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// `true` for `/response`, `false` for `/error`.
    pub ok: bool,
    /// Request headers of the function's answer (e.g. the streaming response mode).
    pub headers: HeaderMap,
    /// The whole answer body.
    pub body: Vec<u8>,
}

impl Outcome {
    /// A buffered HTTP answer (`{statusCode, headers, body, isBase64Encoded}`).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// A streamed HTTP answer: the JSON prelude and the body after the 8 NUL separator.
    pub fn streamed(&self) -> (Value, Vec<u8>) {
        let sep = [0u8; 8];
        let at = self.body.windows(8).position(|w| w == sep).expect("streaming prelude separator");
        (serde_json::from_slice(&self.body[..at]).expect("prelude JSON"), self.body[at + 8..].to_vec())
    }
}

/// An invocation in flight: chunks as they arrive, then the outcome.
pub struct Invocation {
    /// Chunks of the answer with their arrival times.
    pub chunks: mpsc::UnboundedReceiver<(Instant, Bytes)>,
    /// The outcome.
    pub done: oneshot::Receiver<Outcome>,
    /// When the event was handed over.
    pub started: Instant,
}

/// The emulator.
pub struct Emulator {
    /// Where the Runtime API listens (`AWS_LAMBDA_RUNTIME_API`).
    pub addr: SocketAddr,
    shared: Shared,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.server.abort();
    }
}

const API: &str = "/2018-06-01/runtime";

async fn next(State(shared): State<Shared>) -> Response {
    loop {
        let notified = shared.1.notified();
        {
            let mut inner = shared.0.lock().unwrap();
            inner.first_poll.get_or_insert_with(Instant::now);
            if let Some(p) = inner.queue.pop_front() {
                let deadline = chrono::Utc::now().timestamp_millis() + 30_000;
                let mut r = axum::Json(p.event).into_response();
                let h = r.headers_mut();
                h.insert("lambda-runtime-aws-request-id", p.id.parse().unwrap());
                h.insert("lambda-runtime-deadline-ms", deadline.to_string().parse().unwrap());
                h.insert(
                    "lambda-runtime-invoked-function-arn",
                    "arn:aws:lambda:us-east-1:123456789012:function:kelp-test".parse().unwrap(),
                );
                h.insert(
                    "lambda-runtime-trace-id",
                    "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1".parse().unwrap(),
                );
                return r;
            }
        }
        notified.await;
    }
}

async fn respond(
    State(shared): State<Shared>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> StatusCode {
    finish(shared, id, headers, body, true).await
}

async fn error(
    State(shared): State<Shared>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> StatusCode {
    finish(shared, id, headers, body, false).await
}

async fn finish(shared: Shared, id: String, headers: HeaderMap, body: Body, ok: bool) -> StatusCode {
    let Some(waiting) = shared.0.lock().unwrap().waiting.remove(&id) else { return StatusCode::NOT_FOUND };
    let mut all = Vec::new();
    let mut stream = body.into_data_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        let _ = waiting.chunks.send((Instant::now(), chunk.clone()));
        all.extend_from_slice(&chunk);
    }
    let _ = waiting.done.send(Outcome { ok, headers, body: all });
    StatusCode::ACCEPTED
}

async fn init_error(State(shared): State<Shared>, body: Bytes) -> StatusCode {
    shared.0.lock().unwrap().init_error = Some(serde_json::from_slice(&body).unwrap_or(Value::Null));
    StatusCode::ACCEPTED
}

impl Emulator {
    /// Start on a loopback port.
    pub async fn start() -> Self {
        let shared: Shared = Arc::new((Mutex::new(Inner::default()), Notify::new()));
        let app = axum::Router::new()
            .route(&format!("{API}/invocation/next"), get(next))
            .route(&format!("{API}/invocation/{{id}}/response"), post(respond))
            .route(&format!("{API}/invocation/{{id}}/error"), post(error))
            .route(&format!("{API}/init/error"), post(init_error))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, shared, server }
    }

    /// Hand an event to the function.
    pub fn invoke(&self, event: Value) -> Invocation {
        let id = uuid::Uuid::new_v4().to_string();
        let (ctx, crx) = mpsc::unbounded_channel();
        let (dtx, drx) = oneshot::channel();
        {
            let mut inner = self.shared.0.lock().unwrap();
            inner.waiting.insert(id.clone(), Waiting { chunks: ctx, done: dtx });
            inner.queue.push_back(Pending { id, event });
        }
        self.shared.1.notify_waiters();
        Invocation { chunks: crx, done: drx, started: Instant::now() }
    }

    /// Invoke and wait for the outcome.
    pub async fn call(&self, event: Value) -> Outcome {
        let inv = self.invoke(event);
        tokio::time::timeout(Duration::from_secs(60), inv.done)
            .await
            .expect("the function answered in time")
            .expect("outcome")
    }

    /// When the function first asked for an event (its init finished).
    pub fn first_poll(&self) -> Option<Instant> {
        self.shared.0.lock().unwrap().first_poll
    }

    /// An init error the function reported.
    pub fn init_error(&self) -> Option<Value> {
        self.shared.0.lock().unwrap().init_error.clone()
    }

    /// Wait until the function polls for its first event; returns the init time.
    pub async fn wait_ready(&self, spawned: Instant) -> Duration {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(t) = self.first_poll() {
                return t.duration_since(spawned);
            }
            assert!(self.init_error().is_none(), "init error: {:?}", self.init_error());
            assert!(Instant::now() < until, "the function never polled for an event");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Spawn a function binary against the emulator with Lambda's environment plus `env`.
pub fn spawn_function(
    binary: &Path,
    emulator: &Emulator,
    name: &str,
    env: &[(String, String)],
) -> tokio::process::Child {
    spawn_function_with_stdout(binary, emulator, name, env, std::process::Stdio::null())
}

/// [`spawn_function`] with the function's stdout (where CloudWatch reads EMF metrics from)
/// going to `stdout`.
pub fn spawn_function_with_stdout(
    binary: &Path,
    emulator: &Emulator,
    name: &str,
    env: &[(String, String)],
    stdout: std::process::Stdio,
) -> tokio::process::Child {
    let mut cmd = tokio::process::Command::new(binary);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_LAMBDA_RUNTIME_API", emulator.addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", name)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_REGION", "us-east-1")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .stdout(stdout)
        .stderr(std::process::Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawning the function binary")
}

/// Read an events/ fixture.
pub fn fixture(rel: &str) -> Value {
    let path = crate::repo_root().join("events").join(rel);
    serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}
