//! The conversation lifecycle: list, get and delete, on both transports and
//! both backends, with every visibility tier.

use std::collections::BTreeSet;

use conversation_service::domain::{Access, OrgRole};
use conversation_service::pb::{
    DeleteConversationRequest, GetConversationRequest, ListConversationsRequest,
};
use serde_json::{Value, json};
use tonic::Code;
use uuid::Uuid;

use crate::harness::{Actor, TestApp, TestDb, as_actor, keys, user};
use crate::on_both_backends;

/// An organization with two workspaces and conversations by several people.
struct Org {
    org: Uuid,
    w1: Uuid,
    w2: Uuid,
    repo1: Uuid,
    repo2: Uuid,
    owner: Actor,
    /// Administrator of w1, reader of w2.
    ws_admin: Actor,
    /// Reader of w1 and w2.
    alice: Actor,
    /// Writer of w1.
    bob: Actor,
    alice_w1: Vec<Uuid>,
    alice_w2: Vec<Uuid>,
    bob_w1: Vec<Uuid>,
    ws_admin_w2: Uuid,
    owner_w1: Uuid,
    /// A conversation of another organization, by its owner.
    foreign: Uuid,
    foreign_owner: Actor,
}

impl Org {
    async fn build(app: &TestApp) -> Org {
        let s = &app.store;
        let org = s.create_org("Acme".into()).await.expect("org");
        let w1 = s.create_workspace(org, "One".into()).await.expect("ws");
        let w2 = s.create_workspace(org, "Two".into()).await.expect("ws");
        let repo1 = s
            .create_repo(org, "one".into(), Some(w1))
            .await
            .expect("repo");
        let repo2 = s
            .create_repo(org, "two".into(), Some(w2))
            .await
            .expect("repo");
        let owner = user(s, org, OrgRole::Owner).await;
        let ws_admin = user(s, org, OrgRole::User).await;
        let alice = user(s, org, OrgRole::User).await;
        let bob = user(s, org, OrgRole::User).await;
        for (ws, a, access) in [
            (w1, &ws_admin, Access::Admin),
            (w2, &ws_admin, Access::Read),
            (w1, &alice, Access::Read),
            (w2, &alice, Access::Read),
            (w1, &bob, Access::Write),
        ] {
            s.grant(ws, a.id, access).await.expect("grant");
        }
        let mut alice_w1 = Vec::new();
        for _ in 0..3 {
            alice_w1.push(app.create_as(&alice, repo1).await);
        }
        let mut alice_w2 = Vec::new();
        for _ in 0..2 {
            alice_w2.push(app.create_as(&alice, repo2).await);
        }
        let bob_w1 = vec![
            app.create_as(&bob, repo1).await,
            app.create_as(&bob, repo1).await,
        ];
        let ws_admin_w2 = app.create_as(&ws_admin, repo2).await;
        let owner_w1 = app.create_as(&owner, repo1).await;

        let other = s.create_org("Globex".into()).await.expect("org");
        let other_ws = s.create_workspace(other, "X".into()).await.expect("ws");
        let other_repo = s
            .create_repo(other, "x".into(), Some(other_ws))
            .await
            .expect("repo");
        let foreign_owner = user(s, other, OrgRole::Owner).await;
        let foreign = app.create_as(&foreign_owner, other_repo).await;
        Org {
            org,
            w1,
            w2,
            repo1,
            repo2,
            owner,
            ws_admin,
            alice,
            bob,
            alice_w1,
            alice_w2,
            bob_w1,
            ws_admin_w2,
            owner_w1,
            foreign,
            foreign_owner,
        }
    }

    fn all(&self) -> BTreeSet<Uuid> {
        let mut all: BTreeSet<Uuid> = self
            .alice_w1
            .iter()
            .chain(&self.alice_w2)
            .chain(&self.bob_w1)
            .copied()
            .collect();
        all.extend([self.ws_admin_w2, self.owner_w1]);
        all
    }
}

