//! The modules' unit tests run on the chain's own module host ([`JournalHost`]) over a revm
//! journal on an in-memory database: the same reads, writes, transfers, logs, gas metering,
//! nested calls and refusals as in a block, without the EVM around them. A failed call leaves
//! no trace, OPEN sent with a call reaches the module's account first, views cannot write. The
//! chain-level tests run the same modules on the real executor.

use crate::Result;
use alloy_primitives::{Address, B256, Bytes, Log, U256};
use alloy_sol_types::{SolCall, SolError, SolEvent};
use openledger_chain::{HostEnv, JournalHost, ModuleError, Modules, NativeModule};
use openledger_primitives::Genesis;
use revm::context::Journal;
use revm::context_interface::JournalTr;
use revm::database::InMemoryDB;

/// Gas every test call may use: plenty, so that metering counts but never stops a test.
const GAS_LIMIT: u64 = 1 << 40;

/// A world of accounts and module state that calls run in; see the module docs.
pub struct MemoryHost {
    journal: Journal<InMemoryDB>,
    modules: Modules,
    /// The block timestamp calls see.
    pub timestamp: u64,
    /// The chain id calls see.
    pub chain_id: u64,
}

impl MemoryHost {
    /// An empty world with every module at its address.
    pub fn new() -> Self {
        let mut journal = Journal::new(InMemoryDB::default());
        let modules = crate::modules();
        for module in modules.iter() {
            journal.load_account(module.address()).expect("in-memory");
        }
        Self {
            journal,
            modules,
            timestamp: 1_700_000_000,
            chain_id: 1337,
        }
    }

    /// A world with every module's genesis storage.
    pub fn with_genesis(genesis: &Genesis) -> Self {
        let mut host = Self::new();
        for module in host.modules.clone().iter() {
            for (slot, value) in module.genesis_storage(genesis) {
                host.journal
                    .sstore(module.address(), slot, value)
                    .expect("in-memory");
            }
        }
        host
    }

    /// Gives `account` `amount` wei.
    pub fn fund(&mut self, account: Address, amount: U256) {
        self.journal.load_account(account).expect("in-memory");
        self.journal
            .balance_incr(account, amount)
            .expect("in-memory");
    }

    /// An account's balance.
    pub fn balance_of(&self, account: Address) -> U256 {
        self.journal
            .evm_state()
            .get(&account)
            .map(|a| a.info.balance)
            .unwrap_or_default()
    }

    /// Every event emitted so far, oldest first.
    pub fn logs(&self) -> &[Log] {
        self.journal.logs()
    }

    /// The events of type `E` emitted so far.
    pub fn events<E: SolEvent>(&self) -> Vec<E> {
        self.logs()
            .iter()
            .filter_map(|log| E::decode_log_data(&log.data).ok())
            .collect()
    }

