//! The gRPC surface: reflection (v1 and v1alpha) and health.
