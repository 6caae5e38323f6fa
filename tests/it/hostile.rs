//! Hostile input: property-based fuzzing of the JSON gateway and of the gRPC
//! decoder against the live server, header floods and slow clients. Every
//! rejection is a clear 4xx (JSON on REST); nothing is a server error.
//!
//! The properties run 64 cases each in the suite; a long run is
//! `PROPTEST_CASES=20000 cargo test --release --test it hostile`.

use std::io::{Read as _, Write as _};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf as _, BufMut as _};
use conversation_service::pb::{
    CreateConversationRequest, DeleteConversationRequest, GetConversationRequest,
    ListConversationsRequest,
};
use conversation_service::server::Config;
use proptest::prelude::*;
use proptest::strategy::ValueTree as _;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use serde_json::Value;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::harness::{TestApp, TestDb, World, as_actor};
use crate::on_both_backends;

/// Cases per property: `PROPTEST_CASES`, else 64.
fn runner() -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    })
}

/// Text a header may carry: visible ASCII and spaces.
fn header_text() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[ -~]{0,80}").expect("regex")
}

/// Any JSON value, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(".{0,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[derive(Debug, Clone)]
struct RestCase {
    method: &'static str,
    path: String,
    query: Vec<(String, String)>,
    token: Option<String>,
    content_type: Option<String>,
    idempotency_key: Option<String>,
    request_id: Option<String>,
    body: Vec<u8>,
}

fn rest_case(token: String, repo: String) -> impl Strategy<Value = RestCase> {
    let path = prop_oneof![
        Just("/conversation".to_owned()),
        Just(format!("/conversation/{repo}")),
        "[a-zA-Z0-9%._~-]{0,40}".prop_map(|s| format!("/conversation/{s}")),
        "(/[a-zA-Z0-9%._~-]{0,12}){0,4}".prop_map(|s| if s.is_empty() { "/".into() } else { s }),
    ];
    let body = prop_oneof![
        json_value().prop_map(|v| v.to_string().into_bytes()),
        json_value().prop_map(|v| serde_json::json!({ "repoId": v }).to_string().into_bytes()),
        Just(
            serde_json::json!({ "repoId": repo })
                .to_string()
                .into_bytes()
        ),
        proptest::collection::vec(any::<u8>(), 0..256),
    ];
    let query = proptest::collection::vec(
        (
            prop_oneof![
                Just("take".to_owned()),
                Just("skip".to_owned()),
                Just("from".to_owned()),
                Just("to".to_owned()),
                Just("userId".to_owned()),
                Just("showDeleted".to_owned()),
                Just("hardDelete".to_owned()),
                ".{0,8}"
            ],
            ".{0,30}",
        ),
        0..4,
    );
    (
        prop_oneof![
            Just("GET"),
            Just("POST"),
            Just("DELETE"),
            Just("PUT"),
            Just("PATCH")
        ],
        path,
        query,
        prop_oneof![Just(Some(token)), Just(None), header_text().prop_map(Some)],
        prop_oneof![
            Just(Some("application/json".to_owned())),
            Just(None),
            header_text().prop_map(Some)
        ],
        proptest::option::of(header_text()),
        proptest::option::of(header_text()),
        body,
    )
        .prop_map(
            |(method, path, query, token, content_type, idempotency_key, request_id, body)| {
                RestCase {
                    method,
                    path,
                    query,
                    token,
                    content_type,
                    idempotency_key,
                    request_id,
                    body,
                }
            },
        )
}

/// Sends one case; returns why it is wrong, if it is.
async fn check_rest(app: &TestApp, case: RestCase) -> Result<(), String> {
    let mut url =
        reqwest::Url::parse(&format!("{}{}", app.base, case.path)).map_err(|e| e.to_string())?;
    if !case.query.is_empty() {
        url.query_pairs_mut().extend_pairs(case.query.iter());
    }
    let method = reqwest::Method::from_bytes(case.method.as_bytes()).map_err(|e| e.to_string())?;
    let mut request = app.http.request(method, url).body(case.body.clone());
    for (name, value) in [
        (
            "authorization",
            case.token.as_ref().map(|t| format!("Bearer {t}")),
        ),
        ("content-type", case.content_type.clone()),
        ("idempotency-key", case.idempotency_key.clone()),
        ("x-request-id", case.request_id.clone()),
    ] {
        if let Some(value) = value {
            request = request.header(name, value);
        }
    }
    let response = request
        .send()
        .await
        .map_err(|e| format!("no answer: {e}"))?;
    let status = response.status();
    if status.is_server_error() {
        return Err(format!("server error {status}"));
    }
    let json = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !json && status.is_client_error() {
        return Err(format!("{status} is not JSON"));
    }
    if status.is_client_error() {
        let body: Value = response
            .json()
            .await
            .map_err(|e| format!("{status}: {e}"))?;
        if body["success"] != false || body["message"].as_str().is_none_or(str::is_empty) {
            return Err(format!("{status} with {body}"));
        }
    }
    Ok(())
}

