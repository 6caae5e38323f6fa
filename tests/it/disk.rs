//! A full disk: SQLite on a small tmpfs filled to the last byte. Writes answer
//! 503 (never 500) on both transports, readiness and gRPC health say not
//! ready, reads go on; when space returns the service recovers by itself,
//! with every acknowledged create stored once and the file intact.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use diesel_async::RunQueryDsl as _;
use serde_json::json;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::harness::{TestApp, TestDb, World, as_actor, sqlite_conn};
use crate::resilience::{eventually, grpc_health, probe};

/// A tmpfs mounted for one test (the tests run as root); unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).expect("mount point");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (the tests run as root): {status}"
        );
        Tmpfs(at.to_owned())
    }

    /// Fills the file system to the last byte; returns the filler's path.
    fn fill(&self) -> PathBuf {
        let path = self.0.join("filler");
        let mut file = std::fs::File::create(&path).expect("filler");
        let chunk = vec![0u8; 4096];
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
        let _ = file.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[derive(diesel::QueryableByName)]
struct Check {
    #[diesel(sql_type = diesel::sql_types::Text)]
    integrity_check: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_and_recovers_by_itself() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tmpfs = Tmpfs::mount(&dir.path().join("small"), "16m");
    let db = TestDb::sqlite_at(dir, &tmpfs.0.join("service.db"));
    let app = TestApp::spawn(db).await;
    let w = World::build(&app).await;
    let body = json!({ "repoId": w.repo }).to_string();
    let mut acknowledged = Vec::new();
    let (status, reply) = app.post_create(Some(&w.reader.token), &body).await;
    assert_eq!(status, 200, "{reply}");
    acknowledged.push(reply["conversationId"].as_str().expect("id").to_owned());

    let filler = tmpfs.fill();
    // Create on both transports until each has been refused for want of space.
    let mut grpc = app.grpc().await;
    let (mut rest_refused, mut grpc_refused) = (false, false);
    for attempt in 0..5_000u32 {
        if rest_refused && grpc_refused {
            break;
        }
        assert!(attempt < 4_999, "writes never failed on a full disk");
        if attempt.is_multiple_of(2) {
            let (status, reply) = app.post_create(Some(&w.reader.token), &body).await;
            match status {
                200 => acknowledged.push(reply["conversationId"].as_str().expect("id").into()),
                503 => {
                    assert_eq!(
                        reply,
                        json!({"success": false, "message": "Service temporarily unavailable"})
                    );
                    rest_refused = true;
                }
                other => panic!("a full disk answered {other}: {reply}"),
            }
        } else {
            let req = conversation_service::pb::CreateConversationRequest {
                repo_id: w.repo.to_string(),
            };
            match grpc.create_conversation(as_actor(req, &w.reader)).await {
                Ok(reply) => acknowledged.push(reply.into_inner().conversation_id),
                Err(status) => {
                    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                    assert_eq!(status.message(), "Service temporarily unavailable");
                    grpc_refused = true;
                }
            }
        }
    }
    assert_eq!(
        probe(&app, "/readyz").await,
        (
            503,
            json!({"success": false, "message": "Database cannot write: its disk is full"})
        )
    );
    eventually(|| async { grpc_health(&app).await == ServingStatus::NotServing }).await;
    assert_eq!(probe(&app, "/healthz").await.0, 200, "alive all the same");
    let list = app
        .http
        .get(format!("{}/conversation?repoId={}", app.base, w.repo))
        .bearer_auth(&w.reader.token)
        .send()
        .await
        .expect("list");
    assert_eq!(list.status(), 200, "reads go on");

    // Space returns: ready again without a restart, and creates succeed.
    std::fs::remove_file(&filler).expect("free the space");
    eventually(|| async { probe(&app, "/readyz").await.0 == 200 }).await;
    eventually(|| async { grpc_health(&app).await == ServingStatus::Serving }).await;
    let (status, reply) = app.post_create(Some(&w.reader.token), &body).await;
    assert_eq!(status, 200, "{reply}");
    acknowledged.push(reply["conversationId"].as_str().expect("id").to_owned());
    let req = conversation_service::pb::CreateConversationRequest {
        repo_id: w.repo.to_string(),
    };
    let reply = grpc
        .create_conversation(as_actor(req, &w.reader))
        .await
        .expect("created after recovery");
    acknowledged.push(reply.into_inner().conversation_id);

    // Every acknowledged create is stored once, with its event.
    let listed = acknowledged
        .iter()
        .map(|id| format!("x'{}'", id.replace('-', "")))
        .collect::<Vec<_>>()
        .join(",");
    let stored = app
        .db
        .scalar(&format!(
            "SELECT count(*) FROM conversations WHERE id IN ({listed})"
        ))
        .await;
    assert_eq!(stored, acknowledged.len() as i64);
    assert_eq!(
        app.count("conversations").await,
        stored,
        "nothing unacknowledged"
    );
    assert_eq!(app.conversations_without_event().await, 0);

    let db = app.shutdown().await;
    let mut conn = sqlite_conn(&db).await;
    let check: Vec<Check> = diesel::sql_query("PRAGMA integrity_check")
        .load(&mut conn)
        .await
        .expect("integrity check");
    assert_eq!(
        check
            .iter()
            .map(|c| c.integrity_check.as_str())
            .collect::<Vec<_>>(),
        ["ok"]
    );
    drop(conn);
    drop(tmpfs);
    drop(db);
}
