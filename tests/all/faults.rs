//! Guests that loop, grow memory without bound, trap or flood stdout: each gets a clear JSON
//! error and the instance keeps serving.

use kelp_tests::*;

async fn error_code(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let body = json_body(r).await;
    (status, body["error"]["code"].as_str().unwrap_or_default().to_string())
}

#[tokio::test]
async fn a_guest_that_loops_forever_is_stopped_at_its_timeout_and_the_next_request_succeeds() {
    let kelp = TestKelp::start_with(&[("KELP_EXEC_TIMEOUT_MS", "300")]).await;
    let spin = kelp.publish(&staged_wat("test.spin", "(loop $forever (br $forever))")).await;
    kelp.install(&spin, "acme", &[]).await;
    let hello = kelp.publish(&staged_example("wat-hello")).await;
    kelp.install(&hello, "acme", &[]).await;
    let t = token("acme", RW);
    let started = std::time::Instant::now();
    let (status, code) = error_code(kelp.get("/api/ext/test.spin/run", &t).await).await;
    assert_eq!((status, code.as_str()), (504, "extension_timeout"));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "stopped near its 300 ms budget, took {:?}",
        started.elapsed()
    );
    let r = kelp.get("/api/ext/com.kelp.examples.wat-hello/hello", &t).await;
    assert_eq!(r.status(), 200, "the instance keeps serving");
    // The same looping extension again: still a clean timeout, no stuck state.
    assert_eq!(error_code(kelp.get("/api/ext/test.spin/run", &t).await).await.0, 504);
}

#[tokio::test]
async fn a_guest_that_grows_memory_without_bound_is_stopped() {
    let kelp = TestKelp::start_with(&[("KELP_MAX_MEMORY_MB", "32")]).await;
    let grow =
        kelp.publish(&staged_wat("test.grow", "(loop $more (drop (memory.grow (i32.const 16))) (br $more))")).await;
    kelp.install(&grow, "acme", &[]).await;
    let t = token("acme", RW);
    let (status, code) = error_code(kelp.get("/api/ext/test.grow/run", &t).await).await;
    assert_eq!((status, code.as_str()), (500, "extension_memory_limit"));
    let (status, code) = error_code(kelp.get("/api/ext/test.grow/run", &t).await).await;
    assert_eq!(
        (status, code.as_str()),
        (500, "extension_memory_limit"),
        "and again: the pool slot was recycled cleanly"
    );
}

#[tokio::test]
async fn memory_is_limited_across_all_memories_of_a_guest() {
    // Three more memories of 56 MiB each: every one fits a 64 MiB limit on its own, their
    // sum does not.
    let declarations = "(memory $m1 0) (memory $m2 0) (memory $m3 0)";
    let prelude = "(drop (memory.grow $m1 (i32.const 896))) (drop (memory.grow $m2 (i32.const 896))) (drop (memory.grow $m3 (i32.const 896)))";
    // Two memories of 20 MiB: within the limit together.
    let fits = "(drop (memory.grow $m1 (i32.const 320))) (drop (memory.grow $m2 (i32.const 320)))";
    // The pooling allocator holds one memory per core instance: such a module is refused
    // when it is published, before it can run (k memories there take k core instances, which
    // the `host::limits` unit tests cover on both allocators).
    let pooled = TestKelp::start_with(&[("KELP_MAX_MEMORY_MB", "64")]).await;
    let refused =
        kelp_runtime::publish::publish_dir(&pooled.platform, &staged_wat_with("test.memories", declarations, prelude))
            .await;
    let message = format!("{:#}", refused.expect_err("a four-memory module does not fit the pool"));
    assert!(message.contains("invalid component") && message.contains("memories"), "{message}");
    // On-demand allocation runs it, and the call's total is what stops it.
    let kelp = TestKelp::start_with(&[("KELP_MAX_MEMORY_MB", "64"), ("KELP_POOLING", "false")]).await;
    let many = kelp.publish(&staged_wat_with("test.memories", declarations, prelude)).await;
    kelp.install(&many, "acme", &[]).await;
    let within = kelp.publish(&staged_wat_with("test.memories-within", declarations, fits)).await;
    kelp.install(&within, "acme", &[]).await;
    let t = token("acme", RW);
    let (status, code) = error_code(kelp.get("/api/ext/test.memories/run", &t).await).await;
    assert_eq!((status, code.as_str()), (500, "extension_memory_limit"));
    let r = kelp.get("/api/ext/test.memories-within/run", &t).await;
    assert_eq!(r.status(), 200, "40 MiB over two memories fits 64 MiB");
    let (status, code) = error_code(kelp.get("/api/ext/test.memories/run", &t).await).await;
    assert_eq!((status, code.as_str()), (500, "extension_memory_limit"), "and again");
}

