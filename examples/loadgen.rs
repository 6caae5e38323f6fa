//! Load generator: drives CreateConversation over gRPC and POST /conversation
//! over REST against a `conversation-service` it starts itself (the release
//! binary, as a child process) on SQLite or PostgreSQL, and runs beside it the
//! ceiling: the least SQL one create needs, straight against the same database
//! at the same concurrency (pgbench with a script for PostgreSQL, a direct loop
//! of threads on the same file for SQLite).
//!
//! ```sh
//! cargo run --release --example loadgen -- --backend postgres --clients 16,64 --seconds 10
//! cargo run --release --example loadgen -- --backend sqlite --existing 1000,100000,1000000
//! ```
//!
//! Options: `--backend sqlite|postgres|both` (both), `--transport grpc|rest|both`
//! (both), `--clients 16,64`, `--seconds 10` per slice (after a 2 s warm-up),
//! `--rounds 3` (the ceiling and each transport take turns this many times, and
//! each figure sums its slices, so that the machine's drift weighs on all
//! alike), `--existing 1000` conversations already in the database (a list runs
//! each), `--callers 64` distinct users with their own tokens, `--no-ceiling`.
//! `LOADGEN_SERVER=/path/to/conversation-service` runs another build of the
//! service instead of this tree's (to compare two builds in turns).
//! PostgreSQL comes from `BENCH_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); each run uses a throwaway database.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use conversation_service::auth::NewToken;
use conversation_service::domain::{Access, OrgRole};
use conversation_service::pb::CreateConversationRequest;
use conversation_service::pb::conversation_service_client::ConversationServiceClient;
use conversation_service::store::admin::NewUser;
use conversation_service::store::{Backend, Store, StoreOptions};
use uuid::Uuid;

#[path = "../benches/support/mod.rs"]
mod support;
use support::{BenchDb, bulk_conversations};

const WARMUP: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Transport {
    Grpc,
    Rest,
}

struct Options {
    backends: Vec<Backend>,
    transports: Vec<Transport>,
    clients: Vec<usize>,
    seconds: u64,
    rounds: usize,
    existing: Vec<i64>,
    callers: usize,
    ceiling: bool,
}

/// What `--help` prints: every option.
const USAGE: &str = "\
loadgen: drives CreateConversation (gRPC) and POST /conversation (REST) against a
conversation-service it starts itself, beside the ceiling (the least SQL a create
needs, straight against the same database): on PostgreSQL one data-modifying
statement (pgbench, prepared; at the better of the clients' concurrency and 16
connections), with the five-statement script as a second line; on SQLite the
best direct use of the file. Ratios are printed against each.

Usage: cargo run --release --example loadgen -- [options]

Options:
  --backend sqlite|postgres|both   databases to run on (default both)
  --transport grpc|rest|both       transports to drive (default both)
  --clients 16,64                  concurrent clients, one level per value (default 16,64)
  --seconds N                      length of each slice, after a 2 s warm-up (default 10)
  --rounds N                       the ceiling and each transport take turns N times (default 3)
  --existing 1000,100000           conversations already in the database, a run each (default 1000)
  --callers N                      distinct users with their own tokens (default 64)
  --no-ceiling                     skip the ceiling
  -h, --help                       print this and exit

Environment:
  LOADGEN_SERVER=/path/to/conversation-service   drive another build (before/after runs)
  BENCH_DATABASE_URL=postgres://...              PostgreSQL server (default
                                                 postgres://postgres@127.0.0.1:5432/postgres)
";

