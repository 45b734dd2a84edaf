//! `kelp tail`: follow an extension's debug stream in the terminal. Reconnects after
//! disconnects (and after the relay ends a session at its maximum duration) with
//! `Last-Event-ID`, so nothing is shown twice or skipped.

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use futures::StreamExt;
use kelp_runtime::relay::client::{Frame, SseParser};

/// Options of `kelp tail`.
#[derive(Args)]
pub struct TailArgs {
    /// Extension registry id, manifest name or install id.
    pub extension: String,
    /// Install id.
    #[arg(long)]
    pub install: Option<String>,
    /// Only this level (info, warn, error).
    #[arg(long)]
    pub level: Option<String>,
    /// Only this stream (log, stdout, stderr, request).
    #[arg(long)]
    pub stream: Option<String>,
    /// Only this request id.
    #[arg(long)]
    pub request: Option<String>,
    /// Base URL of the relay (kelp up serves it on the same port).
    #[arg(long, env = "KELP_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Bearer token with extension:debug (or a grant).
    #[arg(long, env = "KELP_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Print events as JSON lines.
    #[arg(long)]
    pub json: bool,
}

/// Run `kelp tail` until interrupted (or refused).
pub async fn run(args: TailArgs) -> Result<()> {
    let mut query = vec![("extensionId", args.extension.clone())];
    for (k, v) in
        [("installId", &args.install), ("level", &args.level), ("stream", &args.stream), ("requestId", &args.request)]
    {
        if let Some(v) = v {
            query.push((k, v.clone()));
        }
    }
    let client = reqwest::Client::new();
    let mut last_id: Option<String> = None;
    let mut backoff = Duration::from_millis(500);
    loop {
        let mut req = client
            .get(format!("{}/api/ext-debug/stream", args.url.trim_end_matches('/')))
            .query(&query)
            .bearer_auth(&args.token)
            .header("accept", "text/event-stream");
        if let Some(id) = &last_id {
            req = req.header("last-event-id", id);
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => {
                backoff = Duration::from_millis(500);
                eprintln!(
                    "-- following {} {}",
                    args.extension,
                    last_id.as_deref().map(|i| format!("(resuming after {i})")).unwrap_or_default()
                );
                let mut parser = SseParser::default();
                let mut body = r.bytes_stream();
                while let Some(chunk) = body.next().await {
                    let Ok(chunk) = chunk else { break };
                    for frame in parser.push(&chunk) {
                        show(&frame, &args, &mut last_id)?;
                    }
                }
                eprintln!("-- disconnected; reconnecting");
            }
            Ok(r) if r.status().as_u16() == 401 || r.status().as_u16() == 403 || r.status().as_u16() == 404 => {
                let status = r.status();
                let body: serde_json::Value =
                    serde_json::from_slice(&r.bytes().await.unwrap_or_default()).unwrap_or_default();
                let message = body["error"]["message"].as_str().unwrap_or("refused");
                // The relay names the install id; the name the author typed is friendlier.
                if message.contains("debug stream is off") {
                    bail!(
                        "{status}: the install's debug stream is off; `kelp debug on {}` switches it on",
                        args.extension
                    );
                }
                bail!("{status}: {message}");
            }
            Ok(r) => eprintln!("-- relay answered {}; retrying in {backoff:?}", r.status()),
            Err(e) => eprintln!("-- cannot reach the relay ({e}); retrying in {backoff:?}"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(15));
    }
}

fn show(frame: &Frame, args: &TailArgs, last_id: &mut Option<String>) -> Result<()> {
    if frame.comment || frame.data.is_empty() {
        return Ok(());
    }
    let data: serde_json::Value = serde_json::from_str(&frame.data).unwrap_or_default();
    let mut out = std::io::stdout().lock();
    match frame.event.as_str() {
        "" | "message" => {
            if let Some(id) = &frame.id {
                *last_id = Some(id.clone());
            }
            if args.json {
                writeln!(out, "{}", frame.data)?;
            } else {
                let s = |k: &str| data[k].as_str().unwrap_or("").to_string();
                let truncated = if data["truncated"] == true { " [truncated]" } else { "" };
                writeln!(
                    out,
                    "{} {:<5} {:<6} [{}] {}{truncated}",
                    s("ts"),
                    s("level"),
                    s("stream"),
                    s("requestId"),
                    s("message")
                )?;
            }
        }
        "end" => eprintln!("-- session ended by the relay ({}); reconnecting", data["reason"].as_str().unwrap_or("?")),
        other => eprintln!("-- {other}: {}", data["message"].as_str().unwrap_or(&frame.data)),
    }
    out.flush()?;
    Ok(())
}