#[tokio::test]
async fn a_trapping_guest_gets_500_extension_error() {
    let kelp = TestKelp::start().await;
    let trap = kelp.publish(&staged_wat("test.trap", "unreachable")).await;
    kelp.install(&trap, "acme", &[]).await;
    let (status, code) = error_code(kelp.get("/api/ext/test.trap/run", &token("acme", RW)).await).await;
    assert_eq!((status, code.as_str()), (500, "extension_error"));
}

#[tokio::test]
async fn a_stdout_flood_is_capped_and_marked_truncated() {
    let kelp = TestKelp::start_with(&[("KELP_MAX_OUTPUT_BYTES", "4096")]).await;
    let published = kelp.publish(&staged_example("js-notes")).await;
    let install = kelp.install(&published, "acme", &[]).await;
    let r = kelp.get("/api/ext/com.kelp.examples.js-notes/log?lines=20000", &token("acme", RW)).await;
    assert_eq!(r.status(), 200, "the guest keeps running; only its output is cut");
    let events = kelp.platform.debug.backlog("acme", &published.extension.id, 2000).await.unwrap();
    let stdout: Vec<_> = events.iter().filter(|e| e.event.stream == "stdout" && !e.event.truncated).collect();
    let bytes: usize = stdout.iter().map(|e| e.event.message.len()).sum();
    assert!(bytes <= 4096, "stdout kept {bytes} bytes");
    assert!(stdout.len() < 100, "{} stdout events for 20000 lines", stdout.len());
    let marker = events.iter().find(|e| e.event.truncated).expect("a truncation marker");
    assert!(marker.event.message.contains("output truncated"));
    assert_eq!(marker.event.install_id, install.install_id);
    // Log lines share the output budget: past it they are dropped too, with no second marker.
    assert!(!events.iter().any(|e| e.event.message == "wrote 20000 lines to stdout"));
    assert_eq!(events.iter().filter(|e| e.event.truncated).count(), 1);
}

#[tokio::test]
async fn a_log_flood_is_bounded_by_the_per_call_budgets() {
    let kelp = TestKelp::start_with(&[("KELP_MAX_DEBUG_EVENTS", "50")]).await;
    let published = kelp.publish(&staged_example("js-notes")).await;
    kelp.install(&published, "acme", &[]).await;
    let r = kelp.get("/api/ext/com.kelp.examples.js-notes/log?lines=5000", &token("acme", RW)).await;
    assert_eq!(r.status(), 200, "the guest keeps running");
    let events = kelp.platform.debug.backlog("acme", &published.extension.id, 10_000).await.unwrap();
    // The budget, its one marker, and the gateway's own line for the request (one per request,
    // outside the guest's budget).
    assert!(events.len() <= 50 + 1 + 1, "{} events for one call with a budget of 50", events.len());
    let marker = events.iter().find(|e| e.event.truncated).expect("one truncation marker");
    assert!(marker.event.message.contains("more than 50 events"), "{}", marker.event.message);
}

#[tokio::test]
async fn fuel_metering_stops_a_spinning_guest_when_configured() {
    let kelp = TestKelp::start_with(&[("KELP_FUEL", "5000000"), ("KELP_EXEC_TIMEOUT_MS", "20000")]).await;
    let spin = kelp.publish(&staged_wat("test.spin-fuel", "(loop $forever (br $forever))")).await;
    kelp.install(&spin, "acme", &[]).await;
    let started = std::time::Instant::now();
    let (status, code) = error_code(kelp.get("/api/ext/test.spin-fuel/run", &token("acme", RW)).await).await;
    assert_eq!((status, code.as_str()), (504, "extension_timeout"));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "fuel ran out long before the 20 s wall clock: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn one_epoch_ticker_thread_serves_every_engine_of_the_process() {
    let _a = TestKelp::start().await;
    let _b = TestKelp::start_with(&[("KELP_POOLING", "false")]).await;
    let tickers = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.unwrap().path().join("comm")).ok())
        .filter(|name| name.trim() == "kelp-epoch")
        .count();
    assert_eq!(tickers, 1);
}