fn parse_options() -> anyhow::Result<Options> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        print!("{USAGE}");
        std::process::exit(0);
    }
    const KNOWN: [&str; 8] = [
        "--backend",
        "--transport",
        "--clients",
        "--seconds",
        "--rounds",
        "--existing",
        "--callers",
        "--no-ceiling",
    ];
    if let Some(unknown) = args
        .iter()
        .find(|a| a.starts_with('-') && !KNOWN.contains(&a.as_str()))
    {
        bail!("unknown option {unknown} (see --help)");
    }
    let value = |name: &str| -> Option<String> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let list = |name: &str, default: &str| -> anyhow::Result<Vec<i64>> {
        value(name)
            .unwrap_or_else(|| default.into())
            .split(',')
            .map(|v| {
                v.trim()
                    .parse::<i64>()
                    .with_context(|| format!("{name} takes numbers"))
            })
            .collect()
    };
    let backends = match value("--backend").as_deref().unwrap_or("both") {
        "sqlite" => vec![Backend::Sqlite],
        "postgres" => vec![Backend::Postgres],
        "both" => vec![Backend::Postgres, Backend::Sqlite],
        other => bail!("--backend {other}: expected sqlite, postgres or both"),
    };
    let transports = match value("--transport").as_deref().unwrap_or("both") {
        "grpc" => vec![Transport::Grpc],
        "rest" => vec![Transport::Rest],
        "both" => vec![Transport::Grpc, Transport::Rest],
        other => bail!("--transport {other}: expected grpc, rest or both"),
    };
    Ok(Options {
        backends,
        transports,
        clients: list("--clients", "16,64")?
            .into_iter()
            .map(|c| c.max(1) as usize)
            .collect(),
        seconds: list("--seconds", "10")?[0].max(1) as u64,
        rounds: list("--rounds", "3")?[0].max(1) as usize,
        existing: list("--existing", "1000")?,
        callers: list("--callers", "64")?[0].max(1) as usize,
        ceiling: !args.iter().any(|a| a == "--no-ceiling"),
    })
}

/// What the world of one run holds.
struct World {
    org: Uuid,
    workspace: Uuid,
    repo: Uuid,
    callers: usize,
}

/// The token of bench caller `n` (1-based): fixed, so pgbench can hash it too.
fn bench_token(n: usize) -> String {
    format!("fbk_bench_{n}")
}

async fn seed(db: &BenchDb, callers: usize, existing: i64) -> anyhow::Result<World> {
    let store = Store::open(&db.url, &StoreOptions::default())?;
    store.migrate().await?;
    let org = store.create_org("Load".into()).await?;
    let workspace = store.create_workspace(org, "load".into()).await?;
    let repo = store
        .create_repo(org, "load".into(), Some(workspace))
        .await?;
    let mut users = Vec::new();
    for n in 1..=callers {
        let user = store
            .create_user(NewUser {
                org_id: org,
                email: format!("caller{n}@load.test"),
                name: Some(format!("Caller {n}")),
                last_name: None,
                role: OrgRole::User,
            })
            .await?;
        store.grant(workspace, user, Access::Read).await?;
        let secret = bench_token(n);
        let token = NewToken {
            hash: conversation_service::auth::hash_token(&secret),
            secret,
        };
        store
            .create_token(user, "load".into(), &token, None)
            .await?;
        users.push(user);
    }
    bulk_conversations(db, org, &[(workspace, repo)], &users, existing).await?;
    Ok(World {
        org,
        workspace,
        repo,
        callers,
    })
}

fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// The release binary of the service, built if cargo ran us.
fn server_binary() -> anyhow::Result<PathBuf> {
    // Another build of the service (to compare two builds in turns).
    if let Some(binary) = std::env::var_os("LOADGEN_SERVER") {
        return Ok(PathBuf::from(binary));
    }
    if let Ok(cargo) = std::env::var("CARGO") {
        let status = std::process::Command::new(cargo)
            .args([
                "build",
                "--release",
                "--quiet",
                "--bin",
                "conversation-service",
            ])
            .status()?;
        anyhow::ensure!(status.success(), "building the service failed");
    }
    let exe = std::env::current_exe()?;
    let release = exe
        .parent()
        .and_then(|examples| examples.parent())
        .context("cannot locate target/release")?;
    let binary = release.join("conversation-service");
    anyhow::ensure!(
        binary.exists(),
        "{} not found: cargo build --release first",
        binary.display()
    );
    Ok(binary)
}

struct Server {
    child: tokio::process::Child,
    http: SocketAddr,
    grpc: SocketAddr,
}

