use crate::Result;
use alloy_primitives::{Address, B256, U256};
use openledger_primitives::{ProtocolParams, addresses};
use proptest::prelude::*;

use super::MAX_NEW_CONTRIBUTIONS;
use crate::{
    abi::{
        IDatanets::{self, AccessStatus},
        IModels,
        ISettlement::{self, Role},
    },
    datanets::Datanets,
    settlement::Settlement,
    testing::{ADMIN, ALICE, BOB, CREATOR, Fixture, OWNER, account, assert_reverts, milli},
};

/// A datanet of `OWNER` with Alice's two contributions and Bob's one, of `rows` rows each:
/// version 1 holds Alice's first and Bob's, version 2 Alice's second; and an approved model of
/// `CREATOR` that names it.
struct Market {
    f: Fixture,
    datanet: U256,
    model: U256,
}

impl Market {
    fn new(public: bool) -> Self {
        Self::with(ProtocolParams::default(), public, [10, 10, 10])
    }

    fn with(params: ProtocolParams, public: bool, rows: [u64; 3]) -> Self {
        let mut f = Fixture::with_params(params);
        let datanet = f.datanet(OWNER, public);
        for who in [ALICE, BOB] {
            let allow = IDatanets::setContributorCall {
                datanetId: datanet,
                account: who,
                allowed: true,
            };
            f.datanets(OWNER, U256::ZERO, &allow).unwrap();
        }
        let mut contribute = |who, tag, rows| {
            let call = IDatanets::contributeCall {
                datanetId: datanet,
                contentHash: B256::repeat_byte(tag),
                rows,
                size: 100,
                licence: "CC-BY-4.0".into(),
            };
            f.datanets(who, U256::ZERO, &call).unwrap()
        };
        let a1 = contribute(ALICE, 0xa1, rows[0]);
        let b1 = contribute(BOB, 0xb1, rows[1]);
        let a2 = contribute(ALICE, 0xa2, rows[2]);
        f.approve(OWNER, datanet, vec![a1, b1]);
        f.approve(OWNER, datanet, vec![a2]);
        let model = f
            .models(
                CREATOR,
                &IModels::proposeModelCall {
                    name: "paid-lora".into(),
                    baseModel: "openledger/tiny-llama".into(),
                    datanetIds: vec![datanet],
                    metadataHash: B256::ZERO,
                },
            )
            .unwrap();
        f.models(ADMIN, &IModels::approveModelCall { modelId: model })
            .unwrap();
        Self { f, datanet, model }
    }

    fn price(&mut self, per_row: U256, approval: bool) {
        let call = IDatanets::setAccessTermsCall {
            datanetId: self.datanet,
            pricePerRow: per_row,
            approvalRequired: approval,
        };
        self.f.datanets(OWNER, U256::ZERO, &call).unwrap();
    }

    fn fee(&mut self, version: u64) -> U256 {
        let call = IDatanets::accessFeeCall {
            modelId: self.model,
            datanetId: self.datanet,
            version,
        };
        self.f.host.view(&Datanets, &call)
    }

    fn request(&mut self, who: Address, version: u64, paid: U256) -> Result<U256> {
        let call = IDatanets::requestAccessCall {
            modelId: self.model,
            datanetId: self.datanet,
            version,
        };
        self.f.datanets(who, paid, &call)
    }

    fn register(&mut self, version: u64) -> Result<IModels::registerArtifactReturn> {
        let call = IModels::registerArtifactCall {
            modelId: self.model,
            adapterHash: B256::from(U256::from(version)),
            datanetVersions: vec![version],
            metricsHash: B256::ZERO,
        };
        self.f.models(CREATOR, &call)
    }

    /// Registering an artifact trained on `version` reverts: the model has no access to it.
    fn refused_without_access(&mut self, version: u64) {
        let (model, datanet) = (self.model, self.datanet);
        assert_reverts(
            self.register(version),
            IModels::NoDataAccess {
                modelId: model,
                datanetId: datanet,
                version,
            },
        );
    }

    fn rewards(&mut self, who: Address) -> U256 {
        let call = ISettlement::rewardsCall { account: who };
        self.f.host.view(&Settlement::default(), &call)
    }

