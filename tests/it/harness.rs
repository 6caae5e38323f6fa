//! Test harness: throwaway databases on both backends, the real server on
//! ephemeral ports, real clients, and fixtures made through the real store.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use conversation_service::auth::generate_token;
use conversation_service::domain::{Access, OrgRole};
use conversation_service::pb::conversation_service_client::ConversationServiceClient;
use conversation_service::server::{self, Running};
use conversation_service::store::admin::NewUser;
use conversation_service::store::{Backend, Store, StoreOptions};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use tonic::transport::Channel;
use uuid::Uuid;

/// The PostgreSQL server tests create their databases on.
fn pg_admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Writes past libtest's output capture, so notices show in every run.
pub fn notice(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

/// A connection of the test's own to an SQLite test database (to lock it,
/// for instance).
pub type SqliteConn =
    diesel_async::sync_connection_wrapper::SyncConnectionWrapper<diesel::SqliteConnection>;

/// Opens a [`SqliteConn`] on `db`, waiting up to 10 s for a lock the service
/// holds (so a test can take the write lock while a load runs).
pub async fn sqlite_conn(db: &TestDb) -> SqliteConn {
    use diesel_async::SimpleAsyncConnection as _;
    let mut conn = SqliteConn::establish(db.url.strip_prefix("sqlite://").expect("sqlite url"))
        .await
        .expect("connect");
    conn.batch_execute("PRAGMA busy_timeout = 10000")
        .await
        .expect("busy timeout");
    conn
}

/// A database that exists for one test.
pub struct TestDb {
    pub url: String,
    pub backend: Backend,
    /// For PostgreSQL: the database's name (dropped on drop).
    pub pg_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// An SQLite file in a fresh temporary folder.
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("test.db").display());
        TestDb {
            url,
            backend: Backend::Sqlite,
            pg_name: None,
            _dir: Some(dir),
        }
    }

    /// An SQLite file at `path` in `dir`, a folder the database keeps alive.
    pub fn sqlite_at(dir: tempfile::TempDir, path: &std::path::Path) -> TestDb {
        TestDb {
            url: format!("sqlite://{}", path.display()),
            backend: Backend::Sqlite,
            pg_name: None,
            _dir: Some(dir),
        }
    }

    /// A fresh PostgreSQL database, or `None` (with a notice) when no server
    /// answers. With `REQUIRE_POSTGRES=1`, a missing server fails the test.
    pub async fn postgres() -> Option<TestDb> {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let admin_url = pg_admin_url();
        let mut admin = match AsyncPgConnection::establish(&admin_url).await {
            Ok(c) => c,
            Err(e) => {
                if std::env::var("REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
                    panic!("REQUIRE_POSTGRES=1 but PostgreSQL at {admin_url} does not answer: {e}");
                }
                notice(&format!(
                    "NOTICE: PostgreSQL test skipped: {admin_url} does not answer ({e}); set REQUIRE_POSTGRES=1 to make this a failure"
                ));
                return None;
            }
        };
        let template = match pg_template() {
            Ok(template) => template,
            Err(e) => panic!("the migrated PostgreSQL template could not be made: {e}"),
        };
        let name = format!(
            "cs_test_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            &Uuid::now_v7().simple().to_string()[24..]
        );
        admin
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
            .await
            .expect("clone the test database from the template");
        let (base, _) = admin_url
            .rsplit_once('/')
            .expect("admin URL has a database");
        Some(TestDb {
            url: format!("{base}/{name}"),
            backend: Backend::Postgres,
            pg_name: Some(name),
            _dir: None,
        })
    }

    /// Runs SQL on the test database over a connection of its own.
    pub async fn exec(&self, sql: &str) {
        match self.backend {
            Backend::Postgres => {
                let mut c = AsyncPgConnection::establish(&self.url)
                    .await
                    .expect("connect");
                c.batch_execute(sql).await.expect("SQL runs");
            }
            Backend::Sqlite => {
                let mut c = sqlite_conn(self).await;
                c.batch_execute(sql).await.expect("SQL runs");
            }
        }
    }

    /// The one integer a query selects (NULL is 0), over a connection of
    /// its own.
    pub async fn scalar(&self, select: &str) -> i64 {
        use diesel::sql_types::BigInt;
        use diesel_async::RunQueryDsl;
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = BigInt)]
            v: i64,
        }
        let sql = format!("SELECT CAST(COALESCE(({select}), 0) AS BIGINT) AS v");
        let query = diesel::sql_query(sql);
        let row: Row = match self.backend {
            Backend::Postgres => {
                let mut c = AsyncPgConnection::establish(&self.url)
                    .await
                    .expect("connect");
                query.get_result(&mut c).await.expect("SQL runs")
            }
            Backend::Sqlite => {
                let mut c = sqlite_conn(self).await;
                query.get_result(&mut c).await.expect("SQL runs")
            }
        };
        row.v
    }

    /// Runs SQL on the PostgreSQL server's admin database.
    pub async fn pg_admin_exec(sql: &str) {
        let mut c = AsyncPgConnection::establish(&pg_admin_url())
            .await
            .expect("connect admin");
        c.batch_execute(sql).await.expect("admin SQL runs");
    }

    /// A literal for `id` in this backend's SQL.
    pub fn uuid_literal(&self, id: Uuid) -> String {
        match self.backend {
            Backend::Postgres => format!("'{id}'::uuid"),
            Backend::Sqlite => format!("X'{}'", id.simple()),
        }
    }

    /// A literal for "now" in this backend's SQL, in the stored form.
    pub fn now_literal(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => "now()",
            Backend::Sqlite => "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        // Drop may run inside a runtime: use a thread with one of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                if let Ok(mut c) = AsyncPgConnection::establish(&pg_admin_url()).await {
                    let _ = c
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// The migrated database every PostgreSQL test database is cloned from
/// (`CREATE DATABASE ... TEMPLATE`), made once per test run: its name carries
/// a hash of the migrations, so it is reused until a migration changes (then
/// a new one is made and the old ones dropped). Made on a thread of its own,
/// with a runtime of its own, since tests each run on theirs.
fn pg_template() -> Result<String, String> {
    static TEMPLATE: std::sync::OnceLock<Result<String, String>> = std::sync::OnceLock::new();
    TEMPLATE
        .get_or_init(|| {
            std::thread::spawn(|| {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?
                    .block_on(make_pg_template())
            })
            .join()
            .unwrap_or_else(|_| Err("making the template panicked".into()))
        })
        .clone()
}

/// A hash of every PostgreSQL migration file, in order.
fn migrations_hash() -> String {
    use sha2::Digest as _;
    fn walk(dir: &std::path::Path, files: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("migrations folder").flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, files);
            } else {
                files.push(path);
            }
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/postgres");
    let mut files = Vec::new();
    walk(&root, &mut files);
    files.sort();
    let mut hash = sha2::Sha256::new();
    for file in files {
        hash.update(
            file.strip_prefix(&root)
                .expect("below")
                .to_string_lossy()
                .as_bytes(),
        );
        hash.update(std::fs::read(&file).expect("migration readable"));
    }
    hash.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn make_pg_template() -> Result<String, String> {
    use diesel::sql_types::Bool;
    use diesel_async::RunQueryDsl as _;
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let name = format!("cs_template_{}", migrations_hash());
    let mut admin = AsyncPgConnection::establish(&pg_admin_url())
        .await
        .map_err(|e| err(&e))?;
    // Test binaries running at once take turns making it.
    admin
        .batch_execute("SELECT pg_advisory_lock(741300)")
        .await
        .map_err(|e| err(&e))?;
    let exists: bool = diesel::select(diesel::dsl::sql::<Bool>(&format!(
        "EXISTS (SELECT 1 FROM pg_database WHERE datname = '{name}')"
    )))
    .get_result(&mut admin)
    .await
    .map_err(|e| err(&e))?;
    if !exists {
        // Built under another name and renamed when whole, so a run that
        // dies halfway leaves no broken template behind.
        let building = format!("{name}_building");
        let (base, _) = pg_admin_url()
            .rsplit_once('/')
            .map(|(b, d)| (b.to_owned(), d.to_owned()))
            .ok_or("admin URL has a database")?;
        let old: Vec<String> = diesel::dsl::sql::<diesel::sql_types::Text>(
            "SELECT datname FROM pg_database WHERE datname LIKE 'cs\\_template\\_%'",
        )
        .load(&mut admin)
        .await
        .map_err(|e| err(&e))?;
        for stale in old {
            // A template must stop being one before it can be dropped.
            let _ = admin
                .batch_execute(&format!("ALTER DATABASE {stale} IS_TEMPLATE false"))
                .await;
            let _ = admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {stale} WITH (FORCE)"))
                .await;
        }
        admin
            .batch_execute(&format!("CREATE DATABASE {building}"))
            .await
            .map_err(|e| err(&e))?;
        let store =
            Store::open(&format!("{base}/{building}"), &test_options()).map_err(|e| err(&e))?;
        store.migrate().await.map_err(|e| err(&e))?;
        drop(store);
        admin
            .batch_execute(&format!(
                "ALTER DATABASE {building} RENAME TO {name}; ALTER DATABASE {name} IS_TEMPLATE true"
            ))
            .await
            .map_err(|e| err(&e))?;
    }
    admin
        .batch_execute("SELECT pg_advisory_unlock(741300)")
        .await
        .map_err(|e| err(&e))?;
    Ok(name)
}

/// Store options for tests: short waits so failure cases answer quickly.
pub fn test_options() -> StoreOptions {
    StoreOptions {
        acquire_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(2),
        sqlite_busy_timeout: Duration::from_millis(5000),
        ..StoreOptions::default()
    }
}

/// The real service on ephemeral ports, with clients for both transports.
pub struct TestApp {
    pub db: TestDb,
    pub store: Store,
    pub http: reqwest::Client,
    pub base: String,
    pub grpc_addr: SocketAddr,
    running: Option<Running>,
}

impl TestApp {
    pub async fn spawn(db: TestDb) -> TestApp {
        Self::spawn_with(db, test_options()).await
    }

    pub async fn spawn_with(db: TestDb, opts: StoreOptions) -> TestApp {
        Self::spawn_full(db, opts, server::Config::local()).await
    }

    /// The service set up as `config` says (its addresses are ignored).
    pub async fn spawn_config(db: TestDb, config: server::Config) -> TestApp {
        Self::spawn_full(db, test_options(), config).await
    }

    /// The service set up as `config` says, on a store opened with `opts`.
    pub async fn spawn_full(db: TestDb, opts: StoreOptions, config: server::Config) -> TestApp {
        let url = db.url.clone();
        Self::spawn_at(db, &url, opts, config).await
    }

    /// The service on `url` (the test database reached another way, such as
    /// through a [`DbProxy`]).
    pub async fn spawn_at(
        db: TestDb,
        url: &str,
        opts: StoreOptions,
        config: server::Config,
    ) -> TestApp {
        if std::env::var("TEST_LOG").is_ok() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter("info")
                .with_test_writer()
                .try_init();
        }
        let store = Store::open(url, &opts).expect("open store");
        store.migrate().await.expect("migrate");
        let local = server::Config::local();
        let mut config = server::Config {
            http_addr: local.http_addr,
            grpc_addr: local.grpc_addr,
            metrics_addr: config.metrics_addr.map(|_| local.http_addr),
            ..config
        };
        // SQLite makes its key file beside the database; PostgreSQL has no
        // default, so each test's service gets a key of its own.
        let secrets = &mut config.secrets;
        if db.backend == Backend::Postgres
            && secrets.secrets_key.is_none()
            && secrets.secrets_key_file.is_none()
        {
            secrets.secrets_key = Some(conversation_service::secrets::MasterKey::generate().1);
        }
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let running = server::start(store.clone(), config).await.expect("start");
        TestApp {
            base: format!("{scheme}://{}", running.http_addr),
            grpc_addr: running.grpc_addr,
            http: reqwest::Client::new(),
            store,
            db,
            running: Some(running),
        }
    }

    pub async fn grpc(&self) -> ConversationServiceClient<Channel> {
        ConversationServiceClient::connect(format!("http://{}", self.grpc_addr))
            .await
            .expect("gRPC connects")
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc_addr))
            .expect("uri")
            .connect()
            .await
            .expect("connects")
    }

    /// Stops the service; returns the database, which lives while it is held.
    pub async fn shutdown(mut self) -> TestDb {
        if let Some(r) = self.running.take() {
            r.shutdown().await.expect("clean shutdown");
        }
        self.db
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("running")
    }

    /// CreateConversation over gRPC as `actor`; returns the new id.
    pub async fn create_as(&self, actor: &Actor, repo: Uuid) -> Uuid {
        let reply = self
            .grpc()
            .await
            .create_conversation(create_request(actor, repo))
            .await
            .expect("created");
        reply.into_inner().conversation_id.parse().expect("uuid")
    }

    /// POST /conversation with an optional bearer token and a raw JSON body.
    pub async fn post_create(&self, token: Option<&str>, body: &str) -> (u16, serde_json::Value) {
        let mut req = self
            .http
            .post(format!("{}/conversation", self.base))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let res = req.send().await.expect("HTTP request");
        let status = res.status().as_u16();
        assert_eq!(
            res.headers()
                .get("content-type")
                .map(|v| v.to_str().expect("ascii")),
            Some("application/json"),
            "every reply is JSON"
        );
        (status, res.json().await.expect("JSON body"))
    }

    /// Rows in a table, through the service's own store.
    pub async fn count(&self, table: &str) -> i64 {
        use conversation_service::store::schema::{conversations, system_events};
        use conversation_service::with_conn;
        use diesel::prelude::*;
        use diesel_async::RunQueryDsl;
        let mut conn = self.store.conn().await.expect("conn");
        match table {
            "conversations" => with_conn!(&mut conn, |c| conversations::table
                .count()
                .get_result::<i64>(c)
                .await),
            "system_events" => with_conn!(&mut conn, |c| system_events::table
                .count()
                .get_result::<i64>(c)
                .await),
            other => panic!("no counter for {other}"),
        }
        .expect("count")
    }

    /// Conversations that have no `created` event: must always be zero.
    pub async fn conversations_without_event(&self) -> i64 {
        orphan_conversations(&self.store).await
    }

    /// Connections left inside a transaction (a create opens its own and must
    /// always end it). PostgreSQL: those of the test database idle in a
    /// transaction. SQLite: the writer's connection (creates run there), 1 if
    /// a job does not run at the depth the writer gives it (its group's
    /// transaction, its own savepoint), or cannot run because a transaction
    /// left open keeps its group's from beginning.
    pub async fn idle_in_transaction(&self) -> i64 {
        use diesel::sql_types::BigInt;
        use diesel_async::RunQueryDsl;
        if let Some(writer) = self.store.sqlite_writer() {
            use diesel::connection::{AnsiTransactionManager, TransactionManager as _};
            let depth = writer
                .write(|c| {
                    let status = AnsiTransactionManager::transaction_manager_status_mut(c);
                    Ok(status.transaction_depth()?.map_or(0, |d| d.get()))
                })
                .await;
            return i64::from(!matches!(depth, Ok(2)));
        }
        let mut conn = self.store.conn().await.expect("conn");
        let conversation_service::store::Conn::Pg(c) = &mut conn else {
            unreachable!("a store without a SQLite writer is on PostgreSQL");
        };
        let count = diesel::dsl::sql::<BigInt>(
            "(SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND state LIKE 'idle in transaction%')",
        );
        diesel::select(count)
            .get_result::<i64>(c)
            .await
            .expect("pg_stat_activity")
    }
}

