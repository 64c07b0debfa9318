//! The inference fee and its split, in integer wei and parts per million so that every node
//! computes the same amounts, and every split conserves value exactly: what rounding leaves over
//! goes to the treasury.

use alloy_primitives::U256;

pub use crate::math::PPM;
use crate::math::ppm_of;
pub use crate::state::models::Rates;

/// Why a fee cannot be computed or split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeeError {
    /// Token counts times rates do not fit in 256 bits.
    #[error("the fee overflows 256 bits")]
    Overflow,
    /// The platform fee is larger than the whole fee it is part of.
    #[error("platform fee {platform_fee} exceeds the fee {fee}")]
    PlatformFeeExceedsFee {
        /// The fee charged.
        fee: U256,
        /// The platform's part of it.
        platform_fee: U256,
    },
    /// Split shares must add up to exactly one million ppm.
    #[error("split shares add up to {0} ppm, not 1000000")]
    SharesDoNotSum(u64),
    /// Attribution weights must add up to exactly one million ppm (or be empty).
    #[error("attribution weights add up to {0} ppm, not 1000000")]
    WeightsDoNotSum(u64),
}

/// The fee for one inference: `input / 1000 * input_rate + output / 1000 * output_rate +
/// platform_fee`. Each token term is rounded down after multiplying, so a user is charged for
/// every token but never for a fraction of a wei.
pub fn inference_fee(
    input_tokens: u64,
    output_tokens: u64,
    rates: Rates,
    platform_fee: U256,
) -> Result<U256, FeeError> {
    let per_1k = |tokens: u64, rate: U256| {
        U256::from(tokens)
            .checked_mul(rate)
            .map(|v| v / U256::from(1_000))
    };
    per_1k(input_tokens, rates.input_per_1k)
        .zip(per_1k(output_tokens, rates.output_per_1k))
        .and_then(|(input, output)| input.checked_add(output))
        .and_then(|v| v.checked_add(platform_fee))
        .ok_or(FeeError::Overflow)
}

/// How the fee left after the platform's part is shared, in ppm (governed parameters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shares {
    /// The model's creator.
    pub creator: u32,
    /// The model's stakers.
    pub stakers: u32,
    /// The data contributors, divided by attribution weight.
    pub contributors: u32,
}

impl Default for Shares {
    /// 70% creator, 10% stakers, 20% contributors.
    fn default() -> Self {
        Self {
            creator: 700_000,
            stakers: 100_000,
            contributors: 200_000,
        }
    }
}

impl Shares {
    /// Errs unless the shares sum to one million.
    pub fn check(&self) -> Result<(), FeeError> {
        let sum = u64::from(self.creator) + u64::from(self.stakers) + u64::from(self.contributors);
        if sum == u64::from(PPM) {
            Ok(())
        } else {
            Err(FeeError::SharesDoNotSum(sum))
        }
    }
}

/// Who receives what from one fee. The parts add up to the fee exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// The platform fee plus the rounding dust.
    pub treasury: U256,
    /// The model's creator.
    pub creator: U256,
    /// The model's stakers, together.
    pub stakers: U256,
    /// The whole contributor pool before it is divided.
    pub contributor_pool: U256,
    /// One amount per attribution weight, in the same order; with no weights, a single amount:
    /// the whole pool, which goes to the datanet's owner.
    pub contributors: Vec<U256>,
}

