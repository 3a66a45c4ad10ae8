//! JSON conventions of the bridge.
//!
//! The original guest encodes with Go's `encoding/json`: struct field order, no trailing
//! newline, and `<`, `>`, `&`, U+2028 and U+2029 escaped. The host does not need identical
//! bytes, but matching them keeps our frames the same size as the real guest's and lets the
//! golden tests compare bytes. Decoding follows Go's rules that matter on the wire: `null` for
//! a string, struct or list leaves the zero value, and unknown keys are ignored.

use std::io;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

/// A `serde_json` formatter that escapes like Go's `json.Marshal`.
#[derive(Debug, Default, Clone, Copy)]
pub struct GoFormatter;

impl serde_json::ser::Formatter for GoFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let escaped = match c {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            writer.write_all(&fragment.as_bytes()[start..i])?;
            writer.write_all(escaped.as_bytes())?;
            start = i + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

/// Encodes `value` the way the Go guest's `json.Marshal` would.
pub fn to_go_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::with_capacity(128);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, GoFormatter);
    value.serialize(&mut ser)?;
    Ok(out)
}

/// Encodes `value` to a `String` the way Go would (for string-embedded JSON fields).
pub fn to_go_string<T: Serialize + ?Sized>(value: &T) -> Result<String, serde_json::Error> {
    let bytes = to_go_json(value)?;
    // serde_json only ever writes UTF-8.
    String::from_utf8(bytes).map_err(|e| serde::ser::Error::custom(e.to_string()))
}

/// Field deserializer: `null` or absent gives the type's default, as Go leaves zero values.
pub fn null_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Decodes a string-embedded JSON document (`ContainerConfig`, `ProcessParameters`, `Query`).
pub fn from_embedded<T: DeserializeOwned>(text: &str) -> Result<T, serde_json::Error> {
    serde_json::from_str(text)
}

/// `skip_serializing_if` helper for Go `omitempty` on numbers and bools.
pub fn is_zero<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_go() {
        let s = "a<b>&c\u{2028}d\u{2029}\"\n";
        let out = to_go_string(&s).unwrap();
        assert_eq!(out, r#""a\u003cb\u003e\u0026c\u2028d\u2029\"\n""#);
    }

    #[test]
    fn plain_strings_untouched() {
        assert_eq!(to_go_string("héllo").unwrap(), "\"héllo\"");
    }

    #[test]
    fn null_gives_default() {
        #[derive(Deserialize, Default)]
        struct T {
            #[serde(default, deserialize_with = "null_default")]
            s: String,
            #[serde(default, deserialize_with = "null_default")]
            v: Vec<u32>,
        }
        let t: T = serde_json::from_str(r#"{"s":null,"v":null}"#).unwrap();
        assert_eq!(t.s, "");
        assert!(t.v.is_empty());
        let t: T = serde_json::from_str("{}").unwrap();
        assert_eq!(t.s, "");
    }
}