    fn request_status(&mut self, id: U256) -> AccessStatus {
        let call = IDatanets::getAccessRequestCall { requestId: id };
        self.f.host.view(&Datanets, &call).status
    }
}

#[test]
fn a_public_free_datanet_grants_every_model_access() {
    let mut m = Market::new(true);
    m.register(2).unwrap();
    assert_eq!(m.fee(2), U256::ZERO);
    assert!(m.f.host.events::<IDatanets::AccessRequested>().is_empty());
    // Priced, it needs a paid request: what is registered already stays.
    m.price(milli(1), false);
    m.refused_without_access(1);
}

#[test]
fn access_is_paid_per_row_and_split_between_contributors_owner_and_treasury_to_the_wei() {
    let mut m = Market::new(true);
    m.price(milli(3), false);
    assert_eq!(m.fee(1), milli(60));
    assert_reverts(
        m.request(CREATOR, 1, milli(59)),
        IDatanets::InsufficientFee {
            required: milli(60),
            paid: milli(59),
        },
    );
    let creator = m.f.host.balance_of(CREATOR);
    let treasury = m.f.host.balance_of(addresses::TREASURY);
    let held = m.f.host.balance_of(addresses::DATANETS);
    // Overpaid: the excess comes back.
    let id = m.request(CREATOR, 1, milli(100)).unwrap();
    assert_eq!(m.f.host.balance_of(CREATOR), creator - milli(60));
    assert_eq!(m.request_status(id), AccessStatus::Granted);
    // 5% to the treasury, 10% to the owner, 85% to Alice and Bob by their 10 rows each.
    assert_eq!(m.rewards(OWNER), milli(6));
    assert_eq!(m.rewards(ALICE), U256::from(25_500_000_000_000_000u64));
    assert_eq!(m.rewards(BOB), U256::from(25_500_000_000_000_000u64));
    assert_eq!(
        m.f.host.balance_of(addresses::TREASURY) - treasury,
        milli(3)
    );
    assert_eq!(m.f.host.balance_of(addresses::DATANETS), held);
    let granted = m.f.host.events::<IDatanets::AccessGranted>();
    assert_eq!(
        (granted[0].fromVersion, granted[0].version, granted[0].fee),
        (0, 1, milli(60))
    );
    let roles: Vec<Role> =
        m.f.host
            .events::<ISettlement::RewardAccrued>()
            .iter()
            .map(|r| r.role)
            .collect();
    assert_eq!(
        roles,
        [
            Role::AccessOwner,
            Role::AccessContributor,
            Role::AccessContributor
        ]
    );

    m.register(1).unwrap();
    m.refused_without_access(2);
    assert_reverts(
        m.request(CREATOR, 1, milli(60)),
        IDatanets::AccessAlreadyGranted {
            modelId: m.model,
            datanetId: m.datanet,
            grantedVersion: 1,
        },
    );
    // Version 2 adds Alice's 10 rows only: that is all that is paid for, and to her.
    assert_eq!(m.fee(2), milli(30));
    m.request(CREATOR, 2, milli(30)).unwrap();
    assert_eq!(m.rewards(ALICE), U256::from(51_000_000_000_000_000u64));
    assert_eq!(m.rewards(BOB), U256::from(25_500_000_000_000_000u64));
    m.register(2).unwrap();
    // Requests are numbered from 1, apart from the parameters' storage.
    assert_eq!(id, U256::from(1));
    let params = m.f.host.view(&Datanets, &IDatanets::accessParamsCall {});
    assert_eq!(
        params.maxPricePerRow,
        ProtocolParams::default().data_access.max_price_per_row
    );
    let grant = m.f.host.view(
        &Datanets,
        &IDatanets::accessOfCall {
            modelId: m.model,
            datanetId: m.datanet,
        },
    );
    assert_eq!((grant.version, grant.paid), (2, milli(90)));
}

