//! An in-memory [`ModuleHost`] for the modules' unit tests. It behaves like the chain's journal
//! where the tests look: a failed call leaves no trace, OPEN sent with a call reaches the
//! module's account first, views cannot write. The chain-level tests run the same modules on
//! the real executor.

use std::collections::HashMap;

use alloy_primitives::{Address, B256, Bytes, Log, LogData, U256};
use alloy_sol_types::{SolCall, SolError, SolEvent};
use openledger_chain::{ModuleCall, ModuleError, ModuleHost, Modules, NativeModule};
use openledger_primitives::Genesis;

/// The state every module call in a test sees.
#[derive(Debug, Clone, Default)]
struct World {
    storage: HashMap<(Address, U256), U256>,
    balances: HashMap<Address, U256>,
    logs: Vec<Log>,
}

/// An in-memory host; see the module docs.
#[derive(Debug, Clone)]
pub struct MemoryHost {
    address: Address,
    world: World,
    modules: Modules,
    is_static: bool,
    /// The block timestamp calls see.
    pub timestamp: u64,
    /// The chain id calls see.
    pub chain_id: u64,
}

impl MemoryHost {
    /// An empty world; calls run as the module at `address` until [`MemoryHost::call`] says
    /// otherwise.
    pub fn new(address: Address) -> Self {
        Self {
            address,
            world: World::default(),
            modules: crate::modules(),
            is_static: false,
            timestamp: 1_700_000_000,
            chain_id: 1337,
        }
    }

    /// A world with every module's genesis storage.
    pub fn with_genesis(genesis: &Genesis) -> Self {
        let mut host = Self::new(Address::ZERO);
        for module in host.modules.clone().iter() {
            for (slot, value) in module.genesis_storage(genesis) {
                host.world.storage.insert((module.address(), slot), value);
            }
        }
        host
    }

    /// Gives `account` `amount` wei.
    pub fn fund(&mut self, account: Address, amount: U256) {
        *self.world.balances.entry(account).or_default() += amount;
    }

    /// An account's balance.
    pub fn balance_of(&self, account: Address) -> U256 {
        self.world
            .balances
            .get(&account)
            .copied()
            .unwrap_or_default()
    }

    /// Every event emitted so far, oldest first.
    pub fn logs(&self) -> &[Log] {
        &self.world.logs
    }

    /// The events of type `E` emitted so far.
    pub fn events<E: SolEvent>(&self) -> Vec<E> {
        self.world
            .logs
            .iter()
            .filter_map(|log| E::decode_log_data(&log.data).ok())
            .collect()
    }

    /// Runs a transaction-like call from `caller` sending `value`; on failure every change is
    /// undone, as the chain's journal does.
    pub fn call(
        &mut self,
        module: &dyn NativeModule,
        caller: Address,
        value: U256,
        input: &[u8],
    ) -> Result<Bytes, ModuleError> {
        let before = self.world.clone();
        let available = self.balance_of(caller);
        if available < value {
            return Err(ModuleError::Fatal(format!(
                "{caller} cannot send {value}: it has {available}"
            )));
        }
        self.world.balances.insert(caller, available - value);
        self.fund(module.address(), value);
        self.address = module.address();
        self.is_static = false;
        let call = ModuleCall {
            caller,
            value,
            input,
            is_static: false,
        };
        let result = module.call(call, self);
        if result.is_err() {
            self.world = before;
        }
        result
    }

    /// Runs a typed call and decodes its return value; a revert is returned as its raw data.
    pub fn send<C: SolCall>(
        &mut self,
        module: &dyn NativeModule,
        caller: Address,
        value: U256,
        call: &C,
    ) -> Result<C::Return, ModuleError> {
        let output = self.call(module, caller, value, &call.abi_encode())?;
        Ok(C::abi_decode_returns(&output).expect("module returns what its ABI says"))
    }

    /// Runs a typed call as a static view.
    pub fn view<C: SolCall>(&mut self, module: &dyn NativeModule, call: &C) -> C::Return {
        self.address = module.address();
        self.is_static = true;
        let input = call.abi_encode();
        let call = ModuleCall {
            caller: Address::ZERO,
            value: U256::ZERO,
            input: &input,
            is_static: true,
        };
        let output = module.call(call, self).expect("views succeed");
        C::abi_decode_returns(&output).expect("module returns what its ABI says")
    }
}

