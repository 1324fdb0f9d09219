//! `deserialize_with` helpers that take a nested option only as a JSON object. serde's derive
//! also takes an array for a struct (`"backoff": ["fixed", "1s"]`, fields by position), a form
//! the API does not document and that hides mistakes; these refuse it with "expected a JSON
//! object", and `serde_path_to_error` still names the field.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};

struct Object<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for Object<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map))
    }
}

/// A `T` given as a JSON object.
pub(crate) fn one<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    d.deserialize_map(Object(PhantomData))
}

/// An optional `T` given as a JSON object (or `null`); use with `#[serde(default)]`.
pub(crate) fn opt<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    Option::<Item<T>>::deserialize(d).map(|o| o.map(|i| i.0))
}

/// A list of `T`, each given as a JSON object.
pub(crate) fn list<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    Vec::<Item<T>>::deserialize(d).map(|v| v.into_iter().map(|i| i.0).collect())
}

struct Item<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Item<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        one(d).map(Item)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        a: u32,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        #[serde(default, deserialize_with = "super::opt")]
        maybe: Option<Inner>,
        #[serde(default, deserialize_with = "super::list")]
        many: Vec<Inner>,
        #[serde(deserialize_with = "super::one")]
        must: Inner,
    }

    fn parse(text: &str) -> Result<Outer, String> {
        let de = &mut serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| format!("{}: {}", e.path(), e.inner()))
    }

    #[test]
    fn objects_are_taken_and_arrays_refused_with_the_field_named() {
        let ok = parse(r#"{"maybe":{"a":1},"many":[{"a":2}],"must":{"a":3}}"#).unwrap();
        assert_eq!(ok.maybe, Some(Inner { a: 1 }));
        assert_eq!(ok.many, vec![Inner { a: 2 }]);
        assert_eq!(
            parse(r#"{"maybe":null,"must":{"a":3}}"#).unwrap().maybe,
            None
        );
        let e = parse(r#"{"maybe":[1],"must":{"a":3}}"#).unwrap_err();
        assert!(
            e.starts_with("maybe:") && e.contains("expected a JSON object"),
            "{e}"
        );
        let e = parse(r#"{"many":[{"a":1},[2]],"must":{"a":3}}"#).unwrap_err();
        assert!(e.starts_with("many[1]:"), "{e}");
        let e = parse(r#"{"must":[3]}"#).unwrap_err();
        assert!(e.starts_with("must:"), "{e}");
        // Inside the object, fields are still named.
        let e = parse(r#"{"must":{"a":"x"}}"#).unwrap_err();
        assert!(e.starts_with("must.a:"), "{e}");
    }
}
