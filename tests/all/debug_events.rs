//! B1: every log line, stdout and stderr write becomes a debug event with the full context.

use kelp_tests::*;

#[tokio::test]
async fn log_stdout_and_stderr_carry_the_execution_context() {
    let kelp = TestKelp::start().await;
    let published = kelp.publish(&staged_example("js-notes")).await;
    let install = kelp.install(&published, "acme", &[]).await;
    let r = kelp
        .client
        .get(format!("{}/api/ext/com.kelp.examples.js-notes/log?lines=2", kelp.base))
        .bearer_auth(token("acme", RW))
        .header("x-request-id", "trace-me-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let events = kelp.platform.debug.backlog("acme", &published.extension.id, 100).await.unwrap();
    let mine: Vec<_> = events.iter().map(|e| &e.event).filter(|e| e.request_id == "trace-me-1").collect();
    let streams: Vec<_> = mine.iter().map(|e| (e.stream.as_str(), e.level.as_str())).collect();
    assert!(streams.contains(&("stdout", "info")), "{streams:?}");
    assert!(streams.contains(&("stderr", "error")), "{streams:?}");
    assert!(streams.contains(&("log", "info")), "{streams:?}");
    for e in &mine {
        assert_eq!(e.tenant_id, "acme");
        assert_eq!(e.extension_id, published.extension.id);
        assert_eq!(e.install_id, install.install_id);
        assert_eq!(e.version_id, published.version.id);
        assert_eq!(e.content_hash, published.version.content_hash);
        assert!(e.content_hash.starts_with("sha256:"));
    }
    assert!(mine.iter().any(|e| e.message.starts_with("line 0 of 2")));
    assert!(kelp.platform.debug.backlog("globex", &published.extension.id, 100).await.unwrap().is_empty());
}
