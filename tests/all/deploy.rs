//! The SAM template: cfn-lint and `sam validate --lint` pass (both from PyPI, in a venv),
//! and every setting the runtime reads is configurable in it. (`sam build` of the gateway:
//! functions/gateway/tests/sam_build.rs.)

use std::process::Command;

use kelp_tests::*;

/// Settings that deliberately stay out of the deployed functions' environment, and why.
const NOT_DEPLOYED: &[(&str, &str)] = &[
    ("KELP_JWT_HS256_SECRET", "shared-secret tokens are for local use; AWS verifies with the IdP's JWKS"),
    ("KELP_JWT_RS256_PUBLIC_KEY", "an alternative to KELP_JWT_JWKS for a single key"),
    ("KELP_EGRESS_ALLOW_LOOPBACK", "tests and local development only"),
    ("KELP_ALLOW_HS256", "local invokes (sam local, emulators) only"),
    ("KELP_UI_TOKEN_SECRET", "AWS reads the key from KELP_UI_TOKEN_SECRET_ARN"),
    ("KELP_SECRETS_FILE", "embedded backend only"),
    ("AWS_ENDPOINT_URL", "moto and local endpoints only"),
    ("RUNNER_DEBUG_REDIS_PASSWORD", "the AUTH token comes from KELP_REDIS_AUTH_SECRET_ARN instead"),
    ("DEBUG_STREAM_REDIS_URL", "Alga's alias of RUNNER_DEBUG_REDIS_URL"),
    ("DEBUG_STREAM_REDIS_USERNAME", "ElastiCache AUTH tokens have no user name"),
    ("DEBUG_STREAM_REDIS_PASSWORD", "Alga's alias of RUNNER_DEBUG_REDIS_PASSWORD"),
    ("KELP_LOG_FORMAT", "set in Globals"),
    ("KELP_VAULT_TOKEN", "a token in the environment is refused inside Lambda; KELP_VAULT_TOKEN_SECRET_ARN instead"),
    ("KELP_VAULT_TOKEN_FILE", "containers with a Vault agent; Lambda reads KELP_VAULT_TOKEN_SECRET_ARN"),
    ("KELP_VAULT_NAMESPACE", "Vault Enterprise only; add it beside KELP_VAULT_ADDR when needed"),
    ("KELP_VAULT_TIMEOUT_MS", "the 5 s default"),
    ("KELP_UI_PROXY_TIMEOUT_MS", "Alga's 5 s default"),
    ("KELP_RUNNER_TRUSTED_NETWORKS", "sockets only; in Lambda the private API's VPC endpoint is the proof"),
    ("KELP_JWT_JWKS", "KELP_JWT_JWKS_URL instead: a JWKS outgrows Lambda's 4 KB of environment, and rotating it would need a redeploy"),
    ("KELP_RUNNER_SERVICE_TOKEN", "given as KELP_RUNNER_SERVICE_TOKEN_ARN: no secret in the function configuration"),
    ("KELP_HOST_API_SECRET", "given as KELP_HOST_API_SECRET_ARN"),
    ("KELP_ALGA_AUTH_KEY", "given as KELP_ALGA_AUTH_KEY_ARN"),
];