    /// Runs `f` on the host a call by `address` sees (its own storage is `address`'s).
    pub fn run_as<R>(
        &mut self,
        address: Address,
        is_static: bool,
        f: impl FnOnce(&mut JournalHost<'_, Journal<InMemoryDB>>) -> R,
    ) -> R {
        let env = HostEnv {
            block_number: 1,
            timestamp: self.timestamp,
            chain_id: self.chain_id,
            is_static,
            gas_limit: GAS_LIMIT,
        };
        self.journal.load_account(address).expect("in-memory");
        f(&mut JournalHost::new(
            &mut self.journal,
            &self.modules,
            address,
            env,
        ))
    }

    /// Runs a transaction-like call from `caller` sending `value`; on failure every change is
    /// undone, as the chain's journal does.
    pub fn call(
        &mut self,
        module: &dyn NativeModule,
        caller: Address,
        value: U256,
        input: &[u8],
    ) -> Result<Bytes> {
        self.run_as(caller, false, |host| host.call(module, input, value))
    }

    /// Runs a typed call and decodes its return value; a revert is returned as its raw data.
    pub fn send<C: SolCall>(
        &mut self,
        module: &dyn NativeModule,
        caller: Address,
        value: U256,
        call: &C,
    ) -> Result<C::Return> {
        let output = self.call(module, caller, value, &call.abi_encode())?;
        Ok(C::abi_decode_returns(&output).expect("module returns what its ABI says"))
    }

    /// Runs a typed call as a static view.
    pub fn view<C: SolCall>(&mut self, module: &dyn NativeModule, call: &C) -> C::Return {
        let input = call.abi_encode();
        let output = self
            .run_as(Address::ZERO, true, |host| {
                host.call(module, &input, U256::ZERO)
            })
            .expect("views succeed");
        C::abi_decode_returns(&output).expect("module returns what its ABI says")
    }
}

/// Asserts that `result` is a revert with exactly `error`.
#[track_caller]
pub fn assert_reverts<T, E: SolError + PartialEq + std::fmt::Debug>(result: Result<T>, error: E) {
    match result {
        Err(ModuleError::Revert(data)) => {
            let decoded = E::abi_decode(&data)
                .unwrap_or_else(|_| panic!("reverted with other data: {data}; wanted {error:?}"));
            assert_eq!(decoded, error);
        }
        Err(other) => panic!("expected revert {error:?}, got {other:?}"),
        Ok(_) => panic!("expected revert {error:?}, but the call succeeded"),
    }
}

/// Typed calls to the modules that take a value, as `fixture.datanets(caller, value, &call)`.
macro_rules! module_calls {
    ($($name:ident => $module:expr, $what:literal;)*) => {
        impl Fixture {
            $(
                #[doc = concat!("Sends a typed call to the ", $what, " module.")]
                pub fn $name<C: SolCall>(
                    &mut self,
                    caller: Address,
                    value: U256,
                    call: &C,
                ) -> Result<C::Return> {
                    self.host.send(&$module, caller, value, call)
                }
            )*
        }
    };
}

module_calls! {
    datanets => crate::datanets::Datanets, "Datanets";
    gopen => crate::gopen::Gopen, "GOPEN";
    staking => crate::staking::Staking, "Staking";
    feedback => crate::feedback::Feedback, "Feedback";
}

/// Thousandths of an OPEN.
pub fn milli(n: u64) -> U256 {
    openledger_primitives::OPEN / U256::from(1_000) * U256::from(n)
}

/// Test account `n` (never zero).
pub fn account(n: u8) -> Address {
    Address::repeat_byte(n)
}

/// The genesis admin of [`Fixture`].
pub const ADMIN: Address = Address::repeat_byte(0xad);

/// The accounts the module tests name by role: [`account`]s 1 to 6, which [`Fixture::new`]
/// funds.
pub const OWNER: Address = Address::repeat_byte(1);
/// A curator of `OWNER`'s datanet.
pub const CURATOR: Address = Address::repeat_byte(2);
/// A contributor.
pub const ALICE: Address = Address::repeat_byte(3);
/// Another contributor.
pub const BOB: Address = Address::repeat_byte(4);
/// A model's creator.
pub const CREATOR: Address = Address::repeat_byte(5);
/// A model's operator.
pub const OPERATOR: Address = Address::repeat_byte(6);

/// A world with every module at genesis and funded accounts, and short-hands for the steps
/// most tests need before the one they test.
pub struct Fixture {
    /// The host the modules run on.
    pub host: MemoryHost,
    /// The Settlement module calls go to (with or without an attribution oracle).
    pub settlement: crate::settlement::Settlement,
}

impl Fixture {
    /// Default parameters, [`ADMIN`] as admin, accounts 1 to 9 with 1,000 OPEN each.
    pub fn new() -> Self {
        Self::with_params(openledger_primitives::ProtocolParams::default())
    }

    /// As [`Fixture::new`] with the given parameters (the admin is always [`ADMIN`]).
    pub fn with_params(params: openledger_primitives::ProtocolParams) -> Self {
        let mut genesis = Genesis::dev(1337, &[]);
        genesis.protocol = openledger_primitives::ProtocolParams {
            admin: Some(ADMIN),
            ..params
        };
        let mut host = MemoryHost::with_genesis(&genesis);
        for n in 1..=9 {
            host.fund(account(n), milli(1_000_000));
        }
        host.fund(ADMIN, milli(1_000_000));
        Self {
            host,
            settlement: crate::settlement::Settlement::default(),
        }
    }

    /// Sends a typed call to the Models module.
    pub fn models<C: SolCall>(&mut self, caller: Address, call: &C) -> Result<C::Return> {
        self.host
            .send(&crate::models::Models, caller, U256::ZERO, call)
    }

