//! Load generator: drives CreateConversation over gRPC and POST /conversation
//! over REST against a `conversation-service` it starts itself (the release
//! binary, as a child process) on SQLite or PostgreSQL, and runs beside it the
//! ceiling: the least SQL one create needs, straight against the same database
//! at the same concurrency (pgbench for PostgreSQL, a direct loop on one
//! connection to the same file for SQLite, committing as many creates together
//! as the clients keep waiting).
//!
//! With `--scenario prompt` or `--scenario stream` it measures the prompt path
//! instead: it starts a fake OpenAI-compatible model provider of its own on
//! 127.0.0.1 (answering in microseconds, or dripping its pieces with
//! `--piece-delay-ms`), has the service reach it (as a workspace's provider
//! configuration, or as the operator's `--provider-url`), prompts seeded
//! conversations over gRPC and REST (plain, or streamed) and, taking turns
//! with them, makes the same calls straight to the fake provider (the
//! "direct" baseline, the request the service sends a steady conversation's
//! model: what the service adds is the difference). With
//! `--history` the prompted conversations hold that many messages first, and
//! listing their messages is timed as well.
//!
//! ```sh
//! cargo run --release --example loadgen -- --backend postgres --clients 16,64 --seconds 10
//! cargo run --release --example loadgen -- --backend sqlite --existing 1000,100000,1000000
//! cargo run --release --example loadgen -- --scenario prompt --clients 16,64
//! cargo run --release --example loadgen -- --scenario stream --clients 1000 --piece-delay-ms 500 --seconds 20 --rounds 1
//! cargo run --release --example loadgen -- --scenario prompt --history 1000,100000 --clients 1,16
//! ```
//!
//! Every option is listed, with its default, by `--help` ([`USAGE`]).

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use conversation_service::auth::NewToken;
use conversation_service::domain::{Access, OrgRole};
use conversation_service::pb::conversation_service_client::ConversationServiceClient;
use conversation_service::pb::stream_prompt_conversation_response::Event as StreamEvent;
use conversation_service::pb::{
    CreateConversationRequest, ListMessagesRequest, PromptConversationRequest,
    StreamPromptConversationRequest,
};
use conversation_service::service::messages::MAX_CONTEXT_MESSAGES;
use conversation_service::store::admin::NewUser;
use conversation_service::store::{Backend, Store, StoreOptions};
use uuid::Uuid;

#[path = "../benches/support/mod.rs"]
mod support;
use support::{BenchDb, Stats, bulk_conversations};

const WARMUP: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Transport {
    Grpc,
    Rest,
}

/// What is measured.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Scenario {
    /// CreateConversation / POST /conversation, beside the database's ceiling.
    Create,
    /// Plain prompt turns, beside the same calls straight to the provider.
    Prompt,
    /// Streamed prompt turns, the same way.
    Stream,
}

/// How the service reaches the fake provider.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Via {
    /// A workspace's provider configuration (`POST /ai/llm`, attached to the
    /// repository; the service started with `--provider-allow-private`).
    Tenant,
    /// The operator's provider (`--provider-url`).
    Operator,
}

struct Options {
    scenario: Scenario,
    backends: Vec<Backend>,
    transports: Vec<Transport>,
    clients: Vec<usize>,
    seconds: u64,
    rounds: usize,
    existing: Vec<i64>,
    callers: usize,
    ceiling: bool,
    /// Pieces of each reply (streamed: one event each).
    pieces: usize,
    /// The fake provider's wait before each piece.
    piece_delay: Duration,
    via: Via,
    /// Messages already in each prompted conversation, a run each.
    history: Vec<i64>,
    /// Prompted conversations (default: one per client).
    conversations: Option<usize>,
}

/// What `--help` prints: every option.
const USAGE: &str = "\
loadgen: drives CreateConversation (gRPC) and POST /conversation (REST) against a
conversation-service it starts itself, beside the ceiling (the least SQL a create
needs, straight against the same database): on PostgreSQL one data-modifying
statement (pgbench, prepared; at the better of the clients' concurrency and 16
connections), with the five-statement script as the second ceiling; on SQLite
the best direct use of the file: one connection committing the creates waiting
together (the clients', at most 64) in one transaction and checkpointing on
another thread, as the service's writer does, with one transaction per create
(checkpointing in its commits) as the second ceiling. Ratios are printed
against each.

With --scenario prompt|stream it measures prompt turns instead (PromptConversation /
StreamPromptConversation over gRPC, POST /conversation/{id}/prompt over REST, plain or
with Accept: text/event-stream) against a fake OpenAI-compatible provider it starts
on 127.0.0.1, and beside them, taking turns, the same calls made straight to that
provider (\"direct\": reqwest, the same concurrency, the same request the service
sends once a conversation has had 100 turns: its latest 200 messages and the
prompt). It prints per transport and
clients: turns/s; latency p50/p99 with the direct p50/p99 and the service's added
p50; for streams the time to the first piece (p50/p99, direct, added); errors;
the server's CPU per turn (and per streamed piece), warm-up included; on PostgreSQL
its database backends' CPU per turn (on SQLite the database works inside the
server); the server's peak resident memory; the most streams (or plain turns)
open at once. Only turns that end within a slice count. With --history N it also
times GET /conversation/{id}/messages and ListMessages, one caller at a time, on
the first page and on the last (skip = total - 50), in a second table.

Usage: cargo run --release --example loadgen -- [options]

Options:
  --scenario create|prompt|stream  what to measure (default create)
  --backend sqlite|postgres|both   databases to run on (default both)
  --transport grpc|rest|both       transports to drive (default both)
  --clients 16,64                  concurrent clients, one level per value (default 16,64)
  --seconds N                      length of each slice, after a 2 s warm-up (default 10)
  --rounds N                       the ceiling (create) or the direct calls (prompt, stream)
                                   and each transport take turns N times (default 3)
  --existing 1000,100000           create: conversations already in the database, a run
                                   each (default 1000)
  --callers N                      distinct users with their own tokens (default 64)
  --no-ceiling                     create: skip the ceiling
  --pieces N                       prompt, stream: pieces of each reply, each a streamed
                                   event (default 20, of 8 bytes)
  --piece-delay-ms N               prompt, stream: the fake provider waits N ms before
                                   each piece (a plain reply: N times the pieces), to
                                   hold many streams open at once (default 0)
  --provider tenant|operator       prompt, stream: how the service reaches the fake
                                   provider: a workspace's configuration (POST /ai/llm,
                                   attached to the repository; the service runs with
                                   --provider-allow-private) or the operator's
                                   --provider-url (default tenant)
  --history 1000,100000            prompt, stream: messages already in each prompted
                                   conversation (bulk-loaded by SQL), a run each; above
                                   0 listing messages is timed too (default 0; a prompt
                                   sends the latest 200 as context, so 1000 against
                                   100000 compares lengths at the same context)
  --conversations N                prompt, stream: conversations prompted, client i
                                   prompting number i mod N as its creator (default:
                                   one per client)
  -h, --help                       print this and exit

