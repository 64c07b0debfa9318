use alloy_primitives::{Address, B256, U256};
use openledger_primitives::addresses;

use super::Models;
use crate::{
    abi::{
        IModels::{self, Status},
        IStaking,
    },
    testing::{ADMIN, CREATOR, Fixture, OPERATOR, OWNER, assert_reverts, milli},
};

const STRANGER: Address = Address::repeat_byte(7);

fn model(f: &mut Fixture, id: U256) -> IModels::Model {
    f.host.view(&Models, &IModels::getModelCall { modelId: id })
}

/// A datanet with one version and a proposed model on it.
fn proposed(f: &mut Fixture) -> (U256, U256) {
    let datanet = f.datanet(OWNER, true);
    let c = f.contribute(OWNER, datanet, 1, 100);
    f.approve(OWNER, datanet, vec![c]);
    let id = f
        .models(
            CREATOR,
            &IModels::proposeModelCall {
                name: "m".into(),
                baseModel: "base".into(),
                datanetIds: vec![datanet],
                metadataHash: B256::repeat_byte(1),
            },
        )
        .unwrap();
    (datanet, id)
}

fn register(id: U256, versions: Vec<u64>) -> IModels::registerArtifactCall {
    IModels::registerArtifactCall {
        modelId: id,
        adapterHash: B256::repeat_byte(0xaa),
        datanetVersions: versions,
        metricsHash: B256::repeat_byte(0x33),
    }
}

fn deploy(id: U256) -> IModels::deployCall {
    IModels::deployCall {
        modelId: id,
        operator: OPERATOR,
        inputRatePer1k: milli(2),
        outputRatePer1k: milli(6),
    }
}

#[test]
fn a_model_goes_from_proposal_to_deployment() {
    let mut f = Fixture::new();
    let datanet = f.datanet(OWNER, true);
    let c = f.contribute(OWNER, datanet, 1, 100);
    let version = f.approve(OWNER, datanet, vec![c]);
    let id = f.deployed_model(CREATOR, OPERATOR, datanet, version, (milli(2), milli(6)));
    let m = model(&mut f, id);
    assert_eq!(m.status, Status::Deployed);
    assert_eq!((m.creator, m.operator), (CREATOR, OPERATOR));
    assert_eq!(
        (m.datanetIds, m.datanetVersions),
        (vec![datanet], vec![version])
    );
    assert_eq!((m.inputRatePer1k, m.outputRatePer1k), (milli(2), milli(6)));
    assert_eq!(m.adapterHash, B256::repeat_byte(0xaa));
    assert_eq!(f.host.events::<IModels::ModelProposed>().len(), 1);
    assert_eq!(f.host.events::<IModels::ModelApproved>()[0].approver, ADMIN);
    assert_eq!(f.host.events::<IModels::ArtifactRegistered>().len(), 1);
    assert_eq!(
        f.host.events::<IModels::ModelDeployed>()[0].operator,
        OPERATOR
    );
    f.models(CREATOR, &IModels::retireCall { modelId: id })
        .unwrap();
    assert_eq!(model(&mut f, id).status, Status::Retired);
    assert_reverts(
        f.models(CREATOR, &IModels::retireCall { modelId: id }),
        IModels::WrongStatus {
            modelId: id,
            status: Status::Retired,
            required: Status::Deployed,
        },
    );
}

#[test]
fn transitions_out_of_order_revert() {
    let mut f = Fixture::new();
    let (_, id) = proposed(&mut f);
    assert_reverts(
        f.models(CREATOR, &register(id, vec![1])),
        IModels::WrongStatus {
            modelId: id,
            status: Status::Proposed,
            required: Status::Approved,
        },
    );
    assert_reverts(
        f.models(CREATOR, &deploy(id)),
        IModels::WrongStatus {
            modelId: id,
            status: Status::Proposed,
            required: Status::Trained,
        },
    );
    f.models(ADMIN, &IModels::approveModelCall { modelId: id })
        .unwrap();
    assert_reverts(
        f.models(ADMIN, &IModels::approveModelCall { modelId: id }),
        IModels::WrongStatus {
            modelId: id,
            status: Status::Approved,
            required: Status::Proposed,
        },
    );
    f.models(CREATOR, &register(id, vec![1])).unwrap();
    assert_reverts(
        f.models(CREATOR, &register(id, vec![1])),
        IModels::ArtifactAlreadyRegistered {
            modelId: id,
            adapterHash: B256::repeat_byte(0xaa),
            version: 1,
        },
    );
    // Deploying needs the operator's stake at the minimum (10 OPEN by default).
    assert_reverts(
        f.models(CREATOR, &deploy(id)),
        IModels::InsufficientOperatorStake {
            modelId: id,
            stake: U256::ZERO,
            minimum: milli(10_000),
        },
    );
    f.staking(
        OPERATOR,
        milli(10_000),
        &IStaking::stakeOperatorCall { modelId: id },
    )
    .unwrap();
    f.models(CREATOR, &deploy(id)).unwrap();
    f.models(CREATOR, &IModels::retireCall { modelId: id })
        .unwrap();
    let retired = |required| IModels::WrongStatus {
        modelId: id,
        status: Status::Retired,
        required,
    };
    assert_reverts(f.models(CREATOR, &deploy(id)), retired(Status::Trained));
    assert_reverts(
        f.models(CREATOR, &retrained(id, 0xbb, vec![1])),
        retired(Status::Approved),
    );
}