/// Conversations that have no `created` event in the audit trail.
pub async fn orphan_conversations(store: &Store) -> i64 {
    use conversation_service::store::schema::{conversations, system_events};
    use conversation_service::with_conn;
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;
    let mut conn = store.conn().await.expect("conn");
    with_conn!(&mut conn, |c| conversations::table
        .filter(diesel::dsl::not(diesel::dsl::exists(
            system_events::table
                .filter(system_events::context_id.eq(conversations::id.nullable()))
                .filter(system_events::event.eq("created")),
        )))
        .count()
        .get_result::<i64>(c)
        .await)
    .expect("count")
}

/// A CreateConversation request for `repo`, as `actor`.
pub fn create_request(
    actor: &Actor,
    repo: Uuid,
) -> tonic::Request<conversation_service::pb::CreateConversationRequest> {
    as_actor(
        conversation_service::pb::CreateConversationRequest {
            repo_id: repo.to_string(),
        },
        actor,
    )
}

/// A gRPC request carrying `actor`'s bearer token.
pub fn as_actor<T>(message: T, actor: &Actor) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", actor.token)
            .parse()
            .expect("ascii token"),
    );
    req
}

/// The keys of a JSON object, in their order.
pub fn keys(value: &serde_json::Value) -> Vec<&str> {
    value
        .as_object()
        .expect("a JSON object")
        .keys()
        .map(String::as_str)
        .collect()
}

