//! Listing conversations: who sees what (every visibility tier), pages and
//! their totals, date bounds, the DTO.

use std::collections::BTreeSet;

use conversation_service::pb::ListConversationsRequest;
use serde_json::{Value, json};
use tonic::Code;
use uuid::Uuid;

use super::*;
use crate::harness::{Actor, TestApp, TestDb, keys};
use crate::on_both_backends;

/// Each tier sees exactly its set, on both transports; filters only narrow.
async fn visibility_tiers(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let o = Org::build(&app).await;
    let w1_all: BTreeSet<Uuid> = o
        .alice_w1
        .iter()
        .chain(&o.bob_w1)
        .chain([&o.owner_w1])
        .copied()
        .collect();
    let mut ws_admin_sees = w1_all.clone();
    ws_admin_sees.insert(o.ws_admin_w2);
    let alice_sees: BTreeSet<Uuid> = o.alice_w1.iter().chain(&o.alice_w2).copied().collect();
    let bob_sees: BTreeSet<Uuid> = o.bob_w1.iter().copied().collect();

    let tiers: Vec<(&str, &Actor, BTreeSet<Uuid>)> = vec![
        ("org owner", &o.owner, o.all()),
        ("workspace admin", &o.ws_admin, ws_admin_sees),
        ("reader", &o.alice, alice_sees.clone()),
        ("writer", &o.bob, bob_sees),
        ("other org's owner", &o.foreign_owner, [o.foreign].into()),
    ];
    for (tier, actor, expected) in &tiers {
        let (status, body) = rest_list(&app, Some(actor), "").await;
        assert_eq!(status, 200, "{tier}: {body}");
        assert_eq!(body["success"], true);
        let got = ids(&body);
        assert_eq!(
            got.iter().copied().collect::<BTreeSet<_>>(),
            *expected,
            "REST {tier}"
        );
        assert_eq!(body["total"], expected.len(), "REST {tier}");
        let (got, total) = grpc_list(&app, actor, ListConversationsRequest::default())
            .await
            .expect(tier);
        assert_eq!(
            got.into_iter().collect::<BTreeSet<_>>(),
            *expected,
            "gRPC {tier}"
        );
        assert_eq!(total as usize, expected.len(), "gRPC {tier}");
    }

    for (_, actor, _) in &tiers {
        for query in ["", "showDeleted=true"] {
            totals_agree(&app, actor, query).await;
        }
    }

    // Filters narrow, never widen.
    let narrow: Vec<(&str, &Actor, String, BTreeSet<Uuid>)> = vec![
        (
            "reader asks for bob's",
            &o.alice,
            format!("userId={}", o.bob.id),
            BTreeSet::new(),
        ),
        (
            "owner asks for bob's",
            &o.owner,
            format!("userId={}", o.bob.id),
            o.bob_w1.iter().copied().collect(),
        ),
        (
            "owner asks for w2",
            &o.owner,
            format!("workspaceId={}", o.w2),
            o.alice_w2.iter().chain([&o.ws_admin_w2]).copied().collect(),
        ),
        (
            "reader asks for repo2",
            &o.alice,
            format!("repoId={}", o.repo2),
            o.alice_w2.iter().copied().collect(),
        ),
        (
            "ws admin asks for w2",
            &o.ws_admin,
            format!("workspaceId={}", o.w2),
            [o.ws_admin_w2].into(),
        ),
        (
            "ws admin asks for w1 by alice",
            &o.ws_admin,
            format!("workspaceId={}&userId={}", o.w1, o.alice.id),
            o.alice_w1.iter().copied().collect(),
        ),
        (
            "owner asks for repo1 and w2",
            &o.owner,
            format!("repoId={}&workspaceId={}", o.repo1, o.w2),
            BTreeSet::new(),
        ),
        (
            "owner asks for the other org's user",
            &o.owner,
            format!("userId={}", o.foreign_owner.id),
            BTreeSet::new(),
        ),
        (
            "other org asks for our workspace",
            &o.foreign_owner,
            format!("workspaceId={}", o.w1),
            BTreeSet::new(),
        ),
        (
            "unknown repo",
            &o.owner,
            format!("repoId={}", Uuid::now_v7()),
            BTreeSet::new(),
        ),
    ];
    for (name, actor, query, expected) in narrow {
        let (status, body) = rest_list(&app, Some(actor), &query).await;
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(
            ids(&body).into_iter().collect::<BTreeSet<_>>(),
            expected,
            "REST {name}"
        );
        assert_eq!(body["total"], expected.len(), "REST {name}");
        totals_agree(&app, actor, &query).await;
    }
    let (got, total) = grpc_list(
        &app,
        &o.owner,
        ListConversationsRequest {
            workspace_id: o.w2.to_string(),
            user_id: o.alice.id.to_string(),
            ..Default::default()
        },
    )
    .await
    .expect("filtered");
    assert_eq!(
        got.into_iter().collect::<BTreeSet<_>>(),
        o.alice_w2.iter().copied().collect()
    );
    assert_eq!(total, 2);
    app.shutdown().await;
}

