//! Reading a method's positional parameters as geth does: an array (or none), at most as many
//! as the method takes, each decoded with an error that names its position; and raw bytes that
//! must carry their `0x` prefix.
//!
//! jsonrpsee's own reader ignores parameters left over and lets a method that reads none take
//! anything; alloy's `Bytes` takes hex without its prefix. Clients that send such requests get an
//! answer that hides their mistake, so the node refuses them with geth's messages (-32602).
//! Addresses and hashes without the prefix are still taken, as anvil takes them: web3.py's
//! `HexBytes.hex()` drops the prefix, and scripts written against anvil send hashes that way.

use alloy_primitives::{Bytes, hex};
use jsonrpsee::types::Params;
use serde::{Deserialize, Deserializer, Serialize, de::DeserializeOwned, de::Error as _};
use serde_json::value::RawValue;

use crate::error::{RpcError, RpcResult};

/// A method's parameters, checked against how many it takes.
pub struct Args<'a> {
    items: Vec<&'a RawValue>,
    next: usize,
}

impl<'a> Args<'a> {
    /// The parameters of a method that takes at most `max`.
    pub fn new(params: &'a Params<'_>, max: usize) -> RpcResult<Self> {
        let items: Vec<&RawValue> = match params.as_str() {
            None | Some("null") => Vec::new(),
            Some(text) if text.trim_start().starts_with('[') => {
                serde_json::from_str(text).map_err(|e| invalid(message(&e)))?
            }
            Some(_) => return Err(invalid("non-array args".into())),
        };
        if items.len() > max {
            return Err(invalid(format!("too many arguments, want at most {max}")));
        }
        Ok(Self { items, next: 0 })
    }

    /// The next parameter, which must be there.
    pub fn required<T: DeserializeOwned>(&mut self) -> RpcResult<T> {
        let index = self.next;
        self.optional()?
            .ok_or_else(|| invalid(format!("missing value for required argument {index}")))
    }

    /// The next parameter, if given and not null.
    pub fn optional<T: DeserializeOwned>(&mut self) -> RpcResult<Option<T>> {
        let index = self.next;
        self.next += 1;
        match self.items.get(index).map(|raw| raw.get()) {
            None | Some("null") => Ok(None),
            Some(raw) => serde_json::from_str(raw)
                .map(Some)
                .map_err(|e| invalid(format!("invalid argument {index}: {}", message(&e)))),
        }
    }
}

fn invalid(message: String) -> RpcError {
    RpcError::InvalidParams(message)
}

/// serde_json's message without its " at line 1 column N" suffix, which means nothing to a
/// client that sent one line of JSON.
fn message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rsplit_once(" at line ") {
        Some((message, _)) => message.to_string(),
        None => text,
    }
}

/// A quantity given as a JSON number or a hex string (clients send both); `"0x"` without digits
/// is no quantity, as geth says. Sent as hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity(pub u64);

impl Quantity {
    /// The number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        use serde::de::Error;
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(Self(n)),
            Raw::Text(text) => {
                let digits = text
                    .strip_prefix("0x")
                    .ok_or_else(|| D::Error::custom(format!("{text:?} is not a hex quantity")))?;
                if digits.is_empty() {
                    return Err(D::Error::custom("hex string \"0x\" has no digits"));
                }
                u64::from_str_radix(digits, 16)
                    .map(Self)
                    .map_err(|e| D::Error::custom(format!("{text:?}: {e}")))
            }
        }
    }
}

impl Serialize for Quantity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{:#x}", self.0))
    }
}

/// Bytes that must be written as hex with their `0x` prefix, as geth's `hexutil.Bytes` requires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct PrefixedBytes(pub Bytes);

/// geth's message for a value its JSON decoder refuses, which clients have seen before.
fn unmarshal_error(what: &str) -> String {
    format!("json: cannot unmarshal {what} into Go value of type hexutil.Bytes")
}

impl<'de> Deserialize<'de> for PrefixedBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let fail = |what| D::Error::custom(unmarshal_error(what));
        let serde_json::Value::String(text) = serde_json::Value::deserialize(deserializer)? else {
            return Err(fail("non-string"));
        };
        let digits = match text.get(..2) {
            Some("0x" | "0X") => &text[2..],
            _ if text.is_empty() => "",
            _ => return Err(fail("hex string without 0x prefix")),
        };
        if digits.len() % 2 != 0 {
            return Err(fail("hex string of odd length"));
        }
        hex::decode(digits)
            .map(|bytes| PrefixedBytes(bytes.into()))
            .map_err(|_| fail("invalid hex string"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(json: &str, max: usize) -> RpcResult<Args<'_>> {
        // Leaked so the raw values may borrow from it for the test's lifetime.
        let params = Box::leak(Box::new(Params::new(Some(json))));
        Args::new(params, max)
    }

    #[test]
    fn arguments_are_an_array_of_at_most_what_the_method_takes() {
        let err = |json, max| args(json, max).err().map(|e| e.to_string());
        assert_eq!(err(r#""x""#, 1).unwrap(), "non-array args");
        assert_eq!(err(r#"{"a": 1}"#, 1).unwrap(), "non-array args");
        assert_eq!(
            err("[1, 2]", 1).unwrap(),
            "too many arguments, want at most 1"
        );
        assert_eq!(err("[1]", 0).unwrap(), "too many arguments, want at most 0");
        assert!(err("[ ]", 0).is_none());
        assert!(err("[]", 0).is_none());
        let mut two = args(r#"[7, null]"#, 3).unwrap();
        assert_eq!(two.required::<u64>().unwrap(), 7);
        assert_eq!(two.optional::<u64>().unwrap(), None);
        assert_eq!(two.optional::<u64>().unwrap(), None);
        let err = args("[]", 1).unwrap().required::<u64>().unwrap_err();
        assert_eq!(err.to_string(), "missing value for required argument 0");
        let err = args(r#"["x"]"#, 1).unwrap().required::<u64>().unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid argument 0: invalid type"),
            "{err}"
        );
    }

    #[test]
    fn hex_needs_its_prefix() {
        let parse = |json: &str| serde_json::from_str::<PrefixedBytes>(json).map(|s| s.0);
        assert_eq!(parse(r#""0x0102""#).unwrap(), Bytes::from(vec![1, 2]));
        assert_eq!(parse(r#""""#).unwrap(), Bytes::new());
        let err = parse(r#""0102""#).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "json: cannot unmarshal hex string without 0x prefix into Go value of type hexutil.Bytes"
            ),
            "{err}"
        );
        assert!(
            parse(r#""0x012""#)
                .unwrap_err()
                .to_string()
                .contains("odd length")
        );
        assert!(
            parse(r#""0xzz""#)
                .unwrap_err()
                .to_string()
                .contains("invalid hex")
        );
        assert!(
            parse("[1, 2]")
                .unwrap_err()
                .to_string()
                .contains("non-string")
        );
    }
}
