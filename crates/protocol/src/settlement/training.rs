//! Fine-tuning paid from escrow: a model's creator signs a training order for a trainer (a node
//! operator), who holds the quoted fee from the creator's escrow before training, is paid once
//! the model has registered a new artifact, and refunds the hold when the training fails or is
//! cancelled. A payer whose trainer never settles takes the fee back after the order's expiry.

use crate::Result;
use alloy_primitives::{Address, B256, U256};
use alloy_sol_types::{SolCall, SolStruct};

use super::{RECOVER_GAS, domain, signer, unlocking};
use crate::{
    abi::ISettlement::{self, HoldStatus, TrainingHold, TrainingOrder},
    call::{Answer, emit, emitted, revert},
    state::{
        models::model_info,
        settlement::{ESCROW, HOLDS, NONCES, PAID_UP_TO, hold},
    },
    storage::Storage,
};

type Out = Answer;

pub(super) fn digest(s: &mut Storage<'_>, order: &TrainingOrder) -> B256 {
    order.eip712_signing_hash(&domain(s.host().chain_id()))
}

pub(super) fn hold(s: &mut Storage<'_>, caller: Address, c: ISettlement::holdTrainingCall) -> Out {
    let order = c.order;
    let id = digest(s, &order);
    if caller != order.trainer {
        return Err(revert(ISettlement::NotTrainer {
            holdId: id,
            account: caller,
        }));
    }
    let now = s.host().timestamp();
    if now > order.expiry {
        return Err(revert(ISettlement::OrderExpired {
            expiry: order.expiry,
            timestamp: now,
        }));
    }
    if c.amount.is_zero() {
        return Err(revert(ISettlement::ZeroAmount {}));
    }
    if c.amount > order.maxFee {
        return Err(revert(ISettlement::FeeAboveMax {
            fee: c.amount,
            maxFee: order.maxFee,
        }));
    }
    let nonce = NONCES.at(order.payer).at(order.nonce);
    if s.get::<bool>(nonce)? {
        return Err(revert(ISettlement::NonceUsed {
            user: order.payer,
            nonce: order.nonce,
        }));
    }
    s.host().charge(RECOVER_GAS)?;
    if signer(&c.signature, &id) != Some(order.payer) {
        return Err(revert(ISettlement::BadSignature {}));
    }
    let model = model_info(s.host(), order.modelId)?.ok_or_else(|| {
        revert(ISettlement::UnknownModel {
            modelId: order.modelId,
        })
    })?;
    // Escrow on its way out pays for nothing new.
    let escrow = ESCROW.at(order.payer);
    let balance: U256 = s.get(escrow)?;
    let (leaving, _) = unlocking(s, order.payer, balance)?;
    if balance - leaving < c.amount {
        return Err(revert(ISettlement::InsufficientEscrow {
            available: balance - leaving,
            required: c.amount,
        }));
    }
    s.set(escrow, balance - c.amount)?;
    s.set(nonce, true)?;
    let entry = HOLDS.at(id);
    s.set(entry.field(hold::PAYER), order.payer)?;
    s.set(entry.field(hold::TRAINER), order.trainer)?;
    s.set(entry.field(hold::MODEL), order.modelId)?;
    s.set(entry.field(hold::AMOUNT), c.amount)?;
    s.set(entry.field(hold::ARTIFACTS), model.artifact_count)?;
    s.set(entry.field(hold::EXPIRY), order.expiry)?;
    s.set(entry.field(hold::STATUS), HoldStatus::Held as u8)?;
    emit(
        s.host(),
        &ISettlement::TrainingHeld {
            holdId: id,
            payer: order.payer,
            trainer: order.trainer,
            modelId: order.modelId,
            amount: c.amount,
        },
    )?;
    Ok(ISettlement::holdTrainingCall::abi_encode_returns(&id).into())
}

pub(super) fn read(s: &mut Storage<'_>, id: B256) -> Result<TrainingHold> {
    let entry = HOLDS.at(id);
    let status: u8 = s.get(entry.field(hold::STATUS))?;
    Ok(TrainingHold {
        payer: s.get(entry.field(hold::PAYER))?,
        trainer: s.get(entry.field(hold::TRAINER))?,
        modelId: s.get(entry.field(hold::MODEL))?,
        amount: s.get(entry.field(hold::AMOUNT))?,
        artifactCount: s.get(entry.field(hold::ARTIFACTS))?,
        expiry: s.get(entry.field(hold::EXPIRY))?,
        status: HoldStatus::try_from(status).unwrap_or(HoldStatus::None),
    })
}

/// Hold `id`, if it is still held.
fn open(s: &mut Storage<'_>, id: B256) -> Result<TrainingHold> {
    let held = read(s, id)?;
    if held.status != HoldStatus::Held {
        return Err(revert(ISettlement::HoldNotOpen {
            holdId: id,
            status: held.status,
        }));
    }
    Ok(held)
}

pub(super) fn pay(s: &mut Storage<'_>, caller: Address, id: B256) -> Out {
    let held = open(s, id)?;
    if caller != held.trainer {
        return Err(revert(ISettlement::NotTrainer {
            holdId: id,
            account: caller,
        }));
    }
    // An artifact registered since the hold, and not one that paid another hold already.
    let artifacts = model_info(s.host(), held.modelId)?.map_or(0, |m| m.artifact_count);
    let paid_up_to: u64 = s.get(PAID_UP_TO.at(held.modelId))?;
    if artifacts <= held.artifactCount.max(paid_up_to) {
        return Err(revert(ISettlement::NothingTrained {
            holdId: id,
            modelId: held.modelId,
        }));
    }
    s.set(PAID_UP_TO.at(held.modelId), artifacts)?;
    s.set(HOLDS.at(id).field(hold::STATUS), HoldStatus::Paid as u8)?;
    s.host().transfer(held.trainer, held.amount)?;
    emitted(
        s.host(),
        &ISettlement::TrainingPaid {
            holdId: id,
            trainer: held.trainer,
            amount: held.amount,
        },
    )
}

pub(super) fn refund(s: &mut Storage<'_>, caller: Address, id: B256) -> Out {
    let held = open(s, id)?;
    if caller != held.trainer {
        if caller != held.payer {
            return Err(revert(ISettlement::NotTrainer {
                holdId: id,
                account: caller,
            }));
        }
        if s.host().timestamp() <= held.expiry {
            return Err(revert(ISettlement::HoldNotExpired {
                holdId: id,
                expiry: held.expiry,
            }));
        }
    }
    s.set(HOLDS.at(id).field(hold::STATUS), HoldStatus::Refunded as u8)?;
    s.add(ESCROW.at(held.payer), held.amount)?;
    emitted(
        s.host(),
        &ISettlement::TrainingRefunded {
            holdId: id,
            payer: held.payer,
            amount: held.amount,
        },
    )
}
