//! A small Server-Sent Events client for the relay tests.

use std::time::Duration;

use futures::StreamExt;
pub use kelp_runtime::relay::client::Frame;
use kelp_runtime::relay::client::SseParser;

/// `data` of a frame as JSON.
pub trait FrameJson {
    /// `data` parsed as JSON (`null` if it is not).
    fn json(&self) -> serde_json::Value;
}

impl FrameJson for Frame {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap_or(serde_json::Value::Null)
    }
}

/// An open SSE response being read frame by frame.
pub struct Sse {
    /// Status of the response.
    pub status: u16,
    /// The body, if the response was 200.
    stream: Option<std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>>,
    parser: SseParser,
    ready: std::collections::VecDeque<Frame>,
    /// Body of a refused request.
    pub error: serde_json::Value,
}

impl Sse {
    /// `GET url` with a bearer token (and `Last-Event-ID`).
    pub async fn open(url: &str, token: &str, last_event_id: Option<&str>) -> Self {
        let mut req = reqwest::Client::new().get(url).bearer_auth(token).header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let r = req.send().await.expect("SSE request");
        let status = r.status().as_u16();
        if status != 200 {
            let error = r.json().await.unwrap_or(serde_json::Value::Null);
            return Self { status, stream: None, parser: SseParser::default(), ready: Default::default(), error };
        }
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
        Self {
            status,
            stream: Some(Box::pin(r.bytes_stream())),
            parser: SseParser::default(),
            ready: Default::default(),
            error: serde_json::Value::Null,
        }
    }

    /// The next frame within `within` (`None` on timeout or end of stream).
    pub async fn next(&mut self, within: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(f) = self.ready.pop_front() {
                return Some(f);
            }
            let stream = self.stream.as_mut()?;
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(Some(Ok(chunk))) => self.ready.extend(self.parser.push(&chunk)),
                _ => return None,
            }
        }
    }

    /// The next frame that is not a comment or `retry:` line.
    pub async fn next_event(&mut self, within: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let f = self.next(left).await?;
            if !f.comment && !f.data.is_empty() {
                return Some(f);
            }
        }
    }
}
