use alloy_primitives::{Address, B256, U256};
use openledger_primitives::{ProtocolParams, addresses};

use super::{Datanets, version_root};
use crate::{
    abi::IDatanets::{self, ContributionStatus, Quota},
    testing::{ALICE, BOB, CURATOR, Fixture, OWNER, account, assert_reverts, milli},
};

const MIB: u64 = 1 << 20;

fn datanet(f: &mut Fixture, id: U256) -> IDatanets::Datanet {
    f.host
        .view(&Datanets, &IDatanets::getDatanetCall { datanetId: id })
}

fn stats(f: &mut Fixture, who: Address) -> IDatanets::ContributorStats {
    f.host
        .view(&Datanets, &IDatanets::contributorStatsCall { account: who })
}

#[test]
fn a_version_commits_to_the_approved_contributions_in_order() {
    let mut f = Fixture::new();
    let id = f.datanet(OWNER, true);
    let a = f.contribute(ALICE, id, 0xa1, 1_000);
    let b = f.contribute(BOB, id, 0xb2, 2_000);
    let c = f.contribute(ALICE, id, 0xc3, 3_000);

    assert_eq!(f.approve(OWNER, id, vec![b, a]), 1);
    assert_eq!(f.approve(OWNER, id, vec![c]), 2);

    let v1 = f.host.view(
        &Datanets,
        &IDatanets::getVersionCall {
            datanetId: id,
            version: 1,
        },
    );
    let root1 = version_root(
        B256::ZERO,
        &[B256::repeat_byte(0xb2), B256::repeat_byte(0xa1)],
    );
    assert_eq!(v1.root, root1);
    assert_eq!(v1.contributionIds, vec![b, a]);
    assert_eq!((v1.approvedCount, v1.rows, v1.size), (2, 20, 3_000));
    let v2 = f.host.view(
        &Datanets,
        &IDatanets::getVersionCall {
            datanetId: id,
            version: 2,
        },
    );
    assert_eq!(v2.root, version_root(root1, &[B256::repeat_byte(0xc3)]));
    assert_eq!((v2.approvedCount, v2.rows, v2.size), (3, 30, 6_000));

    let approved = f.host.view(
        &Datanets,
        &IDatanets::approvedContributionsCall {
            datanetId: id,
            offset: 0,
            limit: 10,
        },
    );
    assert_eq!(approved, vec![b, a, c]);
    let d = datanet(&mut f, id);
    assert_eq!(
        (
            d.versionCount,
            d.contributionCount,
            d.approvedCount,
            d.approvedBytes
        ),
        (2, 3, 3, 6_000)
    );
    let contribution = f.host.view(
        &Datanets,
        &IDatanets::getContributionCall { contributionId: a },
    );
    assert_eq!(contribution.status, ContributionStatus::Approved);
    assert_eq!((contribution.version, contribution.contributor), (1, ALICE));
    let events = f.host.events::<IDatanets::VersionCreated>();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].contributionIds, vec![b, a]);
}

#[test]
fn governance_sets_the_fees_and_quotas() {
    let mut f = Fixture::new();
    let id = f.datanet(OWNER, true);
    let mut params = f.host.view(&Datanets, &IDatanets::paramsCall {});
    params.feeBase = milli(1);
    params.feePerMib = U256::ZERO;
    params.contributorDailyFiles = 1;
    let set = IDatanets::setParamsCall {
        params: params.clone(),
    };
    assert_reverts(
        f.datanets(OWNER, U256::ZERO, &set),
        IDatanets::NotGovernance { account: OWNER },
    );
    f.datanets(addresses::GOVERNOR, U256::ZERO, &set).unwrap();
    assert_eq!(f.host.view(&Datanets, &IDatanets::paramsCall {}), params);
    let a = f.contribute(ALICE, id, 1, 3 * MIB);
    let fee = f.host.view(
        &Datanets,
        &IDatanets::versionFeeCall {
            datanetId: id,
            contributionIds: vec![a],
        },
    );
    assert_eq!(fee, milli(1));
    let second = f.datanets(
        ALICE,
        U256::ZERO,
        &IDatanets::contributeCall {
            datanetId: id,
            contentHash: B256::repeat_byte(2),
            rows: 1,
            size: 1,
            licence: "CC-BY-4.0".into(),
        },
    );
    assert_reverts(
        second,
        IDatanets::QuotaExceeded {
            quota: IDatanets::Quota::ContributorFiles,
            wouldUse: U256::from(2),
            limit: U256::from(1),
        },
    );
    assert_eq!(f.host.events::<IDatanets::ParamsSet>()[0].params, params);
}

