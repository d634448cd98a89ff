//! The gRPC contract between the Operon core and handler services, package `operon.v1`.
//!
//! The core is the client ([`v1::handler_service_client::HandlerServiceClient`]); a handler
//! service implements [`v1::handler_service_server::HandlerService`]. The source of truth is
//! `proto/operon/v1/handler.proto`; read its comments for the meaning of every field.

/// Package `operon.v1`, generated from `operon/v1/handler.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("operon.v1");
}

/// The encoded `google.protobuf.FileDescriptorSet` of package `operon.v1` and its imports, for
/// gRPC server reflection (tonic-reflection's `register_encoded_file_descriptor_set`).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/operon_descriptor.bin"));
