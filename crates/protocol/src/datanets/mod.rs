//! The Datanets module: curated datasets, their contributions and their versions.
//!
//! See `abi/IDatanets.sol` for the interface and its rules. Ids of datanets and contributions
//! start at 1; versions are numbered from 1 per datanet. Paid training access is in [`access`].

mod access;

use crate::Result;
use alloy_primitives::{Address, B256, Bytes, U256, keccak256};
use alloy_sol_types::SolCall;
use openledger_chain::ModuleCall;
use openledger_primitives::{Genesis, addresses};

use crate::{
    abi::IDatanets::{self, ContributionStatus, IDatanetsCalls, Quota},
    call::{Answer, check_len, emit, emitted, native_module, revert},
    state::{
        datanets::{
            ACCESS_PARAMS, ALLOWED, BY_CONTENT, CONTENT_IN, CONTRIBUTION_COUNT, CONTRIBUTIONS,
            CONTRIBUTOR_USAGE, CONTRIBUTORS, CURATORS, DATANET_COUNT, DATANET_USAGE, DATANETS,
            PARAMS, STATS, VERSIONS, contribution, datanet, has_access, version,
        },
        is_governance,
    },
    storage::{Slot, Storage, consecutive, struct_words},
};

const MAX_NAME: usize = 128;
const MAX_SUMMARY: usize = 1024;
const MAX_SHORT: usize = 64;
const MAX_TAGS: usize = 16;
const MIB: u64 = 1 << 20;
const DAY: u64 = 86_400;

native_module! {
    /// The Datanets module.
    Datanets at addresses::DATANETS, named "datanets", answers IDatanets::IDatanetsCalls,
    payable [publish, approve, requestAccess], genesis genesis, run run
}

/// The module's storage at genesis, from the genesis file.
fn genesis(genesis: &Genesis) -> Vec<(U256, U256)> {
    let p = &genesis.protocol;
    let params = IDatanets::Params {
        feeBase: p.datanet_fee_base,
        feePerMib: p.datanet_fee_per_mib,
        contributorDailyBytes: p.contributor_daily_bytes,
        contributorDailyFiles: p.contributor_daily_files,
        datanetDailyBytes: p.datanet_daily_bytes,
        datanetDailyFiles: p.datanet_daily_files,
    };
    let mut storage = consecutive(PARAMS, struct_words(&params));
    storage.extend(access::genesis(p));
    storage
}