#[test]
fn publishing_and_versions_pay_a_size_based_fee_to_the_treasury() {
    let params = ProtocolParams::default();
    let mut f = Fixture::new();
    let id = f.datanet(OWNER, true);
    assert_eq!(
        f.host.balance_of(addresses::TREASURY),
        params.datanet_fee_base
    );
    let small = f.contribute(ALICE, id, 1, 1);
    let big = f.contribute(ALICE, id, 2, 2 * MIB + MIB / 2);
    let ids = vec![small, big];
    let fee = f.host.view(
        &Datanets,
        &IDatanets::versionFeeCall {
            datanetId: id,
            contributionIds: ids.clone(),
        },
    );
    // 2.5 MiB plus a byte starts three MiBs.
    assert_eq!(
        fee,
        params.datanet_fee_base + params.datanet_fee_per_mib * U256::from(3)
    );
    // Overpaying is refunded; underpaying is refused.
    let before = f.host.balance_of(OWNER);
    let approve = IDatanets::approveCall {
        datanetId: id,
        contributionIds: ids,
    };
    assert_reverts(
        f.datanets(OWNER, fee - U256::from(1), &approve),
        IDatanets::InsufficientFee {
            required: fee,
            paid: fee - U256::from(1),
        },
    );
    f.datanets(OWNER, fee + milli(5), &approve).unwrap();
    assert_eq!(f.host.balance_of(OWNER), before - fee);
    assert_eq!(
        f.host.balance_of(addresses::TREASURY),
        params.datanet_fee_base + fee
    );
    assert_eq!(f.host.balance_of(super::addresses::DATANETS), U256::ZERO);
}

#[test]
fn only_the_owner_manages_and_only_curators_curate() {
    let mut f = Fixture::new();
    let id = f.datanet(OWNER, true);
    let a = f.contribute(ALICE, id, 1, 100);
    let set_curator = IDatanets::setCuratorCall {
        datanetId: id,
        account: CURATOR,
        allowed: true,
    };
    assert_reverts(
        f.datanets(ALICE, U256::ZERO, &set_curator),
        IDatanets::NotOwner {
            datanetId: id,
            account: ALICE,
        },
    );
    let metadata = IDatanets::setMetadataCall {
        datanetId: id,
        name: "Renamed".into(),
        summary: String::new(),
        descriptionHash: B256::ZERO,
        tags: vec![],
        licence: "MIT".into(),
    };
    assert_reverts(
        f.datanets(CURATOR, U256::ZERO, &metadata),
        IDatanets::NotOwner {
            datanetId: id,
            account: CURATOR,
        },
    );
    let reject = IDatanets::rejectCall {
        datanetId: id,
        contributionIds: vec![a],
        reasonCode: 7,
    };
    assert_reverts(
        f.datanets(CURATOR, U256::ZERO, &reject),
        IDatanets::NotCurator {
            datanetId: id,
            account: CURATOR,
        },
    );
    f.datanets(OWNER, U256::ZERO, &set_curator).unwrap();
    f.datanets(CURATOR, U256::ZERO, &reject).unwrap();
    let contribution = f.host.view(
        &Datanets,
        &IDatanets::getContributionCall { contributionId: a },
    );
    assert_eq!(contribution.status, ContributionStatus::Rejected);
    assert_eq!(contribution.reasonCode, 7);
    f.datanets(OWNER, U256::ZERO, &metadata).unwrap();
    assert_eq!(datanet(&mut f, id).name, "Renamed");
    assert_eq!(datanet(&mut f, id).licence, "MIT");
}

