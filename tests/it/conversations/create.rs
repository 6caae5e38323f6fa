//! The rules of CreateConversation, row by row, on both transports and both backends.

use conversation_service::pb::CreateConversationRequest;
use serde_json::json;
use tonic::Code;
use uuid::Uuid;

use crate::harness::{Actor, TestApp, TestDb, World, as_actor, user};
use crate::on_both_backends;

/// Who calls.
#[derive(Clone)]
enum Auth {
    None,
    /// A literal `authorization` value.
    Header(String),
    Bearer(String),
}

/// What `repoId` is.
#[derive(Clone)]
enum Repo {
    Missing,
    Id(String),
    /// A JSON value that is not a string: only REST can send it.
    Json(serde_json::Value),
}

struct Case {
    name: &'static str,
    auth: Auth,
    repo: Repo,
    http: u16,
    grpc: Code,
    message: &'static str,
}

fn bearer(a: &Actor) -> Auth {
    Auth::Bearer(a.token.clone())
}

fn id(u: Uuid) -> Repo {
    Repo::Id(u.to_string())
}

const UNAUTH: &str = "Missing or invalid access token";
const NOT_FOUND: &str = "Repository not found";
const DENIED: &str = "Insufficient permissions for this workspace";

fn cases(w: &World) -> Vec<Case> {
    let c = |name, auth, repo, http, grpc, message| Case {
        name,
        auth,
        repo,
        http,
        grpc,
        message,
    };
    let valid = id(w.repo);
    vec![
        // 1. Authentication comes first, whatever the body.
        c(
            "no token",
            Auth::None,
            valid.clone(),
            401,
            Code::Unauthenticated,
            UNAUTH,
        ),
        c(
            "no token, bad body",
            Auth::None,
            Repo::Json(json!(5)),
            401,
            Code::Unauthenticated,
            UNAUTH,
        ),
        c(
            "other scheme",
            Auth::Header(format!("Basic {}", w.reader.token)),
            valid.clone(),
            401,
            Code::Unauthenticated,
            UNAUTH,
        ),
        c(
            "scheme without token",
            Auth::Header("Bearer".into()),
            valid.clone(),
            401,
            Code::Unauthenticated,
            UNAUTH,
        ),
        c(
            "malformed token",
            Auth::Header("Bearer a b c".into()),
            valid.clone(),
            401,
            Code::Unauthenticated,
            UNAUTH,
        ),
        c(
            "unknown token",
            Auth::Bearer("fbk_doesnotexist".into()),
            valid.clone(),
            401,
            Code::Unauthenticated,
            UNAUTH,
        ),
        c(
            "expired token",
            Auth::Bearer(w.expired_token.clone()),
            valid.clone(),
            401,
            Code::Unauthenticated,
            UNAUTH,
        ),
        c(
            "revoked token",
            Auth::Bearer(w.revoked_token.clone()),
            valid.clone(),
            401,
            Code::Unauthenticated,
            UNAUTH,
        ),
        c(
            "disabled user",
            bearer(&w.disabled),
            valid.clone(),
            401,
            Code::Unauthenticated,
            UNAUTH,
        ),
        // 2. Then the argument.
        c(
            "repoId missing",
            bearer(&w.reader),
            Repo::Missing,
            400,
            Code::InvalidArgument,
            "repoId is required",
        ),
        c(
            "repoId empty",
            bearer(&w.reader),
            Repo::Id(String::new()),
            400,
            Code::InvalidArgument,
            "repoId is required",
        ),
        c(
            "repoId not a UUID",
            bearer(&w.reader),
            Repo::Id("repo-123".into()),
            400,
            Code::InvalidArgument,
            "repoId must be a UUID",
        ),
        c(
            "repoId braced UUID",
            bearer(&w.reader),
            Repo::Id(format!("{{{}}}", w.repo)),
            400,
            Code::InvalidArgument,
            "repoId must be a UUID",
        ),
        c(
            "repoId a number",
            bearer(&w.reader),
            Repo::Json(json!(42)),
            400,
            Code::InvalidArgument,
            "repoId must be a string",
        ),
        c(
            "repoId an object",
            bearer(&w.reader),
            Repo::Json(json!({"id": w.repo})),
            400,
            Code::InvalidArgument,
            "repoId must be a string",
        ),
        c(
            "repoId null",
            bearer(&w.reader),
            Repo::Json(serde_json::Value::Null),
            400,
            Code::InvalidArgument,
            "repoId is required",
        ),
        // 3. Then the repository, as the caller's org sees it.
        c(
            "unknown repo",
            bearer(&w.reader),
            id(Uuid::now_v7()),
            404,
            Code::NotFound,
            NOT_FOUND,
        ),
        c(
            "deleted repo",
            bearer(&w.reader),
            id(w.deleted_repo),
            404,
            Code::NotFound,
            NOT_FOUND,
        ),
        c(
            "repo in deleted workspace",
            bearer(&w.reader),
            id(w.repo_in_deleted_workspace),
            404,
            Code::NotFound,
            NOT_FOUND,
        ),
        c(
            "another org's repo",
            bearer(&w.reader),
            id(w.other_org_repo),
            404,
            Code::NotFound,
            NOT_FOUND,
        ),
        c(
            "another org's owner",
            bearer(&w.other_org_user),
            valid.clone(),
            404,
            Code::NotFound,
            NOT_FOUND,
        ),
        // 4. Then its state.
        c(
            "orphaned repo",
            bearer(&w.reader),
            id(w.orphan_repo),
            400,
            Code::FailedPrecondition,
            "Repository does not belong to a workspace",
        ),
        c(
            "orphaned repo, org owner",
            bearer(&w.owner),
            id(w.orphan_repo),
            400,
            Code::FailedPrecondition,
            "Repository does not belong to a workspace",
        ),
        c(
            "disabled repo",
            bearer(&w.reader),
            id(w.disabled_repo),
            400,
            Code::FailedPrecondition,
            "Repository is disabled",
        ),
        // 5. Then the caller's right to its workspace.
        c(
            "not a member",
            bearer(&w.outsider),
            valid.clone(),
            403,
            Code::PermissionDenied,
            DENIED,
        ),
        c(
            "billing, not a member",
            bearer(&w.billing),
            valid.clone(),
            403,
            Code::PermissionDenied,
            DENIED,
        ),
        c(
            "not a member, disabled repo",
            bearer(&w.outsider),
            id(w.disabled_repo),
            400,
            Code::FailedPrecondition,
            "Repository is disabled",
        ),
    ]
}

