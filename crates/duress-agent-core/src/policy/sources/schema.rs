//! Every key of the policy schema, read from the [`Policy`] type itself.
//!
//! The registry, plist and MSI/ADMX/profile mappings all hang off this one list, so a key added to
//! `Policy` (or to `duress_core::Location`) shows up here without anyone editing a second list —
//! and the installer tests, which check that every key has a registry value, an ADMX policy, a
//! `.mobileconfig` entry and a line in `agent.toml.example`, fail until it is supported.
//!
//! How: [`Policy`] is deserialised once from a *probe* deserializer that answers every
//! `deserialize_struct` with all the fields the type asks for, and records which kind of value
//! (string, integer, boolean, list of strings, enum) each field then requests. Nothing is
//! hand-maintained.

use std::sync::LazyLock;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

use crate::policy::Policy;

/// What a key holds, as far as the OS formats need to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string (REG_SZ, plist string).
    Str,
    /// One of these strings (REG_SZ, plist string).
    Enum(&'static [&'static str]),
    /// An unsigned integer (REG_DWORD, plist integer).
    Int,
    /// A boolean (REG_DWORD 0/1, plist boolean).
    Bool,
    /// A list of strings (a `;`-separated REG_SZ — wixl rejects REG_MULTI_SZ —, a plist array).
    StrList,
}

/// One key: `table.name`, or `receivers[].name` for the array of receiver tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// The TOML table (`location`, `tray`, …; `receivers` for the array of receivers).
    pub table: &'static str,
    /// The key's name inside the table, identical on every OS.
    pub name: &'static str,
    pub kind: Kind,
    /// True for the keys of `[[receivers]]` (an ordered array of tables).
    pub in_array: bool,
}

impl Key {
    /// `tray.allow_quit`, `receivers[].url`.
    pub fn path(&self) -> String {
        if self.in_array {
            format!("{}[].{}", self.table, self.name)
        } else {
            format!("{}.{}", self.table, self.name)
        }
    }
}

/// Every key of the schema, in declaration order.
pub fn keys() -> &'static [Key] {
    static KEYS: LazyLock<Vec<Key>> = LazyLock::new(probe);
    &KEYS
}

/// The key `name` of `table`, if the schema has it.
pub fn find(table: &str, name: &str) -> Option<&'static Key> {
    keys().iter().find(|k| k.table == table && k.name == name)
}

/// The key of `table` whose name equals `name` ignoring ASCII case (the registry is
/// case-insensitive).
pub fn find_ignore_case(table: &str, name: &str) -> Option<&'static Key> {
    keys()
        .iter()
        .find(|k| k.table.eq_ignore_ascii_case(table) && k.name.eq_ignore_ascii_case(name))
}

