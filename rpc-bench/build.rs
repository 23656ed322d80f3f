//! Generates tonic's client and server for the benchmark service from a
//! description in Rust, so that no `protoc` is needed.

fn main() {
    let method = |name: &str, route: &str, input: &str, output: &str| {
        tonic_build::manual::Method::builder()
            .name(name)
            .route_name(route)
            .input_type(input)
            .output_type(output)
            .codec_path("tonic_prost::ProstCodec")
            .build()
    };
    let service = tonic_build::manual::Service::builder()
        .name("Bench")
        .package("bench")
        .method(method(
            "add",
            "Add",
            "crate::imp::tonic::AddRequest",
            "crate::imp::tonic::AddReply",
        ))
        .method(method(
            "echo",
            "Echo",
            "crate::imp::tonic::Blob",
            "crate::imp::tonic::Blob",
        ))
        .method(method(
            "get_obj",
            "GetObj",
            "crate::imp::tonic::Empty",
            "crate::imp::tonic::Text",
        ))
        .method(method(
            "send_obj",
            "SendObj",
            "crate::imp::tonic::Text",
            "crate::imp::tonic::Empty",
        ))
        .build();
    tonic_build::manual::Builder::new().compile(&[service]);
}