#[tokio::test]
async fn a_guest_failing_after_a_denied_capability_gets_a_clear_error_naming_it() {
    // storage.get(namespace "h", key "h") without cap:storage.kv, then a trap on the error.
    let import = r#"(import "alga:extension/storage" "get" (func $storage_get (param i32 i32 i32 i32 i32)))"#;
    let prelude = "(call $storage_get (i32.const 4096) (i32.const 1) (i32.const 4096) (i32.const 1) (i32.const 3000))
                   (if (i32.eq (i32.load8_u (i32.const 3000)) (i32.const 1)) (then unreachable))";
    let kelp = TestKelp::start().await;
    let guest = kelp.publish(&staged_wat_full("test.denied", import, "", prelude)).await;
    kelp.install(&guest, "acme", &[]).await;
    let r = kelp.get("/api/ext/test.denied/run", &token("acme", RW)).await;
    assert_eq!(r.status(), 500);
    let error = json_body(r).await;
    assert_eq!(error["error"]["code"], "capability_denied", "{error}");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("storage") && message.contains("cap:storage.kv"), "{message}");
    let events = kelp.platform.debug.backlog("acme", &guest.extension.id, 50).await.unwrap();
    assert!(
        events.iter().any(|e| e.event.level == "warn"
            && e.event.message.starts_with("storage: denied, cap:storage.kv is not granted to this install")
            && e.event.message.contains("`kelp grant ")
            && e.event.message.contains(" cap:storage.kv`")),
        "the debug stream names the capability and the command that grants it"
    );
    // A guest that traps for its own reasons is still a plain extension_error.
    let trap = kelp.publish(&staged_wat("test.trap-plain", "unreachable")).await;
    kelp.install(&trap, "acme", &[]).await;
    let error = json_body(kelp.get("/api/ext/test.trap-plain/run", &token("acme", RW)).await).await;
    assert_eq!(error["error"]["code"], "extension_error");
}

/// A guest with a small memory answering 31 headers that all alias one 4 MiB string would make
/// the host copy 124 MiB: what the host copies out of a guest is bounded by the call's memory
/// limit, so it is stopped as over its memory limit instead.
#[tokio::test]
async fn a_guest_cannot_make_the_host_copy_more_than_its_memory_limit() {
    let kelp = TestKelp::start_with(&[("KELP_MAX_MEMORY_MB", "8")]).await;
    // 5 MiB of zeros from 1 MiB (valid UTF-8), 31 header records at 64 KiB naming it, the
    // response at 1024 pointing at them.
    let prelude = r#"
      (drop (memory.grow (i32.const 96)))
      (local.set $body (i32.const 0))
      (block $done (loop $next
        (br_if $done (i32.ge_u (local.get $body) (i32.const 31)))
        (i32.store (i32.add (i32.const 65536) (i32.mul (local.get $body) (i32.const 16))) (i32.const 4160))
        (i32.store offset=4 (i32.add (i32.const 65536) (i32.mul (local.get $body) (i32.const 16))) (i32.const 12))
        (i32.store offset=8 (i32.add (i32.const 65536) (i32.mul (local.get $body) (i32.const 16))) (i32.const 1048576))
        (i32.store offset=12 (i32.add (i32.const 65536) (i32.mul (local.get $body) (i32.const 16))) (i32.const 4194304))
        (local.set $body (i32.add (local.get $body) (i32.const 1)))
        (br $next)))
      (i32.store16 (i32.const 1024) (i32.const 200))
      (i32.store (i32.const 1028) (i32.const 65536))
      (i32.store (i32.const 1032) (i32.const 31))
      (i32.store8 (i32.const 1036) (i32.const 0))
      (return (i32.const 1024))
    "#;
    let aliased = kelp.publish(&staged_wat("test.aliased-headers", prelude)).await;
    kelp.install(&aliased, "acme", &[]).await;
    let (status, code) = error_code(kelp.get("/api/ext/test.aliased-headers/run", &token("acme", RW)).await).await;
    assert_eq!((status, code.as_str()), (500, "extension_memory_limit"));
}
