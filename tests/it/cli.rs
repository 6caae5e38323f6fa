//! The admin CLI, run as a real process against both backends: results on
//! stdout, one-line reasons on stderr, non-zero exits for bad input.

use std::process::Output;

use serde_json::{Value, json};
use tokio::process::Command;
use uuid::Uuid;

use crate::harness::{TestApp, TestDb, keys};
use crate::on_both_backends;

async fn cli(db: &TestDb, args: &[&str]) -> Output {
    cli_with(db, args, &[]).await
}

/// A command with `envs` set.
async fn cli_with(db: &TestDb, args: &[&str], envs: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_conversation-service"))
        .args(args)
        .env("DATABASE_URL", &db.url)
        .env_remove("RUST_LOG")
        .envs(envs.iter().copied())
        .output()
        .await
        .expect("binary runs")
}

/// Runs a command line (split on spaces) that must succeed; returns its
/// trimmed stdout.
async fn ok(db: &TestDb, line: &str) -> String {
    let args: Vec<&str> = line.split(' ').collect();
    let out = cli(db, &args).await;
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

/// Runs a command that must fail; returns its one-line reason.
async fn fails(db: &TestDb, args: &[&str]) -> String {
    let out = cli(db, args).await;
    assert!(!out.status.success(), "{args:?} should fail");
    assert!(
        out.stdout.is_empty(),
        "{args:?} printed a result on failure"
    );
    let err = String::from_utf8(out.stderr).expect("utf-8");
    err.trim().to_owned()
}

fn id(s: &str) -> Uuid {
    s.parse()
        .unwrap_or_else(|_| panic!("stdout is an id: {s:?}"))
}

/// The whole admin workflow, then the token works against the service.
async fn admin_workflow(db: TestDb) {
    assert_eq!(
        ok(&db, "migrate").await,
        "",
        "migrate prints nothing on stdout"
    );
    let org = ok(&db, "admin org create --name Acme").await;
    id(&org);
    let user = ok(
        &db,
        &format!(
            "admin user create --org {org} --email Ada@Example.com --name Ada --last-name Lovelace"
        ),
    )
    .await;
    id(&user);
    let ws = ok(
        &db,
        &format!("admin workspace create --org {org} --name Main"),
    )
    .await;
    ok(
        &db,
        &format!("admin workspace grant --workspace {ws} --user {user} --access read"),
    )
    .await;
    let repo = ok(
        &db,
        &format!("admin repo create --org {org} --name app --workspace {ws}"),
    )
    .await;
    let orphan = ok(&db, &format!("admin repo create --org {org} --name loose")).await;
    let token = ok(
        &db,
        &format!("admin token create --user {user} --name laptop --expires-in 30d"),
    )
    .await;
    assert!(
        token.starts_with("fbk_") && !token.contains(char::is_whitespace),
        "{token}"
    );
    let spare = ok(&db, &format!("admin token create --user {user}")).await;

    let app = TestApp::spawn(db).await;
    let db = &app.db;
    let create = |repo: &str| json!({ "repoId": repo }).to_string();
    let (status, body) = app.post_create(Some(&token), &create(&repo)).await;
    assert_eq!(status, 200, "{body}");
    let conversation = body["conversationId"].as_str().expect("id").to_owned();
    assert_eq!(app.post_create(Some(&token), &create(&orphan)).await.0, 400);

    // Events: one JSON object per line, newest first, with the documented keys.
    let events = ok(db, &format!("admin events list --org {org} --limit 10")).await;
    let lines: Vec<Value> = events
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 1);
    let e = &lines[0];
    assert_eq!(
        keys(e),
        [
            "id",
            "timestamp",
            "orgId",
            "userId",
            "workspaceId",
            "context",
            "contextId",
            "event",
            "jsonData"
        ]
    );
    assert_eq!(e["orgId"], org);
    assert_eq!(e["userId"], user);
    assert_eq!(e["workspaceId"], ws);
    assert_eq!(e["context"], "conversation");
    assert_eq!(e["contextId"], conversation);
    assert_eq!(e["event"], "created");
    assert_eq!(e["jsonData"]["repoId"], repo);
    assert_eq!(e["jsonData"]["transport"], "http");
    chrono::DateTime::parse_from_rfc3339(e["timestamp"].as_str().expect("timestamp"))
        .expect("RFC 3339");

    // Revoking by the token itself, and by id through the store's listing.
    ok(db, &format!("admin token revoke --token {token}")).await;
    assert_eq!(app.post_create(Some(&token), &create(&repo)).await.0, 401);
    ok(db, &format!("admin token revoke --token {token}")).await; // idempotent
    assert_eq!(app.post_create(Some(&spare), &create(&repo)).await.0, 200);
    // Disabling the repository, deleting the workspace, disabling the user.
    ok(db, &format!("admin repo disable --repo {repo}")).await;
    assert_eq!(app.post_create(Some(&spare), &create(&repo)).await.0, 400);
    ok(db, &format!("admin workspace delete --workspace {ws}")).await;
    assert_eq!(app.post_create(Some(&spare), &create(&repo)).await.0, 404);
    ok(db, &format!("admin user disable --user {user}")).await;
    assert_eq!(app.post_create(Some(&spare), &create(&repo)).await.0, 401);

    // Expiry: a token that lives one second.
    let admin = ok(
        db,
        &format!("admin user create --org {org} --email root@example.com --role owner"),
    )
    .await;
    let ws2 = ok(
        db,
        &format!("admin workspace create --org {org} --name Second"),
    )
    .await;
    let repo2 = ok(
        db,
        &format!("admin repo create --org {org} --name two --workspace {ws2}"),
    )
    .await;
    let brief = ok(
        db,
        &format!("admin token create --user {admin} --expires-in 1s"),
    )
    .await;
    assert_eq!(
        app.post_create(Some(&brief), &create(&repo2)).await.0,
        200,
        "org owner needs no membership"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(app.post_create(Some(&brief), &create(&repo2)).await.0, 401);
    app.shutdown().await;
}

/// Bad input: a non-zero exit and one line saying why.
async fn admin_errors(db: TestDb) {
    let org = ok(&db, "admin org create --name Acme").await;
    let other = ok(&db, "admin org create --name Other").await;
    let user = ok(
        &db,
        &format!("admin user create --org {org} --email a@example.com"),
    )
    .await;
    let ws_other = ok(
        &db,
        &format!("admin workspace create --org {other} --name Theirs"),
    )
    .await;
    let missing = Uuid::now_v7().to_string();

    // Each command line is split on spaces; `{…}` are filled in first.
    let cases = [
        (
            "admin user create --org {missing} --email b@example.com",
            "not found",
        ),
        (
            "admin user create --org {org} --email A@example.com",
            "already exists",
        ),
        (
            "admin user create --org {org} --email not-an-email",
            "is not an email address",
        ),
        (
            "admin user create --org {org} --email c@example.com --role root",
            "unknown role",
        ),
        (
            "admin user create --org not-a-uuid --email c@example.com",
            "invalid value",
        ),
        ("admin user disable --user {missing}", "not found"),
        (
            "admin workspace create --org {missing} --name X",
            "not found",
        ),
        (
            "admin workspace grant --workspace {ws_other} --user {user} --access read",
            "different organizations",
        ),
        (
            "admin workspace grant --workspace {missing} --user {user} --access read",
            "not found",
        ),
        (
            "admin workspace grant --workspace {ws_other} --user {user} --access owner",
            "unknown access",
        ),
        ("admin workspace delete --workspace {missing}", "not found"),
        (
            "admin repo create --org {org} --name x --workspace {ws_other}",
            "another organization",
        ),
        ("admin repo create --org {missing} --name x", "not found"),
        ("admin repo disable --repo {missing}", "not found"),
        ("admin token create --user {missing}", "not found"),
        (
            "admin token create --user {user} --expires-in soon",
            "not a duration",
        ),
        ("admin token revoke --token fbk_unknown", "not found"),
        ("admin token revoke --token hello", "takes a token"),
        ("admin events list --org {missing}", "not found"),
        ("admin events list --org {org} --limit 0", "invalid value"),
        ("admin org create", "required"),
    ];
    for (line, reason) in cases {
        let line = line
            .replace("{missing}", &missing)
            .replace("{org}", &org)
            .replace("{ws_other}", &ws_other)
            .replace("{user}", &user);
        let args: Vec<&str> = line.split(' ').collect();
        let err = fails(&db, &args).await;
        assert!(err.contains(reason), "{line}: {err}");
        assert_eq!(err.lines().count(), 1, "{line}: {err}");
    }
    let err = fails(&db, &["admin", "org", "create", "--name", "  "]).await;
    assert_eq!(err, "error: --name must not be empty");
    let out = cli(&db, &["--database-url", "mysql://x", "migrate"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unsupported database URL"));
}

on_both_backends!(admin_workflow, admin_errors);

/// A command with `envs` set; its status, stdout and stderr.
async fn cli_env(db: &TestDb, line: &str, envs: &[(&str, &str)]) -> (bool, String, String) {
    let args: Vec<&str> = line.split(' ').collect();
    let out = cli_with(db, &args, envs).await;
    let text = |b: Vec<u8>| String::from_utf8(b).expect("utf-8").trim().to_owned();
    (out.status.success(), text(out.stdout), text(out.stderr))
}

/// `admin llm` manages configurations as a user, with the API's rules, and
/// `admin secrets rotate` re-seals them with a new key.
async fn llm_commands_and_key_rotation(db: TestDb) {
    use secrecy::ExposeSecret as _;
    let new_key = || {
        conversation_service::secrets::MasterKey::generate()
            .1
            .expose_secret()
            .to_owned()
    };
    let (a, b) = (new_key(), new_key());
    let org = ok(&db, "admin org create --name Acme").await;
    let admin = ok(
        &db,
        &format!("admin user create --org {org} --email ops@acme.test --role admin"),
    )
    .await;
    let ws = ok(
        &db,
        &format!("admin workspace create --org {org} --name Main"),
    )
    .await;
    let repo = ok(
        &db,
        &format!("admin repo create --org {org} --name api --workspace {ws}"),
    )
    .await;
    let with_a = [
        ("SECRETS_KEY", a.as_str()),
        ("PROVIDER_SECRET", "sk-cli-secret"),
    ];
    let create = format!(
        "admin llm create --as {admin} --workspace {ws} --name OpenAI --type OPENAI --endpoint https://api.example.test/v1"
    );
    let (done, llm, err) = cli_env(&db, &create, &with_a).await;
    assert!(done, "{err}");
    let llm = id(&llm);
    let (done, _, err) = cli_env(&db, &create, &[("SECRETS_KEY", a.as_str())]).await;
    assert!(!done);
    assert_eq!(
        err,
        "error: the environment variable PROVIDER_SECRET is not set"
    );
    let (done, _, err) = cli_env(&db, &create, &with_a).await;
    assert!(!done);
    assert_eq!(
        err,
        "error: An AI configuration with this name already exists in the workspace"
    );
    let attach = format!("admin llm attach --as {admin} --id {llm} --repo {repo}");
    assert!(cli_env(&db, &attach, &with_a).await.0);
    let (done, listed, _) = cli_env(&db, &format!("admin llm list --as {admin}"), &with_a).await;
    assert!(done);
    let line: Value = serde_json::from_str(&listed).expect("one JSON line");
    assert_eq!(line["id"], json!(llm));
    assert_eq!(line["repos"], json!([repo]));
    assert_eq!(line["key"], Value::Null);
    assert!(!listed.contains("sk-cli-secret"));

    // A webhook's signing secret is sealed too.
    let set = format!("admin webhook set --org {org} --url https://hooks.acme.test/x");
    let (done, webhook_secret, err) = cli_env(&db, &set, &[("SECRETS_KEY", a.as_str())]).await;
    assert!(done, "{err}");

    // Rotate from A to B: both re-sealed, then none left; A alone no longer opens.
    let rotate = "admin secrets rotate";
    let to_b = [
        ("SECRETS_KEY", b.as_str()),
        ("SECRETS_PREVIOUS_KEYS", a.as_str()),
    ];
    assert_eq!(cli_env(&db, rotate, &to_b).await.1, "2");
    assert_eq!(
        cli_env(&db, rotate, &[("SECRETS_KEY", b.as_str())]).await.1,
        "0"
    );
    let (done, _, err) = cli_env(&db, rotate, &[("SECRETS_KEY", a.as_str())]).await;
    assert!(!done);
    assert!(
        err.contains("neither the current nor a previous secrets key"),
        "{err}"
    );
    // Rotation replaces sealed values only if they are still those it read:
    // a credential changed meanwhile is never overwritten with the old one.
    let store = conversation_service::store::Store::open(&db.url, &crate::harness::test_options())
        .expect("store");
    let row = store.find_ai_llm(llm).await.expect("read").expect("stored");
    let stale = [row.secret_sealed.clone(), vec![0]].concat();
    let swapped = store
        .reseal_ai_llm(row.id, stale, None, vec![1, 2, 3], "other".into())
        .await
        .expect("runs");
    assert!(!swapped);
    let hook = store
        .find_webhook(id(&org))
        .await
        .expect("read")
        .expect("stored");
    let ring_b = conversation_service::secrets::Keyring::new(
        conversation_service::secrets::MasterKey::from_base64(&b.clone().into(), "B").expect("key"),
        Vec::new(),
    );
    let sealed = conversation_service::secrets::Sealed {
        key_id: hook.secrets_key_id,
        bytes: hook.secret_sealed,
    };
    let opened = ring_b
        .open(
            &sealed,
            hook.org_id,
            conversation_service::secrets::Field::WebhookSecret,
        )
        .expect("the webhook's secret opens with the new key alone");
    assert_eq!(opened.expose_secret(), webhook_secret);
    let after = store
        .find_ai_llm(row.id)
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(
        (after.secret_sealed, after.secrets_key_id),
        (row.secret_sealed, row.secrets_key_id)
    );

    // In use: not deleted; detached: deleted.
    let delete = format!("admin llm delete --as {admin} --id {llm}");
    let with_b = [("SECRETS_KEY", b.as_str())];
    let (done, _, err) = cli_env(&db, &delete, &with_b).await;
    assert!(!done);
    assert_eq!(
        err,
        "error: AI configuration is in use by 1 repository; detach it first"
    );
    let detach = format!("admin llm detach --as {admin} --id {llm} --repo {repo}");
    assert!(cli_env(&db, &detach, &with_b).await.0);
    assert!(cli_env(&db, &delete, &with_b).await.0);
    let (_, listed, _) = cli_env(&db, &format!("admin llm list --as {admin}"), &with_b).await;
    assert_eq!(listed, "");
}

on_both_backends!(llm_commands_and_key_rotation);

/// `admin policy` manages policies as a user, with the API's rules;
/// `admin webhook` sets, shows and removes an organization's webhook.
async fn policy_and_webhook_commands(db: TestDb) {
    use secrecy::ExposeSecret as _;
    let org = ok(&db, "admin org create --name Acme").await;
    let admin = ok(
        &db,
        &format!("admin user create --org {org} --email ops@acme.test --role admin"),
    )
    .await;
    let member = ok(
        &db,
        &format!("admin user create --org {org} --email dev@acme.test"),
    )
    .await;
    let create = format!(
        "admin policy create --as {admin} --org {org} --name NoKeys --risk HIGH --action 2 --pattern sk-[a-z]{{20,}}"
    );
    let id = id(&ok(&db, &create).await);
    let list = format!("admin policy list --as {admin} --org {org}");
    let line: Value = serde_json::from_str(&ok(&db, &list).await).expect("one JSON line");
    assert_eq!(
        (
            line["id"].clone(),
            line["name"].clone(),
            line["actionType"].clone(),
            line["patterns"].clone()
        ),
        (
            json!(id),
            json!("NoKeys"),
            json!(2),
            json!(["sk-[a-z]{20,}"])
        )
    );
    ok(
        &db,
        &format!("admin policy update --as {admin} --id {id} --action 1"),
    )
    .await;
    let line: Value = serde_json::from_str(&ok(&db, &list).await).expect("one JSON line");
    assert_eq!(line["actionType"], 1);
    for (line, reason) in [
        (
            create.replace("HIGH", "SEVERE"),
            "error: riskType must be one of LOW, MEDIUM, HIGH".to_owned(),
        ),
        (
            create.replace("sk-[a-z]{20,}", "("),
            "error: pattern \"(\" is not a valid regular expression: error: unclosed group"
                .to_owned(),
        ),
        (
            create.replace(&admin, &member),
            "error: Insufficient permissions to manage policies of this scope".to_owned(),
        ),
    ] {
        let args: Vec<&str> = line.split(' ').collect();
        assert_eq!(fails(&db, &args).await, reason, "{line}");
    }
    ok(&db, &format!("admin policy delete --as {admin} --id {id}")).await;
    assert_eq!(ok(&db, &list).await, "");

    let key = conversation_service::secrets::MasterKey::generate().1;
    let with_key = [("SECRETS_KEY", key.expose_secret())];
    let set = format!("admin webhook set --org {org} --url https://hooks.acme.test/alerts");
    let (done, secret, err) = cli_env(&db, &set, &with_key).await;
    assert!(done, "{err}");
    assert!(secret.starts_with("whsec_"), "{secret}");
    let show = format!("admin webhook show --org {org}");
    let shown: Value = serde_json::from_str(&ok(&db, &show).await).expect("JSON");
    assert_eq!(shown["url"], "https://hooks.acme.test/alerts");
    assert!(!shown.to_string().contains(&secret));
    let (done, _, err) = cli_env(
        &db,
        &format!("admin webhook set --org {org} --url http://169.254.169.254/latest"),
        &with_key,
    )
    .await;
    assert!(!done);
    assert_eq!(
        err,
        "error: url reaches a private, loopback, link-local or otherwise internal address"
    );
    let missing = Uuid::now_v7();
    let (done, _, err) = cli_env(
        &db,
        &format!("admin webhook set --org {missing} --url https://hooks.acme.test/x"),
        &with_key,
    )
    .await;
    assert!(!done);
    assert_eq!(err, format!("error: organization {missing} not found"));
    assert_eq!(
        ok(&db, &format!("admin webhook deliveries --org {org}")).await,
        ""
    );
    ok(&db, &format!("admin webhook delete --org {org}")).await;
    assert_eq!(ok(&db, &show).await, "null");
}

on_both_backends!(policy_and_webhook_commands);

/// `admin events list` streams every matching event (here more than
/// 10,000), resumes after an event, filters by time and context, and
/// `admin events export` writes them as NDJSON, oldest first.
async fn events_are_streamed_without_a_cap(db: TestDb) {
    let org = ok(&db, "admin org create --name Acme").await;
    let n = 10_050;
    let org_literal = db.uuid_literal(id(&org));
    let sql = if db.url.starts_with("postgres") {
        format!(
            "INSERT INTO system_events (id, org_id, context, event, created_at) \
             SELECT gen_random_uuid(), {org_literal}, CASE WHEN g % 2 = 0 THEN 'conversation' ELSE 'aillm' END, \
             'created', now() - g * interval '1 second' FROM generate_series(1, {n}) g"
        )
    } else {
        format!(
            "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {n}) \
             INSERT INTO system_events (id, org_id, context, event, created_at) \
             SELECT randomblob(16), {org_literal}, CASE WHEN n % 2 = 0 THEN 'conversation' ELSE 'aillm' END, \
             'created', strftime('%Y-%m-%dT%H:%M:%S', 'now', '-' || n || ' seconds') || '.000000Z' FROM g"
        )
    };
    db.exec(&sql).await;
    let lines = |out: String| -> Vec<serde_json::Value> {
        out.lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    };
    let all = lines(ok(&db, &format!("admin events list --org {org}")).await);
    assert_eq!(all.len(), n);
    let times: Vec<&str> = all
        .iter()
        .map(|e| e["timestamp"].as_str().expect("time"))
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");
    let ten = lines(ok(&db, &format!("admin events list --org {org} --limit 10")).await);
    assert_eq!(ten, all[..10]);
    // Resuming after the 5,000th gives exactly the rest.
    let after = all[4_999]["id"].as_str().expect("id");
    let rest = lines(
        ok(
            &db,
            &format!("admin events list --org {org} --after {after}"),
        )
        .await,
    );
    assert_eq!(rest, all[5_000..]);
    let oldest = lines(
        ok(
            &db,
            &format!("admin events list --org {org} --oldest-first --limit 1"),
        )
        .await,
    );
    assert_eq!(oldest[0], all[n - 1]);
    let aillm = lines(
        ok(
            &db,
            &format!("admin events list --org {org} --context aillm"),
        )
        .await,
    );
    assert_eq!(aillm.len(), n / 2);
    let since = all[99]["timestamp"].as_str().expect("time");
    let recent = lines(
        ok(
            &db,
            &format!("admin events list --org {org} --since {since}"),
        )
        .await,
    );
    assert_eq!(recent, all[..100]);

    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("events.ndjson");
    let out = ok(
        &db,
        &format!(
            "admin events export --org {org} --since 2000-01-01 --output {}",
            file.display()
        ),
    )
    .await;
    assert!(out.is_empty(), "{out}");
    let exported = lines(std::fs::read_to_string(&file).expect("written"));
    let mut oldest_first = all.clone();
    oldest_first.reverse();
    assert_eq!(exported, oldest_first);

    let missing = Uuid::now_v7();
    for (line, reason) in [
        (
            format!("admin events list --org {org} --since yesterday"),
            "--since must be an ISO 8601 date",
        ),
        (
            format!("admin events list --org {org} --since 2026-11-02 --until 2026-11-01"),
            "--since must be before --until",
        ),
        (
            format!("admin events list --org {org} --after {missing}"),
            "not found",
        ),
        (format!("admin events export --org {missing}"), "not found"),
    ] {
        let args: Vec<&str> = line.split(' ').collect();
        let err = fails(&db, &args).await;
        assert!(err.contains(reason), "{line}: {err}");
    }
}

/// `admin budget set|show|clear` for an organization and a workspace.
async fn budget_commands(db: TestDb) {
    let org = ok(&db, "admin org create --name Acme").await;
    let ws = ok(
        &db,
        &format!("admin workspace create --org {org} --name Main"),
    )
    .await;
    let set = ok(
        &db,
        &format!("admin budget set --workspace {ws} --period day --tokens 500"),
    )
    .await;
    let set: serde_json::Value = serde_json::from_str(&set).expect("JSON");
    assert_eq!(
        (
            set["orgId"].as_str(),
            set["workspaceId"].as_str(),
            set["period"].as_str(),
            set["tokens"].as_i64(),
            set["used"].as_i64()
        ),
        (
            Some(org.as_str()),
            Some(ws.as_str()),
            Some("day"),
            Some(500),
            Some(0)
        )
    );
    ok(
        &db,
        &format!("admin budget set --org {org} --period month --tokens 9000"),
    )
    .await;
    // Setting again replaces the limit.
    ok(
        &db,
        &format!("admin budget set --org {org} --period month --tokens 8000"),
    )
    .await;
    let shown = ok(&db, &format!("admin budget show --org {org}")).await;
    assert_eq!(shown.lines().count(), 2, "{shown}");
    assert!(shown.contains("8000") && !shown.contains("9000"), "{shown}");
    let one = ok(&db, &format!("admin budget show --workspace {ws}")).await;
    assert_eq!(one.lines().count(), 1, "{one}");
    ok(
        &db,
        &format!("admin budget clear --org {org} --period month"),
    )
    .await;
    let missing = Uuid::now_v7();
    for (line, reason) in [
        (
            format!("admin budget clear --org {org} --period month"),
            "Budget not found",
        ),
        (
            format!("admin budget set --org {org} --period week --tokens 5"),
            "period must be",
        ),
        (
            format!("admin budget set --org {org} --period day --tokens -5"),
            "tokens must be between 1 and",
        ),
        (
            format!("admin budget set --org {org} --period day --tokens 0"),
            "tokens must be between 1 and",
        ),
        (
            format!("admin budget set --org {org} --period day --tokens 10000000000000000"),
            "tokens must be between 1 and",
        ),
        (
            format!("admin budget set --workspace {missing} --period day --tokens 5"),
            "not found",
        ),
        (
            format!("admin budget set --org {org} --workspace {ws} --period day --tokens 5"),
            "cannot be used with",
        ),
        (format!("admin budget show --org {missing}"), "not found"),
    ] {
        let args: Vec<&str> = line.split(' ').collect();
        let err = fails(&db, &args).await;
        assert!(err.contains(reason), "{line}: {err}");
    }
}

on_both_backends!(events_are_streamed_without_a_cap, budget_commands);
