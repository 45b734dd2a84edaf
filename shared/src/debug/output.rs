//! Guest stdout/stderr (B1): split into lines, each line one debug event with the execution
//! context. Output is capped per call, and `logging.*` lines are charged to the same byte
//! budget; past the cap the rest is dropped and one event marked `truncated` says so, while
//! the guest keeps running (writes and log calls still succeed).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use super::source_map::{DevSourceMap, Frame};
use super::DebugSink;

struct Shared {
    sink: DebugSink,
    /// A `kelp dev` version's source (its source map maps stack frames), decoded at the
    /// first frame that needs it.
    dev_source: Option<Arc<str>>,
    dev_map: Option<Option<DevSourceMap>>,
    budget: usize,
    used: usize,
    cut_reported: bool,
    lines: [Vec<u8>; 2],
    exception: ExceptionReport,
}

/// An uncaught exception the guest's runtime reported on stderr before it aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestException {
    /// The exception's message, e.g. `can't access property "x", thing is undefined`.
    pub message: String,
    /// Where it was thrown, from the top stack frame: `src/index.js:37:5`.
    pub at: Option<String>,
}

/// Reads componentize-js's (SpiderMonkey's) report of an uncaught exception on stderr:
///
/// ```text
/// can't access property "explode", thing is undefined
/// Stack:
///   handler@src/index.js:37:5
///   export_handler@/tmp/…/initializer.js:3016:15
/// ```
///
/// and componentize-py's, a Python traceback followed by its runtime's panic:
///
/// ```text
/// Traceback (most recent call last):
///   File "/0/app.py", line 44, in handler
///     1 / 0
/// ZeroDivisionError: division by zero
/// thread '<unnamed>' (1) panicked at runtime/src/lib.rs:1280:25:
/// Python function threw an unexpected exception
/// ```
#[derive(Default)]
struct ExceptionReport {
    previous_line: Option<String>,
    awaiting_frame: Option<String>,
    /// Inside a Python traceback: the deepest frame in the author's files and the exception.
    python: Option<PythonTraceback>,
    /// The runtime's panic line was just read (its `note:` line follows).
    python_panicked: bool,
    found: Option<GuestException>,
}

#[derive(Default)]
struct PythonTraceback {
    at: Option<String>,
    exception: Option<String>,
}

/// What the JavaScript runtime prints when it aborts after an uncaught exception: noise to
/// the author, who gets the exception's own line instead.
const ABORT_NOISE: &str = "Redirecting call to abort() to mozalloc_abort";

/// The file and line of a Python traceback frame, given what follows its `File "`:
/// `/0/app.py", line 44, in handler` → (`/0/app.py`, 44).
pub fn python_frame(frame: &str) -> Option<(&str, u32)> {
    let (file, rest) = frame.split_once("\", line ")?;
    let row = rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()?;
    Some((file, row))
}

/// The line componentize-py's runtime panics with after printing the traceback.
const PYTHON_UNCAUGHT: &str = "Python function threw an unexpected exception";

/// Where componentize-py puts the author's modules (`/0/app.py`).
const PYTHON_APP_ROOT: &str = "/0/";

impl ExceptionReport {
    /// Read one stderr line; false when the line is the runtime's noise (its panic after an
    /// uncaught exception, frames of kelp dev's loader and of the import machinery), not the
    /// author's.
    fn stderr_line(&mut self, line: &str) -> bool {
        if line == "Stack:" {
            self.awaiting_frame = self.previous_line.take();
        } else if let Some(message) = self.awaiting_frame.take() {
            let at = line.trim().split_once('@').map(|(_, place)| place.to_string()).filter(|p| p.contains(':'));
            self.found.get_or_insert(GuestException { message, at });
        }
        self.previous_line = Some(line.to_string());
        self.python_line(line)
    }