fn retrained(id: U256, byte: u8, versions: Vec<u64>) -> IModels::registerArtifactCall {
    IModels::registerArtifactCall {
        adapterHash: B256::repeat_byte(byte),
        metricsHash: B256::repeat_byte(byte ^ 0xff),
        ..register(id, versions)
    }
}

fn artifact(f: &mut Fixture, id: U256, version: u64) -> IModels::Artifact {
    f.host.view(
        &Models,
        &IModels::getArtifactCall {
            modelId: id,
            version,
        },
    )
}

#[test]
fn a_retrained_model_serves_its_new_version_once_deployed_again() {
    let mut f = Fixture::new();
    let datanet = f.datanet(OWNER, true);
    let c = f.contribute(OWNER, datanet, 1, 100);
    let first = f.approve(OWNER, datanet, vec![c]);
    let id = f.deployed_model(CREATOR, OPERATOR, datanet, first, (milli(2), milli(6)));
    let c2 = f.contribute(OWNER, datanet, 2, 100);
    let second = f.approve(OWNER, datanet, vec![c2]);

    // Only its creator registers a new version, and only one that exists.
    assert_reverts(
        f.models(STRANGER, &retrained(id, 0xbb, vec![second])),
        IModels::NotCreator {
            modelId: id,
            account: STRANGER,
        },
    );
    assert_reverts(
        f.models(CREATOR, &retrained(id, 0xbb, vec![second + 1])),
        IModels::UnknownVersion {
            datanetId: datanet,
            version: second + 1,
        },
    );
    f.models(CREATOR, &retrained(id, 0xbb, vec![second]))
        .unwrap();
    let registered = f.host.events::<IModels::ArtifactRegistered>();
    assert_eq!(registered.last().unwrap().version, 2);

    // Registered, not served: the deployed model keeps its version 1.
    let m = model(&mut f, id);
    assert_eq!(m.status, Status::Deployed);
    assert_eq!((m.artifactVersion, m.artifactCount), (1, 2));
    assert_eq!(m.adapterHash, B256::repeat_byte(0xaa));
    assert_eq!(m.datanetVersions, vec![first]);
    let v2 = artifact(&mut f, id, 2);
    assert_eq!(v2.adapterHash, B256::repeat_byte(0xbb));
    assert_eq!(v2.datanetVersions, vec![second]);
    assert_eq!((v2.registeredAt, v2.deployedAt), (f.host.timestamp, 0));
    f.host.timestamp += 60;

    // Deploying again serves it, with the prices given.
    f.models(
        CREATOR,
        &IModels::deployCall {
            outputRatePer1k: milli(9),
            ..deploy(id)
        },
    )
    .unwrap();
    let m = model(&mut f, id);
    assert_eq!((m.status, m.artifactVersion), (Status::Deployed, 2));
    assert_eq!(
        (m.adapterHash, m.datanetVersions, m.outputRatePer1k),
        (B256::repeat_byte(0xbb), vec![second], milli(9))
    );
    assert_eq!(
        f.host
            .events::<IModels::ModelDeployed>()
            .last()
            .unwrap()
            .artifactVersion,
        2
    );
    assert_eq!(artifact(&mut f, id, 2).deployedAt, f.host.timestamp);
    // Version 1 is kept as it was.
    assert_eq!(artifact(&mut f, id, 1).adapterHash, B256::repeat_byte(0xaa));
    assert_ne!(artifact(&mut f, id, 1).deployedAt, 0);
    for version in [0, 3] {
        assert_reverts(
            f.host.send(
                &Models,
                CREATOR,
                U256::ZERO,
                &IModels::getArtifactCall {
                    modelId: id,
                    version,
                },
            ),
            IModels::UnknownArtifact {
                modelId: id,
                version,
            },
        );
    }
}