#[test]
fn the_template_passes_cfn_lint_and_sam_validate() {
    let venv = services::sam_venv();
    let root = repo_root();
    let lint = Command::new(venv.join("bin/cfn-lint")).arg("template.yaml").current_dir(&root).output().unwrap();
    assert!(
        lint.status.success(),
        "cfn-lint:\n{}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    let validate = Command::new(venv.join("bin/sam"))
        .args(["validate", "--lint", "--template", "template.yaml", "--region", "us-east-1"])
        .env("SAM_CLI_TELEMETRY", "0")
        .current_dir(&root)
        .output()
        .unwrap();
    let out = format!("{}{}", String::from_utf8_lossy(&validate.stdout), String::from_utf8_lossy(&validate.stderr));
    assert!(validate.status.success() && out.contains("is a valid SAM Template"), "sam validate --lint:\n{out}");
}

#[test]
fn every_runtime_setting_is_configurable_in_the_template() {
    let template = std::fs::read_to_string(repo_root().join("template.yaml")).unwrap();
    for var in kelp_runtime::config::KNOWN_VARS {
        if NOT_DEPLOYED.iter().any(|(n, _)| n == var) {
            continue;
        }
        assert!(template.contains(&format!("{var}:")), "{var} is read by the runtime but not set in template.yaml");
    }
    for needle in [
        "BuildMethod: rust-cargolambda",
        "provided.al2023",
        "arm64",
        "InvokeMode: RESPONSE_STREAM",
        "PointInTimeRecoveryEnabled: true",
        "TransitEncryptionEnabled: true",
        "AuthToken:",
        "VpcEndpointType: Gateway",
        "secretsmanager",
    ] {
        assert!(template.contains(needle), "template.yaml lacks {needle}");
    }
    // Least privilege, statement by statement.
    let block = |from: &str, to: &str| template[template.find(from).unwrap()..template.find(to).unwrap()].to_string();
    let statements = |b: &str| b.split("- Sid:").skip(1).map(str::to_string).collect::<Vec<_>>();
    const WRITES: &[&str] = &["PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem"];
    let gateway = statements(&block("  GatewayFunction:", "  DebugRelayFunction:"));
    assert!(gateway.len() >= 5);
    for st in gateway.iter().filter(|s| s.contains("RegistryTable") || s.contains("InstallsTable")) {
        // A bundle fetched by content hash from Alga's store is published (the version row
        // and its artifacts), and only when AlgaBundleBucket is set; installs stay read-only.
        let publishes_alga_bundles = st.trim_start().starts_with("PublishAlgaBundles")
            || st.trim_start().starts_with("FetchAndPublishAlgaBundles");
        if publishes_alga_bundles {
            assert!(
                !st.contains("InstallsTable") && !st.contains("DeleteItem"),
                "Alga bundle publishing writes only versions:{st}"
            );
            continue;
        }
        assert!(!WRITES.iter().any(|w| st.contains(w)), "the gateway must not write the registry or installs:{st}");
    }
    let relay = statements(&block("  DebugRelayFunction:", "  AdminApiFunction:"));
    for st in &relay {
        if st.trim_start().starts_with("ReadJwks") {
            assert!(
                st.contains("s3:GetObject")
                    && st.contains("${ArtifactBucket.Arn}/${JwtJwksS3Key}")
                    && !st.contains("/*"),
                "the relay reads only the JWKS object:{st}"
            );
            continue;
        }
        assert!(!st.contains("s3:"), "the relay has no other S3 access:{st}");
        if st.contains("RegistryTable") || st.contains("InstallsTable") {
            assert!(!WRITES.iter().any(|w| st.contains(w)), "the relay only reads installs for its access checks:{st}");
        }
        if st.contains("secretsmanager:") {
            assert!(
                st.contains("RedisAuthSecret") && !st.contains("secret:${AWS::StackName}"),
                "the relay reads only the Redis AUTH secret:{st}"
            );
        }
    }
    let secrets = statements(&block("  GatewayFunction:", "  DebugRelayFunction:"))
        .into_iter()
        .find(|s| s.contains("SecretEnvelopes"))
        .unwrap();
    assert!(
        secrets.contains("secret:${AWS::StackName}/*") && !secrets.contains("secret:*"),
        "secret access is limited to the Kelp prefix"
    );
    // No secret is a plain parameter: every one is the ARN of a Secrets Manager secret.
    let parameters = block("Parameters:", "Conditions:");
    for name in ["RunnerServiceTokenArn", "HostApiSecretArn", "AlgaAuthKeyArn", "VaultTokenSecretArn"] {
        assert!(parameters.contains(&format!("  {name}:")), "{name} is a parameter");
    }
    assert!(!parameters.contains("NoEcho"), "a secret passed as a parameter value:\n{parameters}");
}

#[test]
fn the_deploy_fits_the_platform() {
    let template = std::fs::read_to_string(repo_root().join("template.yaml")).unwrap();
    // `VAR: "value"` as the template sets it (each of these once).
    let env = |var: &str| -> String {
        let at = template.find(&format!("{var}: \"")).unwrap_or_else(|| panic!("{var} is not set to a literal"));
        template[at + var.len() + 3..].split('"').next().unwrap().to_string()
    };
    // Caps under Lambda's 6 MB payloads (bodies and UI files travel base64-encoded).
    for var in ["KELP_MAX_BODY_BYTES", "KELP_UI_MAX_FILE_BYTES", "KELP_ADMIN_MAX_BODY_BYTES"] {
        let value: usize = env(var).parse().unwrap();
        assert!(value * 4 / 3 + 64 * 1024 < 6_000_000, "{var}={value} does not fit a 6 MB Lambda payload in base64");
    }
    // A publish ends (answer included) before the HTTP API's 30 s integration cut.
    let deadline: u64 = env("KELP_PUBLISH_DEADLINE_MS").parse().unwrap();
    assert!(deadline <= 25_000);
    let admin = &template[template.find("  AdminApiFunction:").unwrap()..];
    assert!(admin.contains("Timeout: 29"), "the admin function stops before API Gateway does");
    // NAT in both AZs, logs kept for a bounded time, the stage throttled, the relay capped.
    for needle in [
        "NatGatewayA:",
        "NatGatewayB:",
        "RouteTableId: !Ref PrivateRouteTableB",
        "NatGatewayId: !Ref NatGatewayB",
        "OutboundCallsNeedNat:",
        "RetentionInDays: !Ref LogRetentionDays",
        "LogGroupName: !Sub \"/aws/lambda/${GatewayFunction}\"",
        "LogGroupName: !Sub \"/aws/lambda/${DebugRelayFunction}\"",
        "LogGroupName: !Sub \"/aws/lambda/${AdminApiFunction}\"",
        "ThrottlingRateLimit: !Ref ApiThrottleRateLimit",
        "AccessLogSettings:",
        "PrivateRunnerVpceUrl:",
        "Sid: ListAlgaBundles",
    ] {
        assert!(template.contains(needle), "template.yaml lacks {needle}");
    }
    let relay = &template[template.find("  RelayReservedConcurrency:").unwrap()..];
    assert!(relay[..200].contains("Default: 10"), "the relay's concurrency is capped by default");
}
