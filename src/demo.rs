//! `serve --demo`: a ready-made organization to try the service with.
//!
//! On a database without it, creates (once, in one transaction) the demo
//! organization, a workspace, a repository in it and a user with read access.
//! On every start it issues a fresh token for that user and prints it with the
//! repository id and ready-to-paste curl and grpcurl commands.

use std::net::SocketAddr;

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use futures_util::FutureExt as _;
use uuid::{Uuid, uuid};

use crate::auth::generate_token;
use crate::domain::{Access, OrgRole};
use crate::store::schema::{organizations, repos, users, workspace_members, workspaces};
use crate::store::types::{SqlTime, SqlUuid, now};
use crate::store::{Store, StoreError};
use crate::write_tx;

/// Fixed ids, so that every start finds the same demo.
pub const DEMO_ORG: Uuid = uuid!("0193a0d0-0000-7000-8000-00000000000a");
pub const DEMO_WORKSPACE: Uuid = uuid!("0193a0d0-0000-7000-8000-00000000000b");
pub const DEMO_REPO: Uuid = uuid!("0193a0d0-0000-7000-8000-00000000000c");
pub const DEMO_USER: Uuid = uuid!("0193a0d0-0000-7000-8000-00000000000d");
pub const DEMO_EMAIL: &str = "demo@example.com";

/// What the demo prints.
pub struct Demo {
    pub token: String,
    pub repo_id: Uuid,
}

/// Creates the demo if missing and issues a fresh token.
pub async fn prepare(store: &Store) -> anyhow::Result<Demo> {
    if create_once(store).await? {
        tracing::info!(org_id = %DEMO_ORG, "demo organization created");
    }
    let token = generate_token();
    store
        .create_token(DEMO_USER, "demo".into(), &token, None)
        .await?;
    Ok(Demo {
        token: token.secret,
        repo_id: DEMO_REPO,
    })
}

/// The demo's organization, workspace, repository, user and membership,
/// unless they exist; whether they were created.
async fn create_once(store: &Store) -> Result<bool, StoreError> {
    store
        .run(|conn| {
            async move {
                write_tx!(&mut *conn, |c| {
                    let exists = organizations::table
                        .filter(organizations::id.eq(SqlUuid(DEMO_ORG)))
                        .select(organizations::id)
                        .first::<Uuid>(c)
                        .await
                        .optional()?;
                    if exists.is_some() {
                        return Ok(false);
                    }
                    let at = SqlTime(now());
                    diesel::insert_into(organizations::table)
                        .values((
                            organizations::id.eq(SqlUuid(DEMO_ORG)),
                            organizations::name.eq("Demo"),
                            organizations::created_at.eq(at),
                        ))
                        .execute(c)
                        .await?;
                    diesel::insert_into(workspaces::table)
                        .values((
                            workspaces::id.eq(SqlUuid(DEMO_WORKSPACE)),
                            workspaces::org_id.eq(SqlUuid(DEMO_ORG)),
                            workspaces::name.eq("Demo workspace"),
                            workspaces::created_at.eq(at),
                        ))
                        .execute(c)
                        .await?;
                    diesel::insert_into(repos::table)
                        .values((
                            repos::id.eq(SqlUuid(DEMO_REPO)),
                            repos::org_id.eq(SqlUuid(DEMO_ORG)),
                            repos::workspace_id.eq(Some(SqlUuid(DEMO_WORKSPACE))),
                            repos::name.eq("demo-repo"),
                            repos::created_at.eq(at),
                        ))
                        .execute(c)
                        .await?;
                    diesel::insert_into(users::table)
                        .values((
                            users::id.eq(SqlUuid(DEMO_USER)),
                            users::org_id.eq(SqlUuid(DEMO_ORG)),
                            users::email.eq(DEMO_EMAIL),
                            users::name.eq(Some("Demo")),
                            users::last_name.eq(Some("User")),
                            users::org_role.eq(OrgRole::User.as_str()),
                            users::created_at.eq(at),
                        ))
                        .execute(c)
                        .await?;
                    diesel::insert_into(workspace_members::table)
                        .values((
                            workspace_members::workspace_id.eq(SqlUuid(DEMO_WORKSPACE)),
                            workspace_members::user_id.eq(SqlUuid(DEMO_USER)),
                            workspace_members::access.eq(Access::Read.as_str()),
                            workspace_members::created_at.eq(at),
                        ))
                        .execute(c)
                        .await?;
                    Ok::<_, StoreError>(true)
                })
            }
            .boxed()
        })
        .await
}

impl Demo {
    /// The block printed on start, with the addresses actually listened on.
    pub fn instructions(&self, http: SocketAddr, grpc: SocketAddr, tls: bool) -> String {
        let (http, grpc) = (reachable(http), reachable(grpc));
        let (token, repo) = (&self.token, self.repo_id);
        // With TLS, the clients must trust the certificate (or be told not to check it).
        let (scheme, curl, grpcurl) = if tls {
            (
                "https",
                "curl --cacert CERT.pem",
                "grpcurl -cacert CERT.pem",
            )
        } else {
            ("http", "curl", "grpcurl -plaintext")
        };
        format!(
            "Demo ready: user {DEMO_EMAIL} (read access to \"Demo workspace\")\n\
             token:  {token}\n\
             repoId: {repo}\n\
             HTTP:   {scheme}://{http}\n\
             gRPC:   {grpc}\n\
             \n\
             {curl} -X POST {scheme}://{http}/conversation -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' -d '{{\"repoId\":\"{repo}\"}}'\n\
             {grpcurl} {grpc} list\n\
             {grpcurl} -H 'authorization: Bearer {token}' -d '{{\"repoId\":\"{repo}\"}}' {grpc} flashback.conversation.v1.ConversationService/CreateConversation"
        )
    }
}

/// An address a client on this machine can dial: a wildcard becomes loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    addr
}
