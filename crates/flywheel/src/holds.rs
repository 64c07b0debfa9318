//! Escrow held for completions until the chain has charged them.
//!
//! A completion is admitted only if its payer's escrow, less what other completions of the same
//! payer hold, covers its worst-case fee; the hold is taken before any token is generated, shrinks
//! to the actual fee once the completion is done, and is let go when its settlement is on-chain
//! (or has failed). So concurrent requests cannot spend the same escrow, and an order's nonce is in
//! flight for one completion at a time.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use alloy_primitives::{Address, B256, U256};
use parking_lot::Mutex;

/// Why a hold was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HoldError {
    /// The escrow left is under the amount.
    #[error(
        "{user} holds {escrow} wei of escrow that is not unlocking, {held} wei of it held for \
         completions in progress, under the {needed} wei this completion may cost"
    )]
    Insufficient {
        /// The payer.
        user: Address,
        /// Its escrow on-chain, less what is unlocking.
        escrow: U256,
        /// What other completions hold.
        held: U256,
        /// What this one needs.
        needed: U256,
    },
    /// The order's nonce pays for another completion in progress.
    #[error("the order's nonce {0} pays for another completion in progress: sign a new order")]
    NonceInFlight(U256),
}

#[derive(Debug, Default)]
struct Books {
    /// What each payer's holds add up to.
    held: HashMap<Address, U256>,
    /// Each hold: its payer, amount and order nonce.
    holds: HashMap<HoldId, (Address, U256, Option<U256>)>,
    /// Order nonces of holds, per payer.
    nonces: HashSet<(Address, U256)>,
    next: u64,
}

/// A hold's key: a request not yet settled, or the receipt id of a settlement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum HoldId {
    Request(u64),
    Receipt(B256),
}

impl Books {
    fn release(&mut self, id: HoldId) {
        if let Some((user, amount, nonce)) = self.holds.remove(&id) {
            let held = self.held.entry(user).or_default();
            *held = held.saturating_sub(amount);
            if held.is_zero() {
                self.held.remove(&user);
            }
            if let Some(nonce) = nonce {
                self.nonces.remove(&(user, nonce));
            }
        }
    }
}

/// The holds of one node; see the module documentation.
#[derive(Debug, Default)]
pub struct Holds {
    books: Mutex<Books>,
}

/// A request's hold, let go when dropped unless it became a settlement's.
#[must_use]
pub struct Hold {
    holds: Arc<Holds>,
    id: HoldId,
}

impl Holds {
    /// Holds `amount` of `user`'s `escrow` (its balance on-chain) for one request paid with
    /// order `nonce` (none for an order the node signs itself).
    pub fn hold(
        self: &Arc<Self>,
        user: Address,
        escrow: U256,
        amount: U256,
        nonce: Option<U256>,
    ) -> Result<Hold, HoldError> {
        let mut books = self.books.lock();
        if let Some(nonce) = nonce
            && books.nonces.contains(&(user, nonce))
        {
            return Err(HoldError::NonceInFlight(nonce));
        }
        let held = books.held.get(&user).copied().unwrap_or_default();
        if escrow.saturating_sub(held) < amount {
            return Err(HoldError::Insufficient {
                user,
                escrow,
                held,
                needed: amount,
            });
        }
        books.next += 1;
        let id = HoldId::Request(books.next);
        *books.held.entry(user).or_default() += amount;
        books.holds.insert(id, (user, amount, nonce));
        if let Some(nonce) = nonce {
            books.nonces.insert((user, nonce));
        }
        Ok(Hold {
            holds: self.clone(),
            id,
        })
    }

    /// Lets go of the hold of settlement `receipt` (on-chain now, or failed for good).
    pub fn release(&self, receipt: B256) {
        self.books.lock().release(HoldId::Receipt(receipt));
    }

    /// Holds `amount` of `user`'s escrow for settlement `receipt`, found pending at start (its
    /// order's `nonce` in flight again), without checking the escrow: it was checked when the
    /// completion was served.
    pub fn hold_pending(&self, receipt: B256, user: Address, amount: U256, nonce: U256) {
        let mut books = self.books.lock();
        *books.held.entry(user).or_default() += amount;
        books
            .holds
            .insert(HoldId::Receipt(receipt), (user, amount, Some(nonce)));
        books.nonces.insert((user, nonce));
    }

    /// What `user`'s holds add up to.
    pub fn held(&self, user: Address) -> U256 {
        self.books
            .lock()
            .held
            .get(&user)
            .copied()
            .unwrap_or_default()
    }
}

impl Hold {
    /// Turns the request's hold into one of exactly `fee`, kept until settlement `receipt` is
    /// released.
    pub fn into_settlement(self, receipt: B256, fee: U256) {
        let mut books = self.holds.books.lock();
        if let Some((user, amount, nonce)) = books.holds.remove(&self.id) {
            let held = books.held.entry(user).or_default();
            *held = held.saturating_sub(amount) + fee;
            books
                .holds
                .insert(HoldId::Receipt(receipt), (user, fee, nonce));
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.holds.books.lock().release(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_requests_cannot_hold_the_same_escrow() {
        let holds = Arc::new(Holds::default());
        let user = Address::repeat_byte(1);
        let escrow = U256::from(100);
        let first = holds.hold(user, escrow, U256::from(60), None).unwrap();
        let err = holds
            .hold(user, escrow, U256::from(50), None)
            .err()
            .unwrap();
        assert!(matches!(err, HoldError::Insufficient { .. }), "{err}");
        let second = holds.hold(user, escrow, U256::from(40), None).unwrap();
        assert_eq!(holds.held(user), U256::from(100));
        // Done: the first holds its actual fee until its settlement is on-chain.
        first.into_settlement(B256::repeat_byte(9), U256::from(10));
        assert_eq!(holds.held(user), U256::from(50));
        // A request that ends without a settlement lets its hold go.
        drop(second);
        assert_eq!(holds.held(user), U256::from(10));
        holds.release(B256::repeat_byte(9));
        assert_eq!(holds.held(user), U256::ZERO);
    }

    #[test]
    fn an_order_nonce_pays_for_one_completion_at_a_time() {
        let holds = Arc::new(Holds::default());
        let user = Address::repeat_byte(1);
        let escrow = U256::from(1_000);
        let nonce = Some(U256::from(7));
        let hold = holds.hold(user, escrow, U256::from(1), nonce).unwrap();
        assert_eq!(
            holds.hold(user, escrow, U256::from(1), nonce).err(),
            Some(HoldError::NonceInFlight(U256::from(7)))
        );
        hold.into_settlement(B256::repeat_byte(3), U256::from(1));
        assert!(holds.hold(user, escrow, U256::from(1), nonce).is_err());
        holds.release(B256::repeat_byte(3));
        assert!(holds.hold(user, escrow, U256::from(1), nonce).is_ok());
    }
}