async fn call_http(app: &TestApp, case: &Case) -> (u16, serde_json::Value) {
    let body = match &case.repo {
        Repo::Missing => json!({}),
        Repo::Id(s) => json!({ "repoId": s }),
        Repo::Json(v) => json!({ "repoId": v }),
    };
    let mut req = app
        .http
        .post(format!("{}/conversation", app.base))
        .header("content-type", "application/json")
        .body(body.to_string());
    match &case.auth {
        Auth::None => {}
        Auth::Header(h) => req = req.header("authorization", h),
        Auth::Bearer(t) => req = req.header("authorization", format!("Bearer {t}")),
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    assert_eq!(
        res.headers()["content-type"],
        "application/json",
        "{}",
        case.name
    );
    (status, res.json().await.expect("json"))
}

async fn call_grpc(app: &TestApp, auth: &Auth, repo_id: &str) -> Result<String, tonic::Status> {
    let mut req = tonic::Request::new(CreateConversationRequest {
        repo_id: repo_id.to_owned(),
    });
    let value = match auth {
        Auth::None => None,
        Auth::Header(h) => Some(h.clone()),
        Auth::Bearer(t) => Some(format!("Bearer {t}")),
    };
    if let Some(v) = value {
        req.metadata_mut()
            .insert("authorization", v.parse().expect("ascii metadata"));
    }
    let reply = app.grpc().await.create_conversation(req).await?;
    Ok(reply.into_inner().conversation_id)
}

/// Every row of the rule table, on both transports: the documented code and
/// body, and nothing written.
async fn rule_table(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let world = World::build(&app).await;
    for case in cases(&world) {
        let (status, body) = call_http(&app, &case).await;
        assert_eq!(status, case.http, "REST {}: {body}", case.name);
        assert_eq!(
            body,
            json!({"success": false, "message": case.message}),
            "REST {}",
            case.name
        );

        let repo_id = match &case.repo {
            Repo::Missing => String::new(),
            Repo::Id(s) => s.clone(),
            Repo::Json(_) => continue, // not expressible in protobuf
        };
        let status = call_grpc(&app, &case.auth, &repo_id)
            .await
            .expect_err(case.name);
        assert_eq!(
            status.code(),
            case.grpc,
            "gRPC {}: {}",
            case.name,
            status.message()
        );
        assert_eq!(status.message(), case.message, "gRPC {}", case.name);
    }
    assert_eq!(
        app.count("conversations").await,
        0,
        "no failure writes anything"
    );
    assert_eq!(app.count("system_events").await, 0);
    assert!(
        app.idle_in_transaction().await == 0,
        "every transaction ended"
    );
    app.shutdown().await;
}

/// Everyone with access creates, on both transports; what is stored is right.
async fn allowed_callers_create(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let w = World::build(&app).await;
    let mut created = Vec::new();
    for (who, actor) in [
        ("reader", &w.reader),
        ("writer", &w.writer),
        ("workspace admin", &w.ws_admin),
        ("org admin", &w.org_admin),
        ("owner", &w.owner),
    ] {
        let (status, body) = app
            .post_create(Some(&actor.token), &json!({ "repoId": w.repo }).to_string())
            .await;
        assert_eq!(status, 200, "{who}: {body}");
        assert_eq!(body["success"], true);
        assert_eq!(
            body.as_object().expect("object").len(),
            2,
            "exactly success and conversationId"
        );
        let id: Uuid = body["conversationId"]
            .as_str()
            .expect("string")
            .parse()
            .expect("uuid");
        assert_eq!(id.get_version_num(), 7);
        created.push((id, actor.id, "http"));

        let grpc_id = call_grpc(&app, &bearer(actor), &w.repo.to_string())
            .await
            .expect(who);
        created.push((grpc_id.parse().expect("uuid"), actor.id, "grpc"));
    }
    assert_eq!(app.count("conversations").await, 10);
    assert_eq!(app.count("system_events").await, 10);
    assert_eq!(app.conversations_without_event().await, 0);

    let events = app.store.list_events(w.org, 100).await.expect("events");
    assert_eq!(events.len(), 10);
    for (id, creator, transport) in &created {
        let e = events
            .iter()
            .find(|e| e.context_id == Some(*id))
            .expect("event for each");
        assert_eq!(e.context, "conversation");
        assert_eq!(e.event, "created");
        assert_eq!(e.org_id, w.org);
        assert_eq!(e.workspace_id, Some(w.workspace));
        assert_eq!(e.user_id, Some(*creator));
        let data = e.json_data.as_ref().expect("json data");
        assert_eq!(data["repoId"], w.repo.to_string());
        assert_eq!(data["transport"], *transport);
        assert!(data["requestId"].as_str().is_some_and(|s| !s.is_empty()));
    }
    app.shutdown().await;
}

/// The gRPC reply carries the stored conversation; request ids round-trip.
async fn reply_and_request_ids(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let w = World::build(&app).await;

    let mut req = as_actor(
        CreateConversationRequest {
            repo_id: w.repo.to_string(),
        },
        &w.reader,
    );
    req.metadata_mut()
        .insert("x-request-id", "grpc-req-1".parse().expect("ascii"));
    let reply = app
        .grpc()
        .await
        .create_conversation(req)
        .await
        .expect("created");
    assert_eq!(
        reply.metadata().get("x-request-id").expect("echoed"),
        "grpc-req-1"
    );
    let reply = reply.into_inner();
    let c = reply.conversation.expect("conversation");
    assert_eq!(c.id, reply.conversation_id);
    assert_eq!(c.org_id, w.org.to_string());
    assert_eq!(c.workspace_id, w.workspace.to_string());
    assert_eq!(c.repo_id, w.repo.to_string());
    assert_eq!(c.created_by, w.reader.id.to_string());
    assert_eq!((c.tokens_in, c.tokens_out), (0, 0));
    assert_eq!(c.created_at, c.last_updated_at);
    assert!(c.deleted_at.is_none());
    assert_eq!(c.repo.expect("repo").name, "app");
    assert_eq!(c.creator.expect("creator").id, w.reader.id.to_string());

    let res = app
        .http
        .post(format!("{}/conversation", app.base))
        .header("authorization", format!("Bearer {}", w.reader.token))
        .header("content-type", "application/json")
        .header("x-request-id", "rest-req-1")
        .body(json!({ "repoId": w.repo }).to_string())
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-request-id"], "rest-req-1");
    // A failing call echoes it too, on both transports.
    let res = app
        .http
        .post(format!("{}/conversation", app.base))
        .header("content-type", "application/json")
        .header("x-request-id", "rest-req-2")
        .body("{}")
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["x-request-id"], "rest-req-2");

    let events = app.store.list_events(w.org, 10).await.expect("events");
    let ids: Vec<_> = events
        .iter()
        .map(|e| {
            e.json_data.as_ref().expect("data")["requestId"]
                .as_str()
                .expect("id")
                .to_owned()
        })
        .collect();
    assert_eq!(
        ids,
        vec!["rest-req-1", "grpc-req-1"],
        "newest first, ids kept"
    );
    app.shutdown().await;
}