/// A user with a working token.
#[derive(Clone, Debug)]
pub struct Actor {
    pub id: Uuid,
    pub token: String,
}

/// The world the rule tests run in.
pub struct World {
    pub org: Uuid,
    pub workspace: Uuid,
    pub repo: Uuid,
    pub orphan_repo: Uuid,
    pub disabled_repo: Uuid,
    pub deleted_repo: Uuid,
    pub repo_in_deleted_workspace: Uuid,
    pub other_org_repo: Uuid,
    pub reader: Actor,
    pub writer: Actor,
    pub ws_admin: Actor,
    pub org_admin: Actor,
    pub owner: Actor,
    pub outsider: Actor,
    pub billing: Actor,
    pub other_org_user: Actor,
    pub disabled: Actor,
    pub expired_token: String,
    pub revoked_token: String,
}

static EMAILS: AtomicUsize = AtomicUsize::new(0);

pub async fn user(store: &Store, org: Uuid, role: OrgRole) -> Actor {
    let n = EMAILS.fetch_add(1, Ordering::Relaxed);
    let id = store
        .create_user(NewUser {
            org_id: org,
            email: format!("user{n}-{}@example.com", Uuid::now_v7().simple()),
            name: Some(format!("User{n}")),
            last_name: Some("Test".into()),
            role,
        })
        .await
        .expect("user");
    let token = token_for(store, id, None).await;
    Actor { id, token }
}

