//! `openledger datanet price` and `openledger datanet access ...`: what training on a datanet
//! costs, and models' access to it.

use std::fmt;

use alloy_primitives::{B256, U256};
use anyhow::Context;
use clap::Subcommand;
use openledger_flywheel::jobs::DatanetVersion;
use openledger_primitives::addresses::{DATANETS, MODELS};
use openledger_protocol::abi::IDatanets::{self, AccessStatus};
use openledger_protocol::abi::IModels;
use serde::Serialize;

use super::report::{Id, Time, Wei};
use super::{Client, Common, events};

/// `openledger datanet access ...`.
#[derive(Debug, Subcommand)]
pub enum AccessCommand {
    /// Buy a model access to a datanet version (its creator only), paying the fee the chain
    /// quotes: granted at once, or held for the owner of a private datanet to approve.
    Request {
        /// The model.
        model: U256,
        /// The datanet version, as ID@VERSION (access covers every earlier version too).
        datanet: DatanetVersion,
    },
    /// Grant a pending request, paying its fee out (the datanet's owner).
    Approve {
        /// The request id.
        request: U256,
    },
    /// Refuse a pending request, refunding its fee (the datanet's owner).
    Refuse {
        /// The request id.
        request: U256,
    },
    /// Show a model's access to a datanet, and the datanet's terms.
    Show {
        /// The model.
        model: U256,
        /// The datanet.
        datanet: U256,
    },
}

/// `openledger datanet price`: sets what a model pays per row to train on the datanet.
pub async fn set_price(
    common: &Common,
    client: &Client,
    (datanet, price, approval): (U256, U256, bool),
) -> anyhow::Result<()> {
    let call = IDatanets::setAccessTermsCall {
        datanetId: datanet,
        pricePerRow: price,
        approvalRequired: approval,
    };
    let receipt = client.send(DATANETS, &call, U256::ZERO).await?;
    let public = client
        .view(DATANETS, &IDatanets::getDatanetCall { datanetId: datanet })
        .await?
        .isPublic;
    common.report(&Priced {
        datanet_id: Id(datanet),
        price_per_row: Wei(price),
        approval_required: approval,
        public,
        tx: receipt.transaction_hash,
    })
}

/// A datanet's access terms set.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Priced {
    datanet_id: Id,
    price_per_row: Wei,
    approval_required: bool,
    #[serde(skip)]
    public: bool,
    tx: B256,
}

impl fmt::Display for Priced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = match (self.approval_required, self.public) {
            (true, false) => "each request approved by the owner",
            (true, true) => "granted at once (a public datanet does not wait for approval)",
            _ => "granted at once",
        };
        let (datanet, price) = (self.datanet_id, self.price_per_row);
        write!(
            f,
            "Datanet {datanet}: training access costs {price} a row, {how}"
        )
    }
}

/// Runs `openledger datanet access ...`.
pub async fn run(common: &Common, client: &Client, command: AccessCommand) -> anyhow::Result<()> {
    match command {
        AccessCommand::Request { model, datanet } => {
            common.report(&request(client, model, datanet).await?)
        }
        AccessCommand::Approve { request } => {
            let call = IDatanets::approveAccessCall { requestId: request };
            let receipt = client.send(DATANETS, &call, U256::ZERO).await?;
            let granted = events::<IDatanets::AccessGranted>(&receipt)
                .pop()
                .context("no AccessGranted event")?;
            common.report(&Granted {
                request_id: Id(request),
                status: "granted",
                fee: Wei(granted.fee),
                to_contributors: Wei(granted.toContributors),
                to_owner: Wei(granted.toOwner),
                to_treasury: Wei(granted.toTreasury),
                tx: receipt.transaction_hash,
                granted,
            })
        }
        AccessCommand::Refuse { request } => {
            let call = IDatanets::refuseAccessCall { requestId: request };
            let receipt = client.send(DATANETS, &call, U256::ZERO).await?;
            let refused = events::<IDatanets::AccessRefused>(&receipt)
                .pop()
                .context("no AccessRefused event")?;
            common.report(&Refused {
                request_id: Id(request),
                status: "refused",
                refunded: Wei(refused.refunded),
                tx: receipt.transaction_hash,
            })
        }
        AccessCommand::Show { model, datanet } => {
            common.report(&show(client, model, datanet).await?)
        }
    }
}

/// A request for access: granted at once, or pending the owner's decision.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Requested {
    request_id: Id,
    model_id: Id,
    datanet: String,
    fee: Wei,
    status: &'static str,
    tx: B256,
}