impl Server {
    async fn start(binary: &PathBuf, database_url: &str) -> anyhow::Result<Server> {
        let (http, grpc) = (free_port()?, free_port()?);
        let child = tokio::process::Command::new(binary)
            .args([
                "serve",
                "--http-addr",
                &http.to_string(),
                "--grpc-addr",
                &grpc.to_string(),
            ])
            .env("DATABASE_URL", database_url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(grpc).await.is_err()
            || tokio::net::TcpStream::connect(http).await.is_err()
        {
            anyhow::ensure!(Instant::now() < deadline, "the service did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Server { child, http, grpc })
    }

    fn pid(&self) -> u32 {
        self.child.id().unwrap_or_default()
    }

    /// User plus system CPU seconds so far.
    fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // Fields after the command name (which may hold spaces) start at state.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        (ticks(11) + ticks(12)) / 100.0
    }

    /// Peak resident memory in MiB.
    fn peak_rss_mib(&self) -> f64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            let _ = tokio::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        tokio::time::timeout(Duration::from_secs(40), self.child.wait()).await??;
        Ok(())
    }
}

/// What one measurement saw.
struct Measured {
    requests: u64,
    /// Creates answered, warm-up included (for CPU per create).
    created: u64,
    errors: u64,
    first_error: Option<String>,
    latencies_us: Vec<u32>,
    elapsed: Duration,
}

/// One HTTP/2 connection for the generated gRPC client, without tonic's
/// `Channel`, whose `Buffer` hands every request to a worker task of its own:
/// like pgbench's one socket per client, the client should cost the shared
/// machine as little as it can.
#[derive(Clone)]
struct H2Conn(hyper::client::conn::http2::SendRequest<tonic::body::Body>);

impl H2Conn {
    async fn connect(addr: SocketAddr) -> anyhow::Result<H2Conn> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let (send, connection) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await?;
        tokio::spawn(connection);
        Ok(H2Conn(send))
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for H2Conn {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.0.send_request(request))
    }
}

async fn drive(
    server: &Server,
    transport: Transport,
    clients: usize,
    seconds: u64,
    world: &World,
) -> anyhow::Result<Measured> {
    let counting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let created = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()?;
    let origin: http::Uri = format!("http://{}", server.grpc).parse()?;
    let mut channels = Vec::new();
    for _ in 0..clients {
        channels.push(H2Conn::connect(server.grpc).await?);
    }
    let body = serde_json::json!({ "repoId": world.repo }).to_string();
    let url = format!("http://{}/conversation", server.http);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..clients {
        let token = format!("Bearer {}", bench_token(i % world.callers + 1));
        let (counting, stop, errors, created, first_error) = (
            counting.clone(),
            stop.clone(),
            errors.clone(),
            created.clone(),
            first_error.clone(),
        );
        let (http, url, body) = (http.clone(), url.clone(), body.clone());
        let mut grpc = ConversationServiceClient::with_origin(
            channels[i % channels.len()].clone(),
            origin.clone(),
        );
        let repo_id = world.repo.to_string();
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(1 << 16);
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let outcome: Result<(), String> = match transport {
                    Transport::Rest => match http
                        .post(&url)
                        .header("authorization", &token)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await
                    {
                        Ok(r) if r.status() == 200 => {
                            r.bytes().await.map(|_| ()).map_err(|e| e.to_string())
                        }
                        Ok(r) => Err(format!(
                            "HTTP {}: {}",
                            r.status(),
                            r.text().await.unwrap_or_default()
                        )),
                        Err(e) => Err(e.to_string()),
                    },
                    Transport::Grpc => {
                        let mut req = tonic::Request::new(CreateConversationRequest {
                            repo_id: repo_id.clone(),
                        });
                        req.metadata_mut()
                            .insert("authorization", token.parse().expect("ascii token"));
                        grpc.create_conversation(req)
                            .await
                            .map(|_| ())
                            .map_err(|s| format!("{s:?}"))
                    }
                };
                if outcome.is_ok() {
                    created.fetch_add(1, Ordering::Relaxed);
                }
                if counting.load(Ordering::Relaxed) {
                    latencies
                        .push(u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX));
                    if let Err(e) = outcome {
                        errors.fetch_add(1, Ordering::Relaxed);
                        first_error.lock().expect("lock").get_or_insert(e);
                    }
                }
            }
            latencies
        });
    }
    tokio::time::sleep(WARMUP).await;
    counting.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    counting.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut latencies_us = Vec::new();
    while let Some(part) = tasks.join_next().await {
        latencies_us.extend(part?);
    }
    latencies_us.sort_unstable();
    let first_error = first_error.lock().expect("lock").take();
    Ok(Measured {
        requests: latencies_us.len() as u64,
        created: created.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        first_error,
        latencies_us,
        elapsed,
    })
}