/// The tables, in declaration order, with whether each is an array of tables.
pub fn tables() -> Vec<(&'static str, bool)> {
    let mut out: Vec<(&'static str, bool)> = Vec::new();
    for k in keys() {
        if !out.iter().any(|(t, _)| *t == k.table) {
            out.push((k.table, k.in_array));
        }
    }
    out
}

fn probe() -> Vec<Key> {
    let mut keys = Vec::new();
    let result = <Policy as serde::Deserialize>::deserialize(Probe {
        at: At::Root,
        out: &mut keys,
    });
    // The probe answers every request; a failure is a schema shape this probe does not know
    // (a nested table, a map), which the tests catch at once.
    if let Err(e) = result {
        panic!("policy schema probe failed: {e}");
    }
    keys
}

/// Where the probe is in the schema.
#[derive(Clone, Copy)]
enum At {
    Root,
    /// The value of a top-level key (a table, or the array of receiver tables).
    Table(&'static str),
    /// One element of a top-level array.
    ArrayElement(&'static str),
    /// A key inside a table.
    Field {
        table: &'static str,
        name: &'static str,
        in_array: bool,
    },
    /// One element of a list-valued key.
    ListElement {
        table: &'static str,
        name: &'static str,
        in_array: bool,
    },
}

struct Probe<'a> {
    at: At,
    out: &'a mut Vec<Key>,
}

type E = de::value::Error;

/// A value every probe string satisfies (URL fields are parsed while deserialising).
const PROBE_STR: &str = "https://probe.invalid/";

impl Probe<'_> {
    fn record(&mut self, kind: Kind) -> Result<(), E> {
        match self.at {
            At::Field {
                table,
                name,
                in_array,
            } => {
                self.out.push(Key {
                    table,
                    name,
                    kind,
                    in_array,
                });
                Ok(())
            }
            At::ListElement {
                table,
                name,
                in_array,
            } if kind == Kind::Str => {
                self.out.push(Key {
                    table,
                    name,
                    kind: Kind::StrList,
                    in_array,
                });
                Ok(())
            }
            _ => Err(de::Error::custom(
                "unexpected value shape in the policy schema",
            )),
        }
    }
}

impl<'de> de::Deserializer<'de> for Probe<'_> {
    type Error = E;

    fn deserialize_any<V: Visitor<'de>>(self, _v: V) -> Result<V::Value, E> {
        Err(de::Error::custom(
            "the policy schema probe needs typed fields (deserialize_any requested)",
        ))
    }

    fn deserialize_bool<V: Visitor<'de>>(mut self, v: V) -> Result<V::Value, E> {
        self.record(Kind::Bool)?;
        v.visit_bool(false)
    }

    fn deserialize_u8<V: Visitor<'de>>(self, v: V) -> Result<V::Value, E> {
        self.deserialize_u64(v)
    }
    fn deserialize_u16<V: Visitor<'de>>(self, v: V) -> Result<V::Value, E> {
        self.deserialize_u64(v)
    }
    fn deserialize_u32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, E> {
        self.deserialize_u64(v)
    }
    fn deserialize_u64<V: Visitor<'de>>(mut self, v: V) -> Result<V::Value, E> {
        self.record(Kind::Int)?;
        v.visit_u64(1)
    }
    fn deserialize_i8<V: Visitor<'de>>(self, v: V) -> Result<V::Value, E> {
        self.deserialize_u64(v)
    }
    fn deserialize_i16<V: Visitor<'de>>(self, v: V) -> Result<V::Value, E> {
        self.deserialize_u64(v)
    }
    fn deserialize_i32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, E> {
        self.deserialize_u64(v)
    }
    fn deserialize_i64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, E> {
        self.deserialize_u64(v)
    }

    fn deserialize_str<V: Visitor<'de>>(mut self, v: V) -> Result<V::Value, E> {
        self.record(Kind::Str)?;
        v.visit_str(PROBE_STR)
    }
    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, E> {
        self.deserialize_str(v)
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, E> {
        v.visit_some(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, E> {
        let element = match self.at {
            At::Table(t) => At::ArrayElement(t),
            At::Field {
                table,
                name,
                in_array,
            } => At::ListElement {
                table,
                name,
                in_array,
            },
            _ => return Err(de::Error::custom("unexpected list in the policy schema")),
        };
        v.visit_seq(OneElement {
            probe: Some(Probe {
                at: element,
                out: self.out,
            }),
        })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, E> {
        let (table, in_array) = match self.at {
            At::Root => ("", false),
            At::Table(t) => (t, false),
            At::ArrayElement(t) => (t, true),
            _ => return Err(de::Error::custom("tables nest one level deep at most")),
        };
        v.visit_map(Fields {
            fields,
            next: 0,
            table,
            in_array,
            root: matches!(self.at, At::Root),
            out: self.out,
        })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        mut self,
        _name: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, E> {
        self.record(Kind::Enum(variants))?;
        let first = variants
            .first()
            .ok_or_else(|| de::Error::custom("an enum without variants"))?;
        v.visit_enum((*first).into_deserializer())
    }

    serde::forward_to_deserialize_any! {
        f32 f64 char bytes byte_buf unit unit_struct newtype_struct tuple tuple_struct map
        identifier ignored_any i128 u128
    }
}

/// A list with one probed element.
struct OneElement<'a> {
    probe: Option<Probe<'a>>,
}

impl<'de> de::SeqAccess<'de> for OneElement<'_> {
    type Error = E;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, E> {
        match self.probe.take() {
            Some(p) => seed.deserialize(p).map(Some),
            None => Ok(None),
        }
    }
}

/// A struct's fields, every one present.
struct Fields<'a> {
    fields: &'static [&'static str],
    next: usize,
    table: &'static str,
    in_array: bool,
    root: bool,
    out: &'a mut Vec<Key>,
}

