//! Past one box: `deploy/local-cluster` (PostgreSQL primary and streaming
//! replica, PgBouncer in transaction mode, three service replicas, HAProxy)
//! under load on both transports, the same Idempotency-Key on different
//! replicas at once, and a replica killed with kill -9 and restarted.
//! The cluster's tools are installed by `deploy/install-deps` (root).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use conversation_service::domain::{Access, OrgRole};
use conversation_service::pb::CreateConversationRequest;
use conversation_service::pb::conversation_service_client::ConversationServiceClient;
use conversation_service::store::{Store, StoreOptions};
use diesel_async::{AsyncConnection, AsyncPgConnection};
use serde_json::json;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::harness::{Actor, as_actor, notice, user};

/// A cluster started for one test; stopped (and its files removed) on drop.
pub struct Cluster {
    dir: tempfile::TempDir,
    port: u16,
    pub env: HashMap<String, String>,
}

impl Cluster {
    /// The cluster, or `None` (with a notice) where it cannot run: it needs
    /// root (to install haproxy and pgbouncer, and to run PostgreSQL as its
    /// own user) and PostgreSQL 15's server programs. With
    /// `REQUIRE_POSTGRES=1` (CI) their absence fails the test.
    pub fn up_if_possible(service_args: &str) -> Option<Cluster> {
        let root = std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        let postgres = Path::new("/usr/lib/postgresql/15/bin/initdb").exists();
        if !(root && postgres) {
            let why = "the local cluster needs root and PostgreSQL 15's server programs";
            assert!(
                !std::env::var("REQUIRE_POSTGRES").is_ok_and(|v| v == "1"),
                "REQUIRE_POSTGRES=1 but {why}"
            );
            notice(&format!("skipping the cluster test: {why}"));
            return None;
        }
        Some(Cluster::up(service_args))
    }

    pub fn up(service_args: &str) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port_range(34);
        let mut cluster = Cluster {
            dir,
            port,
            env: HashMap::new(),
        };
        let status = cluster.script_with(&["up"], service_args);
        assert!(status.success(), "deploy/local-cluster up failed: {status}");
        let env = std::fs::read_to_string(cluster.dir().join("cluster.env")).expect("cluster.env");
        cluster.env = env
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim_matches('"').trim().to_owned()))
            .collect();
        cluster
    }

    fn dir(&self) -> PathBuf {
        self.dir.path().join("cluster")
    }

    fn script(&self, args: &[&str]) -> std::process::ExitStatus {
        self.script_with(args, "")
    }

    fn script_with(&self, args: &[&str], service_args: &str) -> std::process::ExitStatus {
        std::process::Command::new(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/local-cluster"),
        )
        .args(args)
        .env("CLUSTER_DIR", self.dir())
        .env("CLUSTER_PORT", self.port.to_string())
        .env("SERVICE_BIN", env!("CARGO_BIN_EXE_conversation-service"))
        .env("SERVICE_ARGS", service_args)
        .env("RUST_LOG", "warn")
        .status()
        .expect("deploy/local-cluster runs")
    }

    pub fn var(&self, name: &str) -> &str {
        self.env.get(name).map_or("", String::as_str)
    }

    /// The service replicas' own addresses (REST, gRPC), bypassing HAProxy.
    pub fn replicas(&self) -> Vec<(String, String)> {
        let http = self.var("CLUSTER_REPLICA_HTTP").split_whitespace();
        let grpc = self.var("CLUSTER_REPLICA_GRPC").split_whitespace();
        http.zip(grpc).map(|(h, g)| (h.into(), g.into())).collect()
    }

    /// HAProxy's view of one server: its status and the requests it was sent.
    fn haproxy_server(&self, backend: &str, server: &str) -> (String, u64) {
        use std::io::{Read as _, Write as _};
        let mut socket =
            std::os::unix::net::UnixStream::connect(self.dir().join("run/haproxy.sock"))
                .expect("HAProxy's stats socket");
        socket.write_all(b"show stat\n").expect("ask");
        let mut stat = String::new();
        socket.read_to_string(&mut stat).expect("read");
        let header: Vec<&str> = stat.lines().next().expect("header").split(',').collect();
        let column = |name: &str| {
            header
                .iter()
                .position(|h| h.trim_start_matches("# ") == name)
        };
        let (status, total) = (
            column("status").expect("status"),
            column("stot").expect("stot"),
        );
        let row: Vec<&str> = stat
            .lines()
            .map(|l| l.split(',').collect::<Vec<_>>())
            .find(|r| r.first() == Some(&backend) && r.get(1) == Some(&server))
            .expect("the server's row");
        (row[status].to_owned(), row[total].parse().unwrap_or(0))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.script(&["down"]);
    }
}