/// The least SQL one create needs, on PostgreSQL, as a pgbench script: the
/// token by its hash with the repository and the caller's membership (one
/// query, as the service does), then the conversation and its event in one
/// transaction. Prepared statements, like the service's. (The service also
/// sends BEGIN with its lookup and pipelines its two INSERTs, three round
/// trips to this script's five; pgbench's script cannot, as the event needs
/// the conversation id the first INSERT returns here.)
const PGBENCH_SCRIPT: &str = r"\set n random(1, :callers)
SELECT t.id AS tid, t.expires_at, t.revoked_at, t.last_used_at, u.id AS uid, u.org_id AS uorg, u.email, u.name, u.last_name, u.org_role, u.disabled_at, r.id AS rid, r.org_id AS rorg, r.workspace_id AS rws, r.name AS rname, r.disabled_at AS rdis, r.deleted_at AS rdel, w.deleted_at AS wdel, m.access FROM api_tokens t INNER JOIN users u ON t.user_id = u.id LEFT OUTER JOIN repos r ON r.id = :repo LEFT OUTER JOIN workspaces w ON r.workspace_id = w.id LEFT OUTER JOIN workspace_members m ON m.workspace_id = r.workspace_id AND m.user_id = u.id WHERE t.token_hash = sha256(convert_to('fbk_bench_' || :n, 'UTF8')) \gset
BEGIN;
INSERT INTO conversations (id, org_id, workspace_id, repo_id, created_by, title, tokens_in, tokens_out, created_at, last_updated_at) VALUES (gen_random_uuid(), :org, :ws, :repo, :uid, NULL, 0, 0, now(), now()) RETURNING id AS cid \gset
INSERT INTO system_events (id, org_id, workspace_id, user_id, context, context_id, event, json_data, created_at) VALUES (gen_random_uuid(), :org, :ws, :uid, 'conversation', :cid, 'created', jsonb_build_object('repoId', :repo::text, 'transport', 'grpc', 'requestId', :cid::text), now());
END;
";

/// The real limit of a create on PostgreSQL: one data-modifying statement, in
/// one round trip, prepared. It looks the token, the repository and the
/// caller's membership up, applies the rules' conditions (a live token of an
/// enabled user; a repository of the caller's organization, in a workspace,
/// enabled, neither it nor its workspace deleted; any access to the
/// workspace, or an organization administrator) and inserts the conversation
/// and its event.
const PGBENCH_ONE_STATEMENT: &str = r"\set n random(1, :callers)
WITH caller AS (SELECT u.id AS uid, u.org_id, r.id AS rid, r.workspace_id AS ws FROM api_tokens t JOIN users u ON u.id = t.user_id JOIN repos r ON r.id = :repo AND r.org_id = u.org_id JOIN workspaces w ON w.id = r.workspace_id LEFT JOIN workspace_members m ON m.workspace_id = r.workspace_id AND m.user_id = u.id WHERE t.token_hash = sha256(convert_to('fbk_bench_' || :n, 'UTF8')) AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now()) AND u.disabled_at IS NULL AND r.disabled_at IS NULL AND r.deleted_at IS NULL AND w.deleted_at IS NULL AND (m.access IS NOT NULL OR u.org_role IN ('admin', 'owner'))), conv AS (INSERT INTO conversations (id, org_id, workspace_id, repo_id, created_by, title, tokens_in, tokens_out, created_at, last_updated_at) SELECT gen_random_uuid(), org_id, ws, rid, uid, NULL, 0, 0, now(), now() FROM caller RETURNING id, org_id, workspace_id, created_by, repo_id) INSERT INTO system_events (id, org_id, workspace_id, user_id, context, context_id, event, json_data, created_at) SELECT gen_random_uuid(), org_id, workspace_id, created_by, 'conversation', id, 'created', jsonb_build_object('repoId', repo_id::text, 'transport', 'grpc', 'requestId', id::text), now() FROM conv;
";