/// Runs a decoded call on the module's own storage.
fn run(mut s: Storage<'_>, call: &ModuleCall<'_>, decoded: IDatanetsCalls) -> Answer {
    let caller = call.caller;
    use IDatanetsCalls as C;
    match decoded {
        C::createDatanet(c) => create(&mut s, caller, c),
        C::setMetadata(c) => set_metadata(&mut s, caller, c),
        C::setCurator(c) => set_member(&mut s, caller, (c.datanetId, c.account, c.allowed), true),
        C::setContributor(c) => {
            set_member(&mut s, caller, (c.datanetId, c.account, c.allowed), false)
        }
        C::publish(c) => publish(&mut s, caller, call.value, c.datanetId),
        C::contribute(c) => contribute(&mut s, caller, c),
        C::approve(c) => approve(&mut s, caller, call.value, c),
        C::reject(c) => reject(&mut s, caller, c),
        C::datanetCount(_) => {
            let count: U256 = s.get(DATANET_COUNT)?;
            Ok(IDatanets::datanetCountCall::abi_encode_returns(&count).into())
        }
        C::getDatanet(c) => {
            let datanet = read_datanet(&mut s, c.datanetId)?;
            Ok(IDatanets::getDatanetCall::abi_encode_returns(&datanet).into())
        }
        C::getContribution(c) => {
            let contribution = read_contribution(&mut s, c.contributionId)?;
            Ok(IDatanets::getContributionCall::abi_encode_returns(&contribution).into())
        }
        C::getVersion(c) => {
            let version = read_version(&mut s, c.datanetId, c.version)?;
            Ok(IDatanets::getVersionCall::abi_encode_returns(&version).into())
        }
        C::contributionsOf(c) => {
            let base = existing(&mut s, c.datanetId)?;
            let ids: Vec<U256> = s.items(base.field(datanet::CONTRIBUTIONS), c.offset, c.limit)?;
            Ok(IDatanets::contributionsOfCall::abi_encode_returns(&ids).into())
        }
        C::approvedContributions(c) => {
            let base = existing(&mut s, c.datanetId)?;
            let ids: Vec<U256> = s.items(base.field(datanet::APPROVED), c.offset, c.limit)?;
            Ok(IDatanets::approvedContributionsCall::abi_encode_returns(&ids).into())
        }
        C::contributionsWithContent(c) => {
            let ids: Vec<U256> = s.items(BY_CONTENT.at(c.contentHash), c.offset, c.limit)?;
            Ok(IDatanets::contributionsWithContentCall::abi_encode_returns(&ids).into())
        }
        C::contributors(c) => {
            let accounts: Vec<Address> = s.items(CONTRIBUTORS, c.offset, c.limit)?;
            Ok(IDatanets::contributorsCall::abi_encode_returns(&accounts).into())
        }
        C::contributorStats(c) => {
            let stats = read_stats(&mut s, c.account)?;
            Ok(IDatanets::contributorStatsCall::abi_encode_returns(&stats).into())
        }
        C::isCurator(c) => {
            let yes: bool = s.get(CURATORS.at(c.datanetId).at(c.account))?;
            Ok(IDatanets::isCuratorCall::abi_encode_returns(&yes).into())
        }
        C::isContributor(c) => {
            let yes: bool = s.get(ALLOWED.at(c.datanetId).at(c.account))?;
            Ok(IDatanets::isContributorCall::abi_encode_returns(&yes).into())
        }
        C::quotaLeft(c) => {
            existing(&mut s, c.datanetId)?;
            let left = quota_left(&mut s, c.datanetId, c.contributor)?;
            Ok(IDatanets::quotaLeftCall::abi_encode_returns(&left).into())
        }
        C::publishFee(c) => {
            let base = existing(&mut s, c.datanetId)?;
            let bytes: u64 = s.get(base.field(datanet::APPROVED_BYTES))?;
            let fee = size_fee(&mut s, bytes)?;
            Ok(IDatanets::publishFeeCall::abi_encode_returns(&fee).into())
        }
        C::versionFee(c) => {
            existing(&mut s, c.datanetId)?;
            let (_, bytes, _) = pending_batch(&mut s, c.datanetId, &c.contributionIds)?;
            let fee = size_fee(&mut s, bytes)?;
            Ok(IDatanets::versionFeeCall::abi_encode_returns(&fee).into())
        }
        C::setParams(c) => set_params(&mut s, caller, c.params),
        C::setAccessTerms(c) => access::set_terms(&mut s, caller, c),
        C::accessTerms(c) => {
            let terms = access::read_terms(&mut s, c.datanetId)?;
            Ok(IDatanets::accessTermsCall::abi_encode_returns(&terms).into())
        }
        C::accessFee(c) => {
            let (fee, _) = access::quote(&mut s, c.modelId, c.datanetId, c.version)?;
            Ok(IDatanets::accessFeeCall::abi_encode_returns(&fee).into())
        }
        C::requestAccess(c) => access::request(&mut s, caller, call.value, c),
        C::approveAccess(c) => access::approve(&mut s, caller, c.requestId),
        C::refuseAccess(c) => access::refuse(&mut s, caller, c.requestId),
        C::getAccessRequest(c) => {
            let request = access::read_request(&mut s, c.requestId)?;
            Ok(IDatanets::getAccessRequestCall::abi_encode_returns(&request).into())
        }
        C::accessOf(c) => {
            let grant = access::read_grant(&mut s, c.modelId, c.datanetId)?;
            Ok(IDatanets::accessOfCall::abi_encode_returns(&grant).into())
        }
        C::hasAccess(c) => {
            existing(&mut s, c.datanetId)?;
            let yes = has_access(s.host(), c.modelId, c.datanetId, c.version)?;
            Ok(IDatanets::hasAccessCall::abi_encode_returns(&yes).into())
        }
        C::accessParams(_) => {
            let params = s.get_struct::<IDatanets::AccessParams>(ACCESS_PARAMS)?;
            Ok(IDatanets::accessParamsCall::abi_encode_returns(&params).into())
        }
        C::setAccessParams(c) => access::set_params(&mut s, caller, c.params),
        C::params(_) => {
            let params = s.get_struct::<IDatanets::Params>(PARAMS)?;
            Ok(IDatanets::paramsCall::abi_encode_returns(&params).into())
        }
    }
}

