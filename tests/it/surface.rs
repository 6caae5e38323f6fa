//! The public surface: reflection (v1 and v1alpha, so grpcurl and older
//! tools can explore it), `grpc.health.v1.Health`, and the JSON reply bodies,
//! snapshot-tested (insta; ids, times, names and emails redacted) so that an
//! unintended change shows up in review.

use conversation_service::grpc::SERVICE_NAME;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

use serde_json::{Value, json};

use crate::harness::{TestApp, TestDb, World};
use crate::on_both_backends;

const EXPECTED_SERVICES: [&str; 8] = [
    "flashback.ai.v1.PolicyService",
    "flashback.ai.v1.ProviderService",
    "flashback.ai.v1.SystemEventService",
    "flashback.ai.v1.UsageService",
    "flashback.conversation.v1.ConversationService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

macro_rules! list_services {
    ($module:path, $channel:expr) => {{
        use $module as r;
        let mut client = r::server_reflection_client::ServerReflectionClient::new($channel);
        let request = r::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(r::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            )),
        };
        let mut stream = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .expect("reflection call")
            .into_inner();
        let reply = stream.message().await.expect("reply").expect("one message");
        let Some(r::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
            reply.message_response
        else {
            panic!("not a service list: {reply:?}");
        };
        let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        names.sort();
        names
    }};
}

macro_rules! describe_symbol {
    ($module:path, $channel:expr, $symbol:expr) => {{
        use $module as r;
        let mut client = r::server_reflection_client::ServerReflectionClient::new($channel);
        let request = r::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(r::server_reflection_request::MessageRequest::FileContainingSymbol(
                $symbol.to_owned(),
            )),
        };
        let mut stream = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .expect("reflection call")
            .into_inner();
        stream.message().await.map(|reply| {
            matches!(
                reply.expect("one message").message_response,
                Some(r::server_reflection_response::MessageResponse::FileDescriptorResponse(f)) if !f.file_descriptor_proto.is_empty()
            )
        })
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_and_describes_the_services_in_v1_and_v1alpha() {
    let app = TestApp::spawn(TestDb::sqlite()).await;
    let channel = app.channel().await;
    let listed = list_services!(tonic_reflection::pb::v1, channel.clone());
    assert_eq!(listed, EXPECTED_SERVICES);
    insta::assert_json_snapshot!("reflection_services", listed);
    assert_eq!(
        list_services!(tonic_reflection::pb::v1alpha, channel.clone()),
        EXPECTED_SERVICES
    );
    for symbol in [
        SERVICE_NAME,
        "flashback.conversation.v1.CreateConversationRequest",
        "google.protobuf.Timestamp",
    ] {
        assert!(
            describe_symbol!(tonic_reflection::pb::v1, channel.clone(), symbol).expect(symbol),
            "{symbol}"
        );
        assert!(
            describe_symbol!(tonic_reflection::pb::v1alpha, channel.clone(), symbol).expect(symbol),
            "{symbol}"
        );
    }
    let unknown = describe_symbol!(tonic_reflection::pb::v1, channel.clone(), "no.such.Service")
        .expect_err("unknown symbol");
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_serving_for_the_server_and_the_service() {
    let app = TestApp::spawn(TestDb::sqlite()).await;
    let mut health = HealthClient::new(app.channel().await);
    for service in ["", SERVICE_NAME, "flashback.ai.v1.ProviderService"] {
        let reply = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health answers")
            .into_inner();
        assert_eq!(reply.status(), ServingStatus::Serving, "{service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .expect_err("unknown service");
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    app.shutdown().await;
}

/// A reply body with what changes from run to run replaced: ids (any
/// UUID), times, and the fixtures' generated names and emails.
pub fn redacted(mut body: Value) -> Value {
    fn walk(value: &mut Value, key: &str) {
        match value {
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    walk(v, k);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| walk(v, key)),
            Value::String(s) => {
                let replacement = if uuid::Uuid::try_parse(s).is_ok() {
                    Some("[uuid]")
                } else if chrono::DateTime::parse_from_rfc3339(s).is_ok() {
                    Some("[time]")
                } else if matches!(key, "email" | "name" | "lastName" | "requestId") {
                    Some("[text]")
                } else {
                    None
                };
                if let Some(r) = replacement {
                    *s = r.to_owned();
                }
            }
            _ => {}
        }
    }
    walk(&mut body, "");
    body
}

/// The REST reply bodies keep their shape, the same on both backends.
async fn reply_bodies_keep_their_shape(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let w = World::build(&app).await;
    let get = |path: String| {
        let request = app
            .http
            .get(format!("{}{path}", app.base))
            .header("authorization", format!("Bearer {}", w.reader.token));
        async move {
            let res = request.send().await.expect("get");
            (
                res.status().as_u16(),
                res.json::<Value>().await.expect("JSON"),
            )
        }
    };
    let (status, created) = app
        .post_create(
            Some(&w.reader.token),
            &json!({ "repoId": w.repo }).to_string(),
        )
        .await;
    assert_eq!(status, 200);
    let id = created["conversationId"].as_str().expect("id").to_owned();
    insta::assert_json_snapshot!("create_reply", redacted(created));
    let (status, one) = get(format!("/conversation/{id}")).await;
    assert_eq!(status, 200);
    insta::assert_json_snapshot!("get_reply", redacted(one));
    let (status, page) = get("/conversation?take=1".into()).await;
    assert_eq!(status, 200);
    insta::assert_json_snapshot!("list_reply", redacted(page));
    let (status, messages) = get(format!("/conversation/{id}/messages")).await;
    assert_eq!(status, 200);
    insta::assert_json_snapshot!("messages_reply", redacted(messages));
    let (status, error) = get("/conversation?take=500".into()).await;
    assert_eq!(status, 400);
    insta::assert_json_snapshot!("error_reply", redacted(error));
    app.shutdown().await;
}

on_both_backends!(reply_bodies_keep_their_shape);
