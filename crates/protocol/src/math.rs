//! The protocol's integer arithmetic, shared by every module so that each rounds alike: parts
//! per million, the unit of every share, rate and cut, and rounded-down ratios.

use alloy_primitives::{U256, ruint::UintTryFrom};

/// One whole in parts per million.
pub const PPM: u32 = 1_000_000;

/// `amount · ppm / 1,000,000`, rounded down, exact for any amount: with `amount = q · 10⁶ + r`
/// it is `q · ppm + r · ppm / 10⁶`, and neither product can overflow for `ppm ≤ 10⁶`.
pub fn ppm_of<T>(amount: U256, ppm: T) -> U256
where
    U256: UintTryFrom<T>,
{
    const WHOLE: U256 = U256::from_limbs([PPM as u64, 0, 0, 0]);
    let ppm = U256::from(ppm);
    let (q, r) = amount.div_rem(WHOLE);
    q * ppm + r * ppm / WHOLE
}

/// `amount · numerator / denominator`, rounded down; zero when the denominator is.
pub fn mul_div(amount: U256, numerator: U256, denominator: U256) -> U256 {
    if denominator.is_zero() {
        return U256::ZERO;
    }
    amount * numerator / denominator
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ppm_of_rounds_down_and_does_not_overflow() {
        assert_eq!(ppm_of(U256::from(999_999u64), 1u32), U256::ZERO);
        assert_eq!(
            ppm_of(U256::from(3_000_000u64), 333_333u32),
            U256::from(999_999u64)
        );
        assert_eq!(ppm_of(U256::MAX, PPM), U256::MAX);
        assert_eq!(ppm_of(U256::MAX, 500_000u32), U256::MAX / U256::from(2));
    }

    #[test]
    fn mul_div_by_zero_is_zero() {
        assert_eq!(
            mul_div(U256::from(5), U256::from(2), U256::ZERO),
            U256::ZERO
        );
        assert_eq!(
            mul_div(U256::from(5), U256::from(2), U256::from(3)),
            U256::from(3)
        );
    }
}
