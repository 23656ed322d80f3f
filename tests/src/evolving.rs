//! Two versions of one service, `Profiles`, compiled side by side: what a
//! rolling upgrade puts on the two ends of a connection
//! (docs/EVOLUTION.md). Each method is one change between `v1` and `v2`.

/// The service before the upgrade.
pub mod v1 {
    use rpc_core::rpc_service;
    use serde::{Deserialize, Serialize};

    /// A user as v1 knows one.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct User {
        /// Their name.
        pub name: String,
    }

    /// A profile as v1 answers it.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Profile {
        /// Whose.
        pub name: String,
        /// Since when.
        pub since: u32,
    }

    /// An item inside a `Vec` and an `Option`.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Item {
        /// What it is.
        pub label: String,
    }

    /// An address whose `zip` v2 removes (with a default here, so that v2
    /// can leave it out).
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Address {
        /// The street.
        pub street: String,
        /// The zip code, empty when not sent.
        #[serde(default)]
        pub zip: String,
    }

    /// A point whose fields v2 reorders.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Point {
        /// Across.
        pub x: i32,
        /// Up.
        pub y: i32,
        /// Its name.
        pub label: String,
    }

    /// Colours; v2 adds one.
    #[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
    pub enum Color {
        /// Red.
        Red,
        /// Green.
        Green,
    }

    /// A tag whose value v2 makes a number: not a safe change.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Tag {
        /// Its value.
        pub value: String,
    }

    /// An order to which v2 adds a field with no default: not safe.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Order {
        /// Which.
        pub id: u64,
    }

    /// Profiles, version 1.
    #[rpc_service(name = "Profiles")]
    pub trait Profiles {
        /// Registers a user (v2 adds a defaulted field to `User`).
        async fn register(&self, user: User) -> String;
        /// A profile (v2 adds a defaulted field to `Profile`).
        async fn lookup(&self, name: String) -> Profile;
        /// Items in a `Vec` and an `Option` (v2 adds a defaulted field).
        async fn items(&self, items: Vec<Item>, extra: Option<Item>) -> Vec<Item>;
        /// An address (v2 removes `zip`).
        async fn address(&self, address: Address) -> Address;
        /// A point (v2 reorders its fields).
        async fn point(&self, point: Point) -> Point;
        /// A colour (v2 adds a variant).
        async fn paint(&self, color: Color) -> Color;
        /// A count (v2 widens the argument to `u64`).
        async fn widen(&self, n: u32) -> u64;
        /// A score (v2 widens it to `f64`).
        async fn score(&self) -> f32;
        /// A tag (v2 changes its value's type).
        async fn tag(&self, tag: Tag) -> String;
        /// An order (v2 adds a field with no default).
        async fn order(&self, order: Order) -> u64;
        /// A sum (v2 takes and returns `i64`: the `u64`-for-`i64` case).
        async fn add(&self, a: u64, b: u64) -> u64;
    }

    /// v1's implementation: echoes what it was given.
    pub struct Impl;

    impl Profiles for Impl {
        async fn register(&self, user: User) -> String {
            user.name
        }
        async fn lookup(&self, name: String) -> Profile {
            Profile { name, since: 2019 }
        }
        async fn items(&self, mut items: Vec<Item>, extra: Option<Item>) -> Vec<Item> {
            items.extend(extra);
            items
        }
        async fn address(&self, address: Address) -> Address {
            address
        }
        async fn point(&self, point: Point) -> Point {
            point
        }
        async fn paint(&self, color: Color) -> Color {
            color
        }
        async fn widen(&self, n: u32) -> u64 {
            u64::from(n)
        }
        async fn score(&self) -> f32 {
            1.5
        }
        async fn tag(&self, tag: Tag) -> String {
            tag.value
        }
        async fn order(&self, order: Order) -> u64 {
            order.id
        }
        async fn add(&self, a: u64, b: u64) -> u64 {
            a.wrapping_add(b)
        }
    }
}

/// The service after the upgrade.
pub mod v2 {
    use rpc_core::rpc_service;
    use serde::{Deserialize, Serialize};

    /// A user, with an email v1 does not send.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct User {
        /// Their name.
        pub name: String,
        /// Their email, if known.
        #[serde(default)]
        pub email: Option<String>,
    }

    /// A profile, with a karma v1 does not read.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Profile {
        /// Whose.
        pub name: String,
        /// Since when.
        pub since: u32,
        /// Their karma, 0 when not sent.
        #[serde(default)]
        pub karma: u32,
    }

    /// An item, with a count.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Item {
        /// What it is.
        pub label: String,
        /// How many, 1 when not sent.
        #[serde(default = "one")]
        pub count: u32,
    }

    fn one() -> u32 {
        1
    }

    /// An address without a zip.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Address {
        /// The street.
        pub street: String,
    }

    /// A point, fields reordered.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Point {
        /// Its name.
        pub label: String,
        /// Up.
        pub y: i32,
        /// Across.
        pub x: i32,
    }

    /// Colours, one more.
    #[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
    pub enum Color {
        /// Red.
        Red,
        /// Green.
        Green,
        /// Blue, which v1 does not know.
        Blue,
    }

    /// A tag with a number.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Tag {
        /// Its value.
        pub value: i64,
    }

    /// An order with a quantity that has no default.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Order {
        /// Which.
        pub id: u64,
        /// How many.
        pub quantity: u32,
    }

    /// Profiles, version 2.
    #[rpc_service(name = "Profiles")]
    pub trait Profiles {
        /// Registers a user.
        async fn register(&self, user: User) -> String;
        /// A profile.
        async fn lookup(&self, name: String) -> Profile;
        /// Items in a `Vec` and an `Option`.
        async fn items(&self, items: Vec<Item>, extra: Option<Item>) -> Vec<Item>;
        /// An address.
        async fn address(&self, address: Address) -> Address;
        /// A point.
        async fn point(&self, point: Point) -> Point;
        /// A colour.
        async fn paint(&self, color: Color) -> Color;
        /// A count.
        async fn widen(&self, n: u64) -> u64;
        /// A score.
        async fn score(&self) -> f64;
        /// A tag.
        async fn tag(&self, tag: Tag) -> String;
        /// An order.
        async fn order(&self, order: Order) -> u64;
        /// A sum.
        async fn add(&self, a: i64, b: i64) -> i64;
        /// New in v2.
        async fn hello(&self) -> String;
    }

    /// v2's implementation: echoes what it was given, and says how.
    pub struct Impl;

    impl Profiles for Impl {
        async fn register(&self, user: User) -> String {
            format!(
                "{} <{}>",
                user.name,
                user.email.as_deref().unwrap_or("none")
            )
        }
        async fn lookup(&self, name: String) -> Profile {
            Profile {
                name,
                since: 2019,
                karma: 42,
            }
        }
        async fn items(&self, mut items: Vec<Item>, extra: Option<Item>) -> Vec<Item> {
            items.extend(extra);
            items
        }
        async fn address(&self, address: Address) -> Address {
            address
        }
        async fn point(&self, point: Point) -> Point {
            point
        }
        async fn paint(&self, color: Color) -> Color {
            color
        }
        async fn widen(&self, n: u64) -> u64 {
            n
        }
        async fn score(&self) -> f64 {
            2.25
        }
        async fn tag(&self, tag: Tag) -> String {
            tag.value.to_string()
        }
        async fn order(&self, order: Order) -> u64 {
            order.id + u64::from(order.quantity)
        }
        async fn add(&self, a: i64, b: i64) -> i64 {
            a.wrapping_add(b)
        }
        async fn hello(&self) -> String {
            "hello from v2".to_owned()
        }
    }
}