/// The PostgreSQL ceilings: the one-statement create, at the better of the
/// clients' concurrency and 16 connections (the service pools its
/// connections, so the ceiling may too: on a 2-core machine 64 backends do
/// less than 16), and the five-statement script at the clients' concurrency.
fn pg_ceilings(
    db: &BenchDb,
    world: &World,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<(f64, Option<f64>)> {
    let mut one = pg_ceiling(db, world, clients, seconds, PGBENCH_ONE_STATEMENT)?;
    if clients != 16 {
        one = one.max(pg_ceiling(db, world, 16, seconds, PGBENCH_ONE_STATEMENT)?);
    }
    let five = pg_ceiling(db, world, clients, seconds, PGBENCH_SCRIPT)?;
    Ok((one, Some(five)))
}

fn pg_ceiling(
    db: &BenchDb,
    world: &World,
    clients: usize,
    seconds: u64,
    sql: &str,
) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("create.sql");
    std::fs::write(&script, sql)?;
    let out = std::process::Command::new("pgbench")
        .args(["-n", "-M", "prepared", "-j", "2"])
        .args([
            "-c",
            &clients.to_string(),
            "-T",
            &(seconds + WARMUP.as_secs()).to_string(),
        ])
        .args(["-D", &format!("callers={}", world.callers)])
        .args([
            "-D",
            &format!("org={}", world.org),
            "-D",
            &format!("ws={}", world.workspace),
        ])
        .args(["-D", &format!("repo={}", world.repo), "-f"])
        .arg(&script)
        .arg(&db.url)
        .output()
        .context("pgbench (from PostgreSQL's client tools) must be installed")?;
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "pgbench failed: {}{}",
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    let failed = text
        .lines()
        .find(|l| l.contains("number of failed transactions"))
        .unwrap_or("");
    if !failed.contains(": 0 ") && !failed.is_empty() {
        bail!("pgbench had failures: {failed}");
    }
    text.lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no tps in pgbench output")
}