#[test]
fn a_private_datanet_s_owner_approves_or_refuses_each_request() {
    let mut m = Market::new(false);
    m.price(milli(1), true);
    // Private and free of charge still takes a grant.
    let held = m.f.host.balance_of(addresses::DATANETS);
    let first = m.request(CREATOR, 1, milli(20)).unwrap();
    assert_eq!(m.request_status(first), AccessStatus::Pending);
    assert_eq!(m.f.host.balance_of(addresses::DATANETS), held + milli(20));
    assert_reverts(
        m.request(CREATOR, 2, milli(30)),
        IDatanets::AccessPending { requestId: first },
    );
    m.refused_without_access(1);
    let refuse = IDatanets::refuseAccessCall { requestId: first };
    assert_reverts(
        m.f.datanets(CREATOR, U256::ZERO, &refuse),
        IDatanets::NotOwner {
            datanetId: m.datanet,
            account: CREATOR,
        },
    );
    let creator = m.f.host.balance_of(CREATOR);
    m.f.datanets(OWNER, U256::ZERO, &refuse).unwrap();
    assert_eq!(m.f.host.balance_of(CREATOR), creator + milli(20));
    assert_eq!(m.f.host.balance_of(addresses::DATANETS), held);
    assert_eq!(m.request_status(first), AccessStatus::Refused);
    assert_reverts(
        m.f.datanets(OWNER, U256::ZERO, &refuse),
        IDatanets::RequestNotPending {
            requestId: first,
            status: AccessStatus::Refused,
        },
    );

    let second = m.request(CREATOR, 2, milli(30)).unwrap();
    let approve = IDatanets::approveAccessCall { requestId: second };
    m.f.datanets(OWNER, U256::ZERO, &approve).unwrap();
    assert_eq!(m.request_status(second), AccessStatus::Granted);
    m.register(2).unwrap();
    assert_eq!(m.rewards(ALICE), milli(17));
    assert_eq!(m.rewards(BOB), U256::from(8_500_000_000_000_000u64));
}

#[test]
fn bad_requests_are_refused_and_change_nothing() {
    let mut m = Market::new(true);
    m.price(milli(1), false);
    let (model, datanet) = (m.model, m.datanet);
    let stranger = account(9);
    assert_reverts(
        m.request(stranger, 1, milli(20)),
        IDatanets::NotModelCreator {
            modelId: model,
            account: stranger,
        },
    );
    assert_reverts(
        m.request(CREATOR, 3, milli(20)),
        IDatanets::UnknownVersion {
            datanetId: datanet,
            version: 3,
        },
    );
    let unknown = IDatanets::requestAccessCall {
        modelId: U256::from(99),
        datanetId: datanet,
        version: 1,
    };
    assert_reverts(
        m.f.datanets(CREATOR, milli(20), &unknown),
        IDatanets::UnknownModel {
            modelId: U256::from(99),
        },
    );
    let other = m.f.datanet(OWNER, true);
    let elsewhere = IDatanets::requestAccessCall {
        modelId: model,
        datanetId: other,
        version: 1,
    };
    assert_reverts(
        m.f.datanets(CREATOR, U256::ZERO, &elsewhere),
        IDatanets::DatanetNotUsed {
            modelId: model,
            datanetId: other,
        },
    );
    let terms = |price| IDatanets::setAccessTermsCall {
        datanetId: datanet,
        pricePerRow: price,
        approvalRequired: false,
    };
    assert_reverts(
        m.f.datanets(CREATOR, U256::ZERO, &terms(U256::ZERO)),
        IDatanets::NotOwner {
            datanetId: datanet,
            account: CREATOR,
        },
    );
    let max = ProtocolParams::default().data_access.max_price_per_row;
    assert_reverts(
        m.f.datanets(OWNER, U256::ZERO, &terms(max + U256::from(1))),
        IDatanets::PriceAboveMax {
            pricePerRow: max + U256::from(1),
            max,
        },
    );
    let params = |owner| IDatanets::setAccessParamsCall {
        params: IDatanets::AccessParams {
            protocolSharePpm: 500_000,
            ownerSharePpm: owner,
            maxPricePerRow: max,
        },
    };
    assert_reverts(
        m.f.datanets(OWNER, U256::ZERO, &params(0)),
        IDatanets::NotGovernance { account: OWNER },
    );
    assert_reverts(
        m.f.datanets(ADMIN, U256::ZERO, &params(500_001)),
        IDatanets::SharesAboveWhole {
            sum: U256::from(1_000_001),
        },
    );
    assert_reverts(
        m.f.datanets(
            CREATOR,
            U256::ZERO,
            &IDatanets::approveAccessCall {
                requestId: U256::from(7),
            },
        ),
        IDatanets::UnknownAccessRequest {
            requestId: U256::from(7),
        },
    );
    let direct = ISettlement::accrueAccessCall {
        modelId: model,
        accruals: vec![ISettlement::Accrual {
            account: CREATOR,
            role: Role::AccessOwner,
            amount: milli(1),
        }],
    };
    assert_reverts(
        m.f.settlement(CREATOR, milli(1), &direct),
        ISettlement::NotDatanets { caller: CREATOR },
    );
    assert!(m.f.host.events::<IDatanets::AccessRequested>().is_empty());
}

