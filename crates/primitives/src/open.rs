//! OPEN, the native currency and gas token.

use alloy_primitives::U256;

/// OPEN has 18 decimals, like ether, so wallets display it without configuration.
pub const OPEN_DECIMALS: u8 = 18;

/// One OPEN in wei.
pub const OPEN: U256 = U256::from_limbs([1_000_000_000_000_000_000, 0, 0, 0]);

/// Formats a wei amount as a decimal OPEN string without losing precision (trailing zeros trimmed).
pub fn format_open(wei: U256) -> String {
    let (whole, frac) = wei.div_rem(OPEN);
    if frac.is_zero() {
        return whole.to_string();
    }
    let frac = format!("{:0>18}", frac.to_string());
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_whole_and_fractional_amounts() {
        assert_eq!(format_open(OPEN * U256::from(3)), "3");
        assert_eq!(
            format_open(U256::from(1_140_000_000_000_000_000u64)),
            "1.14"
        );
        assert_eq!(format_open(U256::from(1)), "0.000000000000000001");
        assert_eq!(format_open(U256::ZERO), "0");
    }
}