pub async fn token_for(
    store: &Store,
    user: Uuid,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
) -> String {
    let t = generate_token();
    store
        .create_token(user, "test".into(), &t, expires_at)
        .await
        .expect("token");
    t.secret
}

impl World {
    pub async fn build(app: &TestApp) -> World {
        let s = &app.store;
        let org = s.create_org("Acme".into()).await.expect("org");
        let workspace = s.create_workspace(org, "Main".into()).await.expect("ws");
        let doomed_ws = s.create_workspace(org, "Doomed".into()).await.expect("ws");
        let repo = s
            .create_repo(org, "app".into(), Some(workspace))
            .await
            .expect("repo");
        let orphan_repo = s
            .create_repo(org, "orphan".into(), None)
            .await
            .expect("repo");
        let disabled_repo = s
            .create_repo(org, "old".into(), Some(workspace))
            .await
            .expect("repo");
        s.disable_repo(disabled_repo).await.expect("disable");
        let deleted_repo = s
            .create_repo(org, "gone".into(), Some(workspace))
            .await
            .expect("repo");
        app.db
            .exec(&format!(
                "UPDATE repos SET deleted_at = {} WHERE id = {}",
                app.db.now_literal(),
                app.db.uuid_literal(deleted_repo)
            ))
            .await;
        let repo_in_deleted_workspace = s
            .create_repo(org, "in-doomed".into(), Some(doomed_ws))
            .await
            .expect("repo");

        let reader = user(s, org, OrgRole::User).await;
        let writer = user(s, org, OrgRole::User).await;
        let ws_admin = user(s, org, OrgRole::User).await;
        let org_admin = user(s, org, OrgRole::Admin).await;
        let owner = user(s, org, OrgRole::Owner).await;
        let outsider = user(s, org, OrgRole::Workspaces).await;
        let billing = user(s, org, OrgRole::Billing).await;
        let disabled = user(s, org, OrgRole::User).await;
        for (a, access) in [
            (&reader, Access::Read),
            (&writer, Access::Write),
            (&ws_admin, Access::Admin),
            (&disabled, Access::Read),
        ] {
            s.grant(workspace, a.id, access).await.expect("grant");
        }
        s.grant(doomed_ws, reader.id, Access::Read)
            .await
            .expect("grant");
        s.delete_workspace(doomed_ws).await.expect("delete ws");
        s.disable_user(disabled.id).await.expect("disable");

        let expired_token = token_for(
            s,
            reader.id,
            Some(chrono::Utc::now() - chrono::Duration::seconds(1)),
        )
        .await;
        let revoked = generate_token();
        s.create_token(reader.id, "revoked".into(), &revoked, None)
            .await
            .expect("token");
        s.revoke_token(conversation_service::store::admin::TokenRef::Hash(
            revoked.hash,
        ))
        .await
        .expect("revoke");

        let other_org = s.create_org("Globex".into()).await.expect("org");
        let other_ws = s
            .create_workspace(other_org, "Theirs".into())
            .await
            .expect("ws");
        let other_org_repo = s
            .create_repo(other_org, "secret".into(), Some(other_ws))
            .await
            .expect("repo");
        let other_org_user = user(s, other_org, OrgRole::Owner).await;
        s.grant(other_ws, other_org_user.id, Access::Admin)
            .await
            .expect("grant");

        World {
            org,
            workspace,
            repo,
            orphan_repo,
            disabled_repo,
            deleted_repo,
            repo_in_deleted_workspace,
            other_org_repo,
            reader,
            writer,
            ws_admin,
            org_admin,
            owner,
            outsider,
            billing,
            other_org_user,
            disabled,
            expired_token,
            revoked_token: revoked.secret,
        }
    }
}

