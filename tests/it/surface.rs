//! The gRPC surface: reflection (v1 and v1alpha, so grpcurl and older tools
//! can explore it) and `grpc.health.v1.Health`.

use conversation_service::grpc::SERVICE_NAME;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

use crate::harness::{TestApp, TestDb};

const EXPECTED_SERVICES: [&str; 4] = [
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
    assert_eq!(
        list_services!(tonic_reflection::pb::v1, channel.clone()),
        EXPECTED_SERVICES
    );
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
    for service in ["", SERVICE_NAME] {
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