#[test]
fn one_request_covers_a_bounded_number_of_new_contributions() {
    let mut f = Fixture::with_params(ProtocolParams {
        contributor_daily_files: 10_000,
        datanet_daily_files: 10_000,
        ..ProtocolParams::default()
    });
    let datanet = f.datanet(OWNER, true);
    let count = MAX_NEW_CONTRIBUTIONS + 1;
    let ids: Vec<U256> = (0..count)
        .map(|i| {
            let call = IDatanets::contributeCall {
                datanetId: datanet,
                contentHash: B256::from(U256::from(i + 1)),
                rows: 1,
                size: 1,
                licence: String::new(),
            };
            f.datanets(account((i % 8) as u8 + 2), U256::ZERO, &call)
                .unwrap()
        })
        .collect();
    let (first, last) = ids.split_at(ids.len() - 1);
    f.approve(OWNER, datanet, first.to_vec());
    f.approve(OWNER, datanet, last.to_vec());
    let model = f
        .models(
            CREATOR,
            &IModels::proposeModelCall {
                name: "big".into(),
                baseModel: "tiny".into(),
                datanetIds: vec![datanet],
                metadataHash: B256::ZERO,
            },
        )
        .unwrap();
    let fee = |version| IDatanets::accessFeeCall {
        modelId: model,
        datanetId: datanet,
        version,
    };
    let refused = f.host.send(&Datanets, CREATOR, U256::ZERO, &fee(2));
    assert_reverts(
        refused,
        IDatanets::TooManyContributions {
            count: U256::from(count),
            max: U256::from(MAX_NEW_CONTRIBUTIONS),
        },
    );
    // Version by version, each request stays within the bound.
    for version in [1, 2] {
        let call = IDatanets::requestAccessCall {
            modelId: model,
            datanetId: datanet,
            version,
        };
        f.datanets(CREATOR, U256::ZERO, &call).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the price, the rows and the shares, an access fee leaves the payer and reaches
    /// the rewards and the treasury exactly, and nothing stays in the Datanets module.
    #[test]
    fn an_access_fee_is_conserved_to_the_wei(
        price in 0u64..1_000_000_000_000_000_000,
        rows in proptest::array::uniform3(1u64..1_000_000),
        protocol in 0u32..500_000,
        owner in 0u32..500_000,
    ) {
        let mut params = ProtocolParams::default();
        params.data_access.protocol_share_ppm = protocol;
        params.data_access.owner_share_ppm = owner;
        let mut m = Market::with(params, true, rows);
        m.price(U256::from(price), false);
        let fee = m.fee(2);
        prop_assert_eq!(fee, U256::from(price) * U256::from(rows.iter().sum::<u64>()));
        let before = [OWNER, ALICE, BOB].map(|a| m.rewards(a));
        let treasury = m.f.host.balance_of(addresses::TREASURY);
        let datanets = m.f.host.balance_of(addresses::DATANETS);
        m.f.host.fund(CREATOR, fee);
        let creator = m.f.host.balance_of(CREATOR);
        m.request(CREATOR, 2, fee).unwrap();
        let after = [OWNER, ALICE, BOB].map(|a| m.rewards(a));
        let accrued: U256 = after.iter().zip(before).map(|(a, b)| *a - b).sum();
        let to_treasury = m.f.host.balance_of(addresses::TREASURY) - treasury;
        prop_assert_eq!(accrued + to_treasury, fee);
        prop_assert_eq!(m.f.host.balance_of(CREATOR), creator - fee);
        prop_assert_eq!(m.f.host.balance_of(addresses::DATANETS), datanets);
        let granted = m.f.host.events::<IDatanets::AccessGranted>();
        let g = granted.last().unwrap();
        prop_assert_eq!(g.toContributors + g.toOwner + g.toTreasury, fee);
    }
}