/// Pages: newest first, `total` counts everything, edges and bad parameters.
async fn pagination(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let o = Org::build(&app).await;
    // Creation order is time order (UUIDv7 ids, times to the microsecond).
    let mut newest_first: Vec<Uuid> = o.all().into_iter().collect();
    newest_first.sort();
    newest_first.reverse();
    assert_eq!(newest_first.len(), 9);

    let (_, body) = rest_list(&app, Some(&o.owner), "").await;
    assert_eq!(ids(&body), newest_first, "newest first by default");
    let (_, body) = rest_list(&app, Some(&o.owner), "take=4").await;
    assert_eq!(ids(&body), newest_first[..4]);
    assert_eq!(body["total"], 9);
    let (_, body) = rest_list(&app, Some(&o.owner), "take=4&skip=4").await;
    assert_eq!(ids(&body), newest_first[4..8]);
    let (_, body) = rest_list(&app, Some(&o.owner), "take=4&skip=8").await;
    assert_eq!(ids(&body), newest_first[8..], "the last page is short");
    assert_eq!(body["total"], 9);
    let (_, body) = rest_list(&app, Some(&o.owner), "skip=50").await;
    assert_eq!(ids(&body), Vec::<Uuid>::new(), "past the end: empty page");
    assert_eq!(body["total"], 9, "but the total still counts");
    let (status, body) = rest_list(&app, Some(&o.owner), "take=100").await;
    assert_eq!((status, ids(&body).len()), (200, 9));
    let (_, body) = rest_list(&app, Some(&o.owner), "take=1&skip=0").await;
    assert_eq!(
        (ids(&body), body["total"].clone()),
        (newest_first[..1].to_vec(), json!(9))
    );

    let (got, total) = grpc_list(
        &app,
        &o.owner,
        ListConversationsRequest {
            take: Some(3),
            skip: Some(3),
            ..Default::default()
        },
    )
    .await
    .expect("page");
    assert_eq!((got, total), (newest_first[3..6].to_vec(), 9));

    let bad: Vec<(&str, &str)> = vec![
        ("take=101", "take must be between 1 and 100"),
        ("take=0", "take must be between 1 and 100"),
        ("take=-5", "take must be between 1 and 100"),
        ("skip=-1", "skip must be 0 or more"),
        ("take=ten", "take must be an integer"),
        ("skip=1.5", "skip must be an integer"),
        ("take=99999999999999999999", "take must be an integer"),
        ("take=1&take=2", "take must be given at most once"),
        ("showDeleted=maybe", "showDeleted must be true or false"),
        ("showDeleted=1", "showDeleted must be true or false"),
        ("workspaceId=", "workspaceId must not be empty"),
        ("take=", "take must not be empty"),
        (
            "from=2026-01-02T10:00:00",
            "from must be an ISO 8601 date or date-time",
        ),
        ("userId=bob", "userId must be a UUID"),
        ("workspaceId=123", "workspaceId must be a UUID"),
        ("repoId=x", "repoId must be a UUID"),
        (
            "from=yesterday",
            "from must be an ISO 8601 date or date-time",
        ),
        ("to=2026-02-30", "to must be an ISO 8601 date or date-time"),
    ];
    for (query, message) in bad {
        let (status, body) = rest_list(&app, Some(&o.owner), query).await;
        assert_eq!(status, 400, "{query}: {body}");
        let got = body["message"].as_str().expect("message");
        assert!(got.starts_with(message), "{query}: {got}");
        // Authentication still comes first.
        let (status, _) = rest_list(&app, None, query).await;
        assert_eq!(status, 401, "{query} without a token");
    }
    for (req, message) in [
        (
            ListConversationsRequest {
                take: Some(101),
                ..Default::default()
            },
            "take must be between 1 and 100",
        ),
        (
            ListConversationsRequest {
                skip: Some(-1),
                ..Default::default()
            },
            "skip must be 0 or more",
        ),
        (
            ListConversationsRequest {
                from: "soon".into(),
                ..Default::default()
            },
            "from must be an ISO 8601",
        ),
        (
            ListConversationsRequest {
                user_id: "x".into(),
                ..Default::default()
            },
            "userId must be a UUID",
        ),
    ] {
        let status = grpc_list(&app, &o.owner, req).await.expect_err(message);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().starts_with(message),
            "{}",
            status.message()
        );
    }
    app.shutdown().await;
}

