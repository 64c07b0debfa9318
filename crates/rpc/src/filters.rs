//! Polling filters: `eth_newFilter`, `eth_newBlockFilter`, `eth_newPendingTransactionFilter`,
//! `eth_getFilterChanges`, `eth_getFilterLogs`, `eth_uninstallFilter`.
//!
//! A filter remembers the next block it has not reported; a poll reports everything from there
//! to the head. Pending-transaction filters are fed from the chain's event stream. Filters not
//! polled for [`FILTER_TIMEOUT`] are dropped, as geth does.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use alloy_primitives::{B256, U256};
use alloy_rpc_types_eth::{Filter, FilterBlockOption, FilterChanges};
use parking_lot::Mutex;

use crate::{
    error::{RpcError, RpcResult},
    eth::{EthApi, resolve_tag},
};

/// Filters idle longer than this are removed.
pub const FILTER_TIMEOUT: Duration = Duration::from_secs(300);
/// Most pending hashes a filter buffers between polls.
const MAX_PENDING_BUFFER: usize = 10_000;
/// Most filters installed at once.
const MAX_FILTERS: usize = 10_000;

#[derive(Debug)]
enum Kind {
    Blocks { next: u64 },
    Pending { hashes: Vec<B256> },
    Logs { filter: Box<Filter>, next: u64 },
}

#[derive(Debug)]
struct Installed {
    kind: Kind,
    last_poll: Instant,
}

/// The installed filters of a server.
#[derive(Debug, Default)]
pub struct Filters {
    installed: Mutex<HashMap<U256, Installed>>,
    next_id: AtomicU64,
}

impl Filters {
    fn install(&self, kind: Kind) -> RpcResult<U256> {
        let mut installed = self.installed.lock();
        installed.retain(|_, f| f.last_poll.elapsed() < FILTER_TIMEOUT);
        if installed.len() >= MAX_FILTERS {
            return Err(RpcError::LimitExceeded(format!(
                "too many filters installed (limit {MAX_FILTERS})"
            )));
        }
        let id = U256::from(self.next_id.fetch_add(1, Ordering::Relaxed) + 1);
        installed.insert(
            id,
            Installed {
                kind,
                last_poll: Instant::now(),
            },
        );
        Ok(id)
    }

    /// `eth_newFilter`.
    pub fn new_logs(&self, api: &EthApi, filter: Filter) -> RpcResult<U256> {
        let head = api.block_number();
        let next = match filter.block_option {
            FilterBlockOption::Range {
                from_block: Some(from),
                ..
            } => resolve_tag(from, head).min(head + 1),
            _ => head + 1,
        };
        self.install(Kind::Logs {
            filter: Box::new(filter),
            next,
        })
    }

    /// `eth_newBlockFilter`.
    pub fn new_blocks(&self, api: &EthApi) -> RpcResult<U256> {
        self.install(Kind::Blocks {
            next: api.block_number() + 1,
        })
    }

    /// `eth_newPendingTransactionFilter`.
    pub fn new_pending(&self) -> RpcResult<U256> {
        self.install(Kind::Pending { hashes: Vec::new() })
    }

    /// `eth_uninstallFilter`.
    pub fn uninstall(&self, id: U256) -> bool {
        self.installed.lock().remove(&id).is_some()
    }

    /// Records a transaction that entered the pool.
    pub fn on_pending(&self, hash: B256) {
        for filter in self.installed.lock().values_mut() {
            if let Kind::Pending { hashes } = &mut filter.kind
                && hashes.len() < MAX_PENDING_BUFFER
            {
                hashes.push(hash);
            }
        }
    }

    /// `eth_getFilterChanges`.
    pub fn changes(&self, api: &EthApi, id: U256) -> RpcResult<FilterChanges> {
        let mut installed = self.installed.lock();
        let filter = installed.get_mut(&id).ok_or_else(not_found)?;
        filter.last_poll = Instant::now();
        let head = api.block_number();
        match &mut filter.kind {
            Kind::Pending { hashes } => Ok(FilterChanges::Hashes(std::mem::take(hashes))),
            Kind::Blocks { next } => {
                let reader = api.chain().reader()?;
                let mut hashes = Vec::new();
                for number in *next..=head {
                    if let Some(header) = reader.header(number)? {
                        hashes.push(header.hash_slow());
                    }
                }
                *next = head + 1;
                Ok(FilterChanges::Hashes(hashes))
            }
            Kind::Logs { filter, next } => {
                let reader = api.chain().reader()?;
                let to = match filter.block_option {
                    FilterBlockOption::Range {
                        to_block: Some(to), ..
                    } => resolve_tag(to, head).min(head),
                    _ => head,
                };
                let logs = api.logs_in_range(&reader, filter, *next, to)?;
                *next = head + 1;
                Ok(FilterChanges::Logs(logs))
            }
        }
    }

    /// `eth_getFilterLogs`: every log the filter matches, not only new ones.
    pub fn logs(&self, api: &EthApi, id: U256) -> RpcResult<FilterChanges> {
        let filter = {
            let mut installed = self.installed.lock();
            let installed = installed.get_mut(&id).ok_or_else(not_found)?;
            installed.last_poll = Instant::now();
            match &installed.kind {
                Kind::Logs { filter, .. } => filter.clone(),
                _ => return Err(RpcError::InvalidParams("filter is not a log filter".into())),
            }
        };
        Ok(FilterChanges::Logs(api.logs(&filter)?))
    }
}

fn not_found() -> RpcError {
    RpcError::NotFound("filter not found".into())
}
