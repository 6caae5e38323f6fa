use super::*;
use diesel::RunQueryDsl as _;

#[derive(diesel::QueryableByName)]
struct Number {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

fn start() -> (tempfile::TempDir, Writer) {
    start_with("")
}

/// A writer on a new file in a temporary folder, set up with `setup_sql`.
fn start_with(setup_sql: &str) -> (tempfile::TempDir, Writer) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("w.db").display().to_string();
    let writer = Writer::start(
        path,
        setup_sql.to_owned(),
        WriteGate::default(),
        WriteHealth::new(),
    )
    .expect("thread");
    (dir, writer)
}

/// [`start`], with a table `mark (n INTEGER PRIMARY KEY)`.
async fn start_with_marks() -> (tempfile::TempDir, Writer) {
    let (dir, writer) = start();
    writer
        .write(|c| {
            c.batch_execute("CREATE TABLE mark (n INTEGER PRIMARY KEY)")?;
            Ok(())
        })
        .await
        .expect("table");
    (dir, writer)
}

fn number(c: &mut SqliteConnection, sql: &str) -> Result<i64, StoreError> {
    Ok(diesel::sql_query(sql).get_result::<Number>(c)?.n)
}

/// Holds the writer busy with one job until the returned sender is
/// dropped or sent to, so that the jobs queued meanwhile form one group.
async fn hold(writer: &Writer) -> (mpsc::Sender<()>, tokio::task::JoinHandle<()>) {
    let (release, held) = mpsc::channel::<()>();
    let (started, has_started) = tokio::sync::oneshot::channel();
    let busy = writer.write(move |_| {
        let _ = started.send(());
        let _ = held.recv();
        Ok(())
    });
    let busy = tokio::spawn(async move { busy.await.expect("the busy job") });
    has_started.await.expect("the busy job runs");
    (release, busy)
}

fn insert(n: i64) -> impl FnOnce(&mut SqliteConnection) -> Result<(), StoreError> {
    move |c| {
        c.batch_execute(&format!("INSERT INTO mark VALUES ({n})"))?;
        Ok(())
    }
}

/// Plans that do not depend on bound values, and no locks the service
/// never needs (`.cargo/config.toml`): without the first, SQLite
/// prepares some statements again on every call.
#[tokio::test]
async fn sqlite_is_built_with_stable_plans_and_the_writer_journals_in_memory() {
    let (_dir, writer) = start();
    let (options, temp_store) = writer
        .write(|c| {
            let mut option = |name: &str| {
                number(
                    c,
                    &format!(
                        "SELECT count(*) AS n FROM pragma_compile_options \
                         WHERE compile_options = '{name}'"
                    ),
                )
            };
            let options = [
                option("ENABLE_QPSG")?,
                option("THREADSAFE=2")?,
                option("DEFAULT_MEMSTATUS=0")?,
                option("ENABLE_MEMORY_MANAGEMENT")?,
            ];
            Ok((
                options,
                number(c, "SELECT temp_store AS n FROM pragma_temp_store")?,
            ))
        })
        .await
        .expect("pragmas");
    assert_eq!(
        options,
        [1, 1, 1, 0],
        "built with SQLITE_ENABLE_QPSG, SQLITE_THREADSAFE=2 and \
         SQLITE_DEFAULT_MEMSTATUS=0, without SQLITE_ENABLE_MEMORY_MANAGEMENT"
    );
    assert_eq!(temp_store, 2, "MEMORY");
}