/// Random requests of every shape at the gateway: never a server error,
/// every refusal a JSON 4xx with a message.
async fn fuzz_rest_gateway(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let w = World::build(&app).await;
    let app = Arc::new(app);
    let handle = tokio::runtime::Handle::current();
    let (token, repo) = (w.owner.token.clone(), w.repo.to_string());
    let checker = app.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        runner()
            .run(&rest_case(token, repo), |case| {
                handle
                    .block_on(check_rest(&checker, case))
                    .map_err(TestCaseError::fail)
            })
            .map_err(|e| e.to_string())
    })
    .await
    .expect("runner");
    if let Err(e) = outcome {
        panic!("{e}");
    }
    assert_eq!(app.conversations_without_event().await, 0);
    Arc::into_inner(app).expect("last handle").shutdown().await;
}

/// Bytes straight into the gRPC decoder.
#[derive(Clone, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n).to_vec()))
    }
}

const RPCS: [&str; 4] = [
    "/flashback.conversation.v1.ConversationService/CreateConversation",
    "/flashback.conversation.v1.ConversationService/ListConversations",
    "/flashback.conversation.v1.ConversationService/GetConversation",
    "/flashback.conversation.v1.ConversationService/DeleteConversation",
];

/// What a client's mistake may answer; anything else is the server's fault.
fn is_client_error(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(
        code,
        Ok | InvalidArgument
            | Unauthenticated
            | NotFound
            | PermissionDenied
            | FailedPrecondition
            | AlreadyExists
            | OutOfRange
    )
}

/// Random bytes and random field values into every rpc: no INTERNAL, no
/// UNKNOWN; undecodable bytes are INVALID_ARGUMENT.
async fn fuzz_grpc_decoder(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let w = World::build(&app).await;
    let channel = app.channel().await;
    let handle = tokio::runtime::Handle::current();
    let owner = w.owner.clone();
    let raw = (
        0..RPCS.len(),
        proptest::collection::vec(any::<u8>(), 0..200),
    );
    let outcome = tokio::task::spawn_blocking(move || {
        runner()
            .run(&raw, |(rpc, bytes)| {
                let mut grpc = tonic::client::Grpc::new(channel.clone());
                let owner = owner.clone();
                let result = handle.block_on(async move {
                    grpc.ready()
                        .await
                        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
                    let request = as_actor(bytes, &owner);
                    grpc.unary(
                        request,
                        http::uri::PathAndQuery::from_static(RPCS[rpc]),
                        RawCodec,
                    )
                    .await
                });
                match result {
                    Ok(_) => Ok(()),
                    Err(s) if is_client_error(s.code()) => {
                        if s.message().contains("decode")
                            && s.code() != tonic::Code::InvalidArgument
                        {
                            return Err(TestCaseError::fail(format!("decode error as {s:?}")));
                        }
                        Ok(())
                    }
                    Err(s) => Err(TestCaseError::fail(format!("{} -> {s:?}", RPCS[rpc]))),
                }
            })
            .map_err(|e| e.to_string())
    })
    .await
    .expect("runner");
    if let Err(e) = outcome {
        panic!("{e}");
    }

    // Well-formed messages with arbitrary field values.
    let mut client = app.grpc().await;
    let mut runner = runner();
    let fields = (
        ".{0,60}",
        ".{0,40}",
        any::<Option<i64>>(),
        any::<Option<i64>>(),
        any::<bool>(),
    );
    for _ in 0..runner.config().cases {
        let (text, date, take, skip, flag) =
            fields.new_tree(&mut runner).expect("a case").current();
        let outcomes = [
            client
                .create_conversation(as_actor(
                    CreateConversationRequest {
                        repo_id: text.clone(),
                    },
                    &w.owner,
                ))
                .await
                .map(|_| ()),
            client
                .list_conversations(as_actor(
                    ListConversationsRequest {
                        take,
                        skip,
                        from: date.clone(),
                        to: text.clone(),
                        user_id: text.clone(),
                        workspace_id: String::new(),
                        repo_id: date.clone(),
                        show_deleted: flag,
                    },
                    &w.owner,
                ))
                .await
                .map(|_| ()),
            client
                .get_conversation(as_actor(
                    GetConversationRequest {
                        conversation_id: text.clone(),
                        show_deleted: flag,
                    },
                    &w.owner,
                ))
                .await
                .map(|_| ()),
            client
                .delete_conversation(as_actor(
                    DeleteConversationRequest {
                        conversation_id: text.clone(),
                        hard_delete: flag,
                    },
                    &w.owner,
                ))
                .await
                .map(|_| ()),
        ];
        for outcome in outcomes {
            if let Err(s) = outcome {
                assert!(
                    is_client_error(s.code()),
                    "{text:?} {date:?} {take:?} {skip:?}: {s:?}"
                );
            }
        }
    }
    app.shutdown().await;
}

