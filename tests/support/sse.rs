//! A small Server-Sent Events client for the relay tests.

use std::time::Duration;

use futures::StreamExt;

/// One SSE frame.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Frame {
    /// `event:` (empty = message).
    pub event: String,
    /// `id:`.
    pub id: Option<String>,
    /// `data:` lines joined.
    pub data: String,
    /// A comment-only frame (heartbeat).
    pub comment: bool,
}

impl Frame {
    /// `data` parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap_or(serde_json::Value::Null)
    }
}

/// An open SSE response being read frame by frame.
pub struct Sse {
    /// Status of the response.
    pub status: u16,
    /// The body, if the response was 200.
    stream: Option<std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>>,
    buffer: String,
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
            return Self { status, stream: None, buffer: String::new(), error };
        }
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
        Self { status, stream: Some(Box::pin(r.bytes_stream())), buffer: String::new(), error: serde_json::Value::Null }
    }

    /// The next frame within `within` (`None` on timeout or end of stream).
    pub async fn next(&mut self, within: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(cut) = self.buffer.find("\n\n") {
                let raw: String = self.buffer.drain(..cut + 2).collect();
                return Some(parse(&raw));
            }
            let stream = self.stream.as_mut()?;
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(Some(Ok(chunk))) => self.buffer.push_str(&String::from_utf8_lossy(&chunk)),
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
            if !f.comment && !(f.data.is_empty() && f.event.is_empty()) {
                return Some(f);
            }
        }
    }
}

fn parse(raw: &str) -> Frame {
    let mut f = Frame::default();
    let mut only_comments = true;
    for line in raw.lines() {
        if line.starts_with(':') {
            continue;
        }
        only_comments = false;
        let (field, value) = line.split_once(':').map(|(f, v)| (f, v.strip_prefix(' ').unwrap_or(v))).unwrap_or((line, ""));
        match field {
            "event" => f.event = value.to_string(),
            "id" => f.id = Some(value.to_string()),
            "data" => {
                if !f.data.is_empty() {
                    f.data.push('\n');
                }
                f.data.push_str(value);
            }
            _ => {}
        }
    }
    f.comment = only_comments;
    f
}
