//! The generated code compiles cleanly in a hostile crate: no prelude, every
//! lint that matters denied, arguments named like the generated locals, and
//! the runtime reached through a re-export.
#![no_implicit_prelude]
#![deny(missing_docs, warnings, unreachable_pub, rust_2018_idioms)]

/// The runtime under another name, as a crate re-exporting it would have it.
mod reexport {
    pub(crate) use ::rpc_core as runtime;
}

/// Services declared with no prelude in scope.
pub mod services {
    use ::rpc_core::rpc_service;

    /// Arguments named like every local the macro could have used.
    #[rpc_service]
    pub trait Clash {
        /// Adds all arguments.
        async fn sum(
            &self,
            channel: u32,
            request: u32,
            method: u32,
            service: u32,
            inner: u32,
            addr: u32,
        ) -> u32;
        /// A raw identifier as a method name.
        async fn r#type(&self) -> ::std::string::String;
        /// Byte vectors, which travel as bytes, under a full path.
        async fn bytes(&self, data: ::std::vec::Vec<u8>, tail: u8) -> ::std::vec::Vec<u8>;
        /// Only on unix.
        #[cfg(unix)]
        async fn unix_only(&self) -> bool;
        /// Never compiled.
        #[cfg(any())]
        async fn never(&self) -> NoSuchType;
    }

    /// Reached through `crate = "..."`.
    #[rpc_service(crate = "crate::reexport::runtime")]
    pub trait Renamed {
        /// Returns nothing.
        async fn nothing(&self);
    }

    /// A private trait: its generated items must not warn when unused.
    #[rpc_service]
    trait Hidden {
        async fn unused(&self, x: u8) -> u8;
    }

    pub(crate) struct Impl;

    impl Clash for Impl {
        async fn sum(
            &self,
            channel: u32,
            request: u32,
            method: u32,
            service: u32,
            inner: u32,
            addr: u32,
        ) -> u32 {
            channel + request + method + service + inner + addr
        }

        async fn r#type(&self) -> ::std::string::String {
            <::std::string::String as ::std::convert::From<&str>>::from("type")
        }

        async fn bytes(&self, mut data: ::std::vec::Vec<u8>, tail: u8) -> ::std::vec::Vec<u8> {
            data.push(tail);
            data
        }

        #[cfg(unix)]
        async fn unix_only(&self) -> bool {
            true
        }
    }

    impl Renamed for Impl {
        async fn nothing(&self) {}
    }
}

#[test]
fn generated_code_works_without_a_prelude() {
    use services::{ClashClient, ClashServer, Impl, RenamedClient, RenamedServer};
    let runtime = ::tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let server = ::rpc_core::Server::builder()
            .add_service(ClashServer::new(Impl))
            .add_service(RenamedServer::new(Impl))
            .bind("127.0.0.1:0")
            .await
            .unwrap();
        let addr = server.local_addr();
        ::tokio::spawn(server.serve());
        let channel = ::rpc_core::Channel::connect(addr).await.unwrap();
        let clash = ClashClient::new(::std::clone::Clone::clone(&channel));
        ::std::assert_eq!(clash.sum(1, 2, 3, 4, 5, 6).await.unwrap(), 21);
        ::std::assert_eq!(clash.r#type().await.unwrap(), "type");
        let data = <::std::vec::Vec<u8> as ::std::convert::From<&[u8]>>::from(&[1, 2][..]);
        ::std::assert_eq!(clash.bytes(data, 3).await.unwrap(), [1, 2, 3]);
        #[cfg(unix)]
        ::std::assert!(clash.unix_only().await.unwrap());
        RenamedClient::new(channel).nothing().await.unwrap();
    });
}

#[test]
fn clients_are_clone_send_sync_and_servers_are_services() {
    fn client<T: ::std::clone::Clone + ::std::marker::Send + ::std::marker::Sync + 'static>() {}
    fn service<T: ::rpc_core::Service>() {}
    client::<services::ClashClient>();
    service::<services::ClashServer<services::Impl>>();
}

/// User types named like the generic parameters and helpers of generated
/// code, and two traits whose names and methods would make the same
/// argument-struct name if joined naively.
#[allow(non_camel_case_types)]
pub mod type_names {
    use ::serde::{Deserialize, Serialize};

    /// Named like a generic parameter.
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    pub struct A(pub u8);
    /// Named like a generic parameter.
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    pub struct S(pub u8);
    /// Named like a generic parameter.
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    pub struct D(pub u8);
    /// Named like a visitor.
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    pub struct Fields(pub u8);

    /// Takes them all.
    #[::rpc_core::rpc_service]
    pub trait Foo {
        /// All four.
        async fn bar_baz(&self, a: A, s: S, d: D, f: Fields) -> u8;
    }

    /// `Foo_bar`'s `baz` beside `Foo`'s `bar_baz`.
    #[::rpc_core::rpc_service]
    pub trait Foo_bar {
        /// One.
        async fn baz(&self, a: A) -> u8;
    }

    /// Serves both.
    pub struct Both;

    impl Foo for Both {
        async fn bar_baz(&self, a: A, s: S, d: D, f: Fields) -> u8 {
            a.0 + s.0 + d.0 + f.0
        }
    }

    impl Foo_bar for Both {
        async fn baz(&self, a: A) -> u8 {
            a.0
        }
    }
}

#[test]
fn user_types_may_have_the_names_generated_code_uses() {
    use type_names::*;
    let runtime = ::tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let server = ::rpc_core::Server::builder()
            .add_service(FooServer::new(Both))
            .add_service(Foo_barServer::new(Both))
            .bind("127.0.0.1:0")
            .await
            .unwrap();
        let addr = server.local_addr();
        ::tokio::spawn(server.serve());
        let channel = ::rpc_core::Channel::connect(addr).await.unwrap();
        let foo = FooClient::new(::std::clone::Clone::clone(&channel));
        ::std::assert_eq!(foo.bar_baz(A(1), S(2), D(3), Fields(4)).await.unwrap(), 10);
        ::std::assert_eq!(Foo_barClient::new(channel).baz(A(5)).await.unwrap(), 5);
    });
}