/// Splits `fee`, of which `platform_fee` goes to the treasury, by `shares`, dividing the
/// contributor pool by `weights` (ppm, summing to one million, or empty). Every part is rounded
/// down and the remainder goes to the treasury, so the split conserves value to the wei.
pub fn split(
    fee: U256,
    platform_fee: U256,
    shares: Shares,
    weights: &[u32],
) -> Result<Split, FeeError> {
    shares.check()?;
    let rest = fee
        .checked_sub(platform_fee)
        .ok_or(FeeError::PlatformFeeExceedsFee { fee, platform_fee })?;
    let creator = ppm_of(rest, shares.creator);
    let stakers = ppm_of(rest, shares.stakers);
    let contributor_pool = ppm_of(rest, shares.contributors);
    let contributors = if weights.is_empty() {
        vec![contributor_pool]
    } else {
        let sum: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        if sum != u64::from(PPM) {
            return Err(FeeError::WeightsDoNotSum(sum));
        }
        weights
            .iter()
            .map(|&w| ppm_of(contributor_pool, w))
            .collect()
    };
    let paid = contributors
        .iter()
        .fold(creator + stakers, |acc, amount| acc + amount);
    Ok(Split {
        treasury: platform_fee + (rest - paid),
        creator,
        stakers,
        contributor_pool,
        contributors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use openledger_primitives::OPEN;
    use proptest::prelude::*;

    /// Thousandths of an OPEN.
    fn milli(n: u64) -> U256 {
        OPEN / U256::from(1_000) * U256::from(n)
    }

    /// DESIGN §4's worked example: 1.14 OPEN with a 0.5 OPEN platform fee.
    #[test]
    fn worked_example() {
        let split = split(
            milli(1_140),
            milli(500),
            Shares::default(),
            &[250_000, 750_000],
        )
        .unwrap();
        assert_eq!(split.treasury, milli(500));
        assert_eq!(split.creator, milli(448));
        assert_eq!(split.stakers, milli(64));
        assert_eq!(split.contributor_pool, milli(128));
        assert_eq!(split.contributors, vec![milli(32), milli(96)]);
    }

    #[test]
    fn fee_follows_the_formula() {
        let rates = Rates {
            input_per_1k: milli(2),
            output_per_1k: milli(6),
        };
        // 1,500 prompt tokens at 0.002/1k + 500 generated at 0.006/1k + 0.5 platform fee.
        let fee = inference_fee(1_500, 500, rates, milli(500)).unwrap();
        assert_eq!(fee, milli(3) + milli(3) + milli(500));
        // A fraction of a wei is not charged.
        let tiny = Rates {
            input_per_1k: U256::from(1),
            output_per_1k: U256::ZERO,
        };
        assert_eq!(inference_fee(999, 0, tiny, U256::ZERO).unwrap(), U256::ZERO);
        let huge = Rates {
            input_per_1k: U256::MAX,
            output_per_1k: U256::ZERO,
        };
        assert_eq!(
            inference_fee(2, 0, huge, U256::ZERO),
            Err(FeeError::Overflow)
        );
    }

    #[test]
    fn ppm_shares_are_exact_at_the_top_of_the_range() {
        assert_eq!(ppm_of(U256::MAX, PPM), U256::MAX);
        assert_eq!(ppm_of(U256::MAX, PPM / 2), U256::MAX / U256::from(2));
        assert_eq!(ppm_of(U256::from(999_999), 1), U256::ZERO);
    }

    #[test]
    fn no_weights_pays_the_whole_pool_once() {
        let split = split(milli(1_140), milli(500), Shares::default(), &[]).unwrap();
        assert_eq!(split.contributors, vec![milli(128)]);
    }

    #[test]
    fn bad_inputs_are_refused() {
        let shares = Shares::default();
        assert_eq!(
            split(milli(1), milli(2), shares, &[]),
            Err(FeeError::PlatformFeeExceedsFee {
                fee: milli(1),
                platform_fee: milli(2)
            })
        );
        assert_eq!(
            split(milli(2), milli(1), shares, &[500_000, 499_999]),
            Err(FeeError::WeightsDoNotSum(999_999))
        );
        let uneven = Shares {
            creator: 700_000,
            stakers: 100_000,
            contributors: 200_001,
        };
        assert_eq!(
            split(milli(2), milli(1), uneven, &[]),
            Err(FeeError::SharesDoNotSum(1_000_001))
        );
    }

    /// Weights in ppm summing to exactly one million, from arbitrary positive parts.
    fn weights() -> impl Strategy<Value = Vec<u32>> {
        prop::collection::vec(1u32..1_000, 1..40).prop_map(|parts| {
            let total: u64 = parts.iter().map(|&p| u64::from(p)).sum();
            let mut weights: Vec<u32> = parts
                .iter()
                .map(|&p| (u64::from(p) * u64::from(PPM) / total) as u32)
                .collect();
            let assigned: u32 = weights.iter().sum();
            weights[0] += PPM - assigned;
            weights
        })
    }

    proptest! {
        #[test]
        fn splits_conserve_value_to_the_wei(
            rest in any::<u128>(),
            platform_fee in any::<u64>(),
            creator in 0u32..=PPM,
            stakers_part in 0u32..=PPM,
            weights in weights(),
        ) {
            let stakers = stakers_part.min(PPM - creator);
            let shares = Shares { creator, stakers, contributors: PPM - creator - stakers };
            let fee = U256::from(rest) + U256::from(platform_fee);
            let split = split(fee, U256::from(platform_fee), shares, &weights).unwrap();
            let total = split.contributors.iter().fold(
                split.treasury + split.creator + split.stakers,
                |acc, amount| acc + amount,
            );
            prop_assert_eq!(total, fee);
            // Rounding never gives the treasury more than a wei per payee it rounded.
            let dust = split.treasury - U256::from(platform_fee);
            prop_assert!(dust <= U256::from(weights.len() + 3));
            let pool: U256 = split.contributors.iter().copied().sum();
            prop_assert!(pool <= split.contributor_pool);
        }
    }
}
