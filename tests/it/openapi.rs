//! `GET /openapi.json` against what is really served: the routes it lists
//! are the routes the gateway answers, and schemathesis (from PyPI, installed
//! by this test into a virtualenv under `target/`) fuzzes every operation of
//! the live server and finds no server error and no mismatch with the document.

use std::path::PathBuf;
use std::process::Stdio;

use serde_json::Value;

use crate::harness::{TestApp, TestDb, World};
use crate::on_both_backends;

/// The schemathesis release the suite is pinned to.
const SCHEMATHESIS: &str = "schemathesis==4.32.5";

/// Every route the gateway serves, with its methods.
const ROUTES: [(&str, &[&str]); 30] = [
    ("/ai/llm", &["get", "post"]),
    ("/ai/llm/available", &["get"]),
    ("/ai/llm/stats", &["get"]),
    ("/ai/llm/{id}", &["delete", "put"]),
    ("/ai/llm/{id}/repos", &["post"]),
    ("/ai/llm/{id}/repos/{repoId}", &["delete"]),
    ("/ai/llm/{id}/validate", &["post"]),
    ("/ai/models", &["post"]),
    ("/aistats/daily", &["get"]),
    ("/aistats/minute", &["get"]),
    ("/budget", &["delete", "get", "put"]),
    ("/conversation", &["get", "post"]),
    ("/conversation/{id}", &["delete", "get"]),
    ("/conversation/{id}/messages", &["get"]),
    ("/conversation/{id}/prompt", &["post"]),
    ("/conversation/{id}/prompt/{turnId}/events", &["get"]),
    ("/healthz", &["get"]),
    ("/metrics", &["get"]),
    ("/openapi.json", &["get"]),
    ("/org/webhook", &["delete", "get", "put"]),
    ("/org/webhook/deliveries", &["get"]),
    ("/policy", &["get", "post"]),
    ("/policy/alerts", &["get"]),
    ("/policy/violations", &["get"]),
    ("/policy/{id}", &["delete", "get", "put"]),
    ("/policy/{id}/alerts", &["get"]),
    ("/policy/{id}/violations", &["get"]),
    ("/readyz", &["get"]),
    ("/systemevent", &["post"]),
    ("/systemevent/read", &["delete", "post"]),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_lists_exactly_the_routes_served() {
    let app = TestApp::spawn(TestDb::sqlite()).await;
    let res = app
        .http
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    let doc: Value = res.json().await.expect("json");
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    insta::assert_json_snapshot!("openapi_document", doc);
    let paths = doc["paths"].as_object().expect("paths");
    let mut listed: Vec<(String, Vec<String>)> = paths
        .iter()
        .map(|(path, ops)| {
            let mut methods: Vec<String> = ops
                .as_object()
                .expect("operations")
                .keys()
                .cloned()
                .collect();
            methods.sort();
            (path.clone(), methods)
        })
        .collect();
    listed.sort();
    let expected: Vec<(String, Vec<String>)> = ROUTES
        .iter()
        .map(|(p, m)| ((*p).to_owned(), m.iter().map(|s| (*s).to_owned()).collect()))
        .collect();
    assert_eq!(listed, expected);
    // Each listed operation is answered (not the 404/405 of an unknown route),
    // and every operation that needs a token says so.
    for (path, methods) in ROUTES {
        let url = format!(
            "{}{}",
            app.base,
            path.replace("{id}", "0193a000-0000-7000-8000-000000000001")
                .replace("{repoId}", "0193a000-0000-7000-8000-000000000002")
        );
        for method in methods {
            let method =
                reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            // No token; a body (an empty object) where the route takes one.
            let mut request = app.http.request(method.clone(), &url);
            if [reqwest::Method::POST, reqwest::Method::PUT].contains(&method) {
                request = request.json(&serde_json::json!({}));
            }
            let status = request.send().await.expect("answers").status();
            let op = &paths[path][method.as_str().to_lowercase()];
            let secured = op.get("security").is_some();
            // Served (not the 404/405 of an unknown route): a route that
            // needs a token answers 401 without one, the others do not.
            assert_eq!(status == 401, secured, "{method} {path}: {status}");
            assert!(
                secured || status != 404,
                "{method} {path} is served, got {status}"
            );
            assert_ne!(status, 405, "{method} {path}");
            assert_eq!(
                secured,
                [
                    "/conversation",
                    "/ai/",
                    "/aistats/",
                    "/budget",
                    "/policy",
                    "/org/",
                    "/systemevent"
                ]
                .iter()
                .any(|p| path.starts_with(p)),
                "{method} {path}"
            );
            if secured {
                assert!(
                    op["responses"].get("401").is_some(),
                    "{method} {path} documents 401"
                );
            }
        }
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    app.shutdown().await;
}

/// The schemathesis command, installed once per test run into `target/`.
async fn schemathesis() -> Option<PathBuf> {
    static INSTALLED: tokio::sync::OnceCell<Option<PathBuf>> = tokio::sync::OnceCell::const_new();
    INSTALLED
        .get_or_init(|| async {
            if std::env::var("SKIP_SCHEMATHESIS").is_ok_and(|v| v == "1") {
                crate::harness::notice("NOTICE: schemathesis run skipped (SKIP_SCHEMATHESIS=1)");
                return None;
            }
            let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("schemathesis-venv");
            let bin = venv.join("bin/schemathesis");
            let pinned = venv.join(SCHEMATHESIS);
            if !pinned.exists() {
                let run = |program: PathBuf, args: Vec<String>| async move {
                    let out = tokio::process::Command::new(&program)
                        .args(&args)
                        .stdin(Stdio::null())
                        .output()
                        .await
                        .unwrap_or_else(|e| {
                            panic!(
                                "{} cannot run: {e} (set SKIP_SCHEMATHESIS=1 to skip)",
                                program.display()
                            )
                        });
                    assert!(
                        out.status.success(),
                        "{} {args:?} failed: {}",
                        program.display(),
                        String::from_utf8_lossy(&out.stderr)
                    );
                };
                run(
                    "python3".into(),
                    vec!["-m".into(), "venv".into(), venv.display().to_string()],
                )
                .await;
                run(
                    venv.join("bin/pip"),
                    vec!["install".into(), "--quiet".into(), SCHEMATHESIS.into()],
                )
                .await;
                std::fs::write(&pinned, "").expect("mark the install");
            }
            Some(bin)
        })
        .await
        .clone()
}

/// schemathesis, every check, against the live server with real data: a
/// token, repositories and conversations it may pick from.
async fn schemathesis_finds_nothing(db: TestDb) {
    let Some(schemathesis) = schemathesis().await else {
        return;
    };
    let (provider_url, _) = crate::messages::fake_provider().await;
    let mut config = conversation_service::server::Config {
        provider: conversation_service::provider::ProviderConfig {
            base_url: Some(provider_url.clone()),
            api_key: None,
            models: Vec::new(),
            timeout: std::time::Duration::from_secs(2),
        },
        ..conversation_service::server::Config::local()
    };
    config.secrets.provider_allow_private = true;
    let app = TestApp::spawn_config(db, config).await;
    let w = World::build(&app).await;
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(app.create_as(&w.owner, w.repo).await);
    }
    // A configuration and a policy, so their routes reach past "not found".
    let (status, created) = crate::providers::rest(
        &app,
        &w.owner,
        reqwest::Method::POST,
        "/ai/llm",
        Some({
            // AWS at an endpoint with no model list: it takes any model, so
            // prompts routed to it (once fuzzing attaches it) are answered.
            let mut body = crate::providers::create_body(&w, "Fuzzed", "AWS");
            body["endpoint"] = serde_json::json!(provider_url);
            body
        }),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    ids.push(
        created["aiLlmId"]
            .as_str()
            .expect("id")
            .parse()
            .expect("uuid"),
    );
    let policy = serde_json::json!({
        "name": "Fuzzed", "content": "Be kind.", "riskType": "LOW", "actionType": 0, "orgId": w.org,
    });
    let (status, created) = crate::providers::rest(
        &app,
        &w.owner,
        reqwest::Method::POST,
        "/policy",
        Some(policy),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    ids.push(
        created["policy"]["id"]
            .as_str()
            .expect("id")
            .parse()
            .expect("uuid"),
    );
    let quoted = |ids: &[uuid::Uuid]| {
        ids.iter()
            .map(|id| format!("\"{id}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("schemathesis.toml");
    std::fs::write(
        &config,
        format!(
            "[dictionaries.repos]\nvalues = [{}]\n\n\
             [dictionaries.ids]\nvalues = [{}]\n\n\
             [dictionaries.orgs]\nvalues = [{}]\n\n\
             [dictionaries.workspaces]\nvalues = [{}]\n\n\
             [parameters]\n\
             \"body.repoId\" = {{ dictionary = \"repos\", probability = 0.5 }}\n\
             \"query.repoId\" = {{ dictionary = \"repos\", probability = 0.3 }}\n\
             \"path.id\" = {{ dictionary = \"ids\", probability = 0.5 }}\n\
             \"body.orgId\" = {{ dictionary = \"orgs\", probability = 0.5 }}\n\
             \"query.orgId\" = {{ dictionary = \"orgs\", probability = 0.5 }}\n\
             \"body.workspaceId\" = {{ dictionary = \"workspaces\", probability = 0.5 }}\n\
             \"query.workspaceId\" = {{ dictionary = \"workspaces\", probability = 0.3 }}\n\n\
             [[operations]]\n\
             include-path = \"/ai/llm/{{id}}/validate\"\n\
             checks.not_a_server_error.expected-statuses = {upstream}\n\n\
             [[operations]]\n\
             include-path = \"/conversation/{{id}}/prompt\"\n\
             checks.not_a_server_error.expected-statuses = {upstream}\n\n\
             [[operations]]\n\
             include-path-regex = \"^/(aistats/|systemevent$)\"\n\
             checks.positive_data_acceptance.expected-statuses = {ranges}\n",
            // Not the orphaned or disabled repositories: their 400 (a state
            // the document cannot show) would read as valid data refused.
            quoted(&[w.repo, w.deleted_repo, w.other_org_repo]),
            quoted(&ids),
            quoted(&[w.org]),
            quoted(&[w.workspace]),
            // What these routes answer, as documented, when what they depend
            // on fails: a configuration fuzzing points at a host that does
            // not exist (502), a judged policy fuzzing writes, which the
            // echoing test model cannot judge (503), a slow model (504).
            upstream = r#"["2xx", "3xx", "4xx", "502", "503", "504"]"#,
            // Ranges a schema cannot bound: a start after the end, or a
            // statistics range longer than allowed, are 400.
            ranges = r#"["2xx", "400", "401", "403", "404"]"#,
        ),
    )
    .expect("config");
    let out = tokio::process::Command::new(&schemathesis)
        .arg("--config-file")
        .arg(&config)
        .args(["run", &format!("{}/openapi.json", app.base)])
        .args([
            "--header",
            &format!("Authorization: Bearer {}", w.owner.token),
        ])
        // Every check but `use_after_free`: a soft-deleted conversation stays
        // readable with `showDeleted=true`, which is the API, not a leak.
        .args(["--checks", "all", "--exclude-checks", "use_after_free"])
        .args([
            "--max-examples",
            "60",
            "--workers",
            "1",
            "--seed",
            "20261126",
        ])
        .args([
            "--request-timeout",
            "10",
            "--no-color",
            "--generation-database",
            "none",
        ])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .await
        .expect("schemathesis runs");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("passed"), "{report}");
    assert_eq!(app.conversations_without_event().await, 0);
    app.shutdown().await;
}

on_both_backends!(schemathesis_finds_nothing);