/// A first port of `n` consecutive free ones on 127.0.0.1, away from the
/// ephemeral range other tests' servers take theirs from.
fn free_port_range(n: u16) -> u16 {
    loop {
        let base = 20_000 + (Uuid::now_v7().as_u128() % 10_000) as u16;
        let free = (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if free {
            return base;
        }
    }
}

/// An organization with a repository, `n` users who may write in it, and
/// an organization administrator (who sees every conversation).
async fn callers(primary: &str, n: usize) -> (Uuid, Vec<Actor>, Actor) {
    let store = Store::open(primary, &StoreOptions::default()).expect("primary");
    let org = store.create_org("Cluster".into()).await.expect("org");
    let ws = store
        .create_workspace(org, "Main".into())
        .await
        .expect("ws");
    let repo = store
        .create_repo(org, "app".into(), Some(ws))
        .await
        .expect("repo");
    let mut actors = Vec::new();
    for _ in 0..n {
        let a = user(&store, org, OrgRole::User).await;
        store.grant(ws, a.id, Access::Write).await.expect("grant");
        actors.push(a);
    }
    let admin = user(&store, org, OrgRole::Admin).await;
    (repo, actors, admin)
}

/// POST /conversation at `base` as `token` (with an Idempotency-Key if
/// given); the new conversation's id.
async fn create_at(base: &str, token: &str, repo: Uuid, key: Option<&str>) -> String {
    let mut req = reqwest::Client::new()
        .post(format!("{base}/conversation"))
        .bearer_auth(token)
        .json(&json!({ "repoId": repo }));
    if let Some(key) = key {
        req = req.header("idempotency-key", key);
    }
    let res = req.send().await.expect("create");
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.expect("JSON");
    body["conversationId"].as_str().expect("id").to_owned()
}

/// What a load run saw: acknowledged ids, and the failures with their time.
#[derive(Default)]
struct Seen {
    acknowledged: Vec<String>,
    failures: Vec<(Instant, String)>,
}

/// Creates through HAProxy, alternating REST and gRPC, until `stop`.
async fn load(
    http: String,
    grpc: Channel,
    repo: Uuid,
    caller: Actor,
    stop: Arc<AtomicBool>,
) -> Seen {
    let client = reqwest::Client::new();
    let mut grpc = ConversationServiceClient::new(grpc);
    let mut seen = Seen::default();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let outcome = if i.is_multiple_of(2) {
            let res = client
                .post(format!("{http}/conversation"))
                .bearer_auth(&caller.token)
                .json(&json!({ "repoId": repo }))
                .timeout(Duration::from_secs(10))
                .send()
                .await;
            match res {
                Ok(r) if r.status() == 200 => {
                    let body: serde_json::Value = r.json().await.expect("JSON");
                    Ok(body["conversationId"].as_str().expect("id").to_owned())
                }
                Ok(r) => Err(format!("REST {}", r.status())),
                Err(e) => Err(format!("REST {e}")),
            }
        } else {
            let req = as_actor(
                CreateConversationRequest {
                    repo_id: repo.to_string(),
                },
                &caller,
            );
            match grpc.create_conversation(req).await {
                Ok(r) => Ok(r.into_inner().conversation_id),
                Err(s) => Err(format!("gRPC {:?} {}", s.code(), s.message())),
            }
        };
        match outcome {
            Ok(id) => seen.acknowledged.push(id),
            Err(e) => seen.failures.push((Instant::now(), e)),
        }
    }
    seen
}

