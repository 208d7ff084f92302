//! The deployment examples in `examples/deploy/` stay in step with the gateway: the
//! ConfigMap's `fluxlit.toml` passes `fluxlit validate`, `fluxlit doctor --strict
//! --offline` (with what it accepts written in it) and the schema, and the manifests
//! point at the ports and paths that config serves; the admin port is fenced by a
//! NetworkPolicy and keeps its own limits.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test stops on a failed setup"
)]

mod common;

use std::path::PathBuf;

use common::cli;
use common::schema::{repo_file, schema_errors, validator};

fn deploy_file(relative: &str) -> PathBuf {
    repo_file("examples/deploy").join(relative)
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(deploy_file(relative))
        .unwrap_or_else(|e| panic!("examples/deploy/{relative}: {e}"))
}

/// What the `fluxlit` Secret gives the pods (deployment.yaml), with made-up values of
/// the lengths the gateway requires.
const SECRET_ENV: [(&str, &str); 5] = [
    (
        "JWT_HS256_SECRET",
        "a made-up HS256 secret for the deploy example, 48b",
    ),
    ("OIDC_CLIENT_SECRET", "made-up client secret"),
    ("FLUXLIT_REDIS_URL", "redis://redis:6379/0"),
    (
        "FLUXLIT_EXCHANGE_SECRET",
        "a made-up exchange secret for the deploy example..",
    ),
    (
        "FLUXLIT_SESSION_KEY",
        "a made-up session key for the deploy example, 48b",
    ),
];

#[test]
fn the_configmaps_config_passes_fluxlit_validate() {
    let config = deploy_file("kubernetes/fluxlit.toml");
    let config = config.to_str().expect("a UTF-8 path");
    let output = cli::run(
        &["validate", "--config", config],
        &repo_file(""),
        &SECRET_ENV,
    );
    let stderr = cli::stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.trim().is_empty(),
        "no warnings expected either:\n{stderr}"
    );

    // validate reads the secrets as serve does: without the Secret, it says which.
    let output = cli::run(&["validate", "--config", config], &repo_file(""), &[]);
    let stderr = cli::stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "auth.providers.main.hs256_secret: environment variable JWT_HS256_SECRET is not set"
        ),
        "{stderr}"
    );
}

#[test]
fn the_configmaps_config_passes_doctor_strict_offline_with_its_acceptance_and_reason() {
    let config = deploy_file("kubernetes/fluxlit.toml");
    let config = config.to_str().expect("a UTF-8 path");
    let args = [
        "doctor",
        "--strict",
        "--offline",
        "--format",
        "json",
        "--config",
        config,
    ];
    let output = cli::run(&args, &repo_file(""), &SECRET_ENV);
    let report = cli::stdout_json(&output);
    assert_eq!(output.status.code(), Some(0), "{report:#}");

    // The admin listener on the pod's address is accepted, not hidden.
    let findings = report["findings"].as_array().expect("findings");
    let admin: Vec<_> = findings
        .iter()
        .filter(|f| f["id"] == "admin_not_loopback")
        .collect();
    assert_eq!(admin.len(), 1, "{report:#}");
    assert_eq!(admin[0]["key"], "admin.listen");
    assert_eq!(admin[0]["accepted"]["by"], "doctor.accept[0]");
    assert_eq!(report["summary"]["accepted"], 1, "{report:#}");

    // Its reason is written in the file, in the comment above the entry.
    let text = read("kubernetes/fluxlit.toml");
    let lines: Vec<&str> = text.lines().collect();
    let entry = lines
        .iter()
        .position(|line| line.starts_with("accept = [\"admin_not_loopback@admin.listen\"]"))
        .expect("the acceptance");
    let comment: Vec<&str> = lines[..entry]
        .iter()
        .rev()
        .take_while(|line| line.starts_with('#'))
        .copied()
        .collect();
    assert!(
        comment
            .iter()
            .any(|line| line.contains("admin_not_loopback:") && line.contains("kubelet")),
        "no reason above the entry: {comment:#?}"
    );
}

