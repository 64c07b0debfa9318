//! The Datanets module's storage, and what other modules read of it.

use crate::Result;
use alloy_primitives::{Address, U256};
use openledger_chain::ModuleHost;
use openledger_primitives::addresses;

use crate::abi::IDatanets::ContributionStatus;
use crate::storage::{Storage, fields, slots};

slots! {
    /// The parameters: six words in the order of `IDatanets.Params`.
    PARAMS: 6,
    DATANET_COUNT,
    /// Per id, a datanet ([`datanet`]).
    DATANETS,
    CONTRIBUTION_COUNT,
    /// Per id, a contribution ([`contribution`]).
    CONTRIBUTIONS,
    /// Per datanet, per account: a curator.
    CURATORS,
    /// Per datanet, per account: an allow-listed contributor.
    ALLOWED,
    /// Per account: submitted, approved and rejected contributions (three words).
    STATS,
    /// Per account, per day: bytes and files contributed.
    CONTRIBUTOR_USAGE,
    /// Per datanet, per day: bytes and files contributed.
    DATANET_USAGE,
    /// Per datanet, per number: a version ([`version`]).
    VERSIONS,
    /// Every account that ever contributed.
    CONTRIBUTORS,
    /// Paid access's split and price cap: three words in the order of `IDatanets.AccessParams`.
    ACCESS_PARAMS: 3,
    /// Per model, per datanet: the grant ([`grant`]).
    GRANTS,
    REQUEST_COUNT,
    /// Per id, an access request ([`request`]).
    REQUESTS,
    /// Per content hash, the contributions of that content, oldest first.
    BY_CONTENT,
    /// Per datanet, per content hash: whether a pending or approved contribution holds it (a
    /// file is contributed to a datanet once).
    CONTENT_IN,
}

fields! {
    /// Fields of a datanet, from its base slot.
    mod datanet {
        OWNER,
        NAME,
        SUMMARY,
        DESCRIPTION,
        TAGS,
        DATA_TYPE,
        LICENCE,
        PUBLIC,
        PUBLISHED,
        VERSIONS,
        APPROVED_ROWS,
        APPROVED_BYTES,
        CREATED,
        CONTRIBUTIONS,
        APPROVED,
        ROOT,
        PRICE_PER_ROW,
        APPROVAL_REQUIRED,
    }
}

fields! {
    /// Fields of a contribution.
    mod contribution {
        DATANET,
        CONTRIBUTOR,
        HASH,
        ROWS,
        SIZE,
        LICENCE,
        STATUS,
        VERSION,
        REASON,
        SUBMITTED,
    }
}

fields! {
    /// Fields of a version.
    mod version {
        ROOT,
        IDS,
        APPROVED,
        ROWS,
        SIZE,
        FEE,
        CREATED,
    }
}

fields! {
    /// Fields of a grant, in the order of `IDatanets.AccessGrant`, which is read whole.
    mod grant {
        VERSION,
        PAID,
        GRANTED_AT,
        PENDING,
    }
}

fields! {
    /// Fields of an access request.
    mod request {
        MODEL,
        DATANET,
        VERSION,
        REQUESTER,
        FEE,
        STATUS,
        REQUESTED_AT,
    }
}

/// What other modules read of a datanet's contribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContributionInfo {
    /// The datanet it was submitted to.
    pub datanet_id: U256,
    /// Who submitted it.
    pub contributor: Address,
    /// The version that approved it; `None` unless approved.
    pub version: Option<u64>,
}

/// A datanet's owner and number of versions; `None` if it does not exist.
pub fn datanet_info(host: &mut dyn ModuleHost, id: U256) -> Result<Option<(Address, u64)>> {
    let mut s = Storage::of(host, addresses::DATANETS);
    let base = DATANETS.at(id);
    let owner: Address = s.get(base.field(datanet::OWNER))?;
    if owner.is_zero() {
        return Ok(None);
    }
    Ok(Some((owner, s.get(base.field(datanet::VERSIONS))?)))
}

/// A contribution; `None` if it does not exist.
pub fn contribution_info(host: &mut dyn ModuleHost, id: U256) -> Result<Option<ContributionInfo>> {
    let mut s = Storage::of(host, addresses::DATANETS);
    let base = CONTRIBUTIONS.at(id);
    let datanet_id: U256 = s.get(base.field(contribution::DATANET))?;
    if datanet_id.is_zero() {
        return Ok(None);
    }
    let status: u8 = s.get(base.field(contribution::STATUS))?;
    let version = if status == ContributionStatus::Approved as u8 {
        Some(s.get(base.field(contribution::VERSION))?)
    } else {
        None
    };
    Ok(Some(ContributionInfo {
        datanet_id,
        contributor: s.get(base.field(contribution::CONTRIBUTOR))?,
        version,
    }))
}

/// Whether model `model_id` may train on `version` of datanet `datanet_id`: granted up to it,
/// or the datanet is public and free.
pub fn has_access(
    host: &mut dyn ModuleHost,
    model_id: U256,
    datanet_id: U256,
    version: u64,
) -> Result<bool> {
    let mut s = Storage::of(host, addresses::DATANETS);
    let granted: u64 = s.get(GRANTS.at(model_id).at(datanet_id).field(grant::VERSION))?;
    if granted >= version {
        return Ok(true);
    }
    let base = DATANETS.at(datanet_id);
    let public: bool = s.get(base.field(datanet::PUBLIC))?;
    let price: U256 = s.get(base.field(datanet::PRICE_PER_ROW))?;
    Ok(public && price.is_zero())
}
