//! `logging.*` host functions: each line one debug event, charged to the call's output budget
//! (shared with stdout and stderr), with `cap:log.emit`.

use super::output::Capture;
use crate::bindings::alga::extension::logging;

/// The per-call state of the logging capability.
pub struct LoggingCtx {
    /// Whether the call may log (`cap:log.emit`), decided when it was planned.
    pub granted: bool,
    /// The call's output capture (its budget is shared with stdout and stderr).
    pub output: Capture,
}

impl LoggingCtx {
    fn log(&mut self, level: &str, message: String) {
        if self.granted {
            self.output.log(level, message);
        }
    }
}

impl logging::Host for LoggingCtx {
    async fn log_info(&mut self, message: String) {
        self.log("info", message);
    }
    async fn log_warn(&mut self, message: String) {
        self.log("warn", message);
    }
    async fn log_error(&mut self, message: String) {
        self.log("error", message);
    }
}