#[test]
fn a_private_datanet_takes_contributions_only_from_its_allow_list() {
    let mut f = Fixture::new();
    let id = f.datanet(OWNER, false);
    let contribute = IDatanets::contributeCall {
        datanetId: id,
        contentHash: B256::repeat_byte(9),
        rows: 1,
        size: 10,
        licence: String::new(),
    };
    assert_reverts(
        f.datanets(ALICE, U256::ZERO, &contribute),
        IDatanets::NotAllowed {
            datanetId: id,
            account: ALICE,
        },
    );
    f.datanets(
        OWNER,
        U256::ZERO,
        &IDatanets::setContributorCall {
            datanetId: id,
            account: ALICE,
            allowed: true,
        },
    )
    .unwrap();
    f.datanets(ALICE, U256::ZERO, &contribute).unwrap();
    let mut own = contribute.clone();
    own.contentHash = B256::repeat_byte(0x0e);
    f.datanets(OWNER, U256::ZERO, &own).unwrap();
}

#[test]
fn drafts_take_no_contributions_and_publish_once() {
    let mut f = Fixture::new();
    let id = f
        .datanets(
            OWNER,
            U256::ZERO,
            &IDatanets::createDatanetCall {
                name: "draft".into(),
                summary: String::new(),
                descriptionHash: B256::ZERO,
                tags: vec![],
                dataType: "text".into(),
                licence: String::new(),
                isPublic: true,
            },
        )
        .unwrap();
    let contribute = IDatanets::contributeCall {
        datanetId: id,
        contentHash: B256::repeat_byte(9),
        rows: 1,
        size: 10,
        licence: String::new(),
    };
    assert_reverts(
        f.datanets(ALICE, U256::ZERO, &contribute),
        IDatanets::NotPublished { datanetId: id },
    );
    let publish = IDatanets::publishCall { datanetId: id };
    let fee = ProtocolParams::default().datanet_fee_base;
    assert_reverts(
        f.datanets(ALICE, fee, &publish),
        IDatanets::NotOwner {
            datanetId: id,
            account: ALICE,
        },
    );
    f.datanets(OWNER, fee, &publish).unwrap();
    assert_reverts(
        f.datanets(OWNER, fee, &publish),
        IDatanets::AlreadyPublished { datanetId: id },
    );
    f.datanets(ALICE, U256::ZERO, &contribute).unwrap();
}

#[test]
fn approval_rounds_take_distinct_pending_contributions_of_the_datanet() {
    let mut f = Fixture::new();
    let id = f.datanet(OWNER, true);
    let other = f.datanet(OWNER, true);
    let a = f.contribute(ALICE, id, 1, 10);
    let elsewhere = f.contribute(ALICE, other, 2, 10);
    let approve = |ids: Vec<U256>| IDatanets::approveCall {
        datanetId: id,
        contributionIds: ids,
    };
    let fee = milli(1_000);
    assert_reverts(
        f.datanets(OWNER, fee, &approve(vec![])),
        IDatanets::NoContributions {},
    );
    assert_reverts(
        f.datanets(OWNER, fee, &approve(vec![U256::from(99)])),
        IDatanets::UnknownContribution {
            contributionId: U256::from(99),
        },
    );
    assert_reverts(
        f.datanets(OWNER, fee, &approve(vec![elsewhere])),
        IDatanets::WrongDatanet {
            contributionId: elsewhere,
            datanetId: id,
        },
    );
    assert_reverts(
        f.datanets(OWNER, fee, &approve(vec![a, a])),
        IDatanets::NotPending { contributionId: a },
    );
    f.approve(OWNER, id, vec![a]);
    assert_reverts(
        f.datanets(OWNER, fee, &approve(vec![a])),
        IDatanets::NotPending { contributionId: a },
    );
    assert_reverts(
        f.datanets(
            OWNER,
            U256::ZERO,
            &IDatanets::rejectCall {
                datanetId: id,
                contributionIds: vec![a],
                reasonCode: 1,
            },
        ),
        IDatanets::NotPending { contributionId: a },
    );
}