/// The least SQL one create needs, on SQLite: the same statements (one
/// lookup, then the two INSERTs in one `BEGIN IMMEDIATE` transaction) from
/// `clients` threads on the same file with the service's pragmas, each
/// statement prepared once. The threads share one connection and take turns
/// with it, the best way to use the file that we know (the service's writer
/// does the same): with a connection per thread, every commit makes the other
/// connections' page caches stale and each create reads its pages again (that
/// loop made about 4,000 tx/s here, against the service's 4,500).
fn sqlite_ceiling(
    db: &BenchDb,
    world: &World,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<f64> {
    use conversation_service::store::schema::{
        api_tokens, conversations, repos, system_events, users, workspace_members, workspaces,
    };
    use conversation_service::store::types::{SqlJson, SqlTime, SqlUuid};
    use diesel::connection::SimpleConnection as _;
    use diesel::prelude::*;

    type Time = Option<chrono::DateTime<chrono::Utc>>;
    type Token = (
        Uuid,
        Time,
        Time,
        Time,
        Uuid,
        Uuid,
        String,
        Option<String>,
        Option<String>,
        String,
        Time,
    );
    type Repo = (
        Option<Uuid>,
        Option<Uuid>,
        Option<Uuid>,
        Option<String>,
        Time,
        Time,
        Time,
        Option<String>,
    );

    let path = db
        .url
        .strip_prefix("sqlite://")
        .expect("sqlite url")
        .to_owned();
    let mut conn = SqliteConnection::establish(&path)?;
    conn.batch_execute(&conversation_service::store::sqlite_setup_sql(
        &StoreOptions::default(),
    ))?;
    let conn = Arc::new(std::sync::Mutex::new(conn));
    let stop_at = Instant::now() + WARMUP + Duration::from_secs(seconds);
    let count_from = Instant::now() + WARMUP;
    let done = Arc::new(AtomicU64::new(0));
    let (org, ws, repo) = (world.org, world.workspace, world.repo);
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let (conn, done, callers) = (conn.clone(), done.clone(), world.callers);
            std::thread::spawn(move || -> anyhow::Result<()> {
                let hash =
                    conversation_service::auth::hash_token(&bench_token(i % callers + 1)).to_vec();
                while Instant::now() < stop_at {
                    let mut c = conn
                        .lock()
                        .map_err(|_| anyhow::anyhow!("connection poisoned"))?;
                    let c = &mut *c;
                    let (owner, _repo): (Token, Repo) = api_tokens::table
                        .inner_join(users::table)
                        .left_join(repos::table.on(repos::id.eq(SqlUuid(repo))))
                        .left_join(
                            workspaces::table.on(repos::workspace_id.eq(workspaces::id.nullable())),
                        )
                        .left_join(
                            workspace_members::table.on(workspace_members::workspace_id
                                .nullable()
                                .eq(repos::workspace_id)
                                .and(workspace_members::user_id.eq(users::id))),
                        )
                        .filter(api_tokens::token_hash.eq(&hash))
                        .select((
                            (
                                api_tokens::id,
                                api_tokens::expires_at,
                                api_tokens::revoked_at,
                                api_tokens::last_used_at,
                                users::id,
                                users::org_id,
                                users::email,
                                users::name,
                                users::last_name,
                                users::org_role,
                                users::disabled_at,
                            ),
                            (
                                repos::id.nullable(),
                                repos::org_id.nullable(),
                                repos::workspace_id.nullable(),
                                repos::name.nullable(),
                                repos::disabled_at.nullable(),
                                repos::deleted_at.nullable(),
                                workspaces::deleted_at.nullable(),
                                workspace_members::access.nullable(),
                            ),
                        ))
                        .first(c)?;
                    let (id, now) = (
                        Uuid::now_v7(),
                        SqlTime(conversation_service::store::types::now()),
                    );
                    let user = SqlUuid(owner.4);
                    c.immediate_transaction(|c| {
                        diesel::insert_into(conversations::table)
                            .values((
                                conversations::id.eq(SqlUuid(id)),
                                conversations::org_id.eq(SqlUuid(org)),
                                conversations::workspace_id.eq(SqlUuid(ws)),
                                conversations::repo_id.eq(SqlUuid(repo)),
                                conversations::created_by.eq(user),
                                conversations::title.eq(None::<String>),
                                conversations::tokens_in.eq(0),
                                conversations::tokens_out.eq(0),
                                conversations::created_at.eq(now),
                                conversations::last_updated_at.eq(now),
                            ))
                            .execute(c)?;
                        diesel::insert_into(system_events::table)
                            .values((
                                system_events::id.eq(SqlUuid(Uuid::now_v7())),
                                system_events::org_id.eq(SqlUuid(org)),
                                system_events::workspace_id.eq(Some(SqlUuid(ws))),
                                system_events::user_id.eq(Some(user)),
                                system_events::context.eq("conversation"),
                                system_events::context_id.eq(Some(SqlUuid(id))),
                                system_events::event.eq("created"),
                                system_events::json_data.eq(Some(SqlJson(serde_json::json!({
                                    "repoId": repo, "transport": "grpc", "requestId": id,
                                })))),
                                system_events::created_at.eq(now),
                            ))
                            .execute(c)?;
                        diesel::QueryResult::Ok(())
                    })?;
                    if Instant::now() >= count_from {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("ceiling thread panicked"))??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / seconds as f64)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let opts = parse_options()?;
    let binary = server_binary()?;
    println!(
        "| backend | existing | transport | clients | req/s | p50 ms | p90 ms | p99 ms | max ms | errors | server CPU s | server CPU µs/create | server peak MiB | ceiling tx/s | of ceiling | five-statement tx/s | of five |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for &backend in &opts.backends {
        for &existing in &opts.existing {
            for &clients in &opts.clients {
                // A fresh database per level, so each starts from `existing`.
                let db = BenchDb::create(backend).await?;
                let world = seed(&db, opts.callers, existing).await?;
                // This machine's throughput drifts by a fifth from one minute
                // to the next, so the ceiling and each transport take turns in
                // `rounds` short slices, and each figure sums its slices: a
                // drift then weighs on all of them alike.
                let measure_ceiling =
                    |db: &BenchDb, world: &World| -> anyhow::Result<(f64, Option<f64>)> {
                        match backend {
                            Backend::Postgres => pg_ceilings(db, world, clients, opts.seconds),
                            Backend::Sqlite => tokio::task::block_in_place(|| {
                                sqlite_ceiling(db, world, clients, opts.seconds).map(|c| (c, None))
                            }),
                        }
                    };
                let mut servers = Vec::new();
                for &transport in &opts.transports {
                    servers.push((transport, Server::start(&binary, &db.url).await?));
                }
                let mut ceilings = Vec::new();
                let mut rows: Vec<(Transport, Measured, f64)> = Vec::new();
                for _ in 0..opts.rounds {
                    if opts.ceiling {
                        ceilings.push(measure_ceiling(&db, &world)?);
                    }
                    for (i, (transport, server)) in servers.iter().enumerate() {
                        let cpu_before = server.cpu_seconds();
                        let m = drive(server, *transport, clients, opts.seconds, &world).await?;
                        let cpu = server.cpu_seconds() - cpu_before;
                        if let Some(e) = &m.first_error {
                            eprintln!("first error: {e}");
                        }
                        match rows.get_mut(i) {
                            None => rows.push((*transport, m, cpu)),
                            Some((_, sum, sum_cpu)) => {
                                sum.requests += m.requests;
                                sum.created += m.created;
                                sum.errors += m.errors;
                                sum.elapsed += m.elapsed;
                                sum.latencies_us.extend(m.latencies_us);
                                if sum.first_error.is_none() {
                                    sum.first_error = m.first_error;
                                }
                                *sum_cpu += cpu;
                            }
                        }
                    }
                }
                let mean = |values: Vec<f64>| {
                    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
                };
                if !ceilings.is_empty() {
                    let each: Vec<String> = ceilings
                        .iter()
                        .map(|(one, five)| match five {
                            Some(five) => format!("{one:.0} (five statements: {five:.0})"),
                            None => format!("{one:.0}"),
                        })
                        .collect();
                    eprintln!("ceiling slices: {} tx/s", each.join(", "));
                }
                let ceiling = mean(ceilings.iter().map(|c| c.0).collect());
                let second = mean(ceilings.iter().filter_map(|c| c.1).collect());
                for ((transport, mut m, cpu), (_, server)) in rows.into_iter().zip(servers) {
                    let peak = server.peak_rss_mib();
                    server.stop().await?;
                    m.latencies_us.sort_unstable();
                    let rps = m.requests as f64 / m.elapsed.as_secs_f64();
                    // CPU per create, warm-ups included (they create too).
                    let cpu_us = 1e6 * cpu / m.created.max(1) as f64;
                    let lat = &m.latencies_us;
                    println!(
                        "| {backend:?} | {existing} | {transport:?} | {clients} | {rps:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {cpu:.1} | {cpu_us:.0} | {peak:.1} | {} | {} | {} | {} |",
                        percentile(lat, 0.5),
                        percentile(lat, 0.9),
                        percentile(lat, 0.99),
                        lat.last().map_or(0.0, |v| f64::from(*v) / 1000.0),
                        m.errors,
                        ceiling.map_or("-".into(), |c| format!("{c:.0}")),
                        ceiling.map_or("-".into(), |c| format!("{:.0} %", 100.0 * rps / c)),
                        second.map_or("-".into(), |c| format!("{c:.0}")),
                        second.map_or("-".into(), |c| format!("{:.0} %", 100.0 * rps / c)),
                    );
                }
                db.drop_db().await?;
            }
        }
    }
    Ok(())
}
