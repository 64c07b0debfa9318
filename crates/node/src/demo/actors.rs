//! The demo's cast: one dev account per role, each signing its own transactions.

use alloy_primitives::Address;
use alloy_signer_local::PrivateKeySigner;

use crate::accounts::dev_accounts;
use crate::cli::Client;

/// An actor: a name for the report, its account, and a client signing as it.
pub struct Actor {
    pub name: String,
    pub address: Address,
    pub signer: PrivateKeySigner,
    pub client: Client,
}

/// Everyone in the demo. Dev accounts 0 to 7 play the fixed roles, the contributors follow.
pub struct Cast {
    /// Owns and curates the datanet; holds the GOPEN that votes the model through.
    pub owner: Actor,
    /// Proposes, trains and deploys the model.
    pub creator: Actor,
    /// Serves the model with its stake and settles the receipts.
    pub operator: Actor,
    /// Backs the model with delegated stake.
    pub staker: Actor,
    /// Pays for inferences.
    pub user: Actor,
    /// Rate settled inferences.
    pub validators: [Actor; 2],
    /// Checks settled attributions and challenges a wrong one.
    pub challenger: Actor,
    /// Upload the data.
    pub contributors: Vec<Actor>,
}

const ROLES: [&str; 8] = [
    "datanet owner",
    "model creator",
    "operator",
    "staker",
    "user",
    "validator 1",
    "validator 2",
    "challenger",
];

impl Cast {
    /// The operator's dev account (the roles take accounts 0 to 7 in the order of `ROLES`):
    /// the node's trainer, paid for training compute.
    pub const OPERATOR_ACCOUNT: usize = 2;

    /// The keys of a cast with `contributors` contributors, for the genesis allocation and the
    /// node's dev accounts.
    pub fn keys(contributors: usize) -> anyhow::Result<Vec<PrivateKeySigner>> {
        dev_accounts(Self::size(contributors)?)?
            .into_iter()
            .map(|a| Ok(PrivateKeySigner::from_bytes(&a.key)?))
            .collect()
    }

    fn size(contributors: usize) -> anyhow::Result<u32> {
        Ok(u32::try_from(ROLES.len() + contributors)?)
    }

    /// The cast with `contributors` contributors, as clients of the node at `rpc_url`.
    pub fn connect(contributors: usize, rpc_url: &str) -> anyhow::Result<Self> {
        let mut actors = dev_accounts(Self::size(contributors)?)?
            .into_iter()
            .enumerate()
            .map(|(i, account)| {
                let signer = PrivateKeySigner::from_bytes(&account.key)?;
                let name = ROLES.get(i).map_or_else(
                    || format!("contributor {}", i - ROLES.len() + 1),
                    |r| r.to_string(),
                );
                Ok(Actor {
                    name,
                    address: account.address,
                    client: Client::new(rpc_url, Some(signer.clone()))?,
                    signer,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?
            .into_iter();
        let mut next = || actors.next().expect("one account per role");
        Ok(Self {
            owner: next(),
            creator: next(),
            operator: next(),
            staker: next(),
            user: next(),
            validators: [next(), next()],
            challenger: next(),
            contributors: actors.collect(),
        })
    }

    /// Every actor, roles first.
    pub fn all(&self) -> impl Iterator<Item = &Actor> {
        [
            &self.owner,
            &self.creator,
            &self.operator,
            &self.staker,
            &self.user,
        ]
        .into_iter()
        .chain(&self.validators)
        .chain([&self.challenger])
        .chain(&self.contributors)
    }

    /// The API key that stands for `actor` on the demo's node: its dev account, as numbered
    /// in the order of [`Cast::all`].
    pub fn api_key(&self, actor: &Actor) -> String {
        let n = self
            .all()
            .position(|a| a.address == actor.address)
            .expect("an actor of the cast");
        format!("dev-{n}")
    }

    /// The name of the actor at `address`, or the address.
    pub fn name_of(&self, address: Address) -> String {
        self.all()
            .find(|a| a.address == address)
            .map_or_else(|| address.to_string(), |a| a.name.clone())
    }
}
