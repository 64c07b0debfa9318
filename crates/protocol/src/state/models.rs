//! The Models module's storage, and what other modules read of it.

use crate::Result;
use alloy_primitives::{Address, U256};
use openledger_chain::ModuleHost;
use openledger_primitives::addresses;

use crate::abi::IModels::{self, Status};
use crate::storage::{Slot, Storage, Word, fields, slots};

slots! {
    /// The genesis admin (zero if none): it may act as governance besides the Governor.
    ADMIN,
    MODEL_COUNT,
    /// Per id, a model ([`field`]).
    MODELS,
}

fields! {
    /// Fields of a model, from its base slot.
    mod field {
        CREATOR,
        STATUS,
        NAME,
        BASE_MODEL,
        DATANETS,
        METADATA,
        ADAPTER,
        VERSIONS,
        METRICS,
        OPERATOR,
        INPUT_RATE,
        OUTPUT_RATE,
        PROPOSED,
        /// The artifact version served (whose hash, versions and metrics the fields above copy).
        CURRENT,
        /// How many artifact versions are registered.
        ARTIFACT_COUNT,
        /// version => artifact, laid out as in [`super::artifact_field`].
        ARTIFACTS,
    }
}

fields! {
    /// Fields of an artifact version, from its base slot.
    mod artifact_field {
        ADAPTER,
        VERSIONS,
        METRICS,
        REGISTERED,
        DEPLOYED,
    }
}

impl Word for Status {
    fn to_word(self) -> U256 {
        U256::from(self as u8)
    }
    fn from_word(word: U256) -> Self {
        Status::try_from(word.saturating_to::<u8>()).unwrap_or(Status::None)
    }
}

/// A deployed model's published prices, in wei per 1,000 tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rates {
    /// Price of 1,000 prompt tokens.
    pub input_per_1k: U256,
    /// Price of 1,000 generated tokens.
    pub output_per_1k: U256,
}

/// What other modules read of a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// Its lifecycle status.
    pub status: Status,
    /// Who proposed it and earns the creator's share.
    pub creator: Address,
    /// Who serves it and settles its receipts.
    pub operator: Address,
    /// Its prices.
    pub rates: Rates,
    /// The artifact version served now; receipts of this one or an earlier one settle.
    pub current_artifact: u64,
    /// Artifact versions registered so far: a training is paid for once it grows.
    pub artifact_count: u64,
}

/// The genesis admin (zero if none).
pub fn admin(host: &mut dyn ModuleHost) -> Result<Address> {
    Storage::of(host, addresses::MODELS).get(ADMIN)
}

/// A model; `None` if it does not exist.
pub fn model_info(host: &mut dyn ModuleHost, id: U256) -> Result<Option<ModelInfo>> {
    let mut s = Storage::of(host, addresses::MODELS);
    let base = MODELS.at(id);
    let status: Status = s.get(base.field(field::STATUS))?;
    if status == Status::None {
        return Ok(None);
    }
    Ok(Some(ModelInfo {
        status,
        creator: s.get(base.field(field::CREATOR))?,
        operator: s.get(base.field(field::OPERATOR))?,
        rates: Rates {
            input_per_1k: s.get(base.field(field::INPUT_RATE))?,
            output_per_1k: s.get(base.field(field::OUTPUT_RATE))?,
        },
        current_artifact: s.get(base.field(field::CURRENT))?,
        artifact_count: s.get(base.field(field::ARTIFACT_COUNT))?,
    }))
}

/// `(datanet id, version trained on)` for each datanet artifact `version` of model `id`
/// learned from, if that version was ever deployed (served); `None` otherwise. For settlement.
pub fn served_on(
    host: &mut dyn ModuleHost,
    id: U256,
    version: u64,
) -> Result<Option<Vec<(U256, u64)>>> {
    let mut s = Storage::of(host, addresses::MODELS);
    let Some(artifact) = read_artifact(&mut s, id, version)?.filter(|a| a.deployedAt != 0) else {
        return Ok(None);
    };
    let datanets: Vec<U256> = s.items(MODELS.at(id).field(field::DATANETS), 0, u64::MAX)?;
    Ok(Some(
        datanets.into_iter().zip(artifact.datanetVersions).collect(),
    ))
}

/// The base slot of artifact `version` of the model at `base`.
pub(crate) fn artifact_slot(base: Slot, version: u64) -> Slot {
    base.field(field::ARTIFACTS).at(version)
}

/// Artifact `version` of model `id`; `None` if it was never registered.
pub(crate) fn read_artifact(
    s: &mut Storage<'_>,
    id: U256,
    version: u64,
) -> Result<Option<IModels::Artifact>> {
    let base = MODELS.at(id);
    let count: u64 = s.get(base.field(field::ARTIFACT_COUNT))?;
    if version == 0 || version > count {
        return Ok(None);
    }
    let artifact = artifact_slot(base, version);
    let f = |field| artifact.field(field);
    Ok(Some(IModels::Artifact {
        adapterHash: s.get(f(artifact_field::ADAPTER))?,
        datanetVersions: s.items(f(artifact_field::VERSIONS), 0, u64::MAX)?,
        metricsHash: s.get(f(artifact_field::METRICS))?,
        registeredAt: s.get(f(artifact_field::REGISTERED))?,
        deployedAt: s.get(f(artifact_field::DEPLOYED))?,
    }))
}