impl<'de> de::MapAccess<'de> for Fields<'_> {
    type Error = E;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, E> {
        match self.fields.get(self.next) {
            Some(name) => seed.deserialize((*name).into_deserializer()).map(Some),
            None => Ok(None),
        }
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, E> {
        let name = self.fields[self.next];
        self.next += 1;
        let at = if self.root {
            At::Table(name)
        } else {
            At::Field {
                table: self.table,
                name,
                in_array: self.in_array,
            }
        };
        seed.deserialize(Probe { at, out: self.out })
    }
}

/// A valid example value for `key` (tests and generated examples). Every key gets a value that
/// differs from its default, so a test can see that the key travelled.
pub fn example_value(key: &Key) -> toml::Value {
    use toml::Value;
    match key.kind {
        Kind::Str => Value::String(
            match (key.table, key.name) {
                ("receivers", "url") => "https://duress.example.edu:8443/",
                ("receivers", "ca_cert") => "/etc/duress/receiver-ca.pem",
                ("receivers", "ca_sha256") => {
                    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
                }
                // The RFC 8037 Appendix A.3 key's RFC 7638 thumbprint.
                ("receivers", "ack_key") => "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k",
                ("help", "teams_url") => "https://teams.microsoft.com/l/channel/example",
                ("help", "security_email") => "security@example.edu",
                ("network", "proxy") => "http://proxy.example.edu:8080",
                ("location", "country") => "US",
                ("tray", "hidden_button_label") => "Print queue",
                // sha256("1234") and sha256("9999").
                ("cancel", "pin_sha256") => {
                    "03ac674216f3e15c761ee1a5e255f067953623c8b388b4459e13f978d7c846f4"
                }
                ("cancel", "duress_pin_sha256") => {
                    "888df25ae35772424a560c7152a1de794440e0ea5cfee62828333a456a506e05"
                }
                ("self_test", "window") => "08:00-18:00",
                (_, name) => return Value::String(format!("example {name}")),
            }
            .to_owned(),
        ),
        Kind::Enum(variants) => Value::String(variants.last().copied().unwrap_or("").to_owned()),
        Kind::Int => Value::Integer(match (key.table, key.name) {
            ("hotkey", "repeat") => 2,
            ("hotkey", "window_ms") => 2000,
            ("hotkey", "hold_ms") => 500,
            ("heartbeat", "interval_s") => 30,
            _ => 1,
        }),
        Kind::Bool => Value::Boolean(true),
        Kind::StrList if key.table == "cancel" => {
            Value::Array(vec![Value::String("Ctrl+Alt+Shift+O".into())])
        }
        Kind::StrList => Value::Array(vec![
            Value::String("Ctrl+Alt+Shift+F12".into()),
            Value::String("F13".into()),
        ]),
    }
}

/// A policy table with every key of the schema set to [`example_value`] (one receiver).
pub fn example_table() -> toml::Table {
    let mut out = toml::Table::new();
    for (table, in_array) in tables() {
        let mut t = toml::Table::new();
        for k in keys().iter().filter(|k| k.table == table) {
            t.insert(k.name.to_owned(), example_value(k));
        }
        let v = if in_array {
            toml::Value::Array(vec![toml::Value::Table(t)])
        } else {
            toml::Value::Table(t)
        };
        out.insert(table.to_owned(), v);
    }
    out
}
