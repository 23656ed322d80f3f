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
    let numbers = tonic_build::manual::Method::builder()
        .name("numbers")
        .route_name("Numbers")
        .input_type("crate::imp::tonic::Count")
        .output_type("crate::imp::tonic::Number")
        .codec_path("tonic_prost::ProstCodec")
        .server_streaming()
        .build();
    let upload = tonic_build::manual::Method::builder()
        .name("upload")
        .route_name("Upload")
        .input_type("crate::imp::tonic::Blob")
        .output_type("crate::imp::tonic::Count")
        .codec_path("tonic_prost::ProstCodec")
        .client_streaming()
        .build();
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
        .method(numbers)
        .method(upload)
        .build();
    tonic_build::manual::Builder::new().compile(&[service]);
}
