//! Who may read a file's rows. Only uploads, and contributions of files their contributor
//! uploaded to this node, count (the chain records any content hash a contributor names). A file
//! one of them puts in a public datanet is public. Otherwise its rows go only to the owner or a
//! curator of a datanet holding it, the account that contributed or uploaded it, the creator of
//! a model with training access to a version that holds it (`?model=ID`, see
//! `IDatanets.requestAccess`), and the node's own services (their token); a file contributed
//! only by accounts that never uploaded it goes to the node's services alone. A reader signs
//! [`rows_message`] for the file with an expiry a few minutes ahead (`?until=`), or uses a dev
//! API key.

use alloy_primitives::{Address, B256, U256};
use alloy_sol_types::SolCall;
use axum::http::{HeaderMap, StatusCode, header};
use openledger_chain::CallError;
use openledger_flywheel::signing::{bearer_token, rows_message};
use openledger_primitives::addresses;
use openledger_protocol::abi::{IDatanets, IModels};
use serde::Deserialize;

use super::{ApiError, ContentApi, auth::credential, internal};

/// The longest a signed read stays good for.
const MAX_READ_SECS: u64 = 600;
/// The most contributions of one file looked at: a file contributed more often than this is
/// judged by its first ones.
const MAX_USES: u64 = 64;

/// What a reader of a private file says in the query.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Reader {
    /// The model whose training access is the reason to read.
    model: Option<U256>,
    /// Until when the signature is good (seconds since the epoch).
    until: Option<u64>,
}

/// Where a file is, as far as reading it goes: the datanets holding it (or that it was uploaded
/// to), and who contributed or uploaded it there.
struct Use {
    datanet: U256,
    by: Address,
    /// The version that approved it, if any.
    version: Option<u64>,
}

/// Refuses to serve the rows of file `hash` to a request that may not read them.
pub(super) fn may_read(
    api: &ContentApi,
    hash: B256,
    headers: &HeaderMap,
    reader: &Reader,
) -> Result<(), ApiError> {
    let (uses, contributed) = uses(api, hash)?;
    // Nobody uploaded or contributed it: the store answers (404 for what it does not hold).
    if uses.is_empty() && !contributed {
        return Ok(());
    }
    let mut private = Vec::new();
    for u in uses {
        let datanet = view(
            api,
            IDatanets::getDatanetCall {
                datanetId: u.datanet,
            },
        )?;
        if datanet.isPublic {
            return Ok(());
        }
        private.push((u, datanet.owner));
    }
    if is_node(api, headers) {
        return Ok(());
    }
    let signer = signer(api, hash, headers, reader)?;
    for (u, owner) in &private {
        let curator = || {
            view(
                api,
                IDatanets::isCuratorCall {
                    datanetId: u.datanet,
                    account: signer,
                },
            )
        };
        if signer == u.by || signer == *owner || curator()? || granted(api, u, signer, reader)? {
            return Ok(());
        }
    }
    Err(ApiError(
        StatusCode::FORBIDDEN,
        format!(
            "{signer} may not read the rows of {hash}, not a public file (a private datanet's, or \
             none this node holds): its owner, curators and contributor may, and the creator of a \
             model granted access to a version holding it (name the model: ?model=ID; \
             openledger datanet access request)"
        ),
    ))
}

/// Whether the request comes from this node's own services.
fn is_node(api: &ContentApi, headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .is_some_and(|token| token == api.node_token)
}

/// The account a read request is from: its dev API key's, or the signer of [`rows_message`]
/// with an expiry that has not passed and is at most [`MAX_READ_SECS`] ahead.
fn signer(
    api: &ContentApi,
    hash: B256,
    headers: &HeaderMap,
    reader: &Reader,
) -> Result<Address, ApiError> {
    let unauthorized = |m: String| ApiError(StatusCode::UNAUTHORIZED, m);
    let chain_id = api.chain.chain_id();
    // Block times run ahead of the clock when blocks come faster than one a second.
    let now = api.chain.now().max(api.chain.head().header.timestamp);
    let until = reader.until.unwrap_or_default();
    let signs = rows_message(chain_id, hash, now + MAX_READ_SECS);
    let credential = credential(headers, &api.dev_accounts, &signs).map_err(|e| {
        unauthorized(format!(
            "{hash} is not a public file (a private datanet's, or none this node holds): {} (with \
             ?until= the time in the message, at most ten minutes ahead)",
            e.1
        ))
    })?;
    if matches!(credential, super::auth::Credential::Signature(_))
        && !(now..=now + MAX_READ_SECS).contains(&until)
    {
        return Err(unauthorized(format!(
            "a signed read needs ?until= between now ({now}) and ten minutes ahead ({}); got {until}",
            now + MAX_READ_SECS
        )));
    }
    credential.signer_of(&rows_message(chain_id, hash, until))
}

/// Whether `signer` created the model the request names and that model may train on the
/// version that approved `u`.
fn granted(api: &ContentApi, u: &Use, signer: Address, reader: &Reader) -> Result<bool, ApiError> {
    let (Some(model), Some(version)) = (reader.model, u.version) else {
        return Ok(false);
    };
    let creator = match api.chain.view(
        addresses::MODELS,
        IModels::getModelCall { modelId: model }.abi_encode().into(),
    ) {
        Ok(output) => {
            IModels::getModelCall::abi_decode_returns(&output)
                .map_err(internal)?
                .creator
        }
        Err(CallError::Reverted(_) | CallError::Invalid(_)) => return Ok(false),
        Err(e) => return Err(internal(e)),
    };
    Ok(creator == signer
        && view(
            api,
            IDatanets::hasAccessCall {
                modelId: model,
                datanetId: u.datanet,
                version,
            },
        )?)
}

/// Where file `hash` is: its uploads not yet contributed and the contributions of it that their
/// contributor uploaded here; and whether the chain records any contribution of it at all.
fn uses(api: &ContentApi, hash: B256) -> Result<(Vec<Use>, bool), ApiError> {
    let ids = view(
        api,
        IDatanets::contributionsWithContentCall {
            contentHash: hash,
            offset: 0,
            limit: MAX_USES,
        },
    )?;
    let mut uses: Vec<Use> = api
        .pending
        .uploads_of(hash)
        .into_iter()
        .map(|(by, datanet)| Use {
            datanet,
            by,
            version: None,
        })
        .collect();
    let contributed = !ids.is_empty();
    for id in ids {
        let c = view(api, IDatanets::getContributionCall { contributionId: id })?;
        // The chain takes any hash: a contribution counts only if its contributor uploaded
        // the file here, so that naming someone else's file gives no right to it.
        if !api.pending.uploaded_by(hash, c.datanetId, c.contributor) {
            continue;
        }
        uses.push(Use {
            datanet: c.datanetId,
            by: c.contributor,
            version: (c.status == IDatanets::ContributionStatus::Approved).then_some(c.version),
        });
    }
    Ok((uses, contributed))
}

/// A view of the Datanets module that the node answers for things that exist.
fn view<C: SolCall>(api: &ContentApi, call: C) -> Result<C::Return, ApiError> {
    let output = api
        .chain
        .view(addresses::DATANETS, call.abi_encode().into())
        .map_err(internal)?;
    C::abi_decode_returns(&output).map_err(internal)
}
