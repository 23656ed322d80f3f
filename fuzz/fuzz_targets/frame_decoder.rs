#![no_main]

#[path = "cap.rs"]
mod cap;

#[global_allocator]
static ALLOC: cap::Capped = cap::Capped;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    rpc_core::__fuzz::frame_decoder(data);
});