/// The gateway's own rejections: JSON bodies, right statuses, nothing written.
async fn gateway_rejections(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let w = World::build(&app).await;
    let url = format!("{}/conversation", app.base);
    let auth = format!("Bearer {}", w.reader.token);
    let good = json!({ "repoId": w.repo }).to_string();
    let big = format!(
        "{{\"repoId\":\"{}\",\"pad\":\"{}\"}}",
        w.repo,
        "x".repeat(70 * 1024)
    );
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        (
            "malformed JSON",
            app.http
                .post(&url)
                .header("authorization", &auth)
                .header("content-type", "application/json")
                .body("{\"repoId\":"),
            400,
            "Request body is not valid JSON",
        ),
        (
            "empty body",
            app.http
                .post(&url)
                .header("authorization", &auth)
                .header("content-type", "application/json"),
            400,
            "Request body is not valid JSON",
        ),
        (
            "array body",
            app.http
                .post(&url)
                .header("authorization", &auth)
                .header("content-type", "application/json")
                .body("[]"),
            400,
            "Request body must be a JSON object",
        ),
        (
            "string body, no token",
            app.http
                .post(&url)
                .header("content-type", "application/json")
                .body("\"x\""),
            400,
            "Request body must be a JSON object",
        ),
        (
            "deeply nested",
            app.http
                .post(&url)
                .header("authorization", &auth)
                .header("content-type", "application/json")
                .body(deep),
            400,
            "Request body is not valid JSON",
        ),
        (
            "invalid UTF-8",
            app.http
                .post(&url)
                .header("authorization", &auth)
                .header("content-type", "application/json")
                .body(vec![b'{', b'"', 0xff, b'"', b':', b'1', b'}']),
            400,
            "Request body is not valid JSON",
        ),
        (
            "text/plain",
            app.http
                .post(&url)
                .header("authorization", &auth)
                .header("content-type", "text/plain")
                .body(good.clone()),
            415,
            "Content-Type must be application/json",
        ),
        (
            "no content type",
            app.http
                .post(&url)
                .header("authorization", &auth)
                .body(good.clone()),
            415,
            "Content-Type must be application/json",
        ),
        (
            "form",
            app.http
                .post(&url)
                .header("authorization", &auth)
                .header("content-type", "application/x-www-form-urlencoded")
                .body("repoId=x"),
            415,
            "Content-Type must be application/json",
        ),
        (
            "too large",
            app.http
                .post(&url)
                .header("authorization", &auth)
                .header("content-type", "application/json")
                .body(big),
            413,
            "Request body is larger than 65536 bytes",
        ),
        (
            "unknown route",
            app.http
                .post(format!("{}/conversations", app.base))
                .header("authorization", &auth)
                .header("content-type", "application/json")
                .body(good.clone()),
            404,
            "Not found",
        ),
        ("root", app.http.get(&app.base), 404, "Not found"),
        (
            "path not UTF-8",
            app.http
                .get(format!("{}/conversation/%FF%FE", app.base))
                .header("authorization", &auth),
            400,
            "Bad Request",
        ),
        (
            "wrong method",
            app.http
                .put(&url)
                .header("authorization", &auth)
                .header("content-type", "application/json")
                .body(good.clone()),
            405,
            "Method not allowed",
        ),
    ];
    for (name, req, status, message) in cases {
        let res = req.send().await.expect(name);
        assert_eq!(res.status().as_u16(), status, "{name}");
        assert_eq!(res.headers()["content-type"], "application/json", "{name}");
        if status == 405 {
            assert_eq!(res.headers()["allow"], "POST,GET,HEAD", "{name}");
        }
        let body: serde_json::Value = res.json().await.expect(name);
        assert_eq!(body["success"], false, "{name}");
        let got = body["message"].as_str().expect("message");
        assert!(got.starts_with(message), "{name}: {got}");
        assert_eq!(body.as_object().expect("object").len(), 2, "{name}");
    }
    // The bearer scheme is case-insensitive and charset parameters are fine.
    let res = app
        .http
        .post(&url)
        .header("authorization", format!("bearer   {}", w.reader.token))
        .header("content-type", "application/json; charset=utf-8")
        .body(good)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    assert_eq!(app.count("conversations").await, 1);
    app.shutdown().await;
}

