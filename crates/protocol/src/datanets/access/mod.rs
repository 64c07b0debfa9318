//! Paid training access to datanets: the owner's terms, requests and grants, and the split of
//! each fee between the contributors of the rows paid for, the owner and the treasury.
//!
//! A grant covers a model's access to a datanet up to a version; extending it pays for the rows
//! the newer versions added only, and those rows' contributors are paid, so the work of one
//! request is bounded by the contributions it newly covers ([`MAX_NEW_CONTRIBUTIONS`]).

use crate::Result;
use std::collections::BTreeMap;

use alloy_primitives::{Address, Bytes, U256};
use alloy_sol_types::SolCall;
use openledger_chain::ModuleError;
use openledger_primitives::{ProtocolParams, addresses};

use super::with_owner;
use crate::{
    abi::{
        IDatanets::{self, AccessStatus},
        IModels,
        ISettlement::{self, Accrual, Role},
    },
    call::{Answer, emit, emitted, revert},
    math::{PPM, ppm_of},
    state::{
        datanets::{
            ACCESS_PARAMS, DATANETS, GRANTS, REQUEST_COUNT, REQUESTS, VERSIONS, datanet, grant,
            request, version,
        },
        is_governance,
    },
    storage::{Storage, consecutive, struct_words},
};

/// Most contributions one request may newly cover: each is read and paid.
pub const MAX_NEW_CONTRIBUTIONS: u64 = 1_000;

type Out = Answer;

/// The access parameters' genesis storage.
pub(super) fn genesis(p: &ProtocolParams) -> Vec<(U256, U256)> {
    let a = &p.data_access;
    let params = IDatanets::AccessParams {
        protocolSharePpm: a.protocol_share_ppm,
        ownerSharePpm: a.owner_share_ppm,
        maxPricePerRow: a.max_price_per_row,
    };
    consecutive(ACCESS_PARAMS, struct_words(&params))
}

pub(super) fn set_params(
    s: &mut Storage<'_>,
    caller: Address,
    params: IDatanets::AccessParams,
) -> Out {
    if !is_governance(s.host(), caller)? {
        return Err(revert(IDatanets::NotGovernance { account: caller }));
    }
    let sum = u64::from(params.protocolSharePpm) + u64::from(params.ownerSharePpm);
    if sum > u64::from(PPM) {
        return Err(revert(IDatanets::SharesAboveWhole {
            sum: U256::from(sum),
        }));
    }
    s.set_struct(ACCESS_PARAMS, &params)?;
    emitted(s.host(), &IDatanets::AccessParamsSet { params })
}

pub(super) fn read_terms(s: &mut Storage<'_>, datanet_id: U256) -> Result<IDatanets::AccessTerms> {
    let (base, _) = with_owner(s, datanet_id)?;
    Ok(IDatanets::AccessTerms {
        pricePerRow: s.get(base.field(datanet::PRICE_PER_ROW))?,
        approvalRequired: s.get(base.field(datanet::APPROVAL_REQUIRED))?,
    })
}

pub(super) fn set_terms(
    s: &mut Storage<'_>,
    caller: Address,
    c: IDatanets::setAccessTermsCall,
) -> Out {
    let (base, owner) = with_owner(s, c.datanetId)?;
    if caller != owner {
        return Err(revert(IDatanets::NotOwner {
            datanetId: c.datanetId,
            account: caller,
        }));
    }
    let max = s
        .get_struct::<IDatanets::AccessParams>(ACCESS_PARAMS)?
        .maxPricePerRow;
    if c.pricePerRow > max {
        return Err(revert(IDatanets::PriceAboveMax {
            pricePerRow: c.pricePerRow,
            max,
        }));
    }
    s.set(base.field(datanet::PRICE_PER_ROW), c.pricePerRow)?;
    s.set(base.field(datanet::APPROVAL_REQUIRED), c.approvalRequired)?;
    emitted(
        s.host(),
        &IDatanets::AccessTermsSet {
            datanetId: c.datanetId,
            pricePerRow: c.pricePerRow,
            approvalRequired: c.approvalRequired,
        },
    )
}