    fn python_line(&mut self, line: &str) -> bool {
        if line == "Traceback (most recent call last):" {
            self.python = Some(PythonTraceback::default());
            return true;
        }
        // componentize-py's panic after a traceback: its three lines are the runtime's, not
        // the author's (a guest printing the same words outside a traceback keeps them).
        if self.python.is_some() && line == PYTHON_UNCAUGHT {
            if let Some(tb) = self.python.take() {
                let message = tb.exception.unwrap_or_else(|| "uncaught Python exception".into());
                self.found.get_or_insert(GuestException { message, at: tb.at });
            }
            self.python_panicked = true;
            return false;
        }
        if self.python.is_some() && line.starts_with("thread '") && line.contains("panicked at runtime/src/lib.rs") {
            return false;
        }
        if std::mem::take(&mut self.python_panicked) && line.starts_with("note: run with `RUST_BACKTRACE=1`") {
            return false;
        }
        let Some(tb) = self.python.as_mut() else { return true };
        if let Some(frame) = line.strip_prefix("  File \"") {
            let Some((file, row)) = python_frame(frame) else { return true };
            let machinery =
                file.starts_with("/python/") || file.starts_with("<frozen") || file.ends_with("kelp_dev_loader.py");
            if machinery {
                return false;
            }
            tb.at = Some(format!("{}:{row}", file.strip_prefix(PYTHON_APP_ROOT).unwrap_or(file)));
        } else if !line.is_empty() && !line.starts_with(' ') {
            // The exception (a chained one's "During handling…" line is replaced by the next).
            tb.exception = Some(line.to_string());
        }
        true
    }
}

const NAMES: [&str; 2] = ["stdout", "stderr"];
const LEVELS: [&str; 2] = ["info", "error"];
/// A line longer than this is emitted in pieces (the debug event cuts it further).
const MAX_LINE: usize = 64 * 1024;

impl Shared {
    fn fresh(sink: DebugSink, budget: usize, dev_source: Option<Arc<str>>) -> Self {
        Self {
            sink,
            dev_source,
            dev_map: None,
            budget,
            used: 0,
            cut_reported: false,
            lines: [Vec::new(), Vec::new()],
            exception: ExceptionReport::default(),
        }
    }

    fn accept(&mut self, which: usize, bytes: &[u8]) {
        let room = self.budget.saturating_sub(self.used);
        let cut = bytes.len() > room;
        let kept = &bytes[..bytes.len().min(room)];
        self.used += kept.len();
        for chunk in kept.split_inclusive(|b| *b == b'\n') {
            self.lines[which].extend_from_slice(chunk);
            if chunk.ends_with(b"\n") || self.lines[which].len() >= MAX_LINE {
                self.flush_line(which);
            }
        }
        if cut && !self.cut_reported {
            self.flush_line(which);
            self.report_cut(NAMES[which]);
        }
    }

    /// A `logging.*` line, charged to the same budget as stdout/stderr (a line costs its
    /// bytes plus one, so empty lines are not free).
    fn accept_log(&mut self, level: &str, message: String) {
        let cost = message.len() + 1;
        if self.used + cost > self.budget {
            self.used = self.budget;
            if !self.cut_reported {
                self.report_cut("log");
            }
            return;
        }
        self.used += cost;
        self.sink.emit(level, "log", message, false);
    }

    fn report_cut(&mut self, stream: &str) {
        self.cut_reported = true;
        self.sink.emit(
            "warn",
            stream,
            format!("[output truncated: more than {} bytes of logs, stdout and stderr in one call]", self.budget),
            true,
        );
    }

    fn flush_line(&mut self, which: usize) {
        let line = std::mem::take(&mut self.lines[which]);
        if line.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&line);
        let mut text = text.trim_end_matches(['\n', '\r']).to_string();
        if which == 1 {
            if let Some(source) = &self.dev_source {
                let map = self.dev_map.get_or_insert_with(|| DevSourceMap::from_dev_source(source));
                match map.as_ref().map(|m| m.frame(&text)) {
                    Some(Frame::Drop) => return,
                    Some(Frame::Rewritten(mapped)) => text = mapped,
                    _ => {}
                }
            }
            if text == ABORT_NOISE || !self.exception.stderr_line(&text) {
                return;
            }
        }
        self.sink.emit(LEVELS[which], NAMES[which], text, false);
    }
}

/// The capture of one call's stdout and stderr.
#[derive(Clone)]
pub struct Capture {
    shared: Arc<Mutex<Shared>>,
}