/// The writer commits without checkpointing; the checkpointer's thread
/// does, so that the next write starts the WAL over: without it, the
/// WAL would hold both rounds below.
#[tokio::test]
async fn the_checkpointer_keeps_the_wal_from_growing() {
    let (dir, writer) = start_with("PRAGMA journal_mode = WAL;");
    let wal = dir.path().join("w.db-wal");
    let automatic = writer
        .write(|c| {
            c.batch_execute("CREATE TABLE blob (b BLOB)")?;
            // A pragma without a table-valued form: read as is.
            #[derive(diesel::QueryableByName)]
            struct Automatic {
                #[diesel(sql_type = diesel::sql_types::BigInt)]
                wal_autocheckpoint: i64,
            }
            let row: Automatic = diesel::sql_query("PRAGMA wal_autocheckpoint").get_result(c)?;
            Ok(row.wal_autocheckpoint)
        })
        .await
        .expect("table");
    assert_eq!(automatic, 0, "the writer's commits do not checkpoint");
    // About 2 MiB of WAL each (500 pages of 4 KiB), more than SQLite's
    // automatic checkpoint would let it reach.
    async fn round(writer: &Writer, wal: &std::path::Path) -> u64 {
        let checkpoints = writer.done().2;
        writer
            .write(|c| {
                c.batch_execute(
                    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500) \
                     INSERT INTO blob SELECT randomblob(4000) FROM n",
                )?;
                Ok(())
            })
            .await
            .expect("a round");
        let size = std::fs::metadata(wal).expect("the WAL").len();
        for _ in 0..200 {
            if writer.done().2 > checkpoints {
                return size;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no checkpoint after the round");
    }
    let first = round(&writer, &wal).await;
    let second = round(&writer, &wal).await;
    assert!(first > 2_000_000, "{first} bytes of WAL");
    assert!(
        second < first + first / 4,
        "the WAL started over: {first} then {second} bytes"
    );
    let rows = writer
        .write(|c| number(c, "SELECT count(*) AS n FROM blob"))
        .await
        .expect("rows");
    assert_eq!(rows, 1_000);
}

#[tokio::test]
async fn a_job_that_panics_fails_and_the_next_gets_a_new_connection() {
    let (_dir, writer) = start();
    // A temporary table lives as long as its connection.
    writer
        .write(|c| {
            c.batch_execute("CREATE TEMP TABLE mark (n INTEGER); INSERT INTO mark VALUES (1);")?;
            Ok(())
        })
        .await
        .expect("first job");
    let count = |c: &mut SqliteConnection| {
        number(
            c,
            "SELECT count(*) AS n FROM sqlite_temp_master WHERE name = 'mark'",
        )
    };
    assert_eq!(writer.write(count).await.expect("same connection"), 1);
    let failed: Result<(), StoreError> = writer
        .write(|c| {
            c.batch_execute("INSERT INTO mark VALUES (2)")?;
            panic!("a bug mid-transaction")
        })
        .await;
    assert!(matches!(failed, Err(StoreError::Internal(_))), "{failed:?}");
    assert_eq!(
        writer.write(count).await.expect("writer lives on"),
        0,
        "a new connection"
    );
}

#[tokio::test]
async fn a_job_whose_caller_left_before_its_turn_does_not_run() {
    let (_dir, writer) = start();
    let (release, busy) = hold(&writer).await;
    let make_table = writer.write(|c| {
        c.batch_execute("CREATE TABLE mark (n INTEGER)")?;
        Ok(())
    });
    let waited = tokio::time::timeout(Duration::from_millis(50), make_table).await;
    assert!(waited.is_err(), "queued behind the busy job, then given up");
    release.send(()).expect("release");
    busy.await.expect("busy job");
    let tables = writer
        .write(|c| {
            number(
                c,
                "SELECT count(*) AS n FROM sqlite_master WHERE name = 'mark'",
            )
        })
        .await
        .expect("count");
    assert_eq!(tables, 0, "the abandoned job did not run");
}

#[tokio::test]
async fn jobs_waiting_together_commit_together_and_a_failing_one_fails_alone() {
    let (_dir, writer) = start_with_marks().await;
    let (release, busy) = hold(&writer).await;
    let before = writer.done();
    // Queued in this order while the writer is busy: one group.
    let first = writer.write(insert(1));
    let twice = writer.write(|c| {
        c.batch_execute("INSERT INTO mark VALUES (2)")?;
        c.batch_execute("INSERT INTO mark VALUES (1)")?;
        Ok(())
    });
    let last = writer.write(insert(3));
    drop(release);
    busy.await.expect("busy job");
    let (first, twice, last) = tokio::join!(first, twice, last);
    first.expect("the first job");
    assert!(matches!(twice, Err(StoreError::Conflict(_))), "{twice:?}");
    last.expect("the job after the failing one");
    let (jobs, commits, _) = writer.done();
    assert_eq!(jobs - before.0, 4, "the busy job and the three");
    assert_eq!(
        commits - before.1,
        2,
        "the busy job's, and one for the three"
    );
    let rows = writer
        .write(|c| number(c, "SELECT sum(n) AS n FROM mark"))
        .await
        .expect("rows");
    assert_eq!(rows, 1 + 3, "the failing job's row 2 was undone with it");
}

#[tokio::test]
async fn when_a_job_ends_the_transaction_no_job_of_its_group_is_written() {
    let (_dir, writer) = start_with_marks().await;
    let (release, busy) = hold(&writer).await;
    let before = writer.done();
    let first = writer.write(insert(1));
    // As SQLite does on a full disk or an I/O error.
    let ends_it = writer.write(|c| {
        c.batch_execute("ROLLBACK")?;
        Ok(())
    });
    let after = writer.write(insert(2));
    drop(release);
    busy.await.expect("busy job");
    let (first, ends_it, after) = tokio::join!(first, ends_it, after);
    assert!(first.is_err(), "its group did not commit: {first:?}");
    assert!(ends_it.is_err(), "{ends_it:?}");
    assert!(
        matches!(after, Err(StoreError::Unavailable(_))),
        "not run outside the group's transaction: {after:?}"
    );
    assert_eq!(writer.done().1 - before.1, 1, "only the busy job's commit");
    let rows = writer
        .write(|c| number(c, "SELECT count(*) AS n FROM mark"))
        .await
        .expect("the writer goes on, on a new connection");
    assert_eq!(rows, 0, "nothing of that group was written");
}