pub(super) fn read_grant(
    s: &mut Storage<'_>,
    model_id: U256,
    datanet_id: U256,
) -> Result<IDatanets::AccessGrant> {
    s.get_struct(GRANTS.at(model_id).at(datanet_id))
}

/// What a version of a datanet holds, cumulatively: approved contributions and rows (0 for
/// version 0, before any).
fn covered(s: &mut Storage<'_>, datanet_id: U256, number: u64) -> Result<(u64, u64)> {
    if number == 0 {
        return Ok((0, 0));
    }
    let entry = VERSIONS.at(datanet_id).at(number);
    Ok((
        s.get(entry.field(version::APPROVED))?,
        s.get(entry.field(version::ROWS))?,
    ))
}

/// What extending model `model_id`'s access to `number` costs at today's price, and the
/// contributions that newly covers; refuses a version that does not exist, one already
/// granted, and more than [`MAX_NEW_CONTRIBUTIONS`].
pub(super) fn quote(
    s: &mut Storage<'_>,
    model_id: U256,
    datanet_id: U256,
    number: u64,
) -> Result<(U256, u64)> {
    let (base, _) = with_owner(s, datanet_id)?;
    let versions: u64 = s.get(base.field(datanet::VERSIONS))?;
    if number == 0 || number > versions {
        return Err(revert(IDatanets::UnknownVersion {
            datanetId: datanet_id,
            version: number,
        }));
    }
    let granted = read_grant(s, model_id, datanet_id)?.version;
    if number <= granted {
        return Err(revert(IDatanets::AccessAlreadyGranted {
            modelId: model_id,
            datanetId: datanet_id,
            grantedVersion: granted,
        }));
    }
    let (from_count, from_rows) = covered(s, datanet_id, granted)?;
    let (to_count, to_rows) = covered(s, datanet_id, number)?;
    let new = to_count - from_count;
    if new > MAX_NEW_CONTRIBUTIONS {
        return Err(revert(IDatanets::TooManyContributions {
            count: U256::from(new),
            max: U256::from(MAX_NEW_CONTRIBUTIONS),
        }));
    }
    let price: U256 = s.get(base.field(datanet::PRICE_PER_ROW))?;
    Ok((price * U256::from(to_rows - from_rows), new))
}

/// The creator and datanets of model `model_id`, asked of the Models module.
fn model_of(s: &mut Storage<'_>, model_id: U256) -> Result<IModels::Model> {
    let call = IModels::getModelCall { modelId: model_id };
    let output = s
        .host()
        .call_module(addresses::MODELS, &call.abi_encode(), U256::ZERO)
        .map_err(|e| match e {
            ModuleError::Revert(_) => revert(IDatanets::UnknownModel { modelId: model_id }),
            other => other,
        })?;
    IModels::getModelCall::abi_decode_returns(&output)
        .map_err(|e| ModuleError::Fatal(format!("getModel returned {e}")))
}

