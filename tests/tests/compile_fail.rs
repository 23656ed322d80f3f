//! Each misuse of `#[rpc_service]` in ui/ fails to compile with the error
//! in its `.stderr`. Re-bless with
//! `TRYBUILD=overwrite cargo test -p rpc-tests --test compile_fail`.

#[test]
fn misuses_are_compile_errors() {
    trybuild::TestCases::new().compile_fail("ui/*.rs");
}