/// `from` / `to` bound the creation time, inclusively, as dates or date-times.
async fn date_bounds(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let o = Org::build(&app).await;
    let times = [
        (o.alice_w1[0], "2026-01-01T10:00:00Z"),
        (o.alice_w1[1], "2026-01-02T10:00:00Z"),
        (o.alice_w1[2], "2026-01-03T23:59:59.999999Z"),
    ];
    for (id, t) in times {
        let t = chrono::DateTime::parse_from_rfc3339(t)
            .expect("time")
            .with_timezone(&chrono::Utc);
        let literal = match app.db.backend {
            conversation_service::store::Backend::Postgres => format!("'{}'", t.to_rfc3339()),
            conversation_service::store::Backend::Sqlite => {
                format!(
                    "'{}'",
                    conversation_service::store::types::sqlite_time_text(&t)
                )
            }
        };
        app.db
            .exec(&format!(
                "UPDATE conversations SET created_at = {literal} WHERE id = {}",
                app.db.uuid_literal(id)
            ))
            .await;
    }
    let [a, b, c] = [o.alice_w1[0], o.alice_w1[1], o.alice_w1[2]];
    let cases: Vec<(&str, Vec<Uuid>)> = vec![
        ("to=2026-01-03", vec![c, b, a]),
        ("from=2026-01-02&to=2026-01-03", vec![c, b]),
        ("to=2026-01-02", vec![b, a]),
        ("from=2026-01-02T10:00:00Z&to=2026-01-02T10:00:00Z", vec![b]),
        ("from=2026-01-02T10:00:00.000001Z&to=2026-01-03", vec![c]),
        ("from=2026-01-02T12:00:00%2B02:00&to=2026-01-02", vec![b]),
        ("to=2026-01-03T23:59:59.999998Z", vec![b, a]),
        ("to=2025-12-31", vec![]),
        ("from=2026-01-03&to=2026-01-02", vec![]),
    ];
    for (query, expected) in cases {
        let (status, body) = rest_list(&app, Some(&o.alice), query).await;
        assert_eq!(status, 200, "{query}: {body}");
        assert_eq!(ids(&body), expected, "{query}");
        assert_eq!(body["total"], expected.len(), "{query}");
    }
    let (got, _) = grpc_list(
        &app,
        &o.alice,
        ListConversationsRequest {
            from: "2026-01-02".into(),
            to: "2026-01-02".into(),
            ..Default::default()
        },
    )
    .await
    .expect("bounded");
    assert_eq!(got, vec![b]);
    app.shutdown().await;
}