pub(super) fn request(
    s: &mut Storage<'_>,
    caller: Address,
    paid: U256,
    c: IDatanets::requestAccessCall,
) -> Out {
    let model = model_of(s, c.modelId)?;
    if model.creator != caller {
        return Err(revert(IDatanets::NotModelCreator {
            modelId: c.modelId,
            account: caller,
        }));
    }
    if !model.datanetIds.contains(&c.datanetId) {
        return Err(revert(IDatanets::DatanetNotUsed {
            modelId: c.modelId,
            datanetId: c.datanetId,
        }));
    }
    let (fee, _) = quote(s, c.modelId, c.datanetId, c.version)?;
    let grant_slot = GRANTS.at(c.modelId).at(c.datanetId);
    let pending: U256 = s.get(grant_slot.field(grant::PENDING))?;
    if !pending.is_zero() {
        return Err(revert(IDatanets::AccessPending { requestId: pending }));
    }
    if paid < fee {
        return Err(revert(IDatanets::InsufficientFee {
            required: fee,
            paid,
        }));
    }
    if paid > fee {
        s.host().transfer(caller, paid - fee)?;
    }
    let id = s.add(REQUEST_COUNT, U256::from(1))?;
    let entry = REQUESTS.at(id);
    s.set(entry.field(request::MODEL), c.modelId)?;
    s.set(entry.field(request::DATANET), c.datanetId)?;
    s.set(entry.field(request::VERSION), c.version)?;
    s.set(entry.field(request::REQUESTER), caller)?;
    s.set(entry.field(request::FEE), fee)?;
    let now = s.host().timestamp();
    s.set(entry.field(request::REQUESTED_AT), now)?;
    emit(
        s.host(),
        &IDatanets::AccessRequested {
            requestId: id,
            modelId: c.modelId,
            datanetId: c.datanetId,
            version: c.version,
            fee,
        },
    )?;
    let base = DATANETS.at(c.datanetId);
    let public: bool = s.get(base.field(datanet::PUBLIC))?;
    let approval: bool = s.get(base.field(datanet::APPROVAL_REQUIRED))?;
    if public || !approval {
        grant_request(s, id)?;
    } else {
        s.set(entry.field(request::STATUS), AccessStatus::Pending as u8)?;
        s.set(grant_slot.field(grant::PENDING), id)?;
    }
    Ok(IDatanets::requestAccessCall::abi_encode_returns(&id).into())
}

pub(super) fn read_request(s: &mut Storage<'_>, id: U256) -> Result<IDatanets::AccessRequest> {
    let entry = REQUESTS.at(id);
    let f = |field| entry.field(field);
    let datanet_id: U256 = s.get(f(request::DATANET))?;
    if datanet_id.is_zero() {
        return Err(revert(IDatanets::UnknownAccessRequest { requestId: id }));
    }
    let status: u8 = s.get(f(request::STATUS))?;
    Ok(IDatanets::AccessRequest {
        id,
        modelId: s.get(f(request::MODEL))?,
        datanetId: datanet_id,
        version: s.get(f(request::VERSION))?,
        requester: s.get(f(request::REQUESTER))?,
        fee: s.get(f(request::FEE))?,
        status: AccessStatus::try_from(status).unwrap_or(AccessStatus::None),
        requestedAt: s.get(f(request::REQUESTED_AT))?,
    })
}

/// The pending request `id`, if `caller` owns its datanet.
fn pending_for_owner(
    s: &mut Storage<'_>,
    caller: Address,
    id: U256,
) -> Result<IDatanets::AccessRequest> {
    let request = read_request(s, id)?;
    let (_, owner) = with_owner(s, request.datanetId)?;
    if caller != owner {
        return Err(revert(IDatanets::NotOwner {
            datanetId: request.datanetId,
            account: caller,
        }));
    }
    if request.status != AccessStatus::Pending {
        return Err(revert(IDatanets::RequestNotPending {
            requestId: id,
            status: request.status,
        }));
    }
    Ok(request)
}

pub(super) fn approve(s: &mut Storage<'_>, caller: Address, id: U256) -> Out {
    pending_for_owner(s, caller, id)?;
    grant_request(s, id)?;
    Ok(Bytes::new())
}

pub(super) fn refuse(s: &mut Storage<'_>, caller: Address, id: U256) -> Out {
    let request = pending_for_owner(s, caller, id)?;
    s.set(
        REQUESTS.at(id).field(request::STATUS),
        AccessStatus::Refused as u8,
    )?;
    let grant_slot = GRANTS.at(request.modelId).at(request.datanetId);
    s.set(grant_slot.field(grant::PENDING), U256::ZERO)?;
    if !request.fee.is_zero() {
        s.host().transfer(request.requester, request.fee)?;
    }
    emitted(
        s.host(),
        &IDatanets::AccessRefused {
            requestId: id,
            refunded: request.fee,
        },
    )
}

