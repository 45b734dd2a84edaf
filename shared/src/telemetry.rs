//! Logging set-up shared by the binaries: JSON lines in Lambda (CloudWatch parses them),
//! compact text locally. `RUST_LOG` filters as usual (default `info`).

/// Initialise tracing once; later calls are no-ops.
pub fn init() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("KELP_LOG_FORMAT")
        .map(|f| f == "json")
        .unwrap_or(std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some());
    // Colours only on a terminal: logs redirected to a file stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr);
    let _ =
        if json { builder.json().flatten_event(true).without_time().try_init() } else { builder.compact().try_init() };
}