#[test]
fn the_configmaps_config_passes_the_schema() {
    let errors = schema_errors(&validator(), &read("kubernetes/fluxlit.toml"));
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn the_manifests_use_the_configs_ports_the_redis_store_and_three_replicas() {
    let config = fluxlit::config::load(&deploy_file("kubernetes/fluxlit.toml"))
        .expect("valid config")
        .config;
    let admin_port = config
        .admin
        .as_ref()
        .expect("an admin listener")
        .listen
        .port();
    let public_port = config.server.listen.port();
    assert!(
        config.server.listen.ip().is_unspecified(),
        "a pod must listen on all its addresses"
    );
    let store = config
        .auth
        .providers
        .values()
        .find_map(|p| p.store.as_ref());
    assert!(
        matches!(store, Some(fluxlit::config::model::StoreRef::Secret(secret)) if secret.env.is_some()),
        "the replicas share a Redis store named by a secret: {store:?}"
    );

    let deployment = read("kubernetes/deployment.yaml");
    let compact: String = deployment.split_whitespace().collect::<Vec<_>>().join(" ");
    for expected in [
        "replicas: 3".to_owned(),
        format!("- name: http containerPort: {public_port}"),
        format!("- name: admin containerPort: {admin_port}"),
        "readinessProbe: httpGet: { path: /readyz, port: admin }".to_owned(),
        "livenessProbe: httpGet: { path: /healthz, port: admin }".to_owned(),
        "mountPath: /etc/fluxlit".to_owned(),
        "--config\", \"/etc/fluxlit/fluxlit.toml\"".to_owned(),
    ] {
        assert!(
            compact.contains(&expected),
            "deployment.yaml lacks {expected:?}"
        );
    }
    // Every secret the config names by environment variable is set from the Secret.
    for (name, provider) in &config.auth.providers {
        let names = [
            provider.hs256_secret.as_ref(),
            provider.client_secret.as_ref(),
            provider.exchange_secret.as_ref(),
            provider.session_key.as_ref(),
            match &provider.store {
                Some(fluxlit::config::model::StoreRef::Secret(secret)) => Some(secret),
                _ => None,
            },
        ];
        for env in names.into_iter().flatten().filter_map(|s| s.env.as_deref()) {
            assert!(
                compact.contains(&format!("- name: {env} valueFrom: secretKeyRef:")),
                "provider {name}: ${env} is not set in deployment.yaml"
            );
        }
    }

    let kustomization = read("kubernetes/kustomization.yaml");
    for expected in [
        "- deployment.yaml",
        "- service.yaml",
        "- networkpolicy.yaml",
        "- fluxlit.toml",
    ] {
        assert!(
            kustomization.contains(expected),
            "kustomization.yaml lacks {expected}"
        );
    }
    assert!(
        !kustomization
            .lines()
            .filter(|line| !line.trim_start().starts_with('#'))
            .any(|line| line.contains("secret.example.yaml")),
        "the placeholder Secret must not be applied over a real one"
    );
}

#[test]
fn the_admin_port_is_fenced_by_a_network_policy_and_has_its_own_limits() {
    // The admin listener is on the pod's address (for the kubelet's probes): the policy
    // admits the public port from anywhere, the admin port only from named pods.
    let policy = read("kubernetes/networkpolicy.yaml");
    let compact: String = policy
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .flat_map(str::split_whitespace)
        .collect::<Vec<_>>()
        .join(" ");
    for expected in [
        "kind: NetworkPolicy",
        "podSelector: {}",
        "policyTypes: [\"Ingress\"]",
        "- ports: - port: http",
        "- from: - namespaceSelector: matchLabels: kubernetes.io/metadata.name: monitoring ports: - port: admin",
    ] {
        assert!(
            compact.contains(expected),
            "networkpolicy.yaml lacks {expected:?}: {compact}"
        );
    }
    assert_eq!(
        compact.matches("port: admin").count(),
        1,
        "the admin port is admitted once, with a `from`"
    );

    let config = fluxlit::config::load(&deploy_file("kubernetes/fluxlit.toml"))
        .expect("valid config")
        .config;
    let admin = config.admin.expect("an admin listener");
    assert!(admin.max_connections <= 64, "{admin:?}");
    assert!(admin.idle_timeout.get() <= std::time::Duration::from_secs(60));
    assert!(admin.header_read_timeout.get() <= std::time::Duration::from_secs(10));
}

#[test]
fn the_exchange_in_the_cluster_network_needs_the_app_servers_secret() {
    // In the pod network, browsers (through the ingress) and every pod share the
    // exchange_from range: the address alone must not be what guards the exchange.
    let config = fluxlit::config::load(&deploy_file("kubernetes/fluxlit.toml"))
        .expect("valid config")
        .config;
    let findings = fluxlit::doctor::static_checks::check(&config);
    let reachable: Vec<_> = findings
        .iter()
        .filter(|f| f.id == "exchange_reachable_by_browsers")
        .collect();
    assert!(reachable.is_empty(), "{reachable:#?}");
    for (name, provider) in &config.auth.providers {
        if provider.kind == fluxlit::config::model::ProviderKind::Oidc {
            let secret = provider.exchange_secret.as_ref();
            assert!(
                secret.is_some_and(|s| s.env.is_some()),
                "provider {name}: exchange_secret from the Secret"
            );
        }
    }
    let secret = read("kubernetes/secret.example.yaml");
    assert!(
        secret.contains("exchange-secret:"),
        "the placeholder names it"
    );
}

#[test]
fn the_systemd_unit_reloads_with_sighup_and_keeps_its_hardening() {
    let unit = read("fluxlit.service");
    for line in [
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
    ] {
        assert!(
            unit.lines().any(|l| l.trim() == line),
            "fluxlit.service lacks {line}"
        );
    }
}