#[test]
fn daily_quotas_bound_contributors_and_datanets() {
    let mut f = Fixture::with_params(ProtocolParams {
        contributor_daily_files: 2,
        datanet_daily_bytes: 1_000,
        ..ProtocolParams::default()
    });
    let id = f.datanet(OWNER, true);
    let mut tag = 0u8;
    let mut contribute = |size: u64| {
        tag += 1;
        IDatanets::contributeCall {
            datanetId: id,
            contentHash: B256::repeat_byte(tag),
            rows: 1,
            size,
            licence: String::new(),
        }
    };
    f.datanets(ALICE, U256::ZERO, &contribute(100)).unwrap();
    f.datanets(ALICE, U256::ZERO, &contribute(100)).unwrap();
    assert_reverts(
        f.datanets(ALICE, U256::ZERO, &contribute(100)),
        IDatanets::QuotaExceeded {
            quota: Quota::ContributorFiles,
            wouldUse: U256::from(3),
            limit: U256::from(2),
        },
    );
    assert_reverts(
        f.datanets(BOB, U256::ZERO, &contribute(801)),
        IDatanets::QuotaExceeded {
            quota: Quota::DatanetBytes,
            wouldUse: U256::from(1_001),
            limit: U256::from(1_000),
        },
    );
    f.datanets(BOB, U256::ZERO, &contribute(800)).unwrap();
    let left = |f: &mut Fixture, who: Address| {
        let left = f.host.view(
            &Datanets,
            &IDatanets::quotaLeftCall {
                datanetId: id,
                contributor: who,
            },
        );
        (left.remainingBytes, left.remainingFiles)
    };
    assert_eq!(left(&mut f, ALICE), (0, 0));
    assert_eq!(left(&mut f, Address::ZERO), (0, 997));
    // A new day resets both.
    f.host.timestamp += 86_400;
    assert_eq!(left(&mut f, BOB), (1_000, 2));
    f.datanets(ALICE, U256::ZERO, &contribute(900)).unwrap();
    assert_eq!(stats(&mut f, ALICE).submitted, 3);
}

#[test]
fn stats_track_acceptance_for_the_leaderboard() {
    let mut f = Fixture::new();
    let id = f.datanet(OWNER, true);
    let ids: Vec<U256> = (0..4).map(|i| f.contribute(ALICE, id, i + 1, 10)).collect();
    f.contribute(BOB, id, 9, 10);
    f.approve(OWNER, id, ids[..3].to_vec());
    f.datanets(
        OWNER,
        U256::ZERO,
        &IDatanets::rejectCall {
            datanetId: id,
            contributionIds: vec![ids[3]],
            reasonCode: 2,
        },
    )
    .unwrap();
    let alice = stats(&mut f, ALICE);
    assert_eq!(
        (
            alice.submitted,
            alice.approved,
            alice.rejected,
            alice.acceptancePpm
        ),
        (4, 3, 1, 750_000)
    );
    assert_eq!(stats(&mut f, BOB).acceptancePpm, 0);
    let everyone = f.host.view(
        &Datanets,
        &IDatanets::contributorsCall {
            offset: 0,
            limit: 10,
        },
    );
    assert_eq!(everyone, vec![ALICE, BOB]);
}