impl Capture {
    /// A capture publishing to `sink`, accepting at most `budget` bytes in total.
    pub fn new(sink: DebugSink, budget: usize) -> Self {
        Self::for_source(sink, budget, None)
    }

    /// A capture for a call of a `kelp dev` version carrying `dev_source`: stack frames of its
    /// bundle are written at the author's places, the loader's own frames left out.
    pub fn for_source(sink: DebugSink, budget: usize, dev_source: Option<Arc<str>>) -> Self {
        Self { shared: Arc::new(Mutex::new(Shared::fresh(sink, budget, dev_source))) }
    }

    /// Start capturing the next call of a reused instance: its events go to `sink`, within a
    /// fresh `budget`. The guest's stdout/stderr streams stay the same objects (the guest may
    /// hold them across calls); only where they publish changes.
    pub fn restart(&self, sink: DebugSink, budget: usize) {
        let mut s = self.shared.lock();
        s.flush_line(0);
        s.flush_line(1);
        let dev_source = s.dev_source.take();
        *s = Shared::fresh(sink, budget, dev_source);
    }

    /// The guest's stdout.
    pub fn stdout(&self) -> CaptureStream {
        CaptureStream { which: 0, shared: self.shared.clone() }
    }

    /// The guest's stderr.
    pub fn stderr(&self) -> CaptureStream {
        CaptureStream { which: 1, shared: self.shared.clone() }
    }

    /// Publish a guest log line at `level`, within the call's output budget.
    pub fn log(&self, level: &str, message: String) {
        self.shared.lock().accept_log(level, message);
    }

    /// Emit partial lines left at the end of the call.
    pub fn finish(&self) {
        let mut s = self.shared.lock();
        s.flush_line(0);
        s.flush_line(1);
    }

    /// The uncaught exception the guest reported on stderr this call, if any (call after
    /// [`Capture::finish`]).
    pub fn guest_exception(&self) -> Option<GuestException> {
        self.shared.lock().exception.found.clone()
    }

    /// Whether output was cut this call.
    pub fn truncated(&self) -> bool {
        self.shared.lock().cut_reported
    }
}

/// One of the two streams of a [`Capture`].
#[derive(Clone)]
pub struct CaptureStream {
    which: usize,
    shared: Arc<Mutex<Shared>>,
}

impl IsTerminal for CaptureStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CaptureStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CaptureStream {
    async fn ready(&mut self) {}
}

impl OutputStream for CaptureStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.shared.lock().accept(self.which, &bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(1 << 20)
    }
}

