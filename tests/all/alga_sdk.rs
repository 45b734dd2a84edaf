//! An extension written against Alga's published SDK (`@alga-psa/extension-runtime` 0.3.0)
//! with a UI built from `@alga-psa/ui-kit` 0.2.0, both installed from npm at test time: it
//! runs through Kelp's own gateway (`/api/ext`) and as Alga's runner (`/v1/execute`), and its
//! UI renders in Chromium from Kelp's UI route.

use base64::Engine as _;
use kelp_tests::*;
use serde_json::{json, Value};

const TOKEN: &str = "runner-token-for-the-sdk-test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extension_built_with_algas_sdk_runs_through_both_routes_and_its_ui_kit_ui_renders() {
    let staged = tokio::task::spawn_blocking(staged_alga_sdk_extension).await.unwrap();
    let kelp = TestKelp::start_with(&[("KELP_RUNNER_SERVICE_TOKEN", TOKEN), ("KELP_UI_PUBLIC", "true")]).await;
    let published = kelp.publish(&staged).await;
    let install = kelp.install(&published, "acme", &[]).await;
    let secrets = [("greeting".to_string(), "Hei".to_string())].into_iter().collect();
    kelp_runtime::installs::set_secrets(&kelp.platform, "acme", &install.install_id, &secrets, None).await.unwrap();

    // Kelp as the gateway.
    let base = format!("{}/api/ext/com.kelp.tests.alga-sdk", kelp.base);
    let t = token("acme", RW);
    let hello: Value = json_body(kelp.client.get(format!("{base}/hello")).bearer_auth(&t).send().await.unwrap()).await;
    assert_eq!(hello["hello"], "acme", "{hello}");
    assert_eq!(hello["greeting"], "Hei", "the SDK's host.secrets.get");
    for expected in [1, 2] {
        let r = kelp.client.post(format!("{base}/visits")).bearer_auth(&t).send().await.unwrap();
        assert_eq!(json_body(r).await["visits"], expected, "the SDK's host.storage");
    }
    let r = kelp.client.delete(format!("{base}/visits")).bearer_auth(&t).send().await.unwrap();
    assert_eq!(r.status(), 204, "the SDK's emptyResponse");

    // Kelp as Alga's runner.
    let execute = json!({
        "context": {"tenant_id": "alga-tenant", "extension_id": published.extension.id, "install_id": "alga-install",
                    "content_hash": published.version.content_hash, "config": {}},
        "http": {"method": "GET", "path": "/hello", "query": {}, "headers": {}},
        "providers": ["cap:secrets.get"],
        "secret_envelope": kelp_runtime::secrets::SecretEnvelope::inline(
            &[("greeting".to_string(), "Hej".to_string())].into_iter().collect(), None),
        "user": {"user_id": "u-1", "user_email": "ada@acme.test", "user_name": "Ada", "user_type": "internal"},
    });
    let r = kelp.execute(TOKEN, &execute).await;
    assert_eq!(r.status(), 200);
    let answer = json_body(r).await;
    assert_eq!(answer["status"], 200, "{answer}");
    let body = base64::engine::general_purpose::STANDARD.decode(answer["body_b64"].as_str().unwrap()).unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (body["hello"].clone(), body["greeting"].clone(), body["user"].clone()),
        (json!("alga-tenant"), json!("Hej"), json!("Ada")),
        "Alga's config, secrets and user reach the SDK's handler"
    );

    // The ui-kit UI, served by Kelp and rendered by React in Chromium.
    let hex = published.version.content_hash.trim_start_matches("sha256:");
    let url = format!("{}/ext-ui/com.kelp.tests.alga-sdk/{hex}/index.html", kelp.base);
    let result = crate::browser::browse(&url, "body", "button", "Clicked 0", "alga-sdk-ui.png", || async {}).await;
    assert_eq!(result["ok"], true, "{result}");
}
