//! `openledger datanet price` and `openledger datanet access ...`: what training on a datanet
//! costs, and models' access to it.

use alloy_primitives::U256;
use anyhow::Context;
use clap::Subcommand;
use openledger_flywheel::jobs::DatanetVersion;
use openledger_primitives::addresses::{DATANETS, MODELS};
use openledger_protocol::abi::IDatanets::{self, AccessStatus};
use openledger_protocol::abi::IModels;
use serde_json::json;

use super::{Client, Common, date, events, open};

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
    let how = match (approval, public) {
        (true, false) => "each request approved by the owner",
        (true, true) => "granted at once (a public datanet does not wait for approval)",
        _ => "granted at once",
    };
    common.print(
        json!({"datanetId": datanet.to_string(), "pricePerRow": price.to_string(),
               "approvalRequired": approval, "tx": receipt.transaction_hash}),
        format!(
            "Datanet {datanet}: training access costs {} a row, {how}",
            open(price)
        ),
    );
    Ok(())
}

/// Runs `openledger datanet access ...`.
pub async fn run(common: &Common, client: &Client, command: AccessCommand) -> anyhow::Result<()> {
    match command {
        AccessCommand::Request { model, datanet: at } => {
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
            let state = if granted { "granted" } else { "pending" };
            let text = if granted {
                format!(
                    "Request {} granted: model {model} may train on datanet {at}; paid {}",
                    requested.requestId,
                    open(fee)
                )
            } else {
                format!(
                    "Request {} for model {model} on datanet {at} waits for the datanet's owner \
                     ({} held until it decides)",
                    requested.requestId,
                    open(fee)
                )
            };
            common.print(
                json!({"requestId": requested.requestId.to_string(), "modelId": model.to_string(),
                       "datanet": at.to_string(), "fee": fee.to_string(), "status": state,
                       "tx": receipt.transaction_hash}),
                text,
            );
        }
        AccessCommand::Approve { request } => {
            let call = IDatanets::approveAccessCall { requestId: request };
            let receipt = client.send(DATANETS, &call, U256::ZERO).await?;
            let granted = events::<IDatanets::AccessGranted>(&receipt)
                .pop()
                .context("no AccessGranted event")?;
            common.print(
                json!({"requestId": request.to_string(), "status": "granted",
                       "fee": granted.fee.to_string(),
                       "toContributors": granted.toContributors.to_string(),
                       "toOwner": granted.toOwner.to_string(),
                       "toTreasury": granted.toTreasury.to_string(),
                       "tx": receipt.transaction_hash}),
                format!(
                    "Granted request {request}: model {} may train on datanet {}@{}; {} to the \
                     contributors, {} to the owner, {} to the treasury",
                    granted.modelId,
                    granted.datanetId,
                    granted.version,
                    open(granted.toContributors),
                    open(granted.toOwner),
                    open(granted.toTreasury)
                ),
            );
        }
        AccessCommand::Refuse { request } => {
            let call = IDatanets::refuseAccessCall { requestId: request };
            let receipt = client.send(DATANETS, &call, U256::ZERO).await?;
            let refused = events::<IDatanets::AccessRefused>(&receipt)
                .pop()
                .context("no AccessRefused event")?;
            common.print(
                json!({"requestId": request.to_string(), "status": "refused",
                       "refunded": refused.refunded.to_string(), "tx": receipt.transaction_hash}),
                format!(
                    "Refused request {request}: {} refunded",
                    open(refused.refunded)
                ),
            );
        }
        AccessCommand::Show { model, datanet } => show(common, client, model, datanet).await?,
    }
    Ok(())
}

async fn show(common: &Common, client: &Client, model: U256, datanet: U256) -> anyhow::Result<()> {
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
    let grant = client
        .view(
            DATANETS,
            &IDatanets::accessOfCall {
                modelId: model,
                datanetId: datanet,
            },
        )
        .await?;
    let pending = if grant.pendingRequest.is_zero() {
        None
    } else {
        let call = IDatanets::getAccessRequestCall {
            requestId: grant.pendingRequest,
        };
        Some(client.view(DATANETS, &call).await?)
    };
    let mut text = format!(
        "Model {model} on datanet {datanet}\n  granted up to version  {}\n  paid                   {}\n  granted at             {}\n  price per row          {}{}",
        grant.version,
        open(grant.paid),
        date(grant.grantedAt),
        open(terms.pricePerRow),
        match (terms.approvalRequired, public) {
            (true, false) => " (the owner approves each request)",
            (true, true) => " (public: granted at once, though approval is set)",
            _ => "",
        }
    );
    if let Some(p) = &pending {
        text.push_str(&format!(
            "\n  pending request        {} for version {} ({} held)",
            p.id,
            p.version,
            open(p.fee)
        ));
    }
    common.print(
        json!({"modelId": model.to_string(), "datanetId": datanet.to_string(),
               "grantedVersion": grant.version, "paid": grant.paid.to_string(),
               "grantedAt": grant.grantedAt, "pricePerRow": terms.pricePerRow.to_string(),
               "approvalRequired": terms.approvalRequired,
               "pendingRequest": pending.as_ref().map(|p| json!({
                   "requestId": p.id.to_string(), "version": p.version, "fee": p.fee.to_string(),
                   "status": status(p.status)}))}),
        text,
    );
    Ok(())
}

fn status(s: AccessStatus) -> &'static str {
    match s {
        AccessStatus::Pending => "pending",
        AccessStatus::Granted => "granted",
        AccessStatus::Refused => "refused",
        _ => "none",
    }
}