impl AsyncWrite for CaptureStream {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.shared.lock().accept(self.which, buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::debug::memory::MemoryBus;
    use crate::debug::{DebugBus, EventContext};

    #[tokio::test]
    async fn splits_lines_and_caps_output() {
        let bus = Arc::new(MemoryBus::new(100));
        let ctx = EventContext { tenant_id: "t".into(), extension_id: "e".into(), ..Default::default() };
        let cap = Capture::new(DebugSink::new(bus.clone(), ctx, 8192), 20);
        let mut out = cap.stdout();
        out.write(Bytes::from_static(b"one\ntw")).unwrap();
        out.write(Bytes::from_static(b"o\n")).unwrap();
        out.write(Bytes::from_static(b"a very long flood of output")).unwrap();
        cap.finish();
        let events = bus.backlog("t", "e", 10).await.unwrap();
        let msgs: Vec<_> = events.iter().map(|e| (e.event.message.as_str(), e.event.truncated)).collect();
        assert_eq!(msgs[0], ("one", false));
        assert_eq!(msgs[1], ("two", false));
        assert_eq!(msgs[2], ("a very long ", false));
        assert!(msgs[3].0.contains("output truncated") && msgs[3].1);
        assert_eq!(events.len(), 4);
        assert!(cap.truncated());
    }

    #[tokio::test]
    async fn an_uncaught_js_exception_is_read_from_stderr_and_the_abort_noise_dropped() {
        let bus = Arc::new(MemoryBus::new(100));
        let ctx = EventContext { tenant_id: "t".into(), extension_id: "e".into(), ..Default::default() };
        let cap = Capture::new(DebugSink::new(bus.clone(), ctx, 8192), 10_000);
        let report = "can't access property \"explode\", thing is undefined\nStack:\n  handler@src/index.js:37:5\n  \
                      export_handler@/tmp/x/initializer.js:3016:15\n\nRedirecting call to abort() to mozalloc_abort\n";
        cap.stdout().write(Bytes::from_static(b"Stack:\nnot an exception\n")).unwrap();
        assert_eq!(cap.guest_exception(), None, "stdout is the guest's own business");
        cap.stderr().write(Bytes::copy_from_slice(report.as_bytes())).unwrap();
        cap.finish();
        assert_eq!(
            cap.guest_exception(),
            Some(GuestException {
                message: "can't access property \"explode\", thing is undefined".into(),
                at: Some("src/index.js:37:5".into())
            })
        );
        let events = bus.backlog("t", "e", 20).await.unwrap();
        assert!(events.iter().all(|e| !e.event.message.contains("mozalloc")));
        assert!(events.iter().any(|e| e.event.message.contains("handler@src/index.js:37:5")), "the stack stays");
    }

    #[tokio::test]
    async fn an_uncaught_python_exception_is_its_traceback_without_the_runtime_panic() {
        let bus = Arc::new(MemoryBus::new(100));
        let ctx = EventContext { tenant_id: "t".into(), extension_id: "e".into(), ..Default::default() };
        let cap = Capture::new(DebugSink::new(bus.clone(), ctx, 8192), 10_000);
        let report = "Traceback (most recent call last):\n  File \"/0/kelp_dev_loader.py\", line 70, in handler\n  \
                      File \"<frozen importlib._bootstrap>\", line 938, in _load_unlocked\n  \
                      File \"/0/app.py\", line 44, in handler\n    return 1 / 0\n  \
                      File \"/python/json/__init__.py\", line 3, in loads\nZeroDivisionError: division by zero\n\n\
                      thread '<unnamed>' (1) panicked at runtime/src/lib.rs:1280:25:\n\
                      Python function threw an unexpected exception\n\
                      note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        cap.stderr().write(Bytes::copy_from_slice(report.as_bytes())).unwrap();
        cap.finish();
        assert_eq!(
            cap.guest_exception(),
            Some(GuestException {
                message: "ZeroDivisionError: division by zero".into(),
                at: Some("app.py:44".into())
            })
        );
        let events = bus.backlog("t", "e", 20).await.unwrap();
        let lines: Vec<&str> = events.iter().map(|e| e.event.message.as_str()).collect();
        assert!(lines.contains(&"  File \"/0/app.py\", line 44, in handler") && lines.contains(&"    return 1 / 0"));
        for noise in ["panicked", "threw an unexpected", "RUST_BACKTRACE", "kelp_dev_loader", "<frozen", "/python/"] {
            assert!(lines.iter().all(|l| !l.contains(noise)), "{noise} in {lines:?}");
        }
    }

    #[tokio::test]
    async fn log_lines_share_the_output_budget() {
        let bus = Arc::new(MemoryBus::new(1000));
        let ctx = EventContext { tenant_id: "t".into(), extension_id: "e".into(), ..Default::default() };
        let cap = Capture::new(DebugSink::new(bus.clone(), ctx, 8192), 30);
        cap.stdout().write(Bytes::from_static(b"0123456789\n")).unwrap();
        for _ in 0..100_000 {
            cap.log("info", String::new());
        }
        cap.log("warn", "after the budget".into());
        cap.finish();
        let events = bus.backlog("t", "e", 1000).await.unwrap();
        let logs = events.iter().filter(|e| e.event.stream == "log" && !e.event.truncated).count();
        assert_eq!(logs, 30 - 11, "each empty line costs one byte of the 30");
        let markers: Vec<_> = events.iter().filter(|e| e.event.truncated).collect();
        assert_eq!(markers.len(), 1);
        assert!(markers[0].event.message.contains("output truncated"));
        assert!(!events.iter().any(|e| e.event.message == "after the budget"));
    }
}