#[test]
fn before_deployment_the_newest_artifact_is_the_current_one() {
    let mut f = Fixture::new();
    let (_, id) = proposed(&mut f);
    f.models(ADMIN, &IModels::approveModelCall { modelId: id })
        .unwrap();
    assert_eq!(model(&mut f, id).artifactVersion, 0);
    f.models(CREATOR, &register(id, vec![1])).unwrap();
    f.models(CREATOR, &retrained(id, 0xcc, vec![1])).unwrap();
    let m = model(&mut f, id);
    assert_eq!(
        (m.status, m.artifactVersion, m.artifactCount),
        (Status::Trained, 2, 2)
    );
    assert_eq!(m.adapterHash, B256::repeat_byte(0xcc));
    assert_eq!(m.metricsHash, B256::repeat_byte(0xcc ^ 0xff));
}

#[test]
fn only_governance_approves_and_only_the_creator_trains_and_deploys() {
    let mut f = Fixture::new();
    let (_, id) = proposed(&mut f);
    assert_reverts(
        f.models(CREATOR, &IModels::approveModelCall { modelId: id }),
        IModels::NotGovernance { account: CREATOR },
    );
    f.models(
        addresses::GOVERNOR,
        &IModels::approveModelCall { modelId: id },
    )
    .unwrap();
    assert_reverts(
        f.models(STRANGER, &register(id, vec![1])),
        IModels::NotCreator {
            modelId: id,
            account: STRANGER,
        },
    );
    f.models(CREATOR, &register(id, vec![1])).unwrap();
    assert_reverts(
        f.models(STRANGER, &deploy(id)),
        IModels::NotCreator {
            modelId: id,
            account: STRANGER,
        },
    );
    assert_reverts(
        f.models(
            CREATOR,
            &IModels::deployCall {
                operator: Address::ZERO,
                ..deploy(id)
            },
        ),
        IModels::ZeroOperator {},
    );
    assert_reverts(
        f.models(STRANGER, &IModels::retireCall { modelId: id }),
        IModels::NotCreator {
            modelId: id,
            account: STRANGER,
        },
    );
    f.models(ADMIN, &IModels::retireCall { modelId: id })
        .unwrap();
}

#[test]
fn artifacts_name_existing_versions_of_every_datanet() {
    let mut f = Fixture::new();
    let (datanet, id) = proposed(&mut f);
    f.models(ADMIN, &IModels::approveModelCall { modelId: id })
        .unwrap();
    assert_reverts(
        f.models(CREATOR, &register(id, vec![1, 1])),
        IModels::VersionCountMismatch {
            datanets: U256::from(1),
            versions: U256::from(2),
        },
    );
    for version in [0, 2] {
        assert_reverts(
            f.models(CREATOR, &register(id, vec![version])),
            IModels::UnknownVersion {
                datanetId: datanet,
                version,
            },
        );
    }
    assert_eq!(model(&mut f, id).status, Status::Approved);
}

#[test]
fn proposals_need_a_name_and_existing_datanets() {
    let mut f = Fixture::new();
    let propose = |name: &str, datanets: Vec<U256>| IModels::proposeModelCall {
        name: name.into(),
        baseModel: "base".into(),
        datanetIds: datanets,
        metadataHash: B256::ZERO,
    };
    assert_reverts(
        f.models(CREATOR, &propose("m", vec![U256::from(3)])),
        IModels::UnknownDatanet {
            datanetId: U256::from(3),
        },
    );
    assert_reverts(
        f.models(CREATOR, &propose("m", vec![])),
        IModels::NoDatanets {},
    );
    let datanet = f.datanet(OWNER, true);
    assert_reverts(
        f.models(CREATOR, &propose("", vec![datanet])),
        IModels::EmptyName {},
    );
    assert_reverts(
        f.models(
            CREATOR,
            &IModels::getModelCall {
                modelId: U256::from(9),
            },
        ),
        IModels::UnknownModel {
            modelId: U256::from(9),
        },
    );
    assert_reverts(
        f.host.call(&Models, CREATOR, U256::from(1), &[]),
        IModels::InvalidCalldata {},
    );
    assert_reverts(
        f.host.send(
            &Models,
            CREATOR,
            U256::from(1),
            &propose("m", vec![datanet]),
        ),
        IModels::NotPayable {},
    );
    let count = f.host.view(&Models, &IModels::modelCountCall {});
    assert_eq!(count, U256::ZERO);
    assert_eq!(f.host.view(&Models, &IModels::adminCall {}), ADMIN);
}