async fn request(client: &Client, model: U256, at: DatanetVersion) -> anyhow::Result<Requested> {
    let quote = IDatanets::accessFeeCall {
        modelId: model,
        datanetId: at.datanet,
        version: at.version,
    };
    let fee = client.view(DATANETS, &quote).await?;
    let call = IDatanets::requestAccessCall {
        modelId: model,
        datanetId: at.datanet,
        version: at.version,
    };
    let receipt = client.send(DATANETS, &call, fee).await?;
    let requested = events::<IDatanets::AccessRequested>(&receipt)
        .pop()
        .context("no AccessRequested event")?;
    let granted = !events::<IDatanets::AccessGranted>(&receipt).is_empty();
    Ok(Requested {
        request_id: Id(requested.requestId),
        model_id: Id(model),
        datanet: at.to_string(),
        fee: Wei(fee),
        status: if granted { "granted" } else { "pending" },
        tx: receipt.transaction_hash,
    })
}

impl fmt::Display for Requested {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (id, model, at, fee) = (self.request_id, self.model_id, &self.datanet, self.fee);
        if self.status == "granted" {
            write!(
                f,
                "Request {id} granted: model {model} may train on datanet {at}; paid {fee}"
            )
        } else {
            write!(
                f,
                "Request {id} for model {model} on datanet {at} waits for the datanet's owner \
                 ({fee} held until it decides)"
            )
        }
    }
}

/// A request granted by the datanet's owner, and where its fee went.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Granted {
    request_id: Id,
    status: &'static str,
    fee: Wei,
    to_contributors: Wei,
    to_owner: Wei,
    to_treasury: Wei,
    tx: B256,
    #[serde(skip)]
    granted: IDatanets::AccessGranted,
}

impl fmt::Display for Granted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = &self.granted;
        write!(
            f,
            "Granted request {}: model {} may train on datanet {}@{}; {} to the contributors, {} \
             to the owner, {} to the treasury",
            self.request_id,
            g.modelId,
            g.datanetId,
            g.version,
            self.to_contributors,
            self.to_owner,
            self.to_treasury
        )
    }
}

/// A request refused, its fee refunded.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Refused {
    request_id: Id,
    status: &'static str,
    refunded: Wei,
    tx: B256,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Refused request {}: {} refunded",
            self.request_id, self.refunded
        )
    }
}

/// A model's access to a datanet, and the datanet's terms.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Access {
    model_id: Id,
    datanet_id: Id,
    granted_version: u64,
    paid: Wei,
    granted_at: Time,
    price_per_row: Wei,
    approval_required: bool,
    #[serde(skip)]
    public: bool,
    pending_request: Option<Pending>,
}

/// A request waiting for the owner.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Pending {
    request_id: Id,
    version: u64,
    fee: Wei,
    status: &'static str,
}

async fn show(client: &Client, model: U256, datanet: U256) -> anyhow::Result<Access> {
    // Named first so that an unknown model is an error, not an empty grant.
    client
        .view(MODELS, &IModels::getModelCall { modelId: model })
        .await?;
    let public = client
        .view(DATANETS, &IDatanets::getDatanetCall { datanetId: datanet })
        .await?
        .isPublic;
    let terms = client
        .view(DATANETS, &IDatanets::accessTermsCall { datanetId: datanet })
        .await?;
    let grant = IDatanets::accessOfCall {
        modelId: model,
        datanetId: datanet,
    };
    let grant = client.view(DATANETS, &grant).await?;
    let pending_request = if grant.pendingRequest.is_zero() {
        None
    } else {
        let call = IDatanets::getAccessRequestCall {
            requestId: grant.pendingRequest,
        };
        let p = client.view(DATANETS, &call).await?;
        Some(Pending {
            request_id: Id(p.id),
            version: p.version,
            fee: Wei(p.fee),
            status: status(p.status),
        })
    };
    Ok(Access {
        model_id: Id(model),
        datanet_id: Id(datanet),
        granted_version: grant.version,
        paid: Wei(grant.paid),
        granted_at: Time(grant.grantedAt),
        price_per_row: Wei(terms.pricePerRow),
        approval_required: terms.approvalRequired,
        public,
        pending_request,
    })
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Model {} on datanet {}", self.model_id, self.datanet_id)?;
        writeln!(f, "  granted up to version  {}", self.granted_version)?;
        writeln!(f, "  paid                   {}", self.paid)?;
        writeln!(f, "  granted at             {}", self.granted_at)?;
        let approval = match (self.approval_required, self.public) {
            (true, false) => " (the owner approves each request)",
            (true, true) => " (public: granted at once, though approval is set)",
            _ => "",
        };
        write!(
            f,
            "  price per row          {}{approval}",
            self.price_per_row
        )?;
        if let Some(p) = &self.pending_request {
            let (id, version, fee) = (p.request_id, p.version, p.fee);
            write!(
                f,
                "\n  pending request        {id} for version {version} ({fee} held)"
            )?;
        }
        Ok(())
    }
}

fn status(s: AccessStatus) -> &'static str {
    match s {
        AccessStatus::Pending => "pending",
        AccessStatus::Granted => "granted",
        AccessStatus::Refused => "refused",
        _ => "none",
    }
}
