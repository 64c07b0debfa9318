//! The model registry: a model's lifecycle from proposal to deployment and retirement.
//!
//! See `abi/IModels.sol`. Ids start at 1. Approval belongs to governance: the Governor module's
//! address, or the genesis admin until governance is in place.
//!
//! A model's artifacts are versioned and kept for good: a retrained adapter is a new version,
//! served once its creator deploys again, while receipts of the versions served before still
//! settle against the datanet versions those were trained on.

use crate::Result;
use alloy_primitives::{Address, U256};
use alloy_sol_types::SolCall;
use openledger_chain::{ModuleCall, ModuleError};
use openledger_primitives::{Genesis, addresses};

use crate::{
    abi::IModels::{self, IModelsCalls, Status},
    call::{Answer, check_len, emit, emitted, native_module, revert},
    state::{
        datanets::{datanet_info, has_access},
        models::{ADMIN, MODEL_COUNT, MODELS, artifact_field, artifact_slot, field, read_artifact},
        staking::stake_check,
    },
    storage::{Slot, Storage, Word},
};

const MAX_NAME: usize = 128;
const MAX_DATANETS: usize = 32;

native_module! {
    /// The model registry module.
    Models at addresses::MODELS, named "models", answers IModels::IModelsCalls,
    payable [], genesis genesis, run run
}

/// The module's storage at genesis, from the genesis file.
fn genesis(genesis: &Genesis) -> Vec<(U256, U256)> {
    genesis
        .protocol
        .admin
        .map(|admin| vec![(ADMIN.0, admin.to_word())])
        .unwrap_or_default()
}

/// Runs a decoded call on the module's own storage.
fn run(mut s: Storage<'_>, call: &ModuleCall<'_>, decoded: IModelsCalls) -> Answer {
    let caller = call.caller;
    use IModelsCalls as C;
    match decoded {
        C::proposeModel(c) => propose(&mut s, caller, c),
        C::approveModel(c) => approve(&mut s, caller, c.modelId),
        C::registerArtifact(c) => register(&mut s, caller, c),
        C::deploy(c) => deploy(&mut s, caller, c),
        C::retire(c) => retire(&mut s, caller, c.modelId),
        C::markSlashed(c) => mark_slashed(&mut s, caller, c.modelId),
        C::modelCount(_) => {
            let count: U256 = s.get(MODEL_COUNT)?;
            Ok(IModels::modelCountCall::abi_encode_returns(&count).into())
        }
        C::getModel(c) => {
            let model = read_model(&mut s, c.modelId)?;
            Ok(IModels::getModelCall::abi_encode_returns(&model).into())
        }
        C::getArtifact(c) => {
            existing(&mut s, c.modelId)?;
            let artifact = read_artifact(&mut s, c.modelId, c.version)?.ok_or_else(|| {
                revert(IModels::UnknownArtifact {
                    modelId: c.modelId,
                    version: c.version,
                })
            })?;
            Ok(IModels::getArtifactCall::abi_encode_returns(&artifact).into())
        }
        C::admin(_) => {
            let admin: Address = s.get(ADMIN)?;
            Ok(IModels::adminCall::abi_encode_returns(&admin).into())
        }
    }
}

/// The ABI-encoded return data of a call.
type Out = Answer;

fn propose(s: &mut Storage<'_>, caller: Address, c: IModels::proposeModelCall) -> Out {
    if c.name.trim().is_empty() {
        return Err(revert(IModels::EmptyName {}));
    }
    check_len(&c.name, MAX_NAME, too_long, "name")?;
    check_len(&c.baseModel, MAX_NAME, too_long, "baseModel")?;
    if c.datanetIds.is_empty() {
        return Err(revert(IModels::NoDatanets {}));
    }
    if c.datanetIds.len() > MAX_DATANETS {
        return Err(revert(too_long("datanetIds".into(), MAX_DATANETS)));
    }
    for &id in &c.datanetIds {
        if datanet_info(s.host(), id)?.is_none() {
            return Err(revert(IModels::UnknownDatanet { datanetId: id }));
        }
    }
    let id = s.add(MODEL_COUNT, U256::from(1))?;
    let base = MODELS.at(id);
    s.set(base.field(field::CREATOR), caller)?;
    s.set(base.field(field::STATUS), Status::Proposed)?;
    s.set_string(base.field(field::NAME), &c.name)?;
    s.set_string(base.field(field::BASE_MODEL), &c.baseModel)?;
    s.set_items(base.field(field::DATANETS), c.datanetIds)?;
    s.set(base.field(field::METADATA), c.metadataHash)?;
    let now = s.host().timestamp();
    s.set(base.field(field::PROPOSED), now)?;
    emit(
        s.host(),
        &IModels::ModelProposed {
            modelId: id,
            creator: caller,
            name: c.name,
            baseModel: c.baseModel,
        },
    )?;
    Ok(IModels::proposeModelCall::abi_encode_returns(&id).into())
}

