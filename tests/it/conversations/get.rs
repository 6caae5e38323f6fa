//! Getting one conversation: visible to whom may see it, 404 otherwise.

use conversation_service::domain::{Access, Caller};
use conversation_service::pb::GetConversationRequest;
use conversation_service::service::conversations::may_see_conversations;
use conversation_service::store::conversations::{ConversationFilter, Visibility};
use serde_json::{Value, json};
use tonic::Code;
use uuid::Uuid;

use super::*;
use crate::harness::{Actor, TestApp, TestDb, as_actor};
use crate::on_both_backends;

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

on_both_backends!(get_one);

/// A prompt judges visibility in Rust (`ConversationFilter::admits`, on the
/// row and access read with its caller) where every other operation asks the
/// database (`matching!`): the two agree on every caller, every kind of
/// conversation (own, another's, in an administered workspace, soft-deleted,
/// of another organization) and every narrowing field.
async fn visibility_is_the_same_in_sql_and_in_rust(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let o = Org::build(&app).await;
    let s = &app.store;
    let deleted = o.bob_w1[1];
    app.db
        .exec(&format!(
            "UPDATE conversations SET deleted_at = {} WHERE id = {}",
            app.db.now_literal(),
            app.db.uuid_literal(deleted)
        ))
        .await;
    // The grants `Org::build` makes.
    let access = |who: Uuid, workspace: Uuid| match (who, workspace) {
        (w, ws) if w == o.ws_admin.id && ws == o.w1 => Some(Access::Admin),
        (w, ws) if w == o.ws_admin.id && ws == o.w2 => Some(Access::Read),
        (w, ws) if w == o.alice.id && (ws == o.w1 || ws == o.w2) => Some(Access::Read),
        (w, ws) if w == o.bob.id && ws == o.w1 => Some(Access::Write),
        _ => None,
    };
    let foreign_org = s
        .find_user(o.foreign_owner.id)
        .await
        .expect("user")
        .expect("known")
        .org_id;
    let far = chrono::Utc::now() + chrono::TimeDelta::days(1);
    type Narrowing<'a> = (&'a str, &'a dyn Fn(&mut ConversationFilter));
    let narrowings: [Narrowing<'_>; 8] = [
        ("none", &|_| {}),
        ("showDeleted", &|f| f.show_deleted = true),
        ("workspace", &|f| f.workspace_id = Some(o.w1)),
        ("repository", &|f| f.repo_id = Some(o.repo2)),
        ("creator", &|f| f.created_by = Some(o.bob.id)),
        ("from", &|f| f.from = Some(far)),
        ("until", &|f| f.until = Some(far)),
        ("other id", &|f| f.id = Some(o.foreign)),
    ];
    let ids = [
        o.alice_w1[0],
        o.alice_w2[0],
        o.bob_w1[0],
        deleted,
        o.ws_admin_w2,
        o.owner_w1,
        o.foreign,
    ];
    let mut admitted = 0;
    for actor in [&o.owner, &o.ws_admin, &o.alice, &o.bob, &o.foreign_owner] {
        let user = s.find_user(actor.id).await.expect("user").expect("known");
        let caller = Caller::from(user);
        for id in ids {
            // The row as it is, whoever may see it.
            let owner_org = s
                .get_conversation(ConversationFilter {
                    id: Some(id),
                    show_deleted: true,
                    ..ConversationFilter::visible(
                        if id == o.foreign { foreign_org } else { o.org },
                        Visibility::Organization,
                    )
                })
                .await
                .expect("read")
                .expect("exists");
            for (name, narrow) in narrowings {
                let mut filter = ConversationFilter {
                    id: Some(id),
                    ..may_see_conversations(&caller)
                };
                narrow(&mut filter);
                let in_sql = s.get_conversation(filter.clone()).await.expect("read");
                let in_rust = filter.admits(&owner_org, access(actor.id, owner_org.workspace_id));
                assert_eq!(
                    in_sql.is_some_and(|row| row.id == id),
                    in_rust,
                    "caller {:?}, conversation {id}, narrowed by {name}",
                    caller.role
                );
                admitted += usize::from(in_rust);
            }
        }
    }
    // Neither all nor nothing: the cases tell something.
    assert!(admitted > 10 && admitted < 200, "{admitted} admitted");
    app.shutdown().await;
}

on_both_backends!(visibility_is_the_same_in_sql_and_in_rust);