/// Asserts that `result` is a revert with exactly `error`.
#[track_caller]
pub fn assert_reverts<T, E: SolError + PartialEq + std::fmt::Debug>(
    result: Result<T, ModuleError>,
    error: E,
) {
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

impl ModuleHost for MemoryHost {
    fn address(&self) -> Address {
        self.address
    }

    fn block_number(&self) -> u64 {
        1
    }

    fn timestamp(&self) -> u64 {
        self.timestamp
    }

    fn chain_id(&self) -> u64 {
        self.chain_id
    }

    fn sload(&mut self, slot: U256) -> Result<U256, ModuleError> {
        self.sload_from(self.address, slot)
    }

    fn sload_from(&mut self, address: Address, slot: U256) -> Result<U256, ModuleError> {
        Ok(self
            .world
            .storage
            .get(&(address, slot))
            .copied()
            .unwrap_or_default())
    }

    fn sstore(&mut self, slot: U256, value: U256) -> Result<(), ModuleError> {
        if self.is_static {
            return Err(ModuleError::Revert(Bytes::new()));
        }
        self.world.storage.insert((self.address, slot), value);
        Ok(())
    }

    fn balance(&mut self, address: Address) -> Result<U256, ModuleError> {
        Ok(self.balance_of(address))
    }

    fn transfer(&mut self, to: Address, amount: U256) -> Result<(), ModuleError> {
        let own = self.balance_of(self.address);
        if own < amount {
            return Err(ModuleError::Fatal(format!(
                "module {} cannot send {amount}: it has {own}",
                self.address
            )));
        }
        self.world.balances.insert(self.address, own - amount);
        self.fund(to, amount);
        Ok(())
    }

    fn log(&mut self, topics: Vec<B256>, data: Bytes) -> Result<(), ModuleError> {
        if self.is_static {
            return Err(ModuleError::Revert(Bytes::new()));
        }
        self.world.logs.push(Log {
            address: self.address,
            data: LogData::new(topics, data).expect("at most 4 topics"),
        });
        Ok(())
    }

    fn charge(&mut self, _gas: u64) -> Result<(), ModuleError> {
        Ok(())
    }

    fn call_module(
        &mut self,
        to: Address,
        input: &[u8],
        value: U256,
    ) -> Result<Bytes, ModuleError> {
        let Some(module) = self.modules.get(&to).cloned() else {
            return Err(ModuleError::Revert(Bytes::new()));
        };
        let before = self.world.clone();
        let caller = self.address;
        if self.balance_of(caller) < value {
            return Err(ModuleError::Revert(Bytes::new()));
        }
        let result = self.transfer(to, value).and_then(|()| {
            self.address = to;
            let call = ModuleCall {
                caller,
                value,
                input,
                is_static: self.is_static,
            };
            module.call(call, self)
        });
        self.address = caller;
        if result.is_err() {
            self.world = before;
        }
        result
    }
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

    /// Sends a typed call to the Datanets module.
    pub fn datanets<C: SolCall>(
        &mut self,
        caller: Address,
        value: U256,
        call: &C,
    ) -> Result<C::Return, ModuleError> {
        self.host
            .send(&crate::datanets::Datanets, caller, value, call)
    }

    /// Sends a typed call to the Models module.
    pub fn models<C: SolCall>(
        &mut self,
        caller: Address,
        call: &C,
    ) -> Result<C::Return, ModuleError> {
        self.host
            .send(&crate::models::Models, caller, U256::ZERO, call)
    }

    /// Sends a typed call to the Settlement module.
    pub fn settlement<C: SolCall>(
        &mut self,
        caller: Address,
        value: U256,
        call: &C,
    ) -> Result<C::Return, ModuleError> {
        self.host.send(&self.settlement, caller, value, call)
    }

    /// Sends a typed call to the GOPEN module.
    pub fn gopen<C: SolCall>(
        &mut self,
        caller: Address,
        value: U256,
        call: &C,
    ) -> Result<C::Return, ModuleError> {
        self.host.send(&crate::gopen::Gopen, caller, value, call)
    }

    /// Sends a typed call to the Staking module.
    pub fn staking<C: SolCall>(
        &mut self,
        caller: Address,
        value: U256,
        call: &C,
    ) -> Result<C::Return, ModuleError> {
        self.host
            .send(&crate::staking::Staking, caller, value, call)
    }

    /// Sends a typed call to the Feedback module.
    pub fn feedback<C: SolCall>(
        &mut self,
        caller: Address,
        value: U256,
        call: &C,
    ) -> Result<C::Return, ModuleError> {
        self.host
            .send(&crate::feedback::Feedback, caller, value, call)
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