/// The DTO: every platform field, strings for token totals, nulls for absent values.
async fn dto_shape(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let o = Org::build(&app).await;
    let id = o.owner_w1;
    let res = app
        .http
        .get(format!("{}/conversation/{id}", app.base))
        .header("authorization", format!("Bearer {}", o.owner.token))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    let c = &body["conversation"];
    assert_eq!(
        keys(c),
        [
            "id",
            "orgId",
            "createdBy",
            "createdAt",
            "lastUpdatedAt",
            "workspaceId",
            "repoId",
            "tokensIn",
            "tokensOut",
            "deletedAt",
            "title",
            "repo",
            "creator"
        ]
    );
    assert_eq!(c["id"], id.to_string());
    assert_eq!(c["orgId"], o.org.to_string());
    assert_eq!(c["createdBy"], o.owner.id.to_string());
    assert_eq!(c["workspaceId"], o.w1.to_string());
    assert_eq!(c["repoId"], o.repo1.to_string());
    assert_eq!(
        (c["tokensIn"].clone(), c["tokensOut"].clone()),
        (json!("0"), json!("0"))
    );
    assert_eq!(
        (c["deletedAt"].clone(), c["title"].clone()),
        (Value::Null, Value::Null)
    );
    assert_eq!(
        c["repo"],
        json!({ "id": o.repo1.to_string(), "name": "one" })
    );
    assert_eq!(c["creator"]["id"], o.owner.id.to_string());
    assert_eq!(c["creator"]["lastName"], "Test");
    assert!(
        c["creator"]["email"]
            .as_str()
            .is_some_and(|e| e.contains('@'))
    );
    let created = chrono::DateTime::parse_from_rfc3339(c["createdAt"].as_str().expect("time"))
        .expect("RFC 3339");
    assert_eq!(c["createdAt"], c["lastUpdatedAt"]);
    assert!(c["createdAt"].as_str().expect("time").ends_with('Z'));
    assert!((chrono::Utc::now() - created.with_timezone(&chrono::Utc)).num_seconds() < 60);
    // The list carries the same objects.
    let (_, list) = rest_list(&app, Some(&o.owner), "take=100").await;
    let same = list["conversations"]
        .as_array()
        .expect("array")
        .iter()
        .find(|x| x["id"] == c["id"])
        .expect("listed");
    assert_eq!(same, c);
    app.shutdown().await;
}

/// One caller creating at once leaves count deltas (PostgreSQL) that a fold
/// moves into the counts; the total is exact before, during and after, and
/// after soft and hard deletes.
async fn totals_through_folds(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let w = crate::harness::World::build(&app).await;
    let creates = (0..24).map(|_| app.create_as(&w.reader, w.repo));
    let created: Vec<Uuid> = futures_util::future::join_all(creates).await;
    let total =
        async |app: &TestApp| rest_list(app, Some(&w.reader), "take=1").await.1["total"].clone();
    assert_eq!(total(&app).await, 24);
    let deltas = app
        .db
        .scalar("SELECT count(*) FROM conversation_count_deltas")
        .await;
    // The service folds every second too: this fold takes what is left.
    let folded = app.store.fold_counts().await.expect("fold");
    assert!(folded <= deltas, "{folded} of {deltas}");
    assert_eq!(
        app.db
            .scalar("SELECT count(*) FROM conversation_count_deltas")
            .await,
        0
    );
    assert_eq!(total(&app).await, 24);
    let delete = |id: Uuid, hard: bool| {
        app.http
            .delete(format!("{}/conversation/{id}?hardDelete={hard}", app.base))
            .bearer_auth(&w.reader.token)
            .send()
    };
    assert_eq!(
        delete(created[0], false).await.expect("delete").status(),
        200
    );
    assert_eq!(
        delete(created[1], true).await.expect("delete").status(),
        200
    );
    assert_eq!(total(&app).await, 22);
    let (_, with_deleted) = rest_list(&app, Some(&w.reader), "take=1&showDeleted=true").await;
    assert_eq!(with_deleted["total"], 23);
    app.store.fold_counts().await.expect("fold");
    assert_eq!(total(&app).await, 22);
    totals_agree(&app, &w.reader, "").await;
    app.shutdown().await;
}

