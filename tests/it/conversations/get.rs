//! Getting one conversation: visible to whom may see it, 404 otherwise.

use conversation_service::pb::GetConversationRequest;
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