/// GET /conversation with a query string: (status, body).
async fn rest_list(app: &TestApp, a: Option<&Actor>, query: &str) -> (u16, Value) {
    let mut req = app.http.get(format!("{}/conversation?{query}", app.base));
    if let Some(a) = a {
        req = req.header("authorization", format!("Bearer {}", a.token));
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    assert_eq!(res.headers()["content-type"], "application/json");
    (status, res.json().await.expect("json"))
}

fn ids(body: &Value) -> Vec<Uuid> {
    body["conversations"]
        .as_array()
        .expect("conversations array")
        .iter()
        .map(|c| c["id"].as_str().expect("id").parse().expect("uuid"))
        .collect()
}

/// The total of a one-item page (answered from the trigger-kept counters)
/// equals the number of rows a full listing returns (counted by hand).
async fn totals_agree(app: &TestApp, a: &Actor, query: &str) {
    let sep = if query.is_empty() { "" } else { "&" };
    let (_, full) = rest_list(app, Some(a), &format!("take=100{sep}{query}")).await;
    let (_, one) = rest_list(app, Some(a), &format!("take=1{sep}{query}")).await;
    assert_eq!(one["total"], ids(&full).len(), "{query}");
    assert_eq!(full["total"], ids(&full).len(), "{query}");
}

async fn grpc_list(
    app: &TestApp,
    a: &Actor,
    req: ListConversationsRequest,
) -> Result<(Vec<Uuid>, u64), tonic::Status> {
    let reply = app
        .grpc()
        .await
        .list_conversations(as_actor(req, a))
        .await?;
    let reply = reply.into_inner();
    Ok((
        reply
            .conversations
            .iter()
            .map(|c| c.id.parse().expect("uuid"))
            .collect(),
        reply.total,
    ))
}

/// Each tier sees exactly its set, on both transports; filters only narrow.
async fn visibility_tiers(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let o = Org::build(&app).await;
    let w1_all: BTreeSet<Uuid> = o
        .alice_w1
        .iter()
        .chain(&o.bob_w1)
        .chain([&o.owner_w1])
        .copied()
        .collect();
    let mut ws_admin_sees = w1_all.clone();
    ws_admin_sees.insert(o.ws_admin_w2);
    let alice_sees: BTreeSet<Uuid> = o.alice_w1.iter().chain(&o.alice_w2).copied().collect();
    let bob_sees: BTreeSet<Uuid> = o.bob_w1.iter().copied().collect();

    let tiers: Vec<(&str, &Actor, BTreeSet<Uuid>)> = vec![
        ("org owner", &o.owner, o.all()),
        ("workspace admin", &o.ws_admin, ws_admin_sees),
        ("reader", &o.alice, alice_sees.clone()),
        ("writer", &o.bob, bob_sees),
        ("other org's owner", &o.foreign_owner, [o.foreign].into()),
    ];
    for (tier, actor, expected) in &tiers {
        let (status, body) = rest_list(&app, Some(actor), "").await;
        assert_eq!(status, 200, "{tier}: {body}");
        assert_eq!(body["success"], true);
        let got = ids(&body);
        assert_eq!(
            got.iter().copied().collect::<BTreeSet<_>>(),
            *expected,
            "REST {tier}"
        );
        assert_eq!(body["total"], expected.len(), "REST {tier}");
        let (got, total) = grpc_list(&app, actor, ListConversationsRequest::default())
            .await
            .expect(tier);
        assert_eq!(
            got.into_iter().collect::<BTreeSet<_>>(),
            *expected,
            "gRPC {tier}"
        );
        assert_eq!(total as usize, expected.len(), "gRPC {tier}");
    }

    for (_, actor, _) in &tiers {
        for query in ["", "showDeleted=true"] {
            totals_agree(&app, actor, query).await;
        }
    }

    // Filters narrow, never widen.
    let narrow: Vec<(&str, &Actor, String, BTreeSet<Uuid>)> = vec![
        (
            "reader asks for bob's",
            &o.alice,
            format!("userId={}", o.bob.id),
            BTreeSet::new(),
        ),
        (
            "owner asks for bob's",
            &o.owner,
            format!("userId={}", o.bob.id),
            o.bob_w1.iter().copied().collect(),
        ),
        (
            "owner asks for w2",
            &o.owner,
            format!("workspaceId={}", o.w2),
            o.alice_w2.iter().chain([&o.ws_admin_w2]).copied().collect(),
        ),
        (
            "reader asks for repo2",
            &o.alice,
            format!("repoId={}", o.repo2),
            o.alice_w2.iter().copied().collect(),
        ),
        (
            "ws admin asks for w2",
            &o.ws_admin,
            format!("workspaceId={}", o.w2),
            [o.ws_admin_w2].into(),
        ),
        (
            "ws admin asks for w1 by alice",
            &o.ws_admin,
            format!("workspaceId={}&userId={}", o.w1, o.alice.id),
            o.alice_w1.iter().copied().collect(),
        ),
        (
            "owner asks for repo1 and w2",
            &o.owner,
            format!("repoId={}&workspaceId={}", o.repo1, o.w2),
            BTreeSet::new(),
        ),
        (
            "owner asks for the other org's user",
            &o.owner,
            format!("userId={}", o.foreign_owner.id),
            BTreeSet::new(),
        ),
        (
            "other org asks for our workspace",
            &o.foreign_owner,
            format!("workspaceId={}", o.w1),
            BTreeSet::new(),
        ),
        (
            "unknown repo",
            &o.owner,
            format!("repoId={}", Uuid::now_v7()),
            BTreeSet::new(),
        ),
    ];
    for (name, actor, query, expected) in narrow {
        let (status, body) = rest_list(&app, Some(actor), &query).await;
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(
            ids(&body).into_iter().collect::<BTreeSet<_>>(),
            expected,
            "REST {name}"
        );
        assert_eq!(body["total"], expected.len(), "REST {name}");
        totals_agree(&app, actor, &query).await;
    }
    let (got, total) = grpc_list(
        &app,
        &o.owner,
        ListConversationsRequest {
            workspace_id: o.w2.to_string(),
            user_id: o.alice.id.to_string(),
            ..Default::default()
        },
    )
    .await
    .expect("filtered");
    assert_eq!(
        got.into_iter().collect::<BTreeSet<_>>(),
        o.alice_w2.iter().copied().collect()
    );
    assert_eq!(total, 2);
    app.shutdown().await;
}

/// Pages: newest first, `total` counts everything, edges and bad parameters.
async fn pagination(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let o = Org::build(&app).await;
    // Creation order is time order (UUIDv7 ids, times to the microsecond).
    let mut newest_first: Vec<Uuid> = o.all().into_iter().collect();
    newest_first.sort();
    newest_first.reverse();
    assert_eq!(newest_first.len(), 9);

    let (_, body) = rest_list(&app, Some(&o.owner), "").await;
    assert_eq!(ids(&body), newest_first, "newest first by default");
    let (_, body) = rest_list(&app, Some(&o.owner), "take=4").await;
    assert_eq!(ids(&body), newest_first[..4]);
    assert_eq!(body["total"], 9);
    let (_, body) = rest_list(&app, Some(&o.owner), "take=4&skip=4").await;
    assert_eq!(ids(&body), newest_first[4..8]);
    let (_, body) = rest_list(&app, Some(&o.owner), "take=4&skip=8").await;
    assert_eq!(ids(&body), newest_first[8..], "the last page is short");
    assert_eq!(body["total"], 9);
    let (_, body) = rest_list(&app, Some(&o.owner), "skip=50").await;
    assert_eq!(ids(&body), Vec::<Uuid>::new(), "past the end: empty page");
    assert_eq!(body["total"], 9, "but the total still counts");
    let (status, body) = rest_list(&app, Some(&o.owner), "take=100").await;
    assert_eq!((status, ids(&body).len()), (200, 9));
    let (_, body) = rest_list(&app, Some(&o.owner), "take=1&skip=0").await;
    assert_eq!(
        (ids(&body), body["total"].clone()),
        (newest_first[..1].to_vec(), json!(9))
    );

    let (got, total) = grpc_list(
        &app,
        &o.owner,
        ListConversationsRequest {
            take: Some(3),
            skip: Some(3),
            ..Default::default()
        },
    )
    .await
    .expect("page");
    assert_eq!((got, total), (newest_first[3..6].to_vec(), 9));

    let bad: Vec<(&str, &str)> = vec![
        ("take=101", "take must be between 1 and 100"),
        ("take=0", "take must be between 1 and 100"),
        ("take=-5", "take must be between 1 and 100"),
        ("skip=-1", "skip must be 0 or more"),
        ("take=ten", "take must be an integer"),
        ("skip=1.5", "skip must be an integer"),
        ("take=99999999999999999999", "take must be an integer"),
        ("take=1&take=2", "take must be given at most once"),
        ("showDeleted=maybe", "showDeleted must be true or false"),
        ("showDeleted=1", "showDeleted must be true or false"),
        ("workspaceId=", "workspaceId must not be empty"),
        ("take=", "take must not be empty"),
        (
            "from=2026-01-02T10:00:00",
            "from must be an ISO 8601 date or date-time",
        ),
        ("userId=bob", "userId must be a UUID"),
        ("workspaceId=123", "workspaceId must be a UUID"),
        ("repoId=x", "repoId must be a UUID"),
        (
            "from=yesterday",
            "from must be an ISO 8601 date or date-time",
        ),
        ("to=2026-02-30", "to must be an ISO 8601 date or date-time"),
    ];
    for (query, message) in bad {
        let (status, body) = rest_list(&app, Some(&o.owner), query).await;
        assert_eq!(status, 400, "{query}: {body}");
        let got = body["message"].as_str().expect("message");
        assert!(got.starts_with(message), "{query}: {got}");
        // Authentication still comes first.
        let (status, _) = rest_list(&app, None, query).await;
        assert_eq!(status, 401, "{query} without a token");
    }
    for (req, message) in [
        (
            ListConversationsRequest {
                take: Some(101),
                ..Default::default()
            },
            "take must be between 1 and 100",
        ),
        (
            ListConversationsRequest {
                skip: Some(-1),
                ..Default::default()
            },
            "skip must be 0 or more",
        ),
        (
            ListConversationsRequest {
                from: "soon".into(),
                ..Default::default()
            },
            "from must be an ISO 8601",
        ),
        (
            ListConversationsRequest {
                user_id: "x".into(),
                ..Default::default()
            },
            "userId must be a UUID",
        ),
    ] {
        let status = grpc_list(&app, &o.owner, req).await.expect_err(message);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().starts_with(message),
            "{}",
            status.message()
        );
    }
    app.shutdown().await;
}