/// A list's `total` is never counted row by row, and stays exact for every
/// filter: the repository's counts, the whole days, hours and ten-minute
/// slots (PostgreSQL) of a time filter from their counts and its partial
/// ends counted (or taken away from their unit's count), with and without
/// the deleted, before and after the deltas are folded (PostgreSQL), after
/// conversations move between hours.
async fn filter_totals_are_exact(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let o = Org::build(&app).await;
    // Every conversation 5 hours 7 minutes after the one before, from
    // 2026-03-01: some days whole in a filter, some hours, some partial.
    let spread = match app.db.backend {
        conversation_service::store::Backend::Postgres => {
            "UPDATE conversations SET created_at = timestamptz '2026-03-01 00:00:00+00' \
             + x.n * interval '307 minutes' \
             FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM conversations) AS x \
             WHERE conversations.id = x.id"
        }
        conversation_service::store::Backend::Sqlite => {
            "UPDATE conversations SET created_at = strftime('%Y-%m-%dT%H:%M:%f', \
             '2026-03-01 00:00:00', '+' || (x.n * 307) || ' minutes') || '000Z' \
             FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM conversations) AS x \
             WHERE conversations.id = x.id"
        }
    };
    app.db.exec(spread).await;
    let deleted = app
        .http
        .delete(format!("{}/conversation/{}", app.base, o.alice_w1[1]))
        .bearer_auth(&o.alice.token)
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), 200);
    let times = [
        "from=2026-03-01T01:00:00Z",
        "from=2026-03-01T07:10:00Z",
        "to=2026-03-02T05:00:00Z",
        "to=2026-03-03T05:20:00.5Z",
        "from=2026-03-01T00:30:00Z&to=2026-03-03T07:45:00Z",
        "from=2026-03-02T00:00:00Z&to=2026-03-03T00:00:00Z",
        "from=2026-03-01T02:00:00Z&to=2026-03-01T02:59:00Z",
        "from=2026-03-01T02:30:00Z&to=2026-03-01T03:30:00Z",
        "from=2026-03-01T23:00:00Z&to=2026-03-04T01:00:00Z",
        "from=2026-03-01T10:00:00Z&to=2026-03-02T06:00:00Z",
        // Ten-minute slots (PostgreSQL): one whole, several, with hours.
        "from=2026-03-01T05:00:00Z&to=2026-03-01T05:10:00Z",
        "from=2026-03-01T04:50:00Z&to=2026-03-01T10:20:00Z",
        "from=2026-03-01T05:03:00Z&to=2026-03-02T10:17:00Z",
        "from=2026-03-01T05:07:00Z&to=2026-03-01T05:07:00.000001Z",
        // Ends whose unit's rows outside the filter are fewer, taken away
        // from the unit's count, with conversations among them (10:14 in
        // the hour and the slot the start cuts, 20:28 in the slot the first
        // end cuts, 01:35 the next day in the hour the second end cuts).
        "from=2026-03-01T10:14:30Z&to=2026-03-01T20:27:00Z",
        "from=2026-03-01T10:14:30Z&to=2026-03-02T01:34:00Z",
    ];
    let narrow = [
        String::new(),
        format!("repoId={}", o.repo1),
        format!("workspaceId={}", o.w1),
        format!("userId={}", o.alice.id),
        "showDeleted=true".to_owned(),
    ];
    for round in 0..2 {
        if round == 1 {
            app.store.fold_counts().await.expect("fold");
        }
        for actor in [&o.owner, &o.ws_admin, &o.alice] {
            for n in &narrow {
                totals_agree(&app, actor, n).await;
                for t in times {
                    let query = if n.is_empty() {
                        t.to_owned()
                    } else {
                        format!("{t}&{n}")
                    };
                    totals_agree(&app, actor, &query).await;
                }
            }
        }
    }
    // The same totals over gRPC (the slots, hours and edges alike).
    for actor in [&o.owner, &o.ws_admin, &o.alice] {
        for t in times {
            let mut req = ListConversationsRequest {
                take: Some(1),
                ..Default::default()
            };
            for (key, value) in t.split('&').filter_map(|kv| kv.split_once('=')) {
                match key {
                    "from" => req.from = value.to_owned(),
                    _ => req.to = value.to_owned(),
                }
            }
            let (_, total) = grpc_list(&app, actor, req).await.expect("listed");
            let (_, rest) = rest_list(&app, Some(actor), &format!("take=1&{t}")).await;
            assert_eq!(rest["total"], total, "{t}");
        }
    }
    // Some of the filters above match more than one page of one.
    let (_, some) = rest_list(
        &app,
        Some(&o.owner),
        "take=1&from=2026-03-01T00:30:00Z&to=2026-03-03T07:45:00Z",
    )
    .await;
    assert!(some["total"].as_u64().expect("total") > 5, "{some}");
    app.shutdown().await;
}