#[test]
fn bad_calls_revert_with_specific_errors_and_change_nothing() {
    let mut f = Fixture::new();
    let id = f.datanet(OWNER, true);
    let logs = f.host.logs().len();
    assert_reverts(
        f.host.call(&Datanets, ALICE, U256::ZERO, &[0xde, 0xad]),
        IDatanets::InvalidCalldata {},
    );
    let contribute = IDatanets::contributeCall {
        datanetId: id,
        contentHash: B256::repeat_byte(9),
        rows: 1,
        size: 10,
        licence: String::new(),
    };
    assert_reverts(
        f.datanets(ALICE, U256::from(1), &contribute),
        IDatanets::NotPayable {},
    );
    assert_reverts(
        f.datanets(
            ALICE,
            U256::ZERO,
            &IDatanets::contributeCall {
                rows: 0,
                ..contribute.clone()
            },
        ),
        IDatanets::EmptyContribution {},
    );
    assert_reverts(
        f.datanets(
            ALICE,
            U256::ZERO,
            &IDatanets::contributeCall {
                datanetId: U256::from(42),
                ..contribute
            },
        ),
        IDatanets::UnknownDatanet {
            datanetId: U256::from(42),
        },
    );
    let long = IDatanets::createDatanetCall {
        name: "n".repeat(129),
        summary: String::new(),
        descriptionHash: B256::ZERO,
        tags: vec![],
        dataType: "text".into(),
        licence: String::new(),
        isPublic: true,
    };
    assert_reverts(
        f.datanets(ALICE, U256::ZERO, &long),
        IDatanets::TooLong {
            field: "name".into(),
            max: U256::from(128),
        },
    );
    assert_reverts(
        f.datanets(
            ALICE,
            U256::ZERO,
            &IDatanets::createDatanetCall {
                name: "  ".into(),
                ..long
            },
        ),
        IDatanets::EmptyName {},
    );
    assert_eq!(f.host.logs().len(), logs);
    assert_eq!(stats(&mut f, ALICE).submitted, 0);
    assert_eq!(f.host.balance_of(account(3)), milli(1_000_000));
}

#[test]
fn a_file_s_contributions_are_found_by_its_content_hash_in_every_datanet() {
    let mut f = Fixture::new();
    let public = f.datanet(OWNER, true);
    let other = f.datanet(OWNER, true);
    let first = f.contribute(ALICE, public, 0xab, 100);
    let elsewhere = f.contribute(BOB, other, 0xab, 100);
    f.contribute(ALICE, public, 0xcd, 100);
    let uses = |f: &mut Fixture, tag: u8, offset: u64| {
        let call = IDatanets::contributionsWithContentCall {
            contentHash: B256::repeat_byte(tag),
            offset,
            limit: 10,
        };
        f.host.view(&Datanets, &call)
    };
    assert_eq!(uses(&mut f, 0xab, 0), vec![first, elsewhere]);
    assert_eq!(uses(&mut f, 0xab, 1), vec![elsewhere]);
    assert_eq!(uses(&mut f, 0xee, 0), Vec::<U256>::new());
}

#[test]
fn a_file_is_contributed_to_a_datanet_once_until_it_is_rejected() {
    let mut f = Fixture::new();
    let id = f.datanet(OWNER, true);
    let first = f.contribute(ALICE, id, 0xab, 100);
    let again = IDatanets::contributeCall {
        datanetId: id,
        contentHash: B256::repeat_byte(0xab),
        rows: 900,
        size: 100,
        licence: String::new(),
    };
    let duplicate = IDatanets::DuplicateContent {
        datanetId: id,
        contentHash: B256::repeat_byte(0xab),
    };
    assert_reverts(f.datanets(BOB, U256::ZERO, &again), duplicate.clone());
    // Another datanet may hold the same file.
    let other = f.datanet(OWNER, true);
    f.contribute(BOB, other, 0xab, 100);
    let reject = IDatanets::rejectCall {
        datanetId: id,
        contributionIds: vec![first],
        reasonCode: 1,
    };
    f.datanets(OWNER, U256::ZERO, &reject).unwrap();
    let second = f.datanets(ALICE, U256::ZERO, &again).unwrap();
    f.approve(OWNER, id, vec![second]);
    assert_reverts(f.datanets(BOB, U256::ZERO, &again), duplicate);
}