/// `from` / `to` bound the creation time, inclusively, as dates or date-times.
async fn date_bounds(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let o = Org::build(&app).await;
    let times = [
        (o.alice_w1[0], "2026-01-01T10:00:00Z"),
        (o.alice_w1[1], "2026-01-02T10:00:00Z"),
        (o.alice_w1[2], "2026-01-03T23:59:59.999999Z"),
    ];
    for (id, t) in times {
        let t = chrono::DateTime::parse_from_rfc3339(t)
            .expect("time")
            .with_timezone(&chrono::Utc);
        let literal = match app.db.backend {
            conversation_service::store::Backend::Postgres => format!("'{}'", t.to_rfc3339()),
            conversation_service::store::Backend::Sqlite => {
                format!(
                    "'{}'",
                    conversation_service::store::types::sqlite_time_text(&t)
                )
            }
        };
        app.db
            .exec(&format!(
                "UPDATE conversations SET created_at = {literal} WHERE id = {}",
                app.db.uuid_literal(id)
            ))
            .await;
    }
    let [a, b, c] = [o.alice_w1[0], o.alice_w1[1], o.alice_w1[2]];
    let cases: Vec<(&str, Vec<Uuid>)> = vec![
        ("to=2026-01-03", vec![c, b, a]),
        ("from=2026-01-02&to=2026-01-03", vec![c, b]),
        ("to=2026-01-02", vec![b, a]),
        ("from=2026-01-02T10:00:00Z&to=2026-01-02T10:00:00Z", vec![b]),
        ("from=2026-01-02T10:00:00.000001Z&to=2026-01-03", vec![c]),
        ("from=2026-01-02T12:00:00%2B02:00&to=2026-01-02", vec![b]),
        ("to=2026-01-03T23:59:59.999998Z", vec![b, a]),
        ("to=2025-12-31", vec![]),
        ("from=2026-01-03&to=2026-01-02", vec![]),
    ];
    for (query, expected) in cases {
        let (status, body) = rest_list(&app, Some(&o.alice), query).await;
        assert_eq!(status, 200, "{query}: {body}");
        assert_eq!(ids(&body), expected, "{query}");
        assert_eq!(body["total"], expected.len(), "{query}");
    }
    let (got, _) = grpc_list(
        &app,
        &o.alice,
        ListConversationsRequest {
            from: "2026-01-02".into(),
            to: "2026-01-02".into(),
            ..Default::default()
        },
    )
    .await
    .expect("bounded");
    assert_eq!(got, vec![b]);
    app.shutdown().await;
}