/// Generates `sqlite` and `postgres` tests from one async scenario `fn(TestDb)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        $(
            mod $scenario {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$scenario($crate::harness::TestDb::sqlite()).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if let Some(db) = $crate::harness::TestDb::postgres().await {
                        super::$scenario(db).await;
                    }
                }
            }
        )*
    };
}

/// The service binary, started with `serve --demo` on ephemeral ports; its
/// stderr (the logs) is collected.
pub struct Process {
    pub child: tokio::process::Child,
    pub http: String,
    pub grpc: String,
    pub token: String,
    pub repo: String,
    pub logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Process {
    pub async fn start(database_url: &str) -> Process {
        Self::start_with(database_url, &[], &[("RUST_LOG", "warn")]).await
    }

    /// With more arguments after `serve --demo ...`, and environment.
    pub async fn start_with(database_url: &str, args: &[&str], env: &[(&str, &str)]) -> Process {
        use tokio::io::{AsyncBufReadExt as _, BufReader};
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_conversation-service"));
        command
            .args([
                "serve",
                "--demo",
                "--http-addr",
                "127.0.0.1:0",
                "--grpc-addr",
                "127.0.0.1:0",
            ])
            .args(args)
            .env("DATABASE_URL", database_url)
            .env("SHUTDOWN_DELAY", "0")
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("binary starts");
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut errors = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let sink = logs.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = errors.next_line().await {
                sink.lock().expect("logs").push(line);
            }
        });
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let (mut http, mut grpc, mut token, mut repo) = (None, None, None, None);
        while grpc.is_none() {
            let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("demo block in time; logs: {:?}", logs.lock()))
                .expect("stdout readable")
                .unwrap_or_else(|| panic!("demo block printed; logs: {:?}", logs.lock()));
            let field = |prefix: &str| line.strip_prefix(prefix).map(|v| v.trim().to_owned());
            token = token.or(field("token:"));
            repo = repo.or(field("repoId:"));
            http = http.or(field("HTTP:"));
            grpc = field("gRPC:");
        }
        // Keep reading, as a terminal would, so the rest of the block is not cut off.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Process {
            child,
            http: http.expect("http"),
            grpc: grpc.expect("grpc"),
            token: token.expect("token printed"),
            repo: repo.expect("repo printed"),
            logs,
        }
    }

    /// The log lines so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("logs").clone()
    }

    /// Sends SIGTERM.
    pub async fn signal_term(&self) {
        let pid = self.child.id().expect("running").to_string();
        let sent = tokio::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .expect("kill runs");
        assert!(sent.success());
    }

    /// Sends SIGTERM and waits for the exit.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        self.signal_term().await;
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("exits in time")
            .expect("exit status")
    }
}