/// The ABI-encoded return data of a call.
type Out = Answer;

fn create(s: &mut Storage<'_>, caller: Address, c: IDatanets::createDatanetCall) -> Out {
    check_text(&c.name, &c.summary, &c.tags, &c.licence)?;
    check_len(&c.dataType, MAX_SHORT, too_long, "dataType")?;
    let id = s.add(DATANET_COUNT, U256::from(1))?;
    let base = DATANETS.at(id);
    s.set(base.field(datanet::OWNER), caller)?;
    write_metadata(
        s,
        base,
        &c.name,
        &c.summary,
        c.descriptionHash,
        &c.tags,
        &c.licence,
    )?;
    s.set_string(base.field(datanet::DATA_TYPE), &c.dataType)?;
    s.set(base.field(datanet::PUBLIC), c.isPublic)?;
    let now = s.host().timestamp();
    s.set(base.field(datanet::CREATED), now)?;
    emit(
        s.host(),
        &IDatanets::DatanetCreated {
            datanetId: id,
            owner: caller,
            name: c.name,
            isPublic: c.isPublic,
        },
    )?;
    Ok(IDatanets::createDatanetCall::abi_encode_returns(&id).into())
}

fn set_metadata(s: &mut Storage<'_>, caller: Address, c: IDatanets::setMetadataCall) -> Out {
    let base = owned(s, c.datanetId, caller)?;
    check_text(&c.name, &c.summary, &c.tags, &c.licence)?;
    write_metadata(
        s,
        base,
        &c.name,
        &c.summary,
        c.descriptionHash,
        &c.tags,
        &c.licence,
    )?;
    emitted(
        s.host(),
        &IDatanets::MetadataUpdated {
            datanetId: c.datanetId,
            name: c.name,
            descriptionHash: c.descriptionHash,
        },
    )
}

/// Names or removes a curator (`curator`, by the owner) or an allow-listed contributor (by the
/// owner or a curator).
fn set_member(
    s: &mut Storage<'_>,
    caller: Address,
    (datanet_id, account, allowed): (U256, Address, bool),
    curator: bool,
) -> Out {
    let table = if curator {
        owned(s, datanet_id, caller)?;
        CURATORS
    } else {
        curated(s, datanet_id, caller)?;
        ALLOWED
    };
    s.set(table.at(datanet_id).at(account), allowed)?;
    if curator {
        emit(
            s.host(),
            &IDatanets::CuratorSet {
                datanetId: datanet_id,
                account,
                allowed,
            },
        )?;
    } else {
        emit(
            s.host(),
            &IDatanets::ContributorSet {
                datanetId: datanet_id,
                account,
                allowed,
            },
        )?;
    }
    Ok(Bytes::new())
}