fn approve(s: &mut Storage<'_>, caller: Address, id: U256) -> Out {
    if !is_governance(s, caller)? {
        return Err(revert(IModels::NotGovernance { account: caller }));
    }
    let base = existing(s, id)?;
    require_status(s, base, id, Status::Proposed)?;
    s.set(base.field(field::STATUS), Status::Approved)?;
    emitted(
        s.host(),
        &IModels::ModelApproved {
            modelId: id,
            approver: caller,
        },
    )
}

fn register(s: &mut Storage<'_>, caller: Address, c: IModels::registerArtifactCall) -> Out {
    let base = by_creator(s, c.modelId, caller)?;
    let status: Status = s.get(base.field(field::STATUS))?;
    if !matches!(
        status,
        Status::Approved | Status::Trained | Status::Deployed
    ) {
        return Err(revert(IModels::WrongStatus {
            modelId: c.modelId,
            status,
            required: Status::Approved,
        }));
    }
    let datanets: Vec<U256> = s.items(base.field(field::DATANETS), 0, u64::MAX)?;
    if datanets.len() != c.datanetVersions.len() {
        return Err(revert(IModels::VersionCountMismatch {
            datanets: U256::from(datanets.len()),
            versions: U256::from(c.datanetVersions.len()),
        }));
    }
    for (&datanet, &version) in datanets.iter().zip(&c.datanetVersions) {
        let versions = datanet_info(s.host(), datanet)?.map_or(0, |(_, count)| count);
        if version == 0 || version > versions {
            return Err(revert(IModels::UnknownVersion {
                datanetId: datanet,
                version,
            }));
        }
        if !has_access(s.host(), c.modelId, datanet, version)? {
            return Err(revert(IModels::NoDataAccess {
                modelId: c.modelId,
                datanetId: datanet,
                version,
            }));
        }
    }
    let newest: u64 = s.get(base.field(field::ARTIFACT_COUNT))?;
    if let Some(last) = read_artifact(s, c.modelId, newest)?
        && last.adapterHash == c.adapterHash
    {
        return Err(revert(IModels::ArtifactAlreadyRegistered {
            modelId: c.modelId,
            adapterHash: c.adapterHash,
            version: newest,
        }));
    }
    let version = newest + 1;
    let artifact = IModels::Artifact {
        adapterHash: c.adapterHash,
        datanetVersions: c.datanetVersions.clone(),
        metricsHash: c.metricsHash,
        registeredAt: s.host().timestamp(),
        deployedAt: 0,
    };
    let slot = artifact_slot(base, version);
    s.set(base.field(field::ARTIFACT_COUNT), version)?;
    s.set(slot.field(artifact_field::ADAPTER), artifact.adapterHash)?;
    s.set_items(
        slot.field(artifact_field::VERSIONS),
        artifact.datanetVersions.clone(),
    )?;
    s.set(slot.field(artifact_field::METRICS), artifact.metricsHash)?;
    s.set(
        slot.field(artifact_field::REGISTERED),
        artifact.registeredAt,
    )?;
    // A deployed model goes on serving its current version until it is deployed again.
    if status != Status::Deployed {
        s.set(base.field(field::STATUS), Status::Trained)?;
        make_current(s, base, version, artifact)?;
    }
    emitted(
        s.host(),
        &IModels::ArtifactRegistered {
            modelId: c.modelId,
            adapterHash: c.adapterHash,
            datanetVersions: c.datanetVersions,
            metricsHash: c.metricsHash,
            version,
        },
    )
}

/// The base slot of artifact `version` of the model at `base`.
/// Makes `artifact`, version `version`, the one the model at `base` serves, copying it into
/// the model.
fn make_current(
    s: &mut Storage<'_>,
    base: Slot,
    version: u64,
    artifact: IModels::Artifact,
) -> Result<()> {
    s.set(base.field(field::CURRENT), version)?;
    s.set(base.field(field::ADAPTER), artifact.adapterHash)?;
    s.set_items(base.field(field::VERSIONS), artifact.datanetVersions)?;
    s.set(base.field(field::METRICS), artifact.metricsHash)
}

