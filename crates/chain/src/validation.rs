//! Checks a raw transaction must pass before it enters the pool. Each failure carries the
//! message Ethereum clients and libraries match on (geth's wording).

use alloy_consensus::{
    Transaction, TxEnvelope, TxType, TypedTransaction, transaction::SignerRecoverable,
};
use alloy_eips::eip2718::Decodable2718;
use alloy_primitives::{Address, Signature, U256};
use revm::{
    context_interface::cfg::gas::calculate_initial_tx_gas_for_tx, primitives::hardfork::SpecId,
};

use crate::evm::{SPEC, tx_env};

/// Largest accepted encoded transaction (geth's default).
pub const MAX_TX_SIZE: usize = 128 * 1024;
/// Largest init code of a contract creation (EIP-3860).
pub const MAX_INITCODE_SIZE: usize = 2 * 24_576;

/// Why a transaction was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    /// Larger than [`MAX_TX_SIZE`].
    #[error("oversized data: transaction size {0}, limit {MAX_TX_SIZE}")]
    Oversized(usize),
    /// Not a valid EIP-2718 transaction.
    #[error("failed to decode signed transaction: {0}")]
    Decode(String),
    /// A transaction type the chain does not accept.
    #[error("transaction type not supported: {0}")]
    UnsupportedType(String),
    /// A legacy transaction without EIP-155 replay protection.
    #[error("only replay-protected (EIP-155) transactions allowed over RPC")]
    Unprotected,
    /// Signed for another chain.
    #[error("invalid chain id for signer: have {have}, want {want}")]
    WrongChainId {
        /// The transaction's chain id.
        have: u64,
        /// This chain's id.
        want: u64,
    },
    /// The signature does not recover to a sender.
    #[error("invalid sender: {0}")]
    InvalidSignature(String),
    /// Gas limit above the block gas limit.
    #[error("exceeds block gas limit: tx gas {gas}, block gas limit {limit}")]
    GasLimitTooHigh {
        /// The transaction's gas limit.
        gas: u64,
        /// The block gas limit.
        limit: u64,
    },
    /// Gas limit below the intrinsic cost.
    #[error("intrinsic gas too low: have {have}, want {want}")]
    IntrinsicGasTooLow {
        /// The transaction's gas limit.
        have: u64,
        /// The intrinsic gas (or the EIP-7623 floor).
        want: u64,
    },
    /// Priority fee above the fee cap.
    #[error("max priority fee per gas higher than max fee per gas")]
    TipAboveFeeCap,
    /// Init code above [`MAX_INITCODE_SIZE`].
    #[error("max initcode size exceeded: code size {0}, limit {MAX_INITCODE_SIZE}")]
    InitcodeTooLarge(usize),
    /// A nonce of 2^64-1 (EIP-2681).
    #[error("nonce has max value")]
    NonceMax,
    /// An EIP-7702 transaction without authorizations.
    #[error("EIP-7702 transaction with empty auth list")]
    EmptyAuthorizationList,
    /// A fee cap below the base fee of the next block: the transaction could not be included
    /// now, and on a quiet chain whose base fee stays put, never.
    #[error(
        "max fee per gas less than block base fee: address {sender}, maxFeePerGas: {fee_cap}, baseFee: {base_fee}"
    )]
    FeeCapTooLow {
        /// The sender.
        sender: Address,
        /// The transaction's fee cap (its gas price if legacy).
        fee_cap: u128,
        /// The next block's base fee.
        base_fee: u64,
    },
    /// Nonce below the account's.
    #[error("nonce too low: next nonce {expected}, tx nonce {got}")]
    NonceTooLow {
        /// The account's nonce.
        expected: u64,
        /// The transaction's nonce.
        got: u64,
    },
    /// The sender cannot pay the maximum cost.
    #[error(
        "insufficient funds for gas * price + value: balance {balance}, tx cost {cost}, overshot {overshot}"
    )]
    InsufficientFunds {
        /// The sender's balance.
        balance: U256,
        /// gas limit * fee cap + value.
        cost: U256,
        /// How much is missing.
        overshot: U256,
    },
}

/// A decoded transaction that passed the stateless checks.
#[derive(Debug, Clone)]
pub struct CheckedTx {
    /// The transaction.
    pub tx: TxEnvelope,
    /// Its recovered sender.
    pub sender: Address,
}

/// Decodes a raw transaction and runs the checks that need no state, as the node's RPC applies
/// them: Ethereum's validity rules under the chain's fork, plus the node's admission policy
/// (size limit, EIP-155 replay protection required, no blob transactions, block gas limit).
pub fn check_raw(raw: &[u8], chain_id: u64, block_gas_limit: u64) -> Result<CheckedTx, TxError> {
    if raw.len() > MAX_TX_SIZE {
        return Err(TxError::Oversized(raw.len()));
    }
    let checked = decode_valid(raw, chain_id, SPEC)?;
    admit(checked, block_gas_limit)
}

/// Checks an impersonated transaction (its sender given, not recovered) as [`check_raw`] checks
/// a signed one.
pub fn check_unsigned(
    tx: TxEnvelope,
    sender: Address,
    chain_id: u64,
    block_gas_limit: u64,
) -> Result<CheckedTx, TxError> {
    let checked = check_rules(tx, chain_id, SPEC, |_| Ok(sender))?;
    admit(checked, block_gas_limit)
}