The service is started with --max-concurrent-requests raised to twice the clients
when that is above its default of 256, and this process raises its own limit of
open files (and so the service's) to what the clients need, within the hard limit.

Environment:
  LOADGEN_SERVER=/path/to/conversation-service   drive another build (before/after runs)
  LOADGEN_SERVER_LOG=1                           let the service's log through to stderr
  BENCH_DATABASE_URL=postgres://...              PostgreSQL server (default
                                                 postgres://postgres@127.0.0.1:5432/postgres)
";

fn parse_options() -> anyhow::Result<Options> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        print!("{USAGE}");
        std::process::exit(0);
    }
    const KNOWN: [&str; 14] = [
        "--scenario",
        "--backend",
        "--transport",
        "--clients",
        "--seconds",
        "--rounds",
        "--existing",
        "--callers",
        "--no-ceiling",
        "--pieces",
        "--piece-delay-ms",
        "--provider",
        "--history",
        "--conversations",
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
    let scenario = match value("--scenario").as_deref().unwrap_or("create") {
        "create" => Scenario::Create,
        "prompt" => Scenario::Prompt,
        "stream" => Scenario::Stream,
        other => bail!("--scenario {other}: expected create, prompt or stream"),
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
    let via = match value("--provider").as_deref().unwrap_or("tenant") {
        "tenant" => Via::Tenant,
        "operator" => Via::Operator,
        other => bail!("--provider {other}: expected tenant or operator"),
    };
    Ok(Options {
        scenario,
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
        pieces: list("--pieces", "20")?[0].max(1) as usize,
        piece_delay: Duration::from_millis(list("--piece-delay-ms", "0")?[0].max(0) as u64),
        via,
        history: list("--history", "0")?
            .into_iter()
            .map(|h| h.max(0))
            .collect(),
        conversations: value("--conversations")
            .map(|v| v.trim().parse::<usize>().map(|n| n.max(1)))
            .transpose()
            .context("--conversations takes a number")?,
    })
}

/// What the world of one run holds.
struct World {
    org: Uuid,
    workspace: Uuid,
    repo: Uuid,
    callers: usize,
    /// The callers' user ids: `users[n - 1]` holds [`bench_token`]`(n)`.
    users: Vec<Uuid>,
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
    bulk_conversations(
        db,
        org,
        &[(workspace, repo)],
        &users,
        existing,
        Stats::Fresh,
    )
    .await?;
    Ok(World {
        org,
        workspace,
        repo,
        callers,
        users,
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

/// What a server is started with besides its addresses and its database.
#[derive(Clone, Default)]
struct ServerSetup {
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl ServerSetup {
    /// The service's limit of API requests in flight (256) refuses what is
    /// above it at once: for more clients than that it is raised to twice
    /// their number (said on stderr).
    fn for_clients(clients: usize) -> ServerSetup {
        let mut setup = ServerSetup::default();
        if clients > 256 {
            let limit = (2 * clients).to_string();
            eprintln!("the service runs with --max-concurrent-requests {limit}");
            setup
                .args
                .extend(["--max-concurrent-requests".into(), limit]);
        }
        setup
    }
}

impl Server {
    async fn start(
        binary: &PathBuf,
        database_url: &str,
        setup: &ServerSetup,
    ) -> anyhow::Result<Server> {
        let (http, grpc) = (free_port()?, free_port()?);
        let log = if std::env::var_os("LOADGEN_SERVER_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        };
        let child = tokio::process::Command::new(binary)
            .args([
                "serve",
                "--http-addr",
                &http.to_string(),
                "--grpc-addr",
                &grpc.to_string(),
            ])
            .args(&setup.args)
            .env("DATABASE_URL", database_url)
            .envs(setup.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
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
        process_cpu_seconds(&self.pid().to_string())
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

/// User plus system CPU seconds so far of process `pid`; 0 if it is gone.
fn process_cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
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

/// User plus system CPU seconds so far of the PostgreSQL backends serving
/// `db` (on this machine; their process titles name the database), or
/// `None` for SQLite, which works inside the service's own process.
fn database_cpu_seconds(db: &BenchDb) -> Option<f64> {
    if db.backend != Backend::Postgres {
        return None;
    }
    let name = db.url.rsplit('/').next().unwrap_or_default();
    let title = format!(" {name} ");
    let mut cpu = 0.0;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.starts_with("postgres:") && cmdline.contains(&title) {
            cpu += process_cpu_seconds(&pid);
        }
    }
    Some(cpu)
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
    let elapsed = measure_window(&counting, &stop, seconds).await;
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

/// The SQLite ceilings: the least SQL a create needs (the lookup and the
/// two INSERTs) in a loop on one connection to the same file, with the
/// pragmas of the service's writer, each statement prepared once. One
/// connection, because with a connection per thread every commit makes the
/// others' page caches stale and each create reads its pages again. First
/// as the service's writer does it, committing the creates waiting together
/// (the clients', up to its most per commit) in one transaction, each in a
/// savepoint, and checkpointing on a thread of its own; then one
/// transaction per create, checkpointing in its commits, the ceiling before
/// the writer committed in groups.
fn sqlite_ceilings(
    db: &BenchDb,
    world: &World,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<(f64, Option<f64>)> {
    let group = clients.clamp(1, conversation_service::store::writer::MOST_PER_COMMIT);
    let grouped = sqlite_ceiling(db, world, group, true, seconds)?;
    let one_each = sqlite_ceiling(db, world, 1, false, seconds)?;
    Ok((grouped, Some(one_each)))
}

/// [`sqlite_ceilings`]: creates in transactions of `group` each; with
/// `checkpoint_apart`, the WAL checkpointed by another thread and connection
/// as the service's checkpointer does (`PASSIVE`, every
/// [`CHECKPOINT_EVERY`](conversation_service::store::writer::CHECKPOINT_EVERY)).
fn sqlite_ceiling(
    db: &BenchDb,
    world: &World,
    group: usize,
    checkpoint_apart: bool,
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
    let mut c = SqliteConnection::establish(&path)?;
    c.batch_execute(&conversation_service::store::sqlite_setup_sql(
        &StoreOptions::default(),
    ))?;
    c.batch_execute(conversation_service::store::writer::SETUP_SQL)?;
    let stop_checkpoints = Arc::new(AtomicBool::new(false));
    let checkpointer = checkpoint_apart
        .then(|| -> anyhow::Result<_> {
            c.batch_execute("PRAGMA wal_autocheckpoint = 0;")?;
            let mut other = SqliteConnection::establish(&path)?;
            let stop = stop_checkpoints.clone();
            Ok(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(conversation_service::store::writer::CHECKPOINT_EVERY);
                    other
                        .batch_execute("PRAGMA wal_checkpoint(PASSIVE);")
                        .expect("a checkpoint");
                }
            }))
        })
        .transpose()?;
    let (org, ws, repo) = (world.org, world.workspace, world.repo);
    let hashes: Vec<Vec<u8>> = (1..=world.callers)
        .map(|i| conversation_service::auth::hash_token(&bench_token(i)).to_vec())
        .collect();
    let create = |c: &mut SqliteConnection, hash: &[u8]| -> QueryResult<()> {
        let (owner, _repo): (Token, Repo) = api_tokens::table
            .inner_join(users::table)
            .left_join(repos::table.on(repos::id.eq(SqlUuid(repo))))
            .left_join(workspaces::table.on(repos::workspace_id.eq(workspaces::id.nullable())))
            .left_join(
                workspace_members::table.on(workspace_members::workspace_id
                    .nullable()
                    .eq(repos::workspace_id)
                    .and(workspace_members::user_id.eq(users::id))),
            )
            .filter(api_tokens::token_hash.eq(hash))
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
        Ok(())
    };
    let mut measure = || -> QueryResult<u64> {
        let stop_at = Instant::now() + WARMUP + Duration::from_secs(seconds);
        let count_from = Instant::now() + WARMUP;
        let (mut done, mut next) = (0_u64, 0_usize);
        while Instant::now() < stop_at {
            c.immediate_transaction(|c| {
                for _ in 0..group {
                    let hash = &hashes[next % hashes.len()];
                    next += 1;
                    if group == 1 {
                        create(c, hash)?;
                    } else {
                        c.transaction(|c| create(c, hash))?;
                    }
                }
                QueryResult::Ok(())
            })?;
            if Instant::now() >= count_from {
                done += group as u64;
            }
        }
        Ok(done)
    };
    let done = measure();
    stop_checkpoints.store(true, Ordering::Relaxed);
    if let Some(checkpointer) = checkpointer {
        checkpointer.join().expect("the checkpointer");
    }
    Ok(done? as f64 / seconds as f64)
}

/// One slice: a warm-up, then `seconds` during which the clients count what
/// they do, then the stop; returns how long the counting lasted.
async fn measure_window(counting: &AtomicBool, stop: &AtomicBool, seconds: u64) -> Duration {
    tokio::time::sleep(WARMUP).await;
    counting.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    counting.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    elapsed
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
    let most = opts.clients.iter().copied().max().unwrap_or(1);
    // Per client: its connections to the service and to the fake provider,
    // the provider's ends of those and of the service's; the service's own.
    raise_open_files(8 * most as u64 + 1024);
    match opts.scenario {
        Scenario::Create => run_creates(&opts, &binary).await,
        Scenario::Prompt | Scenario::Stream => run_turns(&opts, &binary).await,
    }
}

/// The create scenario: each transport beside the database's ceiling.
async fn run_creates(opts: &Options, binary: &PathBuf) -> anyhow::Result<()> {
    println!(
        "| backend | existing | transport | clients | req/s | p50 ms | p90 ms | p99 ms | max ms | errors | server CPU s | server CPU µs/create | server peak MiB | ceiling tx/s | of ceiling | second ceiling tx/s | of second |"
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
                                sqlite_ceilings(db, world, clients, opts.seconds)
                            }),
                        }
                    };
                let mut servers = Vec::new();
                let setup = ServerSetup::for_clients(clients);
                for &transport in &opts.transports {
                    servers.push((transport, Server::start(binary, &db.url, &setup).await?));
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
                        .map(|(first, second)| match second {
                            Some(second) => format!("{first:.0} (second: {second:.0})"),
                            None => format!("{first:.0}"),
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

/// Raises this process's soft limit of open files to `need`, within its hard
/// limit, with util-linux's `prlimit` (this crate forbids `unsafe`, so it
/// does not call `setrlimit` itself); the service, started after, inherits
/// it. Says on stderr what it did, or why it could not.
fn raise_open_files(need: u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let parse = |v: &str| match v {
        "unlimited" => Some(u64::MAX),
        v => v.parse::<u64>().ok(),
    };
    let Some((soft, hard)) = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|l| {
            let mut values = l.split_whitespace();
            Some((parse(values.next()?)?, parse(values.next()?)?))
        })
    else {
        return;
    };
    if soft >= need {
        return;
    }
    let target = need.min(hard);
    if target < need {
        eprintln!(
            "warning: at most {hard} open files (the hard limit); these clients need about {need}"
        );
    }
    if target <= soft {
        return;
    }
    let raised = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &std::process::id().to_string(),
            &format!("--nofile={target}:"),
        ])
        .status();
    match raised {
        Ok(status) if status.success() => {
            eprintln!("open files: soft limit raised from {soft} to {target}")
        }
        _ => eprintln!(
            "warning: could not raise the open files limit ({soft}) with prlimit; \
             `ulimit -n {target}` before running"
        ),
    }
}

/// The model the fake provider offers and answers as.
const MODEL: &str = "loadgen-model";

/// What each prompt says (about 200 bytes).
const PROMPT: &str = "Explain what the build script of this repository does, which files it \
    generates, and why the generated code is not committed; keep the answer short and \
    mention anything that could break it.";

/// The token of the organization administrator who configures the provider.
const ADMIN_TOKEN: &str = "fbk_bench_admin";

/// A fake OpenAI-compatible model provider in this process, on 127.0.0.1:
/// `GET /v1/models` offers [`MODEL`]; `POST /v1/chat/completions` answers at
/// once with replies made once at start (never parsing the request beyond
/// looking for `"stream":true` and `"include_usage":true`): a whole
/// `chat.completion`, or with `"stream": true` server-sent events in OpenAI's
/// wire format (a role chunk, one `chat.completion.chunk` per piece, the
/// finish chunk, the usage chunk when the request asks for it, `data:
/// [DONE]`). With a piece delay it waits that long before each piece (a plain
/// reply: that long times the pieces).
struct FakeProvider {
    /// The API base, `http://127.0.0.1:<port>/v1`.
    base: String,
    /// The text of every reply (its pieces, joined).
    reply: String,
}

/// The fake provider's replies, made once.
struct FakeReplies {
    plain: axum::body::Bytes,
    role: axum::body::Bytes,
    pieces: Vec<axum::body::Bytes>,
    finish: axum::body::Bytes,
    usage: axum::body::Bytes,
    models: axum::body::Bytes,
    delay: Duration,
}

impl FakeProvider {
    async fn start(pieces: usize, delay: Duration) -> anyhow::Result<FakeProvider> {
        use serde_json::json;
        let event = |v: serde_json::Value| axum::body::Bytes::from(format!("data: {v}\n\n"));
        let chunk = |delta: serde_json::Value, finish: Option<&str>| {
            event(json!({
                "id": "chatcmpl-loadgen", "object": "chat.completion.chunk", "created": 0,
                "model": MODEL,
                "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
            }))
        };
        let texts: Vec<String> = (0..pieces)
            .map(|i| format!("piece{:02} ", i % 100))
            .collect();
        let reply = texts.concat();
        let usage = json!({
            "prompt_tokens": 50, "completion_tokens": pieces, "total_tokens": 50 + pieces,
        });
        let replies = FakeReplies {
            plain: axum::body::Bytes::from(
                json!({
                    "id": "chatcmpl-loadgen", "object": "chat.completion", "created": 0,
                    "model": MODEL,
                    "choices": [{
                        "index": 0, "finish_reason": "stop",
                        "message": { "role": "assistant", "content": reply },
                    }],
                    "usage": usage,
                })
                .to_string(),
            ),
            role: chunk(json!({ "role": "assistant", "content": "" }), None),
            pieces: texts
                .iter()
                .map(|t| chunk(json!({ "content": t }), None))
                .collect(),
            finish: chunk(json!({}), Some("stop")),
            usage: event(json!({
                "id": "chatcmpl-loadgen", "object": "chat.completion.chunk", "created": 0,
                "model": MODEL, "choices": [], "usage": usage,
            })),
            models: axum::body::Bytes::from(
                json!({
                    "object": "list",
                    "data": [{ "id": MODEL, "object": "model", "created": 0, "owned_by": "loadgen" }],
                })
                .to_string(),
            ),
            delay,
        };
        let app = axum::Router::new()
            .route("/v1/models", axum::routing::get(fake_models))
            .route("/v1/chat/completions", axum::routing::post(fake_chat))
            .with_state(Arc::new(replies));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        // Each piece goes out as it is written (without TCP_NODELAY the
        // second small write waits for the peer's delayed ACK, 40 ms).
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(FakeProvider {
            base: format!("http://{addr}/v1"),
            reply,
        })
    }

    fn completions(&self) -> String {
        format!("{}/chat/completions", self.base)
    }
}

async fn fake_models(
    axum::extract::State(replies): axum::extract::State<Arc<FakeReplies>>,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    (
        [(http::header::CONTENT_TYPE, "application/json")],
        replies.models.clone(),
    )
        .into_response()
}

async fn fake_chat(
    axum::extract::State(replies): axum::extract::State<Arc<FakeReplies>>,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let has = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    let delay = replies.delay;
    if !has(br#""stream":true"#) {
        if !delay.is_zero() {
            let pieces = u32::try_from(replies.pieces.len()).unwrap_or(u32::MAX);
            tokio::time::sleep(delay.saturating_mul(pieces)).await;
        }
        return (
            [(http::header::CONTENT_TYPE, "application/json")],
            replies.plain.clone(),
        )
            .into_response();
    }
    let mut events = Vec::with_capacity(replies.pieces.len() + 4);
    events.push((false, replies.role.clone()));
    events.extend(replies.pieces.iter().map(|p| (true, p.clone())));
    events.push((false, replies.finish.clone()));
    if has(br#""include_usage":true"#) {
        events.push((false, replies.usage.clone()));
    }
    events.push((false, axum::body::Bytes::from_static(b"data: [DONE]\n\n")));
    let body = futures_util::stream::unfold(events.into_iter(), move |mut rest| async move {
        let (piece, bytes) = rest.next()?;
        if piece && !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Some((Ok::<_, std::convert::Infallible>(bytes), rest))
    });
    (
        [
            (http::header::CONTENT_TYPE, "text/event-stream"),
            (http::header::CACHE_CONTROL, "no-cache"),
        ],
        axum::body::Body::from_stream(body),
    )
        .into_response()
}

/// The prompted conversations.
struct Plan {
    /// Each conversation, with the caller (as in [`bench_token`]) who
    /// created it and prompts it.
    conversations: Vec<(Uuid, usize)>,
    stream: bool,
}

/// SQLite's `now()` as the store writes times.
const SQLITE_NOW: &str = "strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z'";

/// The conversations to prompt (made by SQL, untitled, conversation `j`
/// created by caller `j mod callers + 1`), each with `history` messages
/// already (user and assistant in turn, about 250 bytes each, a second
/// apart; on PostgreSQL vacuumed after, as autovacuum would, so that the
/// visibility map is set), and the organization administrator who
/// configures the provider.
async fn seed_turns(
    db: &BenchDb,
    world: &World,
    conversations: usize,
    history: i64,
    stream: bool,
) -> anyhow::Result<Plan> {
    let store = Store::open(&db.url, &StoreOptions::default())?;
    let admin = store
        .create_user(NewUser {
            org_id: world.org,
            email: "admin@load.test".into(),
            name: Some("Admin".into()),
            last_name: None,
            role: OrgRole::Admin,
        })
        .await?;
    let token = NewToken {
        hash: conversation_service::auth::hash_token(ADMIN_TOKEN),
        secret: ADMIN_TOKEN.into(),
    };
    store
        .create_token(admin, "load".into(), &token, None)
        .await?;
    let plan: Vec<(Uuid, usize)> = (0..conversations)
        .map(|j| (Uuid::now_v7(), j % world.callers + 1))
        .collect();
    let now = match db.backend {
        Backend::Postgres => "now()",
        Backend::Sqlite => SQLITE_NOW,
    };
    let mut rows = Vec::new();
    for (id, caller) in &plan {
        let user = world
            .users
            .get(caller - 1)
            .context("a caller without a user")?;
        rows.push(format!(
            "({}, {}, {}, {}, {}, NULL, 0, 0, {now}, {now})",
            db.uuid(*id),
            db.uuid(world.org),
            db.uuid(world.workspace),
            db.uuid(world.repo),
            db.uuid(*user),
        ));
    }
    db.exec(&format!(
        "INSERT INTO conversations (id, org_id, workspace_id, repo_id, created_by, title, \
         tokens_in, tokens_out, created_at, last_updated_at) VALUES {}",
        rows.join(",\n")
    ))
    .await?;
    if history > 0 {
        let ids: Vec<String> = plan
            .iter()
            .map(|(id, _)| format!("({})", db.uuid(*id)))
            .collect();
        let ids = ids.join(", ");
        let text = "'Message ' || i || ': a question about the repository, or the answer \
            to one, as long as such messages usually are; it names files, functions and \
            errors, and quotes a few lines of code now and then, like this one here.'";
        let role = "CASE WHEN i % 2 = 1 THEN 'user' ELSE 'assistant' END";
        let sql = match db.backend {
            Backend::Postgres => format!(
                "INSERT INTO messages (id, conversation_id, seq, role, content, model, token_count, metadata, created_at)
                 SELECT gen_random_uuid(), c.id, i, {role}, {text}, '{MODEL}', 60, '{{}}'::jsonb,
                        now() - ({history} - i) * interval '1 second'
                 FROM (VALUES {ids}) AS c(id), generate_series(1, {history}) AS i;
                 VACUUM ANALYZE messages"
            ),
            Backend::Sqlite => format!(
                "WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < {history})
                 INSERT INTO messages (id, conversation_id, seq, role, content, model, token_count, metadata, created_at)
                 SELECT randomblob(16), c.column1, i, {role}, {text}, '{MODEL}', 60, '{{}}',
                        strftime('%Y-%m-%dT%H:%M:%f', 'now', '-' || ({history} - i) || ' seconds') || '000Z'
                 FROM (VALUES {ids}) AS c, seq;
                 ANALYZE;"
            ),
        };
        let started = Instant::now();
        db.exec(&sql).await?;
        eprintln!(
            "loaded {history} messages into each of {} conversations in {:.1} s",
            plan.len(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(Plan {
        conversations: plan,
        stream,
    })
}

/// How the service is started for prompts: reaching the fake provider as
/// `opts` says (a tenant's configuration needs private endpoints allowed and
/// a master key, the same for every server of the run), with a provider
/// time limit above the slowest reply.
fn turn_setup(opts: &Options, clients: usize, fake: &FakeProvider) -> ServerSetup {
    use secrecy::ExposeSecret as _;
    let mut setup = ServerSetup::for_clients(clients);
    match opts.via {
        Via::Tenant => {
            setup.args.push("--provider-allow-private".into());
            let (_, key) = conversation_service::secrets::MasterKey::generate();
            setup
                .env
                .push(("SECRETS_KEY".into(), key.expose_secret().to_owned()));
        }
        Via::Operator => setup
            .args
            .extend(["--provider-url".into(), fake.base.clone()]),
    }
    let pieces = u32::try_from(opts.pieces).unwrap_or(u32::MAX);
    let reply = opts.piece_delay.saturating_mul(pieces);
    if reply > Duration::from_secs(30) {
        let limit = format!("{}s", 2 * reply.as_secs() + 10);
        setup.args.extend(["--provider-timeout".into(), limit]);
    }
    setup
}

/// Connects the fake provider to the repository as a workspace's
/// configuration (`POST /ai/llm`, `POST /ai/llm/{id}/repos`), as the
/// organization administrator.
async fn connect_provider(
    server: &Server,
    world: &World,
    fake: &FakeProvider,
) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let base = format!("http://{}", server.http);
    let post = async |path: String, body: serde_json::Value| -> anyhow::Result<serde_json::Value> {
        let response = http
            .post(format!("{base}{path}"))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        anyhow::ensure!(status == 200, "POST {path}: HTTP {status}: {text}");
        Ok(serde_json::from_str(&text)?)
    };
    let created = post(
        "/ai/llm".into(),
        serde_json::json!({
            "name": "loadgen", "aiType": "OTHER", "endpoint": fake.base,
            "secret": "sk-loadgen-fake-provider", "workspaceId": world.workspace,
        }),
    )
    .await?;
    let id = created["aiLlmId"]
        .as_str()
        .with_context(|| format!("no aiLlmId in {created}"))?;
    post(
        format!("/ai/llm/{id}/repos"),
        serde_json::json!({ "repoId": world.repo }),
    )
    .await?;
    Ok(())
}

/// Where a client's turns go.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Target {
    /// Straight to the fake provider.
    Direct,
    /// Through the service.
    Service(Transport),
}

impl Target {
    fn name(self) -> String {
        match self {
            Target::Direct => "direct".into(),
            Target::Service(t) => format!("{t:?}"),
        }
    }
}

/// How many turns (plain: requests in flight; streamed: streams with their
/// headers received and not yet ended) are open now, and the most so far.
#[derive(Default)]
struct Gauge {
    now: AtomicU64,
    most: AtomicU64,
}

impl Gauge {
    fn enter(&self) -> Opened<'_> {
        let now = self.now.fetch_add(1, Ordering::Relaxed) + 1;
        self.most.fetch_max(now, Ordering::Relaxed);
        Opened(self)
    }
}

/// One open turn; closed when dropped.
struct Opened<'a>(&'a Gauge);

impl Drop for Opened<'_> {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What one turn saw.
#[derive(Default)]
struct TurnSeen {
    /// From the request to the first piece (streamed turns).
    first_piece: Option<Duration>,
    pieces: u64,
}

impl TurnSeen {
    fn piece(&mut self, started: Instant) {
        self.first_piece.get_or_insert_with(|| started.elapsed());
        self.pieces += 1;
    }
}

/// The messages the service sends the provider once a conversation has had
/// 100 turns here (a tenth of a second at one client): its latest
/// [`MAX_CONTEXT_MESSAGES`] messages, this load generator's prompts and the
/// fake provider's replies in turn, then the prompt. The direct calls send
/// the same, so that what the service adds is measured against the same
/// request, not against a lone message (the first turn's).
fn steady_context(fake: &FakeProvider) -> Vec<serde_json::Value> {
    let mut messages: Vec<serde_json::Value> = (0..MAX_CONTEXT_MESSAGES)
        .map(|i| {
            let (role, content) = if i % 2 == 0 {
                ("user", PROMPT)
            } else {
                ("assistant", fake.reply.as_str())
            };
            serde_json::json!({ "role": role, "content": content })
        })
        .collect();
    messages.push(serde_json::json!({ "role": "user", "content": PROMPT }));
    messages
}

/// One client's means of making turns against one target.
struct TurnClient {
    target: Target,
    stream: bool,
    http: reqwest::Client,
    grpc: Option<ConversationServiceClient<H2Conn>>,
    /// The prompt route, or the provider's completions.
    url: String,
    /// The JSON body (REST and direct).
    body: String,
    /// `Bearer <token>` of the conversation's creator.
    authorization: String,
    conversation: String,
}

/// Whether a Chat Completions chunk carries a piece of the reply.
fn carries_piece(data: &str) -> bool {
    data.contains(r#""content":""#) && !data.contains(r#""content":"""#)
}

impl TurnClient {
    /// The clients of one slice: client `i` prompts conversation `i mod n` as
    /// its creator (direct: the request the service sends the fake provider
    /// for a steady conversation, [`steady_context`]), each with its own
    /// HTTP/2 connection for gRPC, and a shared reqwest pool otherwise.
    async fn all(
        target: Target,
        server: Option<&Server>,
        fake: &FakeProvider,
        plan: &Plan,
        clients: usize,
    ) -> anyhow::Result<Vec<TurnClient>> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(clients)
            .build()?;
        let server = match (target, server) {
            (Target::Direct, _) => None,
            (Target::Service(_), Some(server)) => Some(server),
            (Target::Service(_), None) => bail!("no server to drive"),
        };
        let mut all = Vec::with_capacity(clients);
        for i in 0..clients {
            let (conversation, caller) = plan.conversations[i % plan.conversations.len()];
            let (url, body) = match server {
                None => {
                    let mut body = serde_json::json!({
                        "model": MODEL,
                        "messages": steady_context(fake),
                        "stream": plan.stream,
                    });
                    if plan.stream {
                        body["stream_options"] = serde_json::json!({ "include_usage": true });
                    }
                    (fake.completions(), body.to_string())
                }
                Some(server) => (
                    format!("http://{}/conversation/{conversation}/prompt", server.http),
                    serde_json::json!({ "prompt": PROMPT, "model": MODEL }).to_string(),
                ),
            };
            let grpc = match (target, server) {
                (Target::Service(Transport::Grpc), Some(server)) => {
                    let origin: http::Uri = format!("http://{}", server.grpc).parse()?;
                    let conn = H2Conn::connect(server.grpc).await?;
                    Some(ConversationServiceClient::with_origin(conn, origin))
                }
                _ => None,
            };
            all.push(TurnClient {
                target,
                stream: plan.stream,
                http: http.clone(),
                grpc,
                url,
                body,
                authorization: format!("Bearer {}", bench_token(caller)),
                conversation: conversation.to_string(),
            });
        }
        Ok(all)
    }

    /// One turn, to its end (a streamed one: to its last event).
    async fn turn(&mut self, started: Instant, open: &Gauge) -> Result<TurnSeen, String> {
        use eventsource_stream::Eventsource as _;
        use futures_util::StreamExt as _;
        let mut seen = TurnSeen::default();
        if let Target::Service(Transport::Grpc) = self.target {
            return self.grpc_turn(started, open).await;
        }
        let mut request = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .body(self.body.clone());
        if self.target != Target::Direct {
            request = request.header("authorization", &self.authorization);
        }
        if self.stream {
            request = request.header("accept", "text/event-stream");
        }
        let in_flight = (!self.stream).then(|| open.enter());
        let response = request.send().await.map_err(|e| e.to_string())?;
        if response.status() != 200 {
            return Err(format!(
                "HTTP {}: {}",
                response.status(),
                response.text().await.unwrap_or_default()
            ));
        }
        if !self.stream {
            response.bytes().await.map_err(|e| e.to_string())?;
            drop(in_flight);
            return Ok(seen);
        }
        let _open = open.enter();
        let mut events = response.bytes_stream().eventsource();
        let mut done = false;
        // Read to the body's end (its connection is then reused).
        while let Some(event) = events.next().await {
            let event = event.map_err(|e| e.to_string())?;
            match self.target {
                Target::Direct if event.data == "[DONE]" => done = true,
                Target::Direct if carries_piece(&event.data) => seen.piece(started),
                Target::Direct => {}
                Target::Service(_) => match event.event.as_str() {
                    "delta" => seen.piece(started),
                    "done" => done = true,
                    "error" => return Err(event.data),
                    _ => {}
                },
            }
        }
        if done {
            Ok(seen)
        } else {
            Err("the stream ended before its last event".into())
        }
    }

    async fn grpc_turn(&mut self, started: Instant, open: &Gauge) -> Result<TurnSeen, String> {
        let mut seen = TurnSeen::default();
        let grpc = self.grpc.as_mut().ok_or("no gRPC connection")?;
        let authorization: tonic::metadata::AsciiMetadataValue = self
            .authorization
            .parse()
            .map_err(|_| "the token is not ASCII".to_owned())?;
        let status = |s: tonic::Status| format!("{:?}: {}", s.code(), s.message());
        if !self.stream {
            let mut request = tonic::Request::new(PromptConversationRequest {
                conversation_id: self.conversation.clone(),
                prompt: PROMPT.into(),
                model: MODEL.into(),
            });
            request
                .metadata_mut()
                .insert("authorization", authorization);
            let _in_flight = open.enter();
            grpc.prompt_conversation(request).await.map_err(status)?;
            return Ok(seen);
        }
        let mut request = tonic::Request::new(StreamPromptConversationRequest {
            conversation_id: self.conversation.clone(),
            prompt: PROMPT.into(),
            model: MODEL.into(),
            ..Default::default()
        });
        request
            .metadata_mut()
            .insert("authorization", authorization);
        let mut events = grpc
            .stream_prompt_conversation(request)
            .await
            .map_err(status)?
            .into_inner();
        let _open = open.enter();
        let mut done = false;
        // Read to the rpc's end (its status), as a gRPC client should: one
        // that drops the call at its done event makes its HTTP/2 library
        // reset the stream, and h2 closes a connection that resets too many
        // (ENHANCE_YOUR_CALM, "too_many_internal_resets").
        while let Some(event) = events.message().await.map_err(status)? {
            match event.event {
                Some(StreamEvent::Delta(_)) => seen.piece(started),
                Some(StreamEvent::Done(_)) => done = true,
                None => {}
            }
        }
        if done {
            Ok(seen)
        } else {
            Err("the stream ended before its done event".into())
        }
    }
}

/// What one slice of turns (or several, summed) saw.
#[derive(Default)]
struct TurnsMeasured {
    /// Turns finished within the measured window (errors included).
    turns: u64,
    /// Turns completed, warm-up and drain included (for CPU per turn).
    completed: u64,
    /// Pieces received, warm-up and drain included (for CPU per piece).
    pieces: u64,
    errors: u64,
    first_error: Option<String>,
    latencies_us: Vec<u32>,
    first_piece_us: Vec<u32>,
    elapsed: Duration,
    most_open: u64,
}

impl TurnsMeasured {
    fn absorb(&mut self, other: TurnsMeasured) {
        self.turns += other.turns;
        self.completed += other.completed;
        self.pieces += other.pieces;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latencies_us.extend(other.latencies_us);
        self.first_piece_us.extend(other.first_piece_us);
        self.elapsed += other.elapsed;
        self.most_open = self.most_open.max(other.most_open);
    }

    fn sort(&mut self) {
        self.latencies_us.sort_unstable();
        self.first_piece_us.sort_unstable();
    }
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// Runs `clients`, each making turn after turn, for a warm-up and then
/// `seconds` measured; turns that end within the window count.
async fn drive_turns(clients: Vec<TurnClient>, seconds: u64) -> anyhow::Result<TurnsMeasured> {
    let counting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let completed = Arc::new(AtomicU64::new(0));
    let pieces = Arc::new(AtomicU64::new(0));
    let open = Arc::new(Gauge::default());
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let mut tasks = tokio::task::JoinSet::new();
    for mut client in clients {
        let (counting, stop, errors, completed, pieces, open, first_error) = (
            counting.clone(),
            stop.clone(),
            errors.clone(),
            completed.clone(),
            pieces.clone(),
            open.clone(),
            first_error.clone(),
        );
        tasks.spawn(async move {
            let (mut latencies, mut firsts) = (Vec::new(), Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let outcome = client.turn(started, &open).await;
                if let Ok(seen) = &outcome {
                    completed.fetch_add(1, Ordering::Relaxed);
                    pieces.fetch_add(seen.pieces, Ordering::Relaxed);
                }
                if !counting.load(Ordering::Relaxed) {
                    continue;
                }
                latencies.push(micros(started.elapsed()));
                match outcome {
                    Ok(seen) => firsts.extend(seen.first_piece.map(micros)),
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut first) = first_error.lock() {
                            first.get_or_insert(e);
                        }
                    }
                }
            }
            (latencies, firsts)
        });
    }
    let elapsed = measure_window(&counting, &stop, seconds).await;
    let mut measured = TurnsMeasured {
        elapsed,
        ..TurnsMeasured::default()
    };
    while let Some(part) = tasks.join_next().await {
        let (latencies, firsts) = part?;
        measured.latencies_us.extend(latencies);
        measured.first_piece_us.extend(firsts);
    }
    measured.turns = measured.latencies_us.len() as u64;
    measured.completed = completed.load(Ordering::Relaxed);
    measured.pieces = pieces.load(Ordering::Relaxed);
    measured.errors = errors.load(Ordering::Relaxed);
    measured.most_open = open.most.load(Ordering::Relaxed);
    measured.first_error = first_error.lock().ok().and_then(|mut e| e.take());
    Ok(measured)
}

/// What a server spent over a row's slices: CPU seconds (its own, and its
/// PostgreSQL backends'), and its peak resident memory in MiB.
#[derive(Clone, Copy)]
struct ServerCost {
    cpu: f64,
    db_cpu: Option<f64>,
    peak_mib: f64,
}

/// One row of the prompt table (`at`: backend, history, clients): `m`'s
/// rate and latencies, beside the direct calls' (`direct`) for a service row
/// (one with its server's `cost`); the first error goes to stderr.
fn turn_row(
    (backend, history, clients): (Backend, i64, usize),
    stream: bool,
    target: Target,
    m: &TurnsMeasured,
    direct: &TurnsMeasured,
    cost: Option<ServerCost>,
) -> String {
    if let Some(e) = &m.first_error {
        eprintln!("{} first error: {e}", target.name());
    }
    let ms = |sorted: &[u32], p: f64| format!("{:.2}", percentile(sorted, p));
    let added = |sorted: &[u32], base: &[u32]| {
        format!("{:+.2}", percentile(sorted, 0.5) - percentile(base, 0.5))
    };
    let dash = || "-".to_owned();
    let rate = m.turns as f64 / m.elapsed.as_secs_f64().max(1e-9);
    let (lat, first) = (&m.latencies_us, &m.first_piece_us);
    let mut cells = vec![
        format!("{backend:?}"),
        history.to_string(),
        target.name(),
        clients.to_string(),
        format!("{rate:.0}"),
        ms(lat, 0.5),
        ms(lat, 0.99),
    ];
    let base = &direct.latencies_us;
    match cost {
        Some(_) => cells.extend([ms(base, 0.5), ms(base, 0.99), added(lat, base)]),
        None => cells.extend([dash(), dash(), dash()]),
    }
    if stream {
        let base = &direct.first_piece_us;
        cells.extend([ms(first, 0.5), ms(first, 0.99)]);
        match cost {
            Some(_) => cells.extend([ms(base, 0.5), ms(base, 0.99), added(first, base)]),
            None => cells.extend([dash(), dash(), dash()]),
        }
    }
    cells.push(m.errors.to_string());
    let per_turn = |cpu: f64| format!("{:.0}", 1e6 * cpu / m.completed.max(1) as f64);
    match cost {
        Some(ServerCost {
            cpu,
            db_cpu,
            peak_mib,
        }) => {
            cells.push(per_turn(cpu));
            if stream {
                cells.push(format!("{:.1}", 1e6 * cpu / m.pieces.max(1) as f64));
            }
            cells.push(db_cpu.map_or_else(dash, per_turn));
            cells.push(format!("{peak_mib:.1}"));
        }
        None => {
            cells.push(dash());
            if stream {
                cells.push(dash());
            }
            cells.extend([dash(), dash()]);
        }
    }
    cells.push(m.most_open.to_string());
    format!("| {} |", cells.join(" | "))
}

/// Requests before the timed ones, and timed ones, when listing messages.
const LIST_WARMUP: usize = 30;
const LIST_TIMED: usize = 300;
/// The page size listed.
const LIST_TAKE: i64 = 50;

/// Times listing a conversation's messages as its creator, one request at a
/// time: the first page (`skip` 0) or the last (`skip` = total - 50).
/// Returns the latencies (µs, sorted) and the conversation's total.
async fn time_listing(
    server: &Server,
    transport: Transport,
    (conversation, caller): (Uuid, usize),
    last: bool,
) -> anyhow::Result<(Vec<u32>, u64)> {
    let authorization = format!("Bearer {}", bench_token(caller));
    let http = reqwest::Client::new();
    let mut grpc = match transport {
        Transport::Grpc => {
            let origin: http::Uri = format!("http://{}", server.grpc).parse()?;
            Some(ConversationServiceClient::with_origin(
                H2Conn::connect(server.grpc).await?,
                origin,
            ))
        }
        Transport::Rest => None,
    };
    // One page: the total it reports.
    let mut list = async |skip: i64| -> anyhow::Result<u64> {
        match grpc.as_mut() {
            Some(grpc) => {
                let mut request = tonic::Request::new(ListMessagesRequest {
                    conversation_id: conversation.to_string(),
                    take: Some(LIST_TAKE),
                    skip: Some(skip),
                });
                request
                    .metadata_mut()
                    .insert("authorization", authorization.parse()?);
                let page = grpc.list_messages(request).await?.into_inner();
                Ok(page.total)
            }
            None => {
                let url = format!(
                    "http://{}/conversation/{conversation}/messages?take={LIST_TAKE}&skip={skip}",
                    server.http
                );
                let response = http
                    .get(url)
                    .header("authorization", &authorization)
                    .send()
                    .await?;
                let status = response.status();
                let body = response.bytes().await?;
                anyhow::ensure!(
                    status == 200,
                    "HTTP {status}: {}",
                    String::from_utf8_lossy(&body)
                );
                let page: serde_json::Value = serde_json::from_slice(&body)?;
                page["total"].as_u64().context("no total in the page")
            }
        }
    };
    let total = list(0).await?;
    let skip = if last {
        i64::try_from(total)
            .unwrap_or(i64::MAX)
            .saturating_sub(LIST_TAKE)
            .max(0)
    } else {
        0
    };
    let mut latencies = Vec::with_capacity(LIST_TIMED);
    for i in 0..LIST_WARMUP + LIST_TIMED {
        let started = Instant::now();
        list(skip).await?;
        if i >= LIST_WARMUP {
            latencies.push(micros(started.elapsed()));
        }
    }
    latencies.sort_unstable();
    Ok((latencies, total))
}

/// The prompt and stream scenarios: per backend, history and clients, a
/// fresh database with the conversations to prompt, a server per transport,
/// then `rounds` of: the direct calls, each transport in turn.
async fn run_turns(opts: &Options, binary: &PathBuf) -> anyhow::Result<()> {
    let stream = opts.scenario == Scenario::Stream;
    let fake = FakeProvider::start(opts.pieces, opts.piece_delay).await?;
    eprintln!(
        "fake provider at {}: replies of {} pieces of 8 bytes, {} ms before each; the service \
         reaches it as {}",
        fake.base,
        opts.pieces,
        opts.piece_delay.as_millis(),
        match opts.via {
            Via::Tenant => "a workspace's configuration",
            Via::Operator => "the operator's --provider-url",
        }
    );
    if stream {
        println!(
            "| backend | history | transport | clients | turns/s | p50 ms | p99 ms | direct p50 ms | direct p99 ms | added p50 ms | first piece p50 ms | first piece p99 ms | direct first p50 ms | direct first p99 ms | added first p50 ms | errors | server CPU µs/turn | server CPU µs/piece | PostgreSQL CPU µs/turn | server peak MiB | most open |"
        );
        println!(
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        );
    } else {
        println!(
            "| backend | history | transport | clients | turns/s | p50 ms | p99 ms | direct p50 ms | direct p99 ms | added p50 ms | errors | server CPU µs/turn | PostgreSQL CPU µs/turn | server peak MiB | most open |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    }
    let mut listings = Vec::new();
    for &backend in &opts.backends {
        for &history in &opts.history {
            for &clients in &opts.clients {
                let db = BenchDb::create(backend).await?;
                let result =
                    turns_level(opts, binary, &db, &fake, history, clients, &mut listings).await;
                db.drop_db().await?;
                result?;
            }
        }
    }
    if !listings.is_empty() {
        println!();
        println!(
            "| backend | history | clients | transport | page | messages | p50 ms | p99 ms | max ms | requests |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|");
        for row in listings {
            println!("{row}");
        }
    }
    Ok(())
}

/// One level of the prompt scenarios (see [`run_turns`]); its rows are
/// printed, the listing rows added to `listings`.
async fn turns_level(
    opts: &Options,
    binary: &PathBuf,
    db: &BenchDb,
    fake: &FakeProvider,
    history: i64,
    clients: usize,
    listings: &mut Vec<String>,
) -> anyhow::Result<()> {
    let stream = opts.scenario == Scenario::Stream;
    let backend = db.backend;
    let world = seed(db, opts.callers, 0).await?;
    let conversations = opts.conversations.unwrap_or(clients);
    let plan = seed_turns(db, &world, conversations, history, stream).await?;
    let setup = turn_setup(opts, clients, fake);
    let mut servers = Vec::new();
    for &transport in &opts.transports {
        servers.push((transport, Server::start(binary, &db.url, &setup).await?));
    }
    if let (Via::Tenant, Some((_, server))) = (opts.via, servers.first()) {
        connect_provider(server, &world, fake).await?;
    }
    let mut direct = TurnsMeasured::default();
    let mut rows: Vec<(Transport, TurnsMeasured, ServerCost)> = Vec::new();
    for _ in 0..opts.rounds {
        let direct_clients = TurnClient::all(Target::Direct, None, fake, &plan, clients).await?;
        direct.absorb(drive_turns(direct_clients, opts.seconds).await?);
        for (i, (transport, server)) in servers.iter().enumerate() {
            let target = Target::Service(*transport);
            let turn_clients = TurnClient::all(target, Some(server), fake, &plan, clients).await?;
            let (cpu_before, db_before) = (server.cpu_seconds(), database_cpu_seconds(db));
            let m = drive_turns(turn_clients, opts.seconds).await?;
            let cost = ServerCost {
                cpu: server.cpu_seconds() - cpu_before,
                db_cpu: database_cpu_seconds(db).zip(db_before).map(|(a, b)| a - b),
                peak_mib: 0.0,
            };
            match rows.get_mut(i) {
                None => rows.push((*transport, m, cost)),
                Some((_, sum, sum_cost)) => {
                    sum.absorb(m);
                    sum_cost.cpu += cost.cpu;
                    sum_cost.db_cpu = sum_cost.db_cpu.zip(cost.db_cpu).map(|(a, b)| a + b);
                }
            }
        }
    }
    direct.sort();
    let at = (backend, history, clients);
    println!(
        "{}",
        turn_row(at, stream, Target::Direct, &direct, &direct, None)
    );
    for ((transport, m, cost), (_, server)) in rows.iter_mut().zip(&servers) {
        m.sort();
        cost.peak_mib = server.peak_rss_mib();
        let (target, cost) = (Target::Service(*transport), *cost);
        println!("{}", turn_row(at, stream, target, m, &direct, Some(cost)));
    }
    let ms = |sorted: &[u32], p: f64| format!("{:.2}", percentile(sorted, p));
    if history > 0 {
        let first = *plan
            .conversations
            .first()
            .context("no conversation to list")?;
        for (transport, server) in &servers {
            for (last, page) in [(false, "first"), (true, "last")] {
                let (lat, total) = time_listing(server, *transport, first, last).await?;
                listings.push(format!(
                    "| {backend:?} | {history} | {clients} | {transport:?} | {page} | {total} | {} | {} | {} | {} |",
                    ms(&lat, 0.5),
                    ms(&lat, 0.99),
                    lat.last().map_or("-".into(), |v| format!("{:.2}", f64::from(*v) / 1000.0)),
                    lat.len(),
                ));
            }
        }
    }
    for (_, server) in servers {
        server.stop().await?;
    }
    Ok(())
}