/// Row 7: a failure inside the transaction answers 500 without detail and
/// leaves neither the conversation nor its event.
async fn failure_writes_nothing(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let w = World::build(&app).await;
    let (fail, unfail) = match app.db.backend {
        conversation_service::store::Backend::Postgres => (
            "CREATE FUNCTION fail_event() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'secret internal detail'; END $$;
             CREATE TRIGGER fail_event BEFORE INSERT ON system_events FOR EACH ROW EXECUTE FUNCTION fail_event();",
            "DROP TRIGGER fail_event ON system_events; DROP FUNCTION fail_event();",
        ),
        conversation_service::store::Backend::Sqlite => (
            "CREATE TRIGGER fail_event BEFORE INSERT ON system_events BEGIN SELECT RAISE(ABORT, 'secret internal detail'); END;",
            "DROP TRIGGER fail_event;",
        ),
    };
    app.db.exec(fail).await;
    let body = json!({ "repoId": w.repo }).to_string();
    let (status, reply) = app.post_create(Some(&w.reader.token), &body).await;
    assert_eq!(status, 500);
    assert_eq!(
        reply,
        json!({"success": false, "message": "Failed to create conversation"})
    );
    let status = call_grpc(&app, &bearer(&w.reader), &w.repo.to_string())
        .await
        .expect_err("fails");
    assert_eq!(status.code(), Code::Internal);
    assert_eq!(status.message(), "Failed to create conversation");
    assert_eq!(
        app.count("conversations").await,
        0,
        "the conversation was rolled back with its event"
    );
    assert_eq!(app.count("system_events").await, 0);
    assert!(
        app.idle_in_transaction().await == 0,
        "every transaction ended"
    );

    app.db.exec(unfail).await;
    let (status, _) = app.post_create(Some(&w.reader.token), &body).await;
    assert_eq!(status, 200);
    assert_eq!(app.count("conversations").await, 1);
    assert_eq!(app.conversations_without_event().await, 0);
    app.shutdown().await;
}