/// The DTO: every platform field, strings for token totals, nulls for absent values.
async fn dto_shape(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let o = Org::build(&app).await;
    let id = o.owner_w1;
    let res = app
        .http
        .get(format!("{}/conversation/{id}", app.base))
        .header("authorization", format!("Bearer {}", o.owner.token))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    let c = &body["conversation"];
    assert_eq!(
        keys(c),
        [
            "id",
            "orgId",
            "createdBy",
            "createdAt",
            "lastUpdatedAt",
            "workspaceId",
            "repoId",
            "tokensIn",
            "tokensOut",
            "deletedAt",
            "title",
            "repo",
            "creator"
        ]
    );
    assert_eq!(c["id"], id.to_string());
    assert_eq!(c["orgId"], o.org.to_string());
    assert_eq!(c["createdBy"], o.owner.id.to_string());
    assert_eq!(c["workspaceId"], o.w1.to_string());
    assert_eq!(c["repoId"], o.repo1.to_string());
    assert_eq!(
        (c["tokensIn"].clone(), c["tokensOut"].clone()),
        (json!("0"), json!("0"))
    );
    assert_eq!(
        (c["deletedAt"].clone(), c["title"].clone()),
        (Value::Null, Value::Null)
    );
    assert_eq!(
        c["repo"],
        json!({ "id": o.repo1.to_string(), "name": "one" })
    );
    assert_eq!(c["creator"]["id"], o.owner.id.to_string());
    assert_eq!(c["creator"]["lastName"], "Test");
    assert!(
        c["creator"]["email"]
            .as_str()
            .is_some_and(|e| e.contains('@'))
    );
    let created = chrono::DateTime::parse_from_rfc3339(c["createdAt"].as_str().expect("time"))
        .expect("RFC 3339");
    assert_eq!(c["createdAt"], c["lastUpdatedAt"]);
    assert!(c["createdAt"].as_str().expect("time").ends_with('Z'));
    assert!((chrono::Utc::now() - created.with_timezone(&chrono::Utc)).num_seconds() < 60);
    // The list carries the same objects.
    let (_, list) = rest_list(&app, Some(&o.owner), "take=100").await;
    let same = list["conversations"]
        .as_array()
        .expect("array")
        .iter()
        .find(|x| x["id"] == c["id"])
        .expect("listed");
    assert_eq!(same, c);
    app.shutdown().await;
}