on_both_backends!(fuzz_rest_gateway, fuzz_grpc_decoder);

/// Undecodable bytes are the caller's fault: INVALID_ARGUMENT, said plainly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_grpc_messages_are_invalid_argument() {
    let app = TestApp::spawn(TestDb::sqlite()).await;
    let w = World::build(&app).await;
    let channel = app.channel().await;
    // Field 1 (repo_id) claims 100 bytes and has 2; then a truncated varint.
    for garbage in [
        vec![0x0a, 100, b'a', b'b'],
        vec![0x08, 0xff, 0xff],
        vec![0xff; 8],
    ] {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.expect("ready");
        let status = grpc
            .unary(
                as_actor(garbage, &w.reader),
                http::uri::PathAndQuery::from_static(RPCS[0]),
                RawCodec,
            )
            .await
            .expect_err("refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert_eq!(
            status.message(),
            conversation_service::grpc::codec::UNDECODABLE
        );
    }
    assert_eq!(app.count("conversations").await, 0);
    app.shutdown().await;
}

/// A flood of headers is a 431, and the service carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_floods_are_refused() {
    let app = TestApp::spawn(TestDb::sqlite()).await;
    let mut request = app.http.get(format!("{}/healthz", app.base));
    for i in 0..150 {
        request = request.header(format!("x-flood-{i}"), "x");
    }
    let status = request.send().await.expect("answered").status();
    assert_eq!(status, 431);
    let huge = app
        .http
        .get(format!("{}/healthz", app.base))
        .header("x-huge", "x".repeat(1024 * 1024))
        .send()
        .await;
    assert!(
        huge.as_ref().map_or(true, |r| r.status() == 431),
        "a 1 MiB header is refused: {huge:?}"
    );
    let ok = app
        .http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .expect("alive");
    assert_eq!(ok.status(), 200);
    app.shutdown().await;
}

/// A client that opens a connection and sends its request head slowly, or
/// not at all, is cut off after the header read timeout, while others are
/// served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off() {
    let config = Config {
        header_read_timeout: Duration::from_millis(500),
        ..Config::local()
    };
    let app = TestApp::spawn_config(TestDb::sqlite(), config).await;
    let addr = app.running().http_addr;
    let clients: Vec<_> = (0..3)
        .map(|i| {
            std::thread::spawn(move || {
                let mut tcp = std::net::TcpStream::connect(addr).expect("connect");
                tcp.set_read_timeout(Some(Duration::from_secs(5)))
                    .expect("timeout");
                let started = Instant::now();
                if i > 0 {
                    // A head that never ends, a byte at a time.
                    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                        .expect("write");
                    for _ in 0..3 {
                        std::thread::sleep(Duration::from_millis(100));
                        let _ = tcp.write_all(b"X");
                    }
                }
                let mut buf = Vec::new();
                let _ = tcp.read_to_end(&mut buf);
                started.elapsed()
            })
        })
        .collect();
    let ok = app
        .http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .expect("served meanwhile");
    assert_eq!(ok.status(), 200);
    for (i, client) in clients.into_iter().enumerate() {
        let took = client.join().expect("client");
        assert!(
            took < Duration::from_secs(3),
            "client {i} cut off after {took:?}"
        );
    }
    app.shutdown().await;
}
