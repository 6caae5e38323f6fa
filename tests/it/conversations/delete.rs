//! Deleting a conversation: who may (may_delete_conversation), soft and
//! hard, and its event in the same transaction.

use conversation_service::pb::DeleteConversationRequest;
use serde_json::{Value, json};
use tonic::Code;
use uuid::Uuid;

use super::*;
use crate::harness::{Actor, TestApp, TestDb, as_actor};
use crate::on_both_backends;

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

on_both_backends!(delete_rules, delete_is_atomic);