/// Runs `load` on `callers` for `run`, calling `during` after `at`.
async fn load_for(
    cluster: &Cluster,
    repo: Uuid,
    callers: &[Actor],
    run: Duration,
    during: Option<(Duration, &dyn Fn())>,
) -> Seen {
    let channel = Channel::from_shared(cluster.var("CLUSTER_GRPC").to_owned())
        .expect("uri")
        .connect()
        .await
        .expect("HAProxy's gRPC port");
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = callers
        .iter()
        .map(|c| {
            tokio::spawn(load(
                cluster.var("CLUSTER_HTTP").to_owned(),
                channel.clone(),
                repo,
                c.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let started = Instant::now();
    if let Some((at, action)) = during {
        tokio::time::sleep(at).await;
        action();
    }
    tokio::time::sleep(run.saturating_sub(started.elapsed())).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Seen::default();
    for t in tasks {
        let seen = t.await.expect("load task");
        all.acknowledged.extend(seen.acknowledged);
        all.failures.extend(seen.failures);
    }
    all
}

/// How many of `ids` the primary holds, and how many conversations it holds
/// without their creation event.
async fn stored(primary: &str, ids: &[String]) -> (i64, i64) {
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    use diesel_async::RunQueryDsl as _;
    let mut c = AsyncPgConnection::establish(primary)
        .await
        .expect("primary");
    let list = ids
        .iter()
        .map(|i| format!("'{i}'"))
        .collect::<Vec<_>>()
        .join(",");
    let held: N = diesel::sql_query(format!(
        "SELECT count(*) AS n FROM conversations WHERE id IN ({list})"
    ))
    .get_result(&mut c)
    .await
    .expect("count");
    let orphans: N = diesel::sql_query(
        "SELECT count(*) AS n FROM conversations c WHERE NOT EXISTS \
         (SELECT 1 FROM system_events e WHERE e.context_id = c.id AND e.event = 'created')",
    )
    .get_result(&mut c)
    .await
    .expect("orphans");
    (held.n, orphans.n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_behind_haproxy_and_pgbouncer() {
    // The replicas' model provider: the fake one of the message tests.
    let (provider, _) = crate::messages::fake_provider().await;
    let Some(cluster) = Cluster::up_if_possible(&format!("--provider-url {provider}")) else {
        return;
    };
    let primary = cluster.var("CLUSTER_PRIMARY_URL").to_owned();
    let (repo, callers, admin) = callers(&primary, 24).await;

    // Load through HAProxy on both transports: every replica serves, nothing fails.
    let seen = load_for(&cluster, repo, &callers, Duration::from_secs(3), None).await;
    assert!(seen.failures.is_empty(), "{:?}", seen.failures.first());
    assert!(
        seen.acknowledged.len() > 30,
        "{} creates",
        seen.acknowledged.len()
    );
    for server in ["r1", "r2", "r3"] {
        let (status, sent) = cluster.haproxy_server("replicas_rest", server);
        assert_eq!(status, "UP");
        assert!(sent > 0, "{server} served REST");
    }
    for server in ["g1", "g2", "g3"] {
        assert!(
            cluster.haproxy_server("replicas_grpc", server).1 > 0,
            "{server} served gRPC"
        );
    }
    let mut acknowledged = seen.acknowledged;

    // One Idempotency-Key sent to the three replicas at once: one conversation.
    let key = Uuid::now_v7().to_string();
    let replicas = cluster.replicas();
    let caller = &callers[0];
    let rest = |base: String| {
        let (key, token) = (key.clone(), caller.token.clone());
        async move { create_at(&base, &token, repo, Some(&key)).await }
    };
    let grpc = async {
        let mut client = ConversationServiceClient::connect(replicas[2].1.clone())
            .await
            .expect("replica 3");
        let mut req = as_actor(
            CreateConversationRequest {
                repo_id: repo.to_string(),
            },
            caller,
        );
        req.metadata_mut()
            .insert("idempotency-key", key.parse().expect("ascii"));
        client
            .create_conversation(req)
            .await
            .expect("gRPC")
            .into_inner()
            .conversation_id
    };
    let (a, b, c) = tokio::join!(
        rest(replicas[0].0.clone()),
        rest(replicas[1].0.clone()),
        grpc
    );
    assert_eq!((&a, &b), (&c, &c), "one conversation for one key");
    assert_eq!(stored(&primary, std::slice::from_ref(&a)).await.0, 1);
    acknowledged.push(a);

    // A stream cut on one replica and resumed on another: every piece once.
    resume_on_another_replica(&cluster, repo, &callers[1]).await;

    // kill -9 of replica 2 under load: only requests it held fail, HAProxy
    // takes it out, the others keep serving.
    let kill = || {
        assert!(cluster.script(&["kill", "2"]).success(), "kill replica 2");
    };
    let killed_at = Instant::now() + Duration::from_secs(1);
    let seen = load_for(
        &cluster,
        repo,
        &callers,
        Duration::from_secs(5),
        Some((Duration::from_secs(1), &kill)),
    )
    .await;
    assert!(
        seen.failures.len() <= 2 * callers.len(),
        "more failures than requests in flight: {:?}",
        seen.failures
    );
    let late: Vec<_> = seen
        .failures
        .iter()
        .filter(|(t, _)| t.saturating_duration_since(killed_at) > Duration::from_secs(1))
        .collect();
    assert!(
        late.is_empty(),
        "failures after the kill was noticed: {late:?}"
    );
    assert!(seen.acknowledged.len() > 30, "the others kept serving");
    assert_eq!(cluster.haproxy_server("replicas_rest", "r2").0, "DOWN");
    notice(&format!(
        "cluster: {} creates acknowledged in the 5 s around the kill, {} failed (in flight on the killed replica)",
        seen.acknowledged.len(),
        seen.failures.len()
    ));
    acknowledged.extend(seen.acknowledged);

    // Restarted, it rejoins and serves again.
    assert!(
        cluster.script(&["start", "2"]).success(),
        "restart replica 2"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while cluster.haproxy_server("replicas_rest", "r2").0 != "UP"
        || cluster.haproxy_server("replicas_grpc", "g2").0 != "UP"
    {
        assert!(Instant::now() < deadline, "replica 2 did not rejoin");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let before = cluster.haproxy_server("replicas_rest", "r2").1;
    let seen = load_for(&cluster, repo, &callers, Duration::from_secs(2), None).await;
    assert!(seen.failures.is_empty(), "{:?}", seen.failures.first());
    assert!(
        cluster.haproxy_server("replicas_rest", "r2").1 > before,
        "r2 serves again"
    );
    acknowledged.extend(seen.acknowledged);

    // Reads from the streaming replica, each caller reading their own writes.
    read_from_the_replica(&cluster, repo, [&callers[0], &callers[2]], &admin).await;

    // Every acknowledged create is stored exactly once, with its event.
    let unique: std::collections::HashSet<_> = acknowledged.iter().collect();
    assert_eq!(unique.len(), acknowledged.len(), "no id acknowledged twice");
    let (held, orphans) = stored(&primary, &acknowledged).await;
    assert_eq!(
        held,
        acknowledged.len() as i64,
        "an acknowledged create was lost"
    );
    assert_eq!(orphans, 0, "a conversation without its event");
}

/// With replay paused on the streaming replica: a caller who just wrote
/// reads it back (from the primary) while another caller's read, served by
/// the replica, does not show it yet; once the replica lags past the bound
/// (1 s in the cluster) everyone reads the primary; with the replica
/// stopped, reads go on.
async fn read_from_the_replica(
    cluster: &Cluster,
    repo: Uuid,
    [writer, grpc_writer]: [&Actor; 2],
    admin: &Actor,
) {
    let http = reqwest::Client::new();
    let base = cluster.var("CLUSTER_HTTP").to_owned();
    let list = |who: &Actor| {
        let req = http
            .get(format!("{base}/conversation?repoId={repo}&take=100"))
            .bearer_auth(&who.token);
        async move {
            let res = req.send().await.expect("list");
            assert_eq!(res.status(), 200);
            let body: serde_json::Value = res.json().await.expect("JSON");
            body["conversations"]
                .as_array()
                .expect("conversations")
                .iter()
                .map(|c| c["id"].as_str().expect("id").to_owned())
                .collect::<Vec<_>>()
        }
    };
    let standby = |sql: &str| {
        let url = cluster.var("CLUSTER_STANDBY_URL").to_owned();
        let sql = sql.to_owned();
        async move {
            use diesel_async::SimpleAsyncConnection as _;
            let mut c = AsyncPgConnection::establish(&url).await.expect("standby");
            c.batch_execute(&sql).await.expect("standby SQL");
        }
    };
    let reads = || async {
        let mut total = (0.0, 0.0);
        for (rest, _) in cluster.replicas() {
            let text = http
                .get(format!("{rest}/metrics"))
                .send()
                .await
                .expect("metrics")
                .text()
                .await
                .expect("text");
            for line in text.lines() {
                let value = |l: &str| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
                if line.starts_with("conversation_service_db_reads_total{state=\"replica\"}") {
                    total.0 += value(line).unwrap_or(0.0);
                } else if line.starts_with("conversation_service_db_reads_total{state=\"primary\"}")
                {
                    total.1 += value(line).unwrap_or(0.0);
                }
            }
        }
        total
    };

    // Caught up: reads go to the replica.
    let before = reads().await;
    list(admin).await;
    assert!(reads().await.0 > before.0, "a read went to the replica");

    standby("SELECT pg_wal_replay_pause()").await;
    let id = create_at(&base, &writer.token, repo, None).await;
    assert!(
        list(writer).await.contains(&id),
        "the writer reads their write"
    );
    // The same over gRPC (another caller, whom no REST write marked): their
    // ListConversations, after their CreateConversation, shows the new one.
    let mut client = ConversationServiceClient::connect(cluster.var("CLUSTER_GRPC").to_owned())
        .await
        .expect("gRPC through HAProxy");
    let created = client
        .create_conversation(as_actor(
            CreateConversationRequest {
                repo_id: repo.to_string(),
            },
            grpc_writer,
        ))
        .await
        .expect("created")
        .into_inner()
        .conversation_id;
    let listed = client
        .list_conversations(as_actor(
            conversation_service::pb::ListConversationsRequest {
                repo_id: repo.to_string(),
                take: Some(100),
                ..Default::default()
            },
            grpc_writer,
        ))
        .await
        .expect("listed")
        .into_inner();
    assert!(
        listed.conversations.iter().any(|c| c.id == created),
        "over gRPC too, the writer reads their write"
    );
    assert!(
        !list(admin).await.contains(&id),
        "another caller reads the paused replica, which has not replayed it yet"
    );
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(
        list(admin).await.contains(&id),
        "past the lag bound, reads go to the primary"
    );

    standby("SELECT pg_wal_replay_resume()").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = reads().await;
    assert!(list(admin).await.contains(&id));
    assert!(
        reads().await.0 > before.0,
        "caught up again: the replica serves"
    );

    // The replica down: reads go to the primary.
    assert!(
        cluster.script(&["stop-standby"]).success(),
        "stop the standby"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = reads().await;
    assert!(list(admin).await.contains(&id));
    assert!(list(writer).await.contains(&id));
    let after = reads().await;
    assert_eq!(after.0, before.0, "nothing read from a stopped replica");
    assert!(after.1 > before.1);
}

/// A slow streamed prompt on replica 1, cut after two events, resumed on
/// replica 2 from the last event received.
async fn resume_on_another_replica(cluster: &Cluster, repo: Uuid, caller: &Actor) {
    use crate::messages::resume::{assert_whole, first_events, parse_sse, resume_rest, turn_of};
    let replicas = cluster.replicas();
    let (one, two) = (&replicas[0].0, &replicas[1].0);
    let http = reqwest::Client::new();
    let id: Uuid = create_at(one, &caller.token, repo, None)
        .await
        .parse()
        .expect("uuid");
    let res = http
        .post(format!("{one}/conversation/{id}/prompt"))
        .bearer_auth(&caller.token)
        .header("accept", "text/event-stream")
        .json(&json!({ "prompt": "across", "model": "slow-stream", "onDisconnect": "continue" }))
        .send()
        .await
        .expect("prompt");
    assert_eq!(res.status(), 200);
    let turn = turn_of(&res);
    let head = first_events(res, 2).await;
    let res = resume_rest(two, &caller.token, id, &turn, Some(&head[1].id), "").await;
    assert_eq!(res.status(), 200);
    let rest = parse_sse(&res.text().await.expect("body"));
    assert_whole(&head, &rest);
}
