//! `admin events`: the audit trail, streamed in keyset pages (constant
//! memory, any number of events), as JSON lines.

use std::io::Write;

use clap::{Args, Subcommand};
use uuid::Uuid;

use crate::service::params::{self, Bound};
use crate::store::Store;
use crate::store::events::ExportFilter;

/// Events read per page.
const PAGE: i64 = 1000;

/// Which events, in which order.
#[derive(Debug, Args)]
pub struct Selection {
    #[arg(long)]
    org: Uuid,
    /// Only events at or after this time (ISO 8601 date or date-time).
    #[arg(long)]
    since: Option<String>,
    /// Only events at or before this time (a date: that whole day).
    #[arg(long)]
    until: Option<String>,
    /// Only events about this kind of resource (conversation, aillm, policy,
    /// policyviolation, policyalert, webhook).
    #[arg(long)]
    context: Option<String>,
    /// Resume: only events after this one, in the order printed.
    #[arg(long)]
    after: Option<Uuid>,
    /// Oldest first (list's default is newest first; export's oldest first).
    #[arg(long, conflicts_with = "newest_first")]
    oldest_first: bool,
    /// Newest first.
    #[arg(long)]
    newest_first: bool,
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Print an organization's events, newest first, one JSON object per line.
    List {
        #[command(flatten)]
        selection: Selection,
        /// At most this many [default: all].
        #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
        limit: Option<i64>,
    },
    /// Write an organization's events as NDJSON, oldest first.
    Export {
        #[command(flatten)]
        selection: Selection,
        /// The file to write [default: standard output].
        #[arg(long)]
        output: Option<std::path::PathBuf>,
    },
}

pub async fn run(store: &Store, cmd: EventsCommand) -> anyhow::Result<()> {
    match cmd {
        EventsCommand::List { selection, limit } => {
            let filter = filter(store, selection, false).await?;
            let out = std::io::stdout().lock();
            stream(store, filter, limit, out).await
        }
        EventsCommand::Export { selection, output } => {
            let filter = filter(store, selection, true).await?;
            match output {
                Some(path) => {
                    let file = std::fs::File::create(&path)
                        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
                    stream(store, filter, None, file).await
                }
                None => stream(store, filter, None, std::io::stdout().lock()).await,
            }
        }
    }
}

/// The export's filter, from the command line.
async fn filter(
    store: &Store,
    s: Selection,
    oldest_first_by_default: bool,
) -> anyhow::Result<ExportFilter> {
    if !store.org_exists(s.org).await? {
        anyhow::bail!("organization {} not found", s.org);
    }
    let since = params::time_bound("--since", s.since.as_deref(), Bound::Start)?;
    let until = params::time_bound("--until", s.until.as_deref(), Bound::End)?;
    if let (Some(since), Some(until)) = (since, until)
        && since >= until
    {
        anyhow::bail!("--since must be before --until");
    }
    let after = match s.after {
        Some(id) => {
            let at = store
                .event_time(s.org, id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("event {id} not found in organization {}", s.org))?;
            Some((at, id))
        }
        None => None,
    };
    Ok(ExportFilter {
        org_id: s.org,
        since,
        until,
        context: s.context,
        after,
        oldest_first: s.oldest_first || (oldest_first_by_default && !s.newest_first),
    })
}

/// Writes the events, a page at a time, each page after the last row of
/// the one before.
async fn stream(
    store: &Store,
    mut filter: ExportFilter,
    limit: Option<i64>,
    out: impl Write,
) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(out);
    let mut left = limit.unwrap_or(i64::MAX);
    while left > 0 {
        let page = store.export_page(filter.clone(), PAGE.min(left)).await?;
        let Some(last) = page.last() else { break };
        filter.after = Some((last.created_at, last.id));
        let full = i64::try_from(page.len()).unwrap_or(PAGE) == PAGE.min(left);
        left -= i64::try_from(page.len()).unwrap_or(left);
        for e in page {
            let line = serde_json::json!({
                "id": e.id,
                "timestamp": e.created_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                "orgId": e.org_id,
                "userId": e.user_id,
                "workspaceId": e.workspace_id,
                "context": e.context,
                "contextId": e.context_id,
                "event": e.event,
                "jsonData": e.json_data,
            });
            writeln!(out, "{line}").map_err(|e| anyhow::anyhow!("cannot write: {e}"))?;
        }
        out.flush()
            .map_err(|e| anyhow::anyhow!("cannot write: {e}"))?;
        if !full {
            break;
        }
    }
    Ok(())
}