fn publish(s: &mut Storage<'_>, caller: Address, paid: U256, id: U256) -> Out {
    let base = owned(s, id, caller)?;
    if s.get::<bool>(base.field(datanet::PUBLISHED))? {
        return Err(revert(IDatanets::AlreadyPublished { datanetId: id }));
    }
    let bytes: u64 = s.get(base.field(datanet::APPROVED_BYTES))?;
    let fee = size_fee(s, bytes)?;
    pay_fee(s, caller, paid, fee)?;
    s.set(base.field(datanet::PUBLISHED), true)?;
    emitted(
        s.host(),
        &IDatanets::DatanetPublished { datanetId: id, fee },
    )
}

fn contribute(s: &mut Storage<'_>, caller: Address, c: IDatanets::contributeCall) -> Out {
    let (base, owner) = with_owner(s, c.datanetId)?;
    if !s.get::<bool>(base.field(datanet::PUBLISHED))? {
        return Err(revert(IDatanets::NotPublished {
            datanetId: c.datanetId,
        }));
    }
    if !s.get::<bool>(base.field(datanet::PUBLIC))?
        && !may_contribute(s, c.datanetId, owner, caller)?
    {
        return Err(revert(IDatanets::NotAllowed {
            datanetId: c.datanetId,
            account: caller,
        }));
    }
    if c.rows == 0 || c.size == 0 || c.contentHash.is_zero() {
        return Err(revert(IDatanets::EmptyContribution {}));
    }
    // A file's rows are paid for once per datanet: the same file again would be paid twice.
    let held = CONTENT_IN.at(c.datanetId).at(c.contentHash);
    if s.get::<bool>(held)? {
        return Err(revert(IDatanets::DuplicateContent {
            datanetId: c.datanetId,
            contentHash: c.contentHash,
        }));
    }
    s.set(held, true)?;
    check_len(&c.licence, MAX_SHORT, too_long, "licence")?;
    use_quota(s, caller, c.datanetId, c.size)?;

    let id = s.add(CONTRIBUTION_COUNT, U256::from(1))?;
    let entry = CONTRIBUTIONS.at(id);
    s.set(entry.field(contribution::DATANET), c.datanetId)?;
    s.set(entry.field(contribution::CONTRIBUTOR), caller)?;
    s.set(entry.field(contribution::HASH), c.contentHash)?;
    s.set(entry.field(contribution::ROWS), c.rows)?;
    s.set(entry.field(contribution::SIZE), c.size)?;
    s.set_string(entry.field(contribution::LICENCE), &c.licence)?;
    let now = s.host().timestamp();
    s.set(entry.field(contribution::SUBMITTED), now)?;
    s.push(base.field(datanet::CONTRIBUTIONS), id)?;
    s.push(BY_CONTENT.at(c.contentHash), id)?;
    let stats = STATS.at(caller);
    if s.add(stats, U256::from(1))? == U256::from(1) {
        s.push(CONTRIBUTORS, caller)?;
    }
    emit(
        s.host(),
        &IDatanets::Contributed {
            datanetId: c.datanetId,
            contributionId: id,
            contributor: caller,
            contentHash: c.contentHash,
            rows: c.rows,
            size: c.size,
        },
    )?;
    Ok(IDatanets::contributeCall::abi_encode_returns(&id).into())
}