/// 200 concurrent creates by 200 different users, half per transport:
/// exactly 200 conversations and 200 events, no error.
async fn concurrent_creates(db: TestDb) {
    // Correctness under concurrency, not latency: on a loaded machine 200
    // creates at once may wait longer than the usual 2 s for a connection.
    let mut opts = crate::harness::test_options();
    opts.acquire_timeout = std::time::Duration::from_secs(20);
    let app = TestApp::spawn_with(db, opts).await;
    let w = World::build(&app).await;
    let mut actors = Vec::new();
    for _ in 0..200 {
        let a = user(
            &app.store,
            w.org,
            conversation_service::domain::OrgRole::User,
        )
        .await;
        app.store
            .grant(
                w.workspace,
                a.id,
                conversation_service::domain::Access::Read,
            )
            .await
            .expect("grant");
        actors.push(a);
    }
    let channel = app.channel().await;
    let mut tasks = tokio::task::JoinSet::new();
    for (i, a) in actors.into_iter().enumerate() {
        let (http, base, channel, repo) =
            (app.http.clone(), app.base.clone(), channel.clone(), w.repo);
        tasks.spawn(async move {
            if i % 2 == 0 {
                let res = http
                    .post(format!("{base}/conversation"))
                    .header("authorization", format!("Bearer {}", a.token))
                    .header("content-type", "application/json")
                    .body(json!({ "repoId": repo }).to_string())
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let status = res.status();
                let body = res.text().await.unwrap_or_default();
                if status != 200 {
                    return Err(format!("REST {status}: {body}"));
                }
            } else {
                let mut client =
                    conversation_service::pb::conversation_service_client::ConversationServiceClient::new(channel);
                let req = as_actor(CreateConversationRequest { repo_id: repo.to_string() }, &a);
                client.create_conversation(req).await.map_err(|s| format!("gRPC {s:?}"))?;
            }
            Ok::<_, String>(())
        });
    }
    let mut errors = Vec::new();
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r.expect("task") {
            errors.push(e);
        }
    }
    assert!(
        errors.is_empty(),
        "{} errors, first: {:?}",
        errors.len(),
        errors.first()
    );
    assert_eq!(app.count("conversations").await, 200);
    assert_eq!(app.count("system_events").await, 200);
    assert_eq!(app.conversations_without_event().await, 0);
    assert!(
        app.idle_in_transaction().await == 0,
        "every transaction ended"
    );
    app.shutdown().await;
}