/// `tx` with the placeholder signature of an impersonated `sender`: `r` is the sender's
/// address, so two senders' otherwise equal transactions hash apart.
pub fn impersonated(tx: TypedTransaction, sender: Address) -> TxEnvelope {
    let r = U256::from_be_slice(sender.as_slice());
    tx.into_envelope(Signature::new(r, U256::from(1), false))
}

/// The node's admission policy on top of Ethereum's rules.
fn admit(checked: CheckedTx, block_gas_limit: u64) -> Result<CheckedTx, TxError> {
    let tx = &checked.tx;
    if tx.is_eip4844() {
        return Err(TxError::UnsupportedType(
            "blob transactions (EIP-4844) are not accepted".into(),
        ));
    }
    if tx.chain_id().is_none() {
        return Err(TxError::Unprotected);
    }
    if tx.gas_limit() > block_gas_limit {
        return Err(TxError::GasLimitTooHigh {
            gas: tx.gas_limit(),
            limit: block_gas_limit,
        });
    }
    Ok(checked)
}

/// Decodes a raw transaction and checks Ethereum's stateless validity rules under `spec` for a
/// network with `chain_id` (what the TransactionTests vectors define).
pub fn decode_valid(raw: &[u8], chain_id: u64, spec: SpecId) -> Result<CheckedTx, TxError> {
    let tx = TxEnvelope::decode_2718_exact(raw).map_err(|e| TxError::Decode(e.to_string()))?;
    check_rules(tx, chain_id, spec, |tx| {
        tx.recover_signer()
            .map_err(|e| TxError::InvalidSignature(e.to_string()))
    })
}

/// Ethereum's stateless validity rules, with the sender found by `sender` once the type and
/// chain id are known to be right.
fn check_rules(
    tx: TxEnvelope,
    chain_id: u64,
    spec: SpecId,
    sender: impl FnOnce(&TxEnvelope) -> Result<Address, TxError>,
) -> Result<CheckedTx, TxError> {
    let introduced = match tx.tx_type() {
        TxType::Legacy => SpecId::FRONTIER,
        TxType::Eip2930 => SpecId::BERLIN,
        TxType::Eip1559 => SpecId::LONDON,
        TxType::Eip4844 => SpecId::CANCUN,
        TxType::Eip7702 => SpecId::PRAGUE,
    };
    if !spec.is_enabled_in(introduced) {
        return Err(TxError::UnsupportedType(format!(
            "{} before {introduced:?}",
            tx.tx_type()
        )));
    }
    if let Some(have) = tx.chain_id()
        && have != chain_id
    {
        return Err(TxError::WrongChainId {
            have,
            want: chain_id,
        });
    }
    let sender = sender(&tx)?;
    if tx.nonce() == u64::MAX {
        return Err(TxError::NonceMax);
    }
    if tx
        .max_priority_fee_per_gas()
        .is_some_and(|tip| tip > tx.max_fee_per_gas())
    {
        return Err(TxError::TipAboveFeeCap);
    }
    if spec.is_enabled_in(SpecId::SHANGHAI)
        && tx.kind().is_create()
        && tx.input().len() > MAX_INITCODE_SIZE
    {
        return Err(TxError::InitcodeTooLarge(tx.input().len()));
    }
    if tx.authorization_list().is_some_and(<[_]>::is_empty) {
        return Err(TxError::EmptyAuthorizationList);
    }
    let want = intrinsic_gas(&tx, sender, spec);
    if tx.gas_limit() < want {
        return Err(TxError::IntrinsicGasTooLow {
            have: tx.gas_limit(),
            want,
        });
    }
    Ok(CheckedTx { tx, sender })
}

/// The least gas a transaction must be given: its intrinsic cost, or the EIP-7623 calldata floor
/// when that is higher.
pub fn intrinsic_gas(tx: &TxEnvelope, sender: Address, spec: SpecId) -> u64 {
    let gas = calculate_initial_tx_gas_for_tx(tx_env(tx, sender), spec, None);
    (gas.initial_regular_gas + gas.initial_state_gas).max(gas.floor_gas)
}

/// Checks that `tx` pays at least `base_fee`, the next block's, as anvil does at submission.
pub fn check_fee_cap(tx: &TxEnvelope, sender: Address, base_fee: u64) -> Result<(), TxError> {
    if tx.max_fee_per_gas() < u128::from(base_fee) {
        return Err(TxError::FeeCapTooLow {
            sender,
            fee_cap: tx.max_fee_per_gas(),
            base_fee,
        });
    }
    Ok(())
}

/// Checks a transaction against its sender's account: nonce and balance.
pub fn check_account(tx: &TxEnvelope, nonce: u64, balance: U256) -> Result<(), TxError> {
    if tx.nonce() < nonce {
        return Err(TxError::NonceTooLow {
            expected: nonce,
            got: tx.nonce(),
        });
    }
    // A cost past 2^256 (a value near the maximum) can be paid by nobody: saturate, not wrap.
    let cost = U256::from(tx.gas_limit())
        .saturating_mul(U256::from(tx.max_fee_per_gas()))
        .saturating_add(tx.value());
    if cost > balance {
        return Err(TxError::InsufficientFunds {
            balance,
            cost,
            overshot: cost - balance,
        });
    }
    Ok(())
}