fn approve(s: &mut Storage<'_>, caller: Address, paid: U256, c: IDatanets::approveCall) -> Out {
    let base = curated(s, c.datanetId, caller)?;
    let (rows, bytes, hashes) = pending_batch(s, c.datanetId, &c.contributionIds)?;
    let fee = size_fee(s, bytes)?;
    pay_fee(s, caller, paid, fee)?;

    let number = s
        .add(base.field(datanet::VERSIONS), U256::from(1))?
        .to::<u64>();
    let previous: B256 = s.get(base.field(datanet::ROOT))?;
    let root = version_root(previous, &hashes);
    s.set(base.field(datanet::ROOT), root)?;
    let total_rows = s.add(base.field(datanet::APPROVED_ROWS), U256::from(rows))?;
    let total_bytes = s.add(base.field(datanet::APPROVED_BYTES), U256::from(bytes))?;
    for &id in &c.contributionIds {
        let entry = CONTRIBUTIONS.at(id);
        s.set(
            entry.field(contribution::STATUS),
            ContributionStatus::Approved as u8,
        )?;
        s.set(entry.field(contribution::VERSION), number)?;
        let contributor: Address = s.get(entry.field(contribution::CONTRIBUTOR))?;
        s.add(STATS.at(contributor).field(1), U256::from(1))?;
        s.push(base.field(datanet::APPROVED), id)?;
    }
    let approved = s.len(base.field(datanet::APPROVED))?;
    let entry = VERSIONS.at(c.datanetId).at(number);
    s.set(entry.field(version::ROOT), root)?;
    s.set_items(entry.field(version::IDS), c.contributionIds.clone())?;
    s.set(entry.field(version::APPROVED), approved)?;
    s.set(entry.field(version::ROWS), total_rows)?;
    s.set(entry.field(version::SIZE), total_bytes)?;
    s.set(entry.field(version::FEE), fee)?;
    let now = s.host().timestamp();
    s.set(entry.field(version::CREATED), now)?;
    emit(
        s.host(),
        &IDatanets::VersionCreated {
            datanetId: c.datanetId,
            version: number,
            root,
            contributionIds: c.contributionIds,
            fee,
        },
    )?;
    Ok(IDatanets::approveCall::abi_encode_returns(&number).into())
}

fn reject(s: &mut Storage<'_>, caller: Address, c: IDatanets::rejectCall) -> Out {
    curated(s, c.datanetId, caller)?;
    pending_batch(s, c.datanetId, &c.contributionIds)?;
    for &id in &c.contributionIds {
        let entry = CONTRIBUTIONS.at(id);
        s.set(
            entry.field(contribution::STATUS),
            ContributionStatus::Rejected as u8,
        )?;
        s.set(entry.field(contribution::REASON), c.reasonCode)?;
        // A rejected file may be contributed again (fixed, or by its rightful contributor).
        let hash: B256 = s.get(entry.field(contribution::HASH))?;
        s.set(CONTENT_IN.at(c.datanetId).at(hash), false)?;
        let contributor: Address = s.get(entry.field(contribution::CONTRIBUTOR))?;
        s.add(STATS.at(contributor).field(2), U256::from(1))?;
    }
    emitted(
        s.host(),
        &IDatanets::ContributionsRejected {
            datanetId: c.datanetId,
            contributionIds: c.contributionIds,
            reasonCode: c.reasonCode,
        },
    )
}

/// A version's root: `keccak256(previous root . content hashes approved in this round)`, so
/// version `v` commits to every approved contribution up to it, in order.
pub fn version_root(previous: B256, hashes: &[B256]) -> B256 {
    let mut preimage = Vec::with_capacity(32 * (hashes.len() + 1));
    preimage.extend_from_slice(previous.as_slice());
    for hash in hashes {
        preimage.extend_from_slice(hash.as_slice());
    }
    keccak256(preimage)
}

/// Checks that `ids` are distinct pending contributions of the datanet; returns their total
/// rows, bytes and content hashes in order.
fn pending_batch(
    s: &mut Storage<'_>,
    datanet_id: U256,
    ids: &[U256],
) -> Result<(u64, u64, Vec<B256>)> {
    if ids.is_empty() {
        return Err(revert(IDatanets::NoContributions {}));
    }
    let (mut rows, mut bytes, mut hashes) = (0u64, 0u64, Vec::with_capacity(ids.len()));
    for (i, &id) in ids.iter().enumerate() {
        let entry = CONTRIBUTIONS.at(id);
        let owner: U256 = s.get(entry.field(contribution::DATANET))?;
        if owner.is_zero() {
            return Err(revert(IDatanets::UnknownContribution {
                contributionId: id,
            }));
        }
        if owner != datanet_id {
            return Err(revert(IDatanets::WrongDatanet {
                contributionId: id,
                datanetId: datanet_id,
            }));
        }
        let status: u8 = s.get(entry.field(contribution::STATUS))?;
        if status != ContributionStatus::Pending as u8 || ids[..i].contains(&id) {
            return Err(revert(IDatanets::NotPending { contributionId: id }));
        }
        rows = rows.saturating_add(s.get(entry.field(contribution::ROWS))?);
        bytes = bytes.saturating_add(s.get(entry.field(contribution::SIZE))?);
        hashes.push(s.get(entry.field(contribution::HASH))?);
    }
    Ok((rows, bytes, hashes))
}

