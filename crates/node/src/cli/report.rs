//! What commands print. A command returns one value that is both `Serialize`, its `--json`
//! form, and `Display`, its text form, so the two cannot say different things; the field types
//! here carry the conventions both forms share.

use std::fmt;

use alloy_primitives::{B256, U256};
use alloy_rpc_types_eth::TransactionReceipt;
use openledger_primitives::format_open;
use serde::{Serialize, Serializer};

/// An amount of wei: a decimal string in JSON (no JSON number holds every amount), OPEN in text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct Wei(#[serde(serialize_with = "decimal")] pub U256);

impl fmt::Display for Wei {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} OPEN", format_open(self.0))
    }
}

/// An id or count that may not fit in a JSON number: a decimal string in JSON, a number in text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct Id(#[serde(serialize_with = "decimal")] pub U256);

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The number's own formatting, so that a table's widths and alignment apply.
        fmt::Display::fmt(&self.0, f)
    }
}

/// A number as its decimal digits, in a JSON string.
fn decimal<S: Serializer>(n: &U256, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(n)
}

/// A chain time: seconds since the Unix epoch in JSON, a date in text ([`super::date`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub(crate) struct Time(pub u64);

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&super::date(self.0))
    }
}

/// A transaction that landed: `{"tx": hash}` in JSON, what it did in text.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Sent {
    tx: B256,
    #[serde(skip)]
    said: String,
}

impl Sent {
    /// The transaction of `receipt`, which did what `said` says.
    pub(crate) fn new(receipt: &TransactionReceipt, said: String) -> Self {
        Self {
            tx: receipt.transaction_hash,
            said,
        }
    }
}

impl fmt::Display for Sent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.said)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_decimal_wei_in_json_and_open_in_text() {
        let wei = Wei(U256::from(1_500_000_000_000_000_000u64));
        assert_eq!(serde_json::to_value(wei).unwrap(), "1500000000000000000");
        assert_eq!(wei.to_string(), "1.5 OPEN");
        assert_eq!(
            serde_json::to_value(Id(U256::MAX)).unwrap(),
            U256::MAX.to_string()
        );
        assert_eq!(serde_json::to_value(Time(7)).unwrap(), 7);
        assert_eq!(Time(0).to_string(), "-");
    }
}