/// GET /conversation/{id}: the same visibility as the list; 404 otherwise.
async fn get_one(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let o = Org::build(&app).await;
    let get = |a: Option<&Actor>, id: String| {
        let mut req = app.http.get(format!("{}/conversation/{id}", app.base));
        if let Some(a) = a {
            req = req.header("authorization", format!("Bearer {}", a.token));
        }
        async move {
            let res = req.send().await.expect("request");
            (
                res.status().as_u16(),
                res.json::<Value>().await.expect("json"),
            )
        }
    };
    let bobs = o.bob_w1[0].to_string();
    for (who, actor, status) in [
        ("creator", &o.bob, 200),
        ("workspace admin", &o.ws_admin, 200),
        ("org owner", &o.owner, 200),
        ("fellow member", &o.alice, 404),
        ("other org", &o.foreign_owner, 404),
    ] {
        let (got, body) = get(Some(actor), bobs.clone()).await;
        assert_eq!(got, status, "{who}: {body}");
        if status == 404 {
            assert_eq!(
                body,
                json!({"success": false, "message": "Conversation not found"})
            );
        } else {
            assert_eq!(body["conversation"]["id"], bobs);
        }
        let req = GetConversationRequest {
            conversation_id: bobs.clone(),
            show_deleted: false,
        };
        let reply = app
            .grpc()
            .await
            .get_conversation(as_actor(req, actor))
            .await;
        match status {
            200 => assert_eq!(
                reply
                    .expect(who)
                    .into_inner()
                    .conversation
                    .expect("conversation")
                    .id,
                bobs
            ),
            _ => assert_eq!(reply.expect_err(who).code(), Code::NotFound),
        }
    }
    assert_eq!(get(Some(&o.owner), Uuid::now_v7().to_string()).await.0, 404);
    assert_eq!(get(Some(&o.owner), o.foreign.to_string()).await.0, 404);
    let (status, body) = get(Some(&o.owner), "not-a-uuid".into()).await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"success": false, "message": "conversationId must be a UUID"})
        )
    );
    assert_eq!(get(None, "not-a-uuid".into()).await.0, 401);
    assert_eq!(get(None, bobs).await.0, 401);
    app.shutdown().await;
}