/// The daily quotas a file sent to `datanet_id` by `contributor` (if known) counts against:
/// the slot of today's use, the quota and its limit.
fn quotas(
    s: &mut Storage<'_>,
    contributor: Option<Address>,
    datanet_id: U256,
) -> Result<Vec<(Slot, Quota, u64)>> {
    let day = s.host().timestamp() / DAY;
    let params = s.get_struct::<IDatanets::Params>(PARAMS)?;
    let mut quotas = Vec::with_capacity(4);
    if let Some(contributor) = contributor {
        let usage = CONTRIBUTOR_USAGE.at(contributor).at(day);
        quotas.push((usage, Quota::ContributorBytes, params.contributorDailyBytes));
        quotas.push((
            usage.field(1),
            Quota::ContributorFiles,
            params.contributorDailyFiles,
        ));
    }
    let usage = DATANET_USAGE.at(datanet_id).at(day);
    quotas.push((usage, Quota::DatanetBytes, params.datanetDailyBytes));
    quotas.push((
        usage.field(1),
        Quota::DatanetFiles,
        params.datanetDailyFiles,
    ));
    Ok(quotas)
}

fn counts_bytes(quota: Quota) -> bool {
    matches!(quota, Quota::ContributorBytes | Quota::DatanetBytes)
}

/// Charges the daily quotas of the contributor and of the datanet for one file of `size` bytes.
fn use_quota(s: &mut Storage<'_>, contributor: Address, datanet_id: U256, size: u64) -> Result<()> {
    for (slot, quota, limit) in quotas(s, Some(contributor), datanet_id)? {
        let amount = if counts_bytes(quota) { size } else { 1 };
        let would_use = s.get::<u64>(slot)?.saturating_add(amount);
        if would_use > limit {
            return Err(revert(IDatanets::QuotaExceeded {
                quota,
                wouldUse: U256::from(would_use),
                limit: U256::from(limit),
            }));
        }
        s.set(slot, would_use)?;
    }
    Ok(())
}

/// Bytes and files still allowed today under every quota that applies.
fn quota_left(
    s: &mut Storage<'_>,
    datanet_id: U256,
    contributor: Address,
) -> Result<IDatanets::quotaLeftReturn> {
    let contributor = (!contributor.is_zero()).then_some(contributor);
    let mut left = IDatanets::quotaLeftReturn {
        remainingBytes: u64::MAX,
        remainingFiles: u64::MAX,
    };
    for (slot, quota, limit) in quotas(s, contributor, datanet_id)? {
        let remaining = limit.saturating_sub(s.get(slot)?);
        let field = if counts_bytes(quota) {
            &mut left.remainingBytes
        } else {
            &mut left.remainingFiles
        };
        *field = (*field).min(remaining);
    }
    Ok(left)
}

/// The fee for publishing or versioning `bytes` of data: base + per-MiB × started MiBs.
fn size_fee(s: &mut Storage<'_>, bytes: u64) -> Result<U256> {
    let base: U256 = s.get(PARAMS.field(0))?;
    let per_mib: U256 = s.get(PARAMS.field(1))?;
    Ok(base.saturating_add(per_mib.saturating_mul(U256::from(bytes.div_ceil(MIB)))))
}