fn deploy(s: &mut Storage<'_>, caller: Address, c: IModels::deployCall) -> Out {
    let base = by_creator(s, c.modelId, caller)?;
    let status: Status = s.get(base.field(field::STATUS))?;
    if !matches!(status, Status::Trained | Status::Deployed) {
        return Err(revert(IModels::WrongStatus {
            modelId: c.modelId,
            status,
            required: Status::Trained,
        }));
    }
    if c.operator.is_zero() {
        return Err(revert(IModels::ZeroOperator {}));
    }
    let check = stake_check(s.host(), c.modelId, c.operator)?;
    if check.stake < check.minimum {
        return Err(revert(IModels::InsufficientOperatorStake {
            modelId: c.modelId,
            stake: check.stake,
            minimum: check.minimum,
        }));
    }
    let newest: u64 = s.get(base.field(field::ARTIFACT_COUNT))?;
    let artifact = read_artifact(s, c.modelId, newest)?.ok_or_else(|| {
        ModuleError::Fatal(format!("model {} has no artifact {newest}", c.modelId))
    })?;
    if artifact.deployedAt == 0 {
        let now = s.host().timestamp();
        let deployed = artifact_slot(base, newest).field(artifact_field::DEPLOYED);
        s.set(deployed, now.max(1))?;
    }
    make_current(s, base, newest, artifact)?;
    s.set(base.field(field::STATUS), Status::Deployed)?;
    s.set(base.field(field::OPERATOR), c.operator)?;
    s.set(base.field(field::INPUT_RATE), c.inputRatePer1k)?;
    s.set(base.field(field::OUTPUT_RATE), c.outputRatePer1k)?;
    emitted(
        s.host(),
        &IModels::ModelDeployed {
            modelId: c.modelId,
            operator: c.operator,
            inputRatePer1k: c.inputRatePer1k,
            outputRatePer1k: c.outputRatePer1k,
            artifactVersion: newest,
        },
    )
}

fn retire(s: &mut Storage<'_>, caller: Address, id: U256) -> Out {
    let base = existing(s, id)?;
    let creator: Address = s.get(base.field(field::CREATOR))?;
    if caller != creator && !is_governance(s, caller)? {
        return Err(revert(IModels::NotCreator {
            modelId: id,
            account: caller,
        }));
    }
    let status: Status = s.get(base.field(field::STATUS))?;
    if status == Status::Retired {
        return Err(revert(IModels::WrongStatus {
            modelId: id,
            status,
            required: Status::Deployed,
        }));
    }
    s.set(base.field(field::STATUS), Status::Retired)?;
    emitted(
        s.host(),
        &IModels::ModelRetired {
            modelId: id,
            by: caller,
        },
    )
}

fn mark_slashed(s: &mut Storage<'_>, caller: Address, id: U256) -> Out {
    if caller != addresses::STAKING {
        return Err(revert(IModels::NotStaking { account: caller }));
    }
    let base = existing(s, id)?;
    require_status(s, base, id, Status::Deployed)?;
    s.set(base.field(field::STATUS), Status::Slashed)?;
    emitted(s.host(), &IModels::ModelSlashed { modelId: id })
}

fn is_governance(s: &mut Storage<'_>, account: Address) -> Result<bool> {
    crate::state::is_governance(s.host(), account)
}

fn existing(s: &mut Storage<'_>, id: U256) -> Result<Slot> {
    let base = MODELS.at(id);
    if s.get::<Status>(base.field(field::STATUS))? == Status::None {
        return Err(revert(IModels::UnknownModel { modelId: id }));
    }
    Ok(base)
}

fn by_creator(s: &mut Storage<'_>, id: U256, caller: Address) -> Result<Slot> {
    let base = existing(s, id)?;
    if s.get::<Address>(base.field(field::CREATOR))? != caller {
        return Err(revert(IModels::NotCreator {
            modelId: id,
            account: caller,
        }));
    }
    Ok(base)
}

/// Reverts unless the model at `base` is in the `required` status.
fn require_status(s: &mut Storage<'_>, base: Slot, id: U256, required: Status) -> Result<()> {
    let status: Status = s.get(base.field(field::STATUS))?;
    if status != required {
        return Err(revert(IModels::WrongStatus {
            modelId: id,
            status,
            required,
        }));
    }
    Ok(())
}

fn too_long(field: String, max: usize) -> IModels::TooLong {
    IModels::TooLong {
        field,
        max: U256::from(max),
    }
}

fn read_model(s: &mut Storage<'_>, id: U256) -> Result<IModels::Model> {
    let base = existing(s, id)?;
    let f = |field| base.field(field);
    Ok(IModels::Model {
        id,
        creator: s.get(f(field::CREATOR))?,
        status: s.get(f(field::STATUS))?,
        name: s.get_string(f(field::NAME))?,
        baseModel: s.get_string(f(field::BASE_MODEL))?,
        datanetIds: s.items(f(field::DATANETS), 0, u64::MAX)?,
        metadataHash: s.get(f(field::METADATA))?,
        adapterHash: s.get(f(field::ADAPTER))?,
        datanetVersions: s.items(f(field::VERSIONS), 0, u64::MAX)?,
        metricsHash: s.get(f(field::METRICS))?,
        operator: s.get(f(field::OPERATOR))?,
        inputRatePer1k: s.get(f(field::INPUT_RATE))?,
        outputRatePer1k: s.get(f(field::OUTPUT_RATE))?,
        proposedAt: s.get(f(field::PROPOSED))?,
        artifactVersion: s.get(f(field::CURRENT))?,
        artifactCount: s.get(f(field::ARTIFACT_COUNT))?,
    })
}

#[cfg(test)]
mod tests;