    /// Reads a Settlement view: the module with this fixture's oracle, as the chain runs it.
    pub fn settlement_view<C: SolCall>(&mut self, call: &C) -> C::Return {
        self.host.view(&self.settlement, call)
    }

    /// Sends a typed call to the Settlement module.
    pub fn settlement<C: SolCall>(
        &mut self,
        caller: Address,
        value: U256,
        call: &C,
    ) -> Result<C::Return> {
        self.host.send(&self.settlement, caller, value, call)
    }

    /// A model's lifecycle status.
    pub fn model_status(&mut self, model: U256) -> crate::abi::IModels::Status {
        self.host
            .view(
                &crate::models::Models,
                &crate::abi::IModels::getModelCall { modelId: model },
            )
            .status
    }

    /// A published datanet owned by `owner`.
    pub fn datanet(&mut self, owner: Address, public: bool) -> U256 {
        use crate::abi::IDatanets;
        let id = self
            .datanets(
                owner,
                U256::ZERO,
                &IDatanets::createDatanetCall {
                    name: "Clinical notes".into(),
                    summary: "De-identified clinical notes".into(),
                    descriptionHash: B256::repeat_byte(0xde),
                    tags: vec!["medical".into(), "text".into()],
                    dataType: "text".into(),
                    licence: "CC-BY-4.0".into(),
                    isPublic: public,
                },
            )
            .unwrap();
        let fee = self.host.view(
            &crate::datanets::Datanets,
            &IDatanets::publishFeeCall { datanetId: id },
        );
        self.datanets(owner, fee, &IDatanets::publishCall { datanetId: id })
            .unwrap();
        id
    }

    /// A pending contribution of `size` bytes whose content hash is `tag` repeated.
    pub fn contribute(&mut self, who: Address, datanet: U256, tag: u8, size: u64) -> U256 {
        self.datanets(
            who,
            U256::ZERO,
            &crate::abi::IDatanets::contributeCall {
                datanetId: datanet,
                contentHash: B256::repeat_byte(tag),
                rows: 10,
                size,
                licence: "CC-BY-4.0".into(),
            },
        )
        .unwrap()
    }

    /// Approves `ids` as a new version, paying its fee; returns the version.
    pub fn approve(&mut self, curator: Address, datanet: U256, ids: Vec<U256>) -> u64 {
        use crate::abi::IDatanets;
        let fee = self.host.view(
            &crate::datanets::Datanets,
            &IDatanets::versionFeeCall {
                datanetId: datanet,
                contributionIds: ids.clone(),
            },
        );
        self.datanets(
            curator,
            fee,
            &IDatanets::approveCall {
                datanetId: datanet,
                contributionIds: ids,
            },
        )
        .unwrap()
    }

    /// A model by `creator` trained on `datanet` at `version` and deployed with `operator`
    /// and the given rates per 1,000 tokens.
    pub fn deployed_model(
        &mut self,
        creator: Address,
        operator: Address,
        datanet: U256,
        version: u64,
        rates: (U256, U256),
    ) -> U256 {
        use crate::abi::{IModels, IStaking};
        let id = self
            .models(
                creator,
                &IModels::proposeModelCall {
                    name: "clinical-lora".into(),
                    baseModel: "openledger/tiny-llama".into(),
                    datanetIds: vec![datanet],
                    metadataHash: B256::repeat_byte(0x11),
                },
            )
            .unwrap();
        self.models(ADMIN, &IModels::approveModelCall { modelId: id })
            .unwrap();
        self.models(
            creator,
            &IModels::registerArtifactCall {
                modelId: id,
                adapterHash: B256::repeat_byte(0xaa),
                datanetVersions: vec![version],
                metricsHash: B256::repeat_byte(0x33),
            },
        )
        .unwrap();
        let minimum = self.host.view(
            &crate::staking::Staking,
            &IStaking::minimumStakeCall { modelId: id },
        );
        // Room above the minimum, which grows with the fees the model settles.
        let stake = minimum + milli(10_000);
        self.staking(
            operator,
            stake,
            &IStaking::stakeOperatorCall { modelId: id },
        )
        .unwrap();
        self.models(
            creator,
            &IModels::deployCall {
                modelId: id,
                operator,
                inputRatePer1k: rates.0,
                outputRatePer1k: rates.1,
            },
        )
        .unwrap();
        id
    }
}