async fn rest_delete(app: &TestApp, a: &Actor, id: Uuid, query: &str) -> (u16, Value) {
    let res = app
        .http
        .delete(format!("{}/conversation/{id}{query}", app.base))
        .header("authorization", format!("Bearer {}", a.token))
        .send()
        .await
        .expect("request");
    (res.status().as_u16(), res.json().await.expect("json"))
}

/// DELETE: who may, soft then hard, the audit trail, and what is already gone.
async fn delete_rules(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let o = Org::build(&app).await;
    let gone = json!({"success": false, "message": "Conversation not found"});
    // Who may not: a fellow member, another organization.
    assert_eq!(
        rest_delete(&app, &o.alice, o.bob_w1[0], "").await,
        (404, gone.clone())
    );
    assert_eq!(
        rest_delete(&app, &o.foreign_owner, o.bob_w1[0], "?hardDelete=true")
            .await
            .0,
        404
    );
    assert_eq!(
        rest_delete(&app, &o.owner, o.bob_w1[0], "?hardDelete=perhaps")
            .await
            .0,
        400
    );

    // The creator soft-deletes: the row stays, lists leave it out unless asked.
    let target = o.alice_w1[0];
    assert_eq!(
        rest_delete(&app, &o.alice, target, "").await,
        (200, json!({"success": true}))
    );
    let (_, body) = rest_list(&app, Some(&o.alice), "").await;
    assert!(!ids(&body).contains(&target));
    assert_eq!(body["total"], 4);
    let (_, body) = rest_list(&app, Some(&o.alice), "showDeleted=true").await;
    assert!(ids(&body).contains(&target));
    assert_eq!(body["total"], 5);
    let deleted = body["conversations"]
        .as_array()
        .expect("array")
        .iter()
        .find(|c| c["id"] == target.to_string())
        .expect("listed");
    assert!(
        deleted["deletedAt"]
            .as_str()
            .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok())
    );
    let res = app
        .http
        .get(format!("{}/conversation/{target}", app.base))
        .header("authorization", format!("Bearer {}", o.alice.token))
        .send()
        .await
        .expect("get");
    assert_eq!(
        res.status(),
        404,
        "a soft-deleted conversation is gone unless asked for"
    );
    let res = app
        .http
        .get(format!(
            "{}/conversation/{target}?showDeleted=true",
            app.base
        ))
        .header("authorization", format!("Bearer {}", o.alice.token))
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 200);
    // Deleting it softly again: already gone.
    assert_eq!(
        rest_delete(&app, &o.alice, target, "?hardDelete=false").await,
        (404, gone.clone())
    );
    // But it can still be purged.
    assert_eq!(
        rest_delete(&app, &o.alice, target, "?hardDelete=true")
            .await
            .0,
        200
    );
    assert_eq!(
        rest_delete(&app, &o.alice, target, "?hardDelete=true").await,
        (404, gone.clone())
    );
    let (_, body) = rest_list(&app, Some(&o.alice), "showDeleted=true").await;
    assert!(!ids(&body).contains(&target));

    // A workspace admin deletes in their workspace; an owner anywhere; over gRPC too.
    let mut client = app.grpc().await;
    let del = |id: Uuid, hard: bool| DeleteConversationRequest {
        conversation_id: id.to_string(),
        hard_delete: hard,
    };
    client
        .delete_conversation(as_actor(del(o.bob_w1[0], false), &o.ws_admin))
        .await
        .expect("ws admin");
    let denied = client
        .delete_conversation(as_actor(del(o.alice_w2[0], false), &o.ws_admin))
        .await
        .expect_err("not their workspace");
    assert_eq!(
        (denied.code(), denied.message()),
        (Code::NotFound, "Conversation not found")
    );
    client
        .delete_conversation(as_actor(del(o.alice_w2[0], true), &o.owner))
        .await
        .expect("owner purges");
    let bad = client
        .delete_conversation(as_actor(del(Uuid::nil(), true), &o.owner))
        .await
        .expect_err("nothing");
    assert_eq!(bad.code(), Code::NotFound);
    let bad = client
        .delete_conversation(as_actor(
            DeleteConversationRequest {
                conversation_id: "x".into(),
                hard_delete: false,
            },
            &o.owner,
        ))
        .await
        .expect_err("bad id");
    assert_eq!(
        (bad.code(), bad.message()),
        (Code::InvalidArgument, "conversationId must be a UUID")
    );

    for actor in [&o.owner, &o.ws_admin, &o.alice, &o.bob] {
        for query in [
            "",
            "showDeleted=true",
            "showDeleted=true&workspaceId=".to_owned().as_str(),
        ] {
            let query = if query.ends_with('=') {
                format!("{query}{}", o.w1)
            } else {
                query.to_owned()
            };
            totals_agree(&app, actor, &query).await;
        }
    }

    // The audit trail: one `deleted` event per deletion, outliving the hard delete.
    let events = app.store.list_events(o.org, 100).await.expect("events");
    let deletions: Vec<(Uuid, bool, Uuid)> = events
        .iter()
        .filter(|e| e.event == "deleted")
        .map(|e| {
            let data = e.json_data.as_ref().expect("data");
            (
                e.context_id.expect("id"),
                data["hardDelete"].as_bool().expect("kind"),
                e.user_id.expect("user"),
            )
        })
        .collect();
    assert_eq!(
        deletions,
        vec![
            (o.alice_w2[0], true, o.owner.id),
            (o.bob_w1[0], false, o.ws_admin.id),
            (target, true, o.alice.id),
            (target, false, o.alice.id),
        ]
    );
    assert!(
        events
            .iter()
            .any(|e| e.event == "created" && e.context_id == Some(target)),
        "created event kept"
    );
    assert_eq!(
        app.count("system_events").await,
        10 + 4,
        "10 creations and 4 deletions"
    );
    assert_eq!(app.count("conversations").await, 10 - 2);
    app.shutdown().await;
}