/// A TCP proxy in front of the test's PostgreSQL that the test can cut, as
/// if the server had crashed (every connection dropped, new ones refused),
/// and restore, as if it had restarted.
pub struct DbProxy {
    pub addr: SocketAddr,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cut: std::sync::Arc<tokio::sync::Mutex<tokio_util::sync::CancellationToken>>,
}

impl DbProxy {
    pub async fn start(upstream: SocketAddr) -> DbProxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let cut = std::sync::Arc::new(tokio::sync::Mutex::new(
            tokio_util::sync::CancellationToken::new(),
        ));
        let (up2, cut2) = (up.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    drop(client); // refused: closed at once
                    continue;
                }
                let gone = cut2.lock().await.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        () = gone.cancelled() => {}
                    }
                });
            }
        });
        DbProxy { addr, up, cut }
    }

    /// The database "crashes": live connections drop, new ones are refused.
    pub async fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        let mut token = self.cut.lock().await;
        token.cancel();
        *token = tokio_util::sync::CancellationToken::new();
    }

    /// The database is back.
    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// `url` (a PostgreSQL URL on 127.0.0.1:5432 or similar) through this proxy.
    pub fn url(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").expect("url");
        let (auth_host, path) = rest.split_once('/').expect("path");
        let auth = auth_host
            .rsplit_once('@')
            .map(|(a, _)| format!("{a}@"))
            .unwrap_or_default();
        format!("{scheme}://{auth}{}/{path}", self.addr)
    }
}

