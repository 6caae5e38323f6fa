//! Benchmark: what governance policies add to a prompt turn, end to end
//! (REST, the real server on SQLite or PostgreSQL, a model on 127.0.0.1
//! answering at once). Three setups, measured in alternating rounds so the
//! machine's drift falls on all alike:
//! - `none`: no policy applies (the applicable policies come from the cache);
//! - `patterns`: 5 pattern policies of 20 expressions each (100 regular
//!   expressions: keys, card numbers, private keys), on the prompt and the
//!   reply, all passing;
//! - the same, with a blocking one (the reply is then held and checked while
//!   it streams; here, a plain prompt: checked whole).
//!
//! Run with `cargo bench --bench policies` (`-- --turns N`, `--sqlite-only`,
//! `--postgres-only`). Prints median and p90 per turn, and the medians'
//! difference to `none`.

use std::time::{Duration, Instant};

use conversation_service::auth::generate_token;
use conversation_service::domain::{Access, OrgRole};
use conversation_service::provider::ProviderConfig;
use conversation_service::server::{self, Config};
use conversation_service::store::admin::NewUser;
use conversation_service::store::{Backend, Store, StoreOptions};
use serde_json::{Value, json};
use uuid::Uuid;

mod support;
use support::BenchDb;

const ROUNDS: usize = 5;

/// A model answering every completion at once with a 1 KiB reply.
async fn fake_model() -> anyhow::Result<String> {
    let reply = "All good here; nothing secret. ".repeat(34);
    let chat = move || {
        let reply = reply.clone();
        async move {
            axum::Json(json!({
                "id": "c1", "model": "m",
                "choices": [{ "message": { "role": "assistant", "content": reply }, "finish_reason": "stop" }],
                "usage": { "prompt_tokens": 5, "completion_tokens": 3 },
            }))
        }
    };
    let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(chat));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}/v1"))
}

/// 20 expressions of the kind pattern policies hold.
fn expressions(n: usize) -> Vec<String> {
    let base = [
        r"sk-[A-Za-z0-9]{20,}",
        r"AKIA[0-9A-Z]{16}",
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
        r"\b(?:\d[ -]*?){13,16}\b",
        r"xox[baprs]-[0-9A-Za-z-]{10,}",
    ];
    (0..20)
        .map(|i| format!("{}|secret-marker-{n}-{i}", base[i % base.len()]))
        .collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let turns: usize = args
        .iter()
        .position(|a| a == "--turns")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse())
        .transpose()?
        .unwrap_or(200);
    let sqlite = !args.iter().any(|a| a == "--postgres-only");
    let postgres = !args.iter().any(|a| a == "--sqlite-only");
    println!("# A prompt turn (REST, plain), median / p90 of {turns} turns x {ROUNDS} rounds");
    println!("| backend | policies | median | p90 | median added |");
    println!("|---|---|---|---|---|");
    for (_, backend) in [(sqlite, Backend::Sqlite), (postgres, Backend::Postgres)]
        .into_iter()
        .filter(|(on, _)| *on)
    {
        let db = BenchDb::create(backend).await?;
        let result = run(&db, turns).await;
        db.drop_db().await?;
        result?;
    }
    Ok(())
}

async fn run(db: &BenchDb, turns: usize) -> anyhow::Result<()> {
    let store = Store::open(&db.url, &StoreOptions::default())?;
    store.migrate().await?;
    let mut config = Config::local();
    config.provider = ProviderConfig {
        base_url: Some(fake_model().await?),
        api_key: None,
        models: Vec::new(),
        timeout: Duration::from_secs(10),
    };
    // PostgreSQL has no default key file; policies need none, webhooks do.
    config.secrets.secrets_key = Some(conversation_service::secrets::MasterKey::generate().1);
    let running = server::start(store.clone(), config).await?;
    let base = format!("http://{}", running.http_addr);
    let http = reqwest::Client::new();

    // Three organizations, one per setup, each with a repository and a user.
    let mut setups = Vec::new();
    for (name, policies) in [("none", 0usize), ("patterns", 5), ("patterns+block", 5)] {
        let org = store.create_org(name.into()).await?;
        let user = store
            .create_user(NewUser {
                org_id: org,
                email: format!("{}@bench.test", Uuid::now_v7().simple()),
                name: None,
                last_name: None,
                role: OrgRole::Admin,
            })
            .await?;
        let ws = store.create_workspace(org, "w".into()).await?;
        store.grant(ws, user, Access::Admin).await?;
        let repo = store.create_repo(org, "r".into(), Some(ws)).await?;
        let token = generate_token();
        store
            .create_token(user, "bench".into(), &token, None)
            .await?;
        let auth = format!("Bearer {}", token.secret);
        for i in 0..policies {
            let action = if name == "patterns+block" && i == 0 {
                2
            } else {
                1
            };
            let body = json!({
                "name": format!("p{i}"), "content": "", "riskType": "HIGH", "actionType": action,
                "orgId": org, "patterns": expressions(i),
            });
            let res = http
                .post(format!("{base}/policy"))
                .header("authorization", &auth)
                .json(&body)
                .send()
                .await?;
            anyhow::ensure!(res.status() == 200, "policy: {}", res.text().await?);
        }
        let res = http
            .post(format!("{base}/conversation"))
            .header("authorization", &auth)
            .json(&json!({ "repoId": repo }))
            .send()
            .await?;
        let created: Value = res.json().await?;
        let id = created["conversationId"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("no conversation id in {created}"))?
            .to_owned();
        setups.push((name, auth, id, Vec::new()));
    }
    // A 2 KiB prompt with nothing secret in it.
    let prompt = "Please review this function and tell me what it does. ".repeat(38);
    for _ in 0..ROUNDS {
        for (_, auth, id, times) in &mut setups {
            for _ in 0..turns {
                let started = Instant::now();
                let res = http
                    .post(format!("{base}/conversation/{id}/prompt"))
                    .header("authorization", auth.as_str())
                    .json(&json!({ "prompt": prompt, "model": "m" }))
                    .send()
                    .await?;
                anyhow::ensure!(res.status() == 200, "prompt: {}", res.text().await?);
                res.bytes().await?;
                times.push(started.elapsed());
            }
        }
    }
    let stats = |times: &mut Vec<Duration>| {
        times.sort();
        (times[times.len() / 2], times[times.len() * 9 / 10])
    };
    let backend = match db.backend {
        Backend::Sqlite => "SQLite",
        Backend::Postgres => "PostgreSQL",
    };
    let (none_median, _) = stats(&mut setups[0].3);
    for (name, _, _, times) in &mut setups {
        let (median, p90) = stats(times);
        let added = median.as_secs_f64() - none_median.as_secs_f64();
        println!(
            "| {backend} | {name} | {:.2} ms | {:.2} ms | {:+.3} ms |",
            median.as_secs_f64() * 1e3,
            p90.as_secs_f64() * 1e3,
            added * 1e3
        );
    }
    running.shutdown().await?;
    Ok(())
}