/// Sends `fee` of the `paid` OPEN to the treasury and the rest back to the payer.
fn pay_fee(s: &mut Storage<'_>, payer: Address, paid: U256, fee: U256) -> Result<()> {
    if paid < fee {
        return Err(revert(IDatanets::InsufficientFee {
            required: fee,
            paid,
        }));
    }
    if !fee.is_zero() {
        s.host().transfer(addresses::TREASURY, fee)?;
    }
    if paid > fee {
        s.host().transfer(payer, paid - fee)?;
    }
    Ok(())
}

/// The base slot and owner of an existing datanet.
fn with_owner(s: &mut Storage<'_>, id: U256) -> Result<(Slot, Address)> {
    let base = DATANETS.at(id);
    let owner: Address = s.get(base.field(datanet::OWNER))?;
    if owner.is_zero() {
        return Err(revert(IDatanets::UnknownDatanet { datanetId: id }));
    }
    Ok((base, owner))
}

/// The base slot of an existing datanet.
fn existing(s: &mut Storage<'_>, id: U256) -> Result<Slot> {
    Ok(with_owner(s, id)?.0)
}

/// The base slot of a datanet `caller` owns.
fn owned(s: &mut Storage<'_>, id: U256, caller: Address) -> Result<Slot> {
    let (base, owner) = with_owner(s, id)?;
    if owner != caller {
        return Err(revert(IDatanets::NotOwner {
            datanetId: id,
            account: caller,
        }));
    }
    Ok(base)
}

/// The base slot of a datanet `caller` owns or curates.
fn curated(s: &mut Storage<'_>, id: U256, caller: Address) -> Result<Slot> {
    let (base, owner) = with_owner(s, id)?;
    if owner != caller && !s.get::<bool>(CURATORS.at(id).at(caller))? {
        return Err(revert(IDatanets::NotCurator {
            datanetId: id,
            account: caller,
        }));
    }
    Ok(base)
}

/// Whether `account` may contribute to a private datanet: its owner, curators and allow-list.
fn may_contribute(s: &mut Storage<'_>, id: U256, owner: Address, account: Address) -> Result<bool> {
    Ok(owner == account
        || s.get::<bool>(CURATORS.at(id).at(account))?
        || s.get::<bool>(ALLOWED.at(id).at(account))?)
}

fn too_long(field: String, max: usize) -> IDatanets::TooLong {
    IDatanets::TooLong {
        field,
        max: U256::from(max),
    }
}

fn check_text(name: &str, summary: &str, tags: &[String], licence: &str) -> Result<()> {
    if name.trim().is_empty() {
        return Err(revert(IDatanets::EmptyName {}));
    }
    check_len(name, MAX_NAME, too_long, "name")?;
    check_len(summary, MAX_SUMMARY, too_long, "summary")?;
    check_len(licence, MAX_SHORT, too_long, "licence")?;
    if tags.len() > MAX_TAGS {
        return Err(revert(too_long("tags".into(), MAX_TAGS)));
    }
    tags.iter()
        .try_for_each(|tag| check_len(tag, MAX_SHORT, too_long, "tag"))
}

fn write_metadata(
    s: &mut Storage<'_>,
    base: Slot,
    name: &str,
    summary: &str,
    description: B256,
    tags: &[String],
    licence: &str,
) -> Result<()> {
    s.set_string(base.field(datanet::NAME), name)?;
    s.set_string(base.field(datanet::SUMMARY), summary)?;
    s.set(base.field(datanet::DESCRIPTION), description)?;
    s.set_strings(base.field(datanet::TAGS), tags)?;
    s.set_string(base.field(datanet::LICENCE), licence)
}

fn set_params(s: &mut Storage<'_>, caller: Address, params: IDatanets::Params) -> Answer {
    if !is_governance(s.host(), caller)? {
        return Err(revert(IDatanets::NotGovernance { account: caller }));
    }
    s.set_struct(PARAMS, &params)?;
    emitted(s.host(), &IDatanets::ParamsSet { params })
}