/// Grants request `id`: its model's access now reaches its version, and its fee is paid out.
fn grant_request(s: &mut Storage<'_>, id: U256) -> Result<()> {
    let request = read_request(s, id)?;
    let grant_slot = GRANTS.at(request.modelId).at(request.datanetId);
    let from: u64 = s.get(grant_slot.field(grant::VERSION))?;
    let (to_contributors, to_owner, to_treasury) = pay_out(s, &request, from)?;
    s.set(grant_slot.field(grant::VERSION), request.version)?;
    s.add(grant_slot.field(grant::PAID), request.fee)?;
    let now = s.host().timestamp();
    s.set(grant_slot.field(grant::GRANTED_AT), now)?;
    s.set(grant_slot.field(grant::PENDING), U256::ZERO)?;
    s.set(
        REQUESTS.at(id).field(request::STATUS),
        AccessStatus::Granted as u8,
    )?;
    emit(
        s.host(),
        &IDatanets::AccessGranted {
            requestId: id,
            modelId: request.modelId,
            datanetId: request.datanetId,
            fromVersion: from,
            version: request.version,
            fee: request.fee,
            toContributors: to_contributors,
            toOwner: to_owner,
            toTreasury: to_treasury,
        },
    )?;
    Ok(())
}

/// Splits a granted request's fee: the treasury's and the owner's shares, and the rest to the
/// contributors of the contributions approved after version `from` up to the request's, by
/// their rows, accrued in Settlement; rounding dust goes to the treasury. Returns what went to
/// the contributors, the owner and the treasury.
fn pay_out(
    s: &mut Storage<'_>,
    request: &IDatanets::AccessRequest,
    from: u64,
) -> Result<(U256, U256, U256)> {
    if request.fee.is_zero() {
        return Ok((U256::ZERO, U256::ZERO, U256::ZERO));
    }
    let params = s.get_struct::<IDatanets::AccessParams>(ACCESS_PARAMS)?;
    let ppm = |share: u32| ppm_of(request.fee, share);
    let mut to_treasury = ppm(params.protocolSharePpm);
    let to_owner = ppm(params.ownerSharePpm);
    let pool = request.fee - to_treasury - to_owner;
    let rows = rows_by_contributor(s, request.datanetId, from, request.version)?;
    let total: u64 = rows.values().sum();
    let mut accruals = Vec::new();
    let (_, owner) = with_owner(s, request.datanetId)?;
    if !to_owner.is_zero() {
        accruals.push(Accrual {
            account: owner,
            role: Role::AccessOwner,
            amount: to_owner,
        });
    }
    let mut to_contributors = U256::ZERO;
    for (account, n) in rows {
        let amount = pool * U256::from(n) / U256::from(total);
        if !amount.is_zero() {
            to_contributors += amount;
            accruals.push(Accrual {
                account,
                role: Role::AccessContributor,
                amount,
            });
        }
    }
    to_treasury += pool - to_contributors;
    if !accruals.is_empty() {
        let call = ISettlement::accrueAccessCall {
            modelId: request.modelId,
            accruals,
        };
        s.host().call_module(
            addresses::SETTLEMENT,
            &call.abi_encode(),
            to_contributors + to_owner,
        )?;
    }
    if !to_treasury.is_zero() {
        s.host().transfer(addresses::TREASURY, to_treasury)?;
    }
    Ok((to_contributors, to_owner, to_treasury))
}

/// The rows each contributor added to the datanet after version `from` up to `to`.
fn rows_by_contributor(
    s: &mut Storage<'_>,
    datanet_id: U256,
    from: u64,
    to: u64,
) -> Result<BTreeMap<Address, u64>> {
    let (start, _) = covered(s, datanet_id, from)?;
    let (end, _) = covered(s, datanet_id, to)?;
    let approved = DATANETS.at(datanet_id).field(datanet::APPROVED);
    let ids: Vec<U256> = s.items(approved, start, end - start)?;
    let mut rows = BTreeMap::new();
    for id in ids {
        let entry = super::CONTRIBUTIONS.at(id);
        let contributor: Address = s.get(entry.field(super::contribution::CONTRIBUTOR))?;
        let n: u64 = s.get(entry.field(super::contribution::ROWS))?;
        *rows.entry(contributor).or_default() += n;
    }
    Ok(rows)
}

#[cfg(test)]
mod tests;