/// The HTTP status the grpc-gateway table gives a gRPC code, to compare
/// what the two transports answered.
pub fn http_status_of(code: tonic::Code) -> u16 {
    use tonic::Code;
    match code {
        Code::Ok => 200,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
        Code::Unauthenticated => 401,
        Code::PermissionDenied => 403,
        Code::NotFound => 404,
        Code::AlreadyExists | Code::Aborted => 409,
        Code::ResourceExhausted => 429,
        Code::Cancelled => 499,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
        Code::DeadlineExceeded => 504,
        Code::Unknown | Code::Internal | Code::DataLoss => 500,
    }
}

/// Every statement the store sends on a service whose pool holds one
/// connection (`StoreOptions::pool_size = 1`) and on SQLite's writer, as
/// diesel's instrumentation reports it: whether it was prepared and cached,
/// and its SQL. Tells which statements are parsed and planned anew each time.
#[derive(Clone, Default)]
pub struct StatementLog(std::sync::Arc<std::sync::Mutex<Vec<(bool, String)>>>);

impl StatementLog {
    /// Starts recording on `app`'s one pooled connection and its writer.
    pub async fn attach(app: &TestApp) -> StatementLog {
        let log = StatementLog::default();
        {
            let mut conn = app.store.conn().await.expect("connection");
            let record = log.recorder();
            conversation_service::with_conn!(&mut conn, |c| c.set_instrumentation(record));
        }
        if let Some(writer) = app.store.sqlite_writer() {
            let record = log.recorder();
            writer
                .write(move |c| {
                    diesel::Connection::set_instrumentation(c, record);
                    Ok(())
                })
                .await
                .expect("writer");
        }
        log
    }

    fn recorder(
        &self,
    ) -> impl FnMut(diesel::connection::InstrumentationEvent<'_>) + Send + 'static {
        use diesel::connection::InstrumentationEvent;
        let log = self.0.clone();
        move |event: InstrumentationEvent<'_>| {
            let entry = match event {
                InstrumentationEvent::CacheQuery { sql, .. } => (true, sql.to_owned()),
                InstrumentationEvent::StartQuery { query, .. } => {
                    let text = query.to_string();
                    let sql = text.split(" -- binds:").next().unwrap_or_default();
                    (false, sql.trim().to_owned())
                }
                _ => return,
            };
            log.lock().expect("log").push(entry);
        }
    }

    /// Where the log is now, to look only at what follows.
    pub fn mark(&self) -> usize {
        self.0.lock().expect("log").len()
    }

    /// The statements sent since `mark`, transaction control aside (SQLite's
    /// writer runs each job in a savepoint of its group's transaction).
    pub fn sent_since(&self, mark: usize) -> Vec<String> {
        let log = self.0.lock().expect("log");
        let control = |sql: &str| {
            ["BEGIN", "BEGIN IMMEDIATE", "COMMIT"].contains(&sql)
                || ["SAVEPOINT ", "RELEASE SAVEPOINT ", "ROLLBACK TO SAVEPOINT "]
                    .iter()
                    .any(|start| sql.starts_with(start))
        };
        log[mark..]
            .iter()
            .filter(|(cache, sql)| !*cache && !control(sql))
            .map(|(_, sql)| sql.clone())
            .collect()
    }

    /// The statements sent since `mark` that were never prepared for the
    /// cache: each is parsed and planned again every time it is sent.
    pub fn unprepared_since(&self, mark: usize) -> Vec<String> {
        let cached: std::collections::HashSet<String> = self
            .0
            .lock()
            .expect("log")
            .iter()
            .filter(|(cache, _)| *cache)
            .map(|(_, sql)| sql.clone())
            .collect();
        self.sent_since(mark)
            .into_iter()
            .filter(|sql| !cached.contains(sql))
            .collect()
    }
}