/// A delete whose audit event cannot be written deletes nothing.
async fn delete_is_atomic(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let o = Org::build(&app).await;
    let fail = match app.db.backend {
        conversation_service::store::Backend::Postgres => {
            "CREATE FUNCTION fail_event() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'nope'; END $$;
             CREATE TRIGGER fail_event BEFORE INSERT ON system_events FOR EACH ROW EXECUTE FUNCTION fail_event();"
        }
        conversation_service::store::Backend::Sqlite => {
            "CREATE TRIGGER fail_event BEFORE INSERT ON system_events BEGIN SELECT RAISE(ABORT, 'nope'); END;"
        }
    };
    app.db.exec(fail).await;
    for query in ["", "?hardDelete=true"] {
        let (status, body) = rest_delete(&app, &o.owner, o.owner_w1, query).await;
        assert_eq!(
            (status, body),
            (
                500,
                json!({"success": false, "message": "Failed to delete conversation"})
            )
        );
    }
    for hard_delete in [false, true] {
        let req = DeleteConversationRequest {
            conversation_id: o.owner_w1.to_string(),
            hard_delete,
        };
        let status = app
            .grpc()
            .await
            .delete_conversation(as_actor(req, &o.owner))
            .await
            .expect_err("fails");
        assert_eq!(
            (status.code(), status.message()),
            (Code::Internal, "Failed to delete conversation")
        );
    }
    let (_, body) = rest_list(&app, Some(&o.owner), "").await;
    assert!(ids(&body).contains(&o.owner_w1), "still there, not deleted");
    assert_eq!(app.count("conversations").await, 10);
    app.shutdown().await;
}

on_both_backends!(
    visibility_tiers,
    pagination,
    date_bounds,
    dto_shape,
    get_one,
    delete_rules,
    delete_is_atomic
);