fn read_datanet(s: &mut Storage<'_>, id: U256) -> Result<IDatanets::Datanet> {
    let base = existing(s, id)?;
    let f = |field| base.field(field);
    Ok(IDatanets::Datanet {
        id,
        owner: s.get(f(datanet::OWNER))?,
        name: s.get_string(f(datanet::NAME))?,
        summary: s.get_string(f(datanet::SUMMARY))?,
        descriptionHash: s.get(f(datanet::DESCRIPTION))?,
        tags: s.get_strings(f(datanet::TAGS))?,
        dataType: s.get_string(f(datanet::DATA_TYPE))?,
        licence: s.get_string(f(datanet::LICENCE))?,
        isPublic: s.get(f(datanet::PUBLIC))?,
        published: s.get(f(datanet::PUBLISHED))?,
        versionCount: s.get(f(datanet::VERSIONS))?,
        contributionCount: s.len(f(datanet::CONTRIBUTIONS))?,
        approvedCount: s.len(f(datanet::APPROVED))?,
        approvedRows: s.get(f(datanet::APPROVED_ROWS))?,
        approvedBytes: s.get(f(datanet::APPROVED_BYTES))?,
        createdAt: s.get(f(datanet::CREATED))?,
    })
}

fn read_contribution(s: &mut Storage<'_>, id: U256) -> Result<IDatanets::Contribution> {
    let base = CONTRIBUTIONS.at(id);
    let f = |field| base.field(field);
    let datanet_id: U256 = s.get(f(contribution::DATANET))?;
    if datanet_id.is_zero() {
        return Err(revert(IDatanets::UnknownContribution {
            contributionId: id,
        }));
    }
    let status: u8 = s.get(f(contribution::STATUS))?;
    Ok(IDatanets::Contribution {
        id,
        datanetId: datanet_id,
        contributor: s.get(f(contribution::CONTRIBUTOR))?,
        contentHash: s.get(f(contribution::HASH))?,
        rows: s.get(f(contribution::ROWS))?,
        size: s.get(f(contribution::SIZE))?,
        licence: s.get_string(f(contribution::LICENCE))?,
        status: ContributionStatus::try_from(status).unwrap_or(ContributionStatus::Pending),
        version: s.get(f(contribution::VERSION))?,
        reasonCode: s.get(f(contribution::REASON))?,
        submittedAt: s.get(f(contribution::SUBMITTED))?,
    })
}

fn read_version(s: &mut Storage<'_>, datanet_id: U256, number: u64) -> Result<IDatanets::Version> {
    let base = existing(s, datanet_id)?;
    let count: u64 = s.get(base.field(datanet::VERSIONS))?;
    if number == 0 || number > count {
        return Err(revert(IDatanets::UnknownVersion {
            datanetId: datanet_id,
            version: number,
        }));
    }
    let entry = VERSIONS.at(datanet_id).at(number);
    let f = |field| entry.field(field);
    Ok(IDatanets::Version {
        datanetId: datanet_id,
        number,
        root: s.get(f(version::ROOT))?,
        contributionIds: s.items(f(version::IDS), 0, u64::MAX)?,
        approvedCount: s.get(f(version::APPROVED))?,
        rows: s.get(f(version::ROWS))?,
        size: s.get(f(version::SIZE))?,
        fee: s.get(f(version::FEE))?,
        createdAt: s.get(f(version::CREATED))?,
    })
}

fn read_stats(s: &mut Storage<'_>, account: Address) -> Result<IDatanets::ContributorStats> {
    let base = STATS.at(account);
    let submitted: u64 = s.get(base)?;
    let approved: u64 = s.get(base.field(1))?;
    let rejected: u64 = s.get(base.field(2))?;
    // Parts per million of decided contributions; 0 before any decision.
    let acceptance = (approved * 1_000_000)
        .checked_div(approved + rejected)
        .unwrap_or(0) as u32;
    Ok(IDatanets::ContributorStats {
        submitted,
        approved,
        rejected,
        acceptancePpm: acceptance,
    })
}

#[cfg(test)]
mod tests;