/// Every statement a create sends (with and without an idempotency key) is
/// prepared once per connection and reused after: none is parsed and planned
/// anew per request. (Rows with a NULL column were once inserted with
/// `DEFAULT` in their SQL, which made diesel prepare the INSERT every time:
/// on PostgreSQL a round trip and a plan per create.)
async fn statements_are_prepared_once(db: TestDb) {
    let mut opts = crate::harness::test_options();
    opts.pool_size = 1;
    let app = TestApp::spawn_with(db, opts).await;
    let w = World::build(&app).await;
    let log = crate::harness::StatementLog::attach(&app).await;
    let mut second_round = 0;
    for round in 0..2 {
        if round == 1 {
            second_round = log.mark();
        }
        let body = json!({ "repoId": w.repo }).to_string();
        let (status, reply) = app.post_create(Some(&w.writer.token), &body).await;
        assert_eq!(status, 200, "{reply}");
        app.create_as(&w.reader, w.repo).await;
        let mut keyed = as_actor(
            CreateConversationRequest {
                repo_id: w.repo.to_string(),
            },
            &w.writer,
        );
        keyed.metadata_mut().insert(
            "idempotency-key",
            format!("prepared-once-{round}").parse().expect("ascii"),
        );
        app.grpc()
            .await
            .create_conversation(keyed)
            .await
            .expect("keyed create");
    }
    let sent = log.sent_since(second_round);
    for table in ["conversations", "system_events", "idempotency_keys"] {
        // PostgreSQL quotes names with ", SQLite with `; on PostgreSQL the
        // conversation and its event are inserted by the create's one
        // statement (`WITH found AS (...), conversation AS (INSERT ...)`).
        let insert = format!("INSERT INTO {table} ");
        assert!(
            sent.iter()
                .any(|sql| sql.replace(['"', '`'], "").contains(&insert)),
            "the second round inserts into {table}: {sent:#?}"
        );
    }
    let fresh = log.unprepared_since(second_round);
    assert!(
        fresh.is_empty(),
        "prepared again for every request: {fresh:#?}"
    );
    assert_eq!(app.count("conversations").await, 6);
    app.shutdown().await;
}

on_both_backends!(
    rule_table,
    allowed_callers_create,
    reply_and_request_ids,
    gateway_rejections,
    failure_writes_nothing,
    concurrent_creates,
    statements_are_prepared_once,
);
