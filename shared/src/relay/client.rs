//! Parsing Server-Sent Events on the client side (`kelp tail`, tests): bytes in, frames out.

/// One SSE frame.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frame {
    /// `event:` (empty for the default `message` event).
    pub event: String,
    /// `id:`.
    pub id: Option<String>,
    /// `data:` lines joined with `\n`.
    pub data: String,
    /// Only comments (heartbeats) or a `retry:` line.
    pub comment: bool,
}

/// Incremental SSE parser.
#[derive(Debug, Default)]
pub struct SseParser {
    buffer: String,
}

impl SseParser {
    /// Feed bytes; returns the frames they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Frame> {
        self.buffer.push_str(&String::from_utf8_lossy(bytes));
        let mut frames = Vec::new();
        while let Some(cut) = self.buffer.find("\n\n") {
            let raw: String = self.buffer.drain(..cut + 2).collect();
            frames.push(parse(&raw));
        }
        frames
    }
}

fn parse(raw: &str) -> Frame {
    let mut f = Frame { comment: true, ..Default::default() };
    for line in raw.lines() {
        if line.starts_with(':') {
            continue;
        }
        let (field, value) =
            line.split_once(':').map(|(f, v)| (f, v.strip_prefix(' ').unwrap_or(v))).unwrap_or((line, ""));
        match field {
            "event" => f.event = value.to_string(),
            "id" => f.id = Some(value.to_string()),
            "data" => {
                if !f.data.is_empty() {
                    f.data.push('\n');
                }
                f.data.push_str(value);
            }
            _ => continue,
        }
        f.comment = false;
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_frames_across_chunks() {
        let mut p = SseParser::default();
        assert!(p.push(b"retry: 2000\n\n: heartbeat\n\nid: 1-0\nda").iter().all(|f| f.comment));
        let frames = p.push(b"ta: {\"a\":1}\n\nevent: end\ndata: {}\n\n");
        assert_eq!(
            frames[0],
            Frame { event: String::new(), id: Some("1-0".into()), data: "{\"a\":1}".into(), comment: false }
        );
        assert_eq!(frames[1].event, "end");
    }
}
