//! The OpenAPI 3.1 document (issue 14, item 4): the committed `docs/openapi.json` is the one
//! generated from the code (regenerate with `DURESS_WRITE_OPENAPI=1 cargo test -p
//! duress-receiver --test openapi`), the receiver serves it at `/openapi.json`, it passes
//! openapi-spec-validator (PyPI), and schemathesis (PyPI) fuzzes a live receiver from it with
//! no server error and no undocumented status code (bounded examples per operation).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::Harness;
use duress_core::EventKind;
use duress_receiver::store::ApiKeyScope;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn venv_tool(name: &str) -> PathBuf {
    let tool = root().join(".venv/bin").join(name);
    assert!(
        tool.exists(),
        "{} is missing: run scripts/install-deps (it installs openapi-spec-validator and \
         schemathesis into the project venv)",
        tool.display()
    );
    tool
}

#[test]
fn the_committed_document_is_the_generated_one_and_valid() {
    let generated = duress_receiver::openapi::document_json();
    let path = root().join("docs/openapi.json");
    if std::env::var_os("DURESS_WRITE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json differs from the document the code generates: run \
         DURESS_WRITE_OPENAPI=1 cargo test -p duress-receiver --test openapi, and commit it"
    );
    let doc: serde_json::Value = serde_json::from_str(&generated).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for p in [
        "/v1/events",
        "/v1/heartbeats",
        "/v1/enrollments",
        "/v1/retirements",
        "/v1/incidents",
        "/v1/incidents/{id}",
        "/v1/incidents/{id}/cap",
        "/v1/stations",
    ] {
        assert!(doc["paths"].get(p).is_some(), "{p} is not documented");
    }
    let out = std::process::Command::new(venv_tool("python"))
        .args(["-m", "openapi_spec_validator"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openapi-spec-validator refused docs/openapi.json:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Examples per operation: bounded, so the run stays well under a minute on 2 cores.
const MAX_EXAMPLES: &str = "25";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schemathesis_finds_no_server_error_and_no_undocumented_status() {
    let h = Harness::start().await;
    // Served as generated.
    let served = h.get("/openapi.json").await;
    assert_eq!(served.status, 200);
    assert_eq!(served.text(), duress_receiver::openapi::document_json());

    // Something to read and act on: an incident from an enrolled station, a read-write key.
    let mut agent = h.enrolled_agent().await;
    let claims = agent.event(EventKind::Duress);
    assert_eq!(
        h.post("/v1/events", agent.sign_event(&claims)).await.status,
        200
    );
    let incident_id = duress_receiver::admin::list_incidents(h.data_dir())
        .await
        .unwrap()[0]
        .incident_id;
    let (_, key) = duress_receiver::integration::keys::create_at(
        h.data_dir(),
        ApiKeyScope::ReadWrite,
        "schemathesis",
    )
    .await
    .unwrap();

    let url = h.receiver.url.clone();
    let cert = h.receiver.cert_pem_path.clone();
    let report = tempfile::tempdir().unwrap();
    // Real ids for the path parameters, so the operations reach past their 404.
    let config = report.path().join("schemathesis.toml");
    std::fs::write(
        &config,
        format!(
            "[[operations]]\ninclude-path-regex = \"^/v1/incidents/\"\nparameters = {{ \"path.id\" = \"{incident_id}\" }}\n\n\
             [[operations]]\ninclude-path = \"/v1/stations/{{id}}\"\nparameters = {{ \"path.id\" = \"{}\" }}\n",
            agent.device_id
        ),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let tool = venv_tool("schemathesis");
    let doc = root().join("docs/openapi.json");
    let report_dir = report.path().to_owned();
    let header = format!("Authorization: Bearer {key}");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(tool)
            .arg("run")
            .arg(&doc)
            .args(["--url", url.trim_end_matches('/')])
            .arg("--tls-verify")
            .arg(&cert)
            .args(["--checks", "not_a_server_error,status_code_conformance"])
            .args(["--max-examples", MAX_EXAMPLES])
            .args(["--phases", "examples,coverage,fuzzing"])
            .args(["--workers", "2", "--seed", "14", "--request-timeout", "10"])
            // No example database left in the crate directory.
            .args(["--generation-database", "none"])
            .args(["-H", &header])
            .arg("--report-dir")
            .arg(&report_dir)
            .env("NO_COLOR", "1")
            .env("SCHEMATHESIS_HOOKS", root().join("tests/openapi/hooks.py"))
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("schemathesis took {:?}", started.elapsed());
    // Its summary, for the test log.
    let lines: Vec<&str> = text.lines().collect();
    eprintln!("{}", lines[lines.len().saturating_sub(30)..].join("\n"));
    assert!(out.status.success(), "schemathesis failed:\n{text}");
    // It really ran every operation, and sent the JWS bodies (no serialization errors).
    let operations = operations_in(&root().join("docs/openapi.json"));
    assert!(text.contains(&format!("Tested: {operations}")), "{text}");
    assert!(!text.contains("Serialization not possible"), "{text}");
    h.shutdown().await;
}

/// How many operations (path × method) the document describes.
fn operations_in(doc: &std::path::Path) -> usize {
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(doc).unwrap()).unwrap();
    doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| ["get", "put", "post", "delete", "patch"].contains(&k.as_str()))
                .count()
        })
        .sum()
}