/// A caller who administers more workspaces than a page's statement merges
/// walks (64) still sees exactly their set, page by page, on both
/// transports: the page walks the organization's index instead.
async fn many_administered_workspaces(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let o = Org::build(&app).await;
    let s = &app.store;
    let mut extra = Vec::new();
    for i in 0..70 {
        let ws = s
            .create_workspace(o.org, format!("Extra {i}"))
            .await
            .expect("ws");
        s.grant(ws, o.ws_admin.id, Access::Admin)
            .await
            .expect("grant");
        extra.push(ws);
    }
    let last = *extra.last().expect("a workspace");
    let repo = s
        .create_repo(o.org, "extra".into(), Some(last))
        .await
        .expect("repo");
    s.grant(last, o.alice.id, Access::Write)
        .await
        .expect("grant");
    let in_extra = app.create_as(&o.alice, repo).await;
    let mut expected: Vec<Uuid> = o
        .alice_w1
        .iter()
        .chain(&o.bob_w1)
        .chain([&o.owner_w1, &o.ws_admin_w2, &in_extra])
        .copied()
        .collect();
    expected.sort();
    expected.reverse();

    let mut paged = Vec::new();
    for skip in (0..expected.len()).step_by(3) {
        let (status, body) =
            rest_list(&app, Some(&o.ws_admin), &format!("take=3&skip={skip}")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["total"], expected.len(), "REST total");
        paged.extend(ids(&body));
    }
    assert_eq!(paged, expected, "REST pages, newest first");
    let (got, total) = grpc_list(
        &app,
        &o.ws_admin,
        ListConversationsRequest {
            take: Some(4),
            skip: Some(2),
            ..Default::default()
        },
    )
    .await
    .expect("page");
    assert_eq!(
        (got, total as usize),
        (expected[2..6].to_vec(), expected.len()),
        "gRPC page"
    );
    let (_, body) = rest_list(&app, Some(&o.ws_admin), &format!("userId={}", o.alice.id)).await;
    let alice: Vec<Uuid> = expected
        .iter()
        .filter(|id| o.alice_w1.contains(id) || **id == in_extra)
        .copied()
        .collect();
    assert_eq!(
        (ids(&body), body["total"].clone()),
        (alice.clone(), json!(alice.len())),
        "alice's"
    );
    app.shutdown().await;
}

/// A list's statements (its page, whatever the tier, and its total, with
/// or without a time filter) are prepared once per connection, not parsed
/// and planned again on every call.
async fn list_statements_are_prepared_once(db: TestDb) {
    let mut opts = crate::harness::test_options();
    opts.pool_size = 1;
    let app = TestApp::spawn_with(db, opts).await;
    let o = Org::build(&app).await;
    let log = crate::harness::StatementLog::attach(&app).await;
    let from = (chrono::Utc::now() - chrono::TimeDelta::days(1))
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string();
    let queries = ["take=2", "take=2&skip=2", &format!("take=2&from={from}")];
    let mut second_round = 0;
    for round in 0..2 {
        if round == 1 {
            second_round = log.mark();
        }
        for actor in [&o.owner, &o.ws_admin, &o.alice] {
            for query in queries {
                let (status, body) = rest_list(&app, Some(actor), query).await;
                assert_eq!(status, 200, "{query}: {body}");
            }
        }
    }
    let sent = log.sent_since(second_round);
    assert!(
        sent.iter().any(|sql| sql.contains("SUM(")),
        "the second round counts: {sent:#?}"
    );
    // PostgreSQL's `SET` / `RESET` around the walks are settings, sent as
    // simple queries: nothing there is planned.
    let mut fresh = log.unprepared_since(second_round);
    fresh.retain(|sql| !sql.starts_with("SET ") && !sql.starts_with("RESET "));
    assert!(
        fresh.is_empty(),
        "prepared again for every list: {fresh:#?}"
    );
    app.shutdown().await;
}

on_both_backends!(
    filter_totals_are_exact,
    visibility_tiers,
    pagination,
    date_bounds,
    dto_shape,
    totals_through_folds,
    many_administered_workspaces,
    list_statements_are_prepared_once
);
