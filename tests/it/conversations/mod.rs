//! The conversation operations, one module per action, on both transports
//! and both backends; the fixtures and helpers they share are here.

mod create;
mod delete;
mod get;
mod list;

use std::collections::BTreeSet;

use conversation_service::domain::{Access, OrgRole};
use conversation_service::pb::ListConversationsRequest;
use serde_json::Value;
use uuid::Uuid;

use crate::harness::{Actor, TestApp, as_actor, user};

/// An organization with two workspaces and conversations by several people.
pub struct Org {
    pub org: Uuid,
    pub w1: Uuid,
    pub w2: Uuid,
    pub repo1: Uuid,
    pub repo2: Uuid,
    pub owner: Actor,
    /// Administrator of w1, reader of w2.
    pub ws_admin: Actor,
    /// Reader of w1 and w2.
    pub alice: Actor,
    /// Writer of w1.
    pub bob: Actor,
    pub alice_w1: Vec<Uuid>,
    pub alice_w2: Vec<Uuid>,
    pub bob_w1: Vec<Uuid>,
    pub ws_admin_w2: Uuid,
    pub owner_w1: Uuid,
    /// A conversation of another organization, by its owner.
    pub foreign: Uuid,
    pub foreign_owner: Actor,
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
pub async fn rest_list(app: &TestApp, a: Option<&Actor>, query: &str) -> (u16, Value) {
    let mut req = app.http.get(format!("{}/conversation?{query}", app.base));
    if let Some(a) = a {
        req = req.header("authorization", format!("Bearer {}", a.token));
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    assert_eq!(res.headers()["content-type"], "application/json");
    (status, res.json().await.expect("json"))
}

pub fn ids(body: &Value) -> Vec<Uuid> {
    body["conversations"]
        .as_array()
        .expect("conversations array")
        .iter()
        .map(|c| c["id"].as_str().expect("id").parse().expect("uuid"))
        .collect()
}

/// The total of a one-item page (answered from the trigger-kept counters)
/// equals the number of rows a full listing returns (counted by hand).
pub async fn totals_agree(app: &TestApp, a: &Actor, query: &str) {
    let sep = if query.is_empty() { "" } else { "&" };
    let (_, full) = rest_list(app, Some(a), &format!("take=100{sep}{query}")).await;
    let (_, one) = rest_list(app, Some(a), &format!("take=1{sep}{query}")).await;
    assert_eq!(one["total"], ids(&full).len(), "{query}");
    assert_eq!(full["total"], ids(&full).len(), "{query}");
}

pub async fn grpc_list(
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
