//! The gRPC adapter and server: `ConversationService` over the core
//! ([`GrpcApi`]; `ApiError` becomes a status in [`status`] only), server reflection (v1 and v1alpha,
//! for grpcurl and for older tools such as Postman) and `grpc.health.v1.Health`.

mod call;
pub mod codec;
mod conversations;
mod messages;
mod policies;
mod providers;
pub mod status;
mod usage;

pub use conversations::GrpcApi;

use std::sync::Arc;

use tonic::transport::Server;
use tonic::transport::server::Router;
use tonic_health::server::HealthReporter;
use tower::layer::util::{Identity, Stack};

use crate::config::Timeouts;
use crate::observe::{Admission, GrpcLayer, known_rpcs};

use crate::pb::FILE_DESCRIPTOR_SET;
use crate::pb::ai::policy_service_server::PolicyServiceServer;
use crate::pb::ai::provider_service_server::ProviderServiceServer;
use crate::pb::ai::system_event_service_server::SystemEventServiceServer;
use crate::pb::ai::usage_service_server::UsageServiceServer;
use crate::pb::conversation_service_server::ConversationServiceServer;
use crate::service::Service;

/// The largest gRPC message accepted, in bytes: the REST body limit.
pub const MAX_MESSAGE_SIZE: usize = crate::protocol::BODY_LIMIT;

/// The fully qualified name of our service, as health and reflection know it.
pub const SERVICE_NAME: &str = "flashback.conversation.v1.ConversationService";

/// Every service of ours, as health knows them.
pub const SERVICE_NAMES: [&str; 2] = [SERVICE_NAME, "flashback.ai.v1.ProviderService"];

/// The gRPC router: every rpc logged, counted and time-bounded.
pub type GrpcRouter = Router<Stack<GrpcLayer, Identity>>;

/// Every descriptor set served by reflection.
const DESCRIPTOR_SETS: [&[u8]; 4] = [
    FILE_DESCRIPTOR_SET,
    tonic_health::pb::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
];

/// Builds the gRPC router and the reporter that controls its health answers
/// (serving for "" and for the service once built).
pub async fn router(
    service: Arc<Service>,
    timeouts: Timeouts,
    admission: Admission,
) -> anyhow::Result<(GrpcRouter, HealthReporter)> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<ConversationServiceServer<GrpcApi>>()
        .await;
    reporter
        .set_serving::<ProviderServiceServer<GrpcApi>>()
        .await;
    reporter.set_serving::<PolicyServiceServer<GrpcApi>>().await;
    reporter.set_serving::<UsageServiceServer<GrpcApi>>().await;
    reporter
        .set_serving::<SystemEventServiceServer<GrpcApi>>()
        .await;
    // Both reflection endpoints describe everything served, each other included.
    let reflection = || {
        DESCRIPTOR_SETS.iter().fold(
            tonic_reflection::server::Builder::configure().include_reflection_service(false),
            |builder, set| builder.register_encoded_file_descriptor_set(set),
        )
    };
    let observe = GrpcLayer::new(
        service.metrics().clone(),
        known_rpcs(&DESCRIPTOR_SETS),
        timeouts,
        admission,
        service.store().clone(),
    );
    let api = GrpcApi::new(service);
    let providers =
        ProviderServiceServer::new(api.clone()).max_decoding_message_size(MAX_MESSAGE_SIZE);
    let policies =
        PolicyServiceServer::new(api.clone()).max_decoding_message_size(MAX_MESSAGE_SIZE);
    let usage = UsageServiceServer::new(api.clone()).max_decoding_message_size(MAX_MESSAGE_SIZE);
    let events =
        SystemEventServiceServer::new(api.clone()).max_decoding_message_size(MAX_MESSAGE_SIZE);
    let api = ConversationServiceServer::new(api).max_decoding_message_size(MAX_MESSAGE_SIZE);
    let router = Server::builder()
        .layer(observe)
        .add_service(health)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(api)
        .add_service(providers)
        .add_service(policies)
        .add_service(usage)
        .add_service(events);
    Ok((router, reporter))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rpcs given the provider's time limit are rpcs we serve (a renamed
    /// rpc would otherwise silently fall back to the request timeout).
    #[test]
    fn provider_rpcs_are_served() {
        let known = known_rpcs(&DESCRIPTOR_SETS);
        for rpc in crate::protocol::PROVIDER_RPCS {
            assert!(known.contains(rpc), "{rpc}");
        }
    }
}
