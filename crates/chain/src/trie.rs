//! An Ethereum Merkle-Patricia trie whose nodes live in a key-value store, keyed by their hash.
//!
//! The chain keeps one account trie and one storage trie per contract. A block only walks the
//! paths of the keys it touched: untouched subtrees stay as hashes and are never loaded, so
//! committing a block costs in proportion to what it changed, not to the size of the state.
//! Nodes are never overwritten (a node's key is its hash), so every past root stays readable and
//! `eth_getProof` can answer for older blocks too.

use alloy_primitives::{B256, keccak256};
use alloy_rlp::{EMPTY_STRING_CODE, Header};

pub use alloy_trie::EMPTY_ROOT_HASH;

use crate::error::StoreError;

/// Reads trie nodes by hash.
pub trait NodeReader {
    /// Returns the RLP of the node with this hash, if stored.
    fn node(&self, hash: &B256) -> Result<Option<Vec<u8>>, TrieError>;
}

/// A trie that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum TrieError {
    /// A node the trie refers to is not in the store.
    #[error("trie node {0} is missing from the store")]
    MissingNode(B256),
    /// A stored node is not valid RLP.
    #[error("corrupt trie node: {0}")]
    Decode(#[from] alloy_rlp::Error),
    /// A stored node is RLP, but not of a trie node.
    #[error("corrupt trie node: {0}")]
    Corrupt(String),
    /// The store failed.
    #[error("trie store: {0}")]
    Store(#[from] StoreError),
}

/// A reference from a parent to a child node.
#[derive(Debug, Clone)]
enum Slot {
    Empty,
    /// A node stored in the node store, not loaded yet.
    Hash(B256),
    /// A node in memory: loaded on a touched path, or new.
    Node(Box<Node>),
}

#[derive(Debug, Clone)]
enum Node {
    Leaf {
        path: Vec<u8>,
        value: Vec<u8>,
    },
    Extension {
        path: Vec<u8>,
        child: Slot,
    },
    Branch {
        children: Box<[Slot; 16]>,
        value: Option<Vec<u8>>,
    },
}

/// A trie being updated; [`Trie::commit`] yields the new root and the nodes to store.
pub struct Trie<'r, R> {
    root: Slot,
    reader: &'r R,
}

/// The result of committing a trie: its root hash and the nodes that must be stored for it.
#[derive(Debug, Default)]
pub struct Committed {
    /// The new root hash.
    pub root: B256,
    /// `(hash, rlp)` of every node created by the update.
    pub nodes: Vec<(B256, Vec<u8>)>,
}

impl<'r, R: NodeReader> Trie<'r, R> {
    /// Opens the trie with the given root.
    pub fn open(root: B256, reader: &'r R) -> Self {
        let root = if root == EMPTY_ROOT_HASH {
            Slot::Empty
        } else {
            Slot::Hash(root)
        };
        Self { root, reader }
    }

    /// Sets `key` to `value`; an empty value removes the key.
    pub fn insert(&mut self, key: &[u8], value: Vec<u8>) -> Result<(), TrieError> {
        let path = nibbles(key);
        let root = std::mem::replace(&mut self.root, Slot::Empty);
        self.root = if value.is_empty() {
            self.remove_at(root, &path)?
        } else {
            self.insert_at(root, &path, value)?
        };
        Ok(())
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: &[u8]) -> Result<(), TrieError> {
        self.insert(key, Vec::new())
    }

    /// Returns the value at `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, TrieError> {
        let path = nibbles(key);
        let mut slot = self.root.clone();
        let mut rest: &[u8] = &path;
        loop {
            let node = match self.load(slot)? {
                None => return Ok(None),
                Some(node) => node,
            };
            match node {
                Node::Leaf { path, value } => return Ok((path == rest).then_some(value)),
                Node::Extension { path, child } => {
                    if !rest.starts_with(&path) {
                        return Ok(None);
                    }
                    rest = &rest[path.len()..];
                    slot = child;
                }
                Node::Branch {
                    mut children,
                    value,
                } => match rest.split_first() {
                    None => return Ok(value),
                    Some((&i, tail)) => {
                        slot = std::mem::replace(&mut children[i as usize], Slot::Empty);
                        rest = tail;
                    }
                },
            }
        }
    }

    /// Hashes the updated trie, returning its root and the new nodes to store.
    pub fn commit(self) -> Committed {
        let mut out = Committed::default();
        out.root = match self.root {
            Slot::Empty => EMPTY_ROOT_HASH,
            Slot::Hash(hash) => hash,
            Slot::Node(node) => {
                let rlp = encode_node(*node, &mut out.nodes);
                let hash = keccak256(&rlp);
                out.nodes.push((hash, rlp));
                hash
            }
        };
        out
    }

    fn load(&self, slot: Slot) -> Result<Option<Node>, TrieError> {
        match slot {
            Slot::Empty => Ok(None),
            Slot::Node(node) => Ok(Some(*node)),
            Slot::Hash(hash) => {
                let rlp = self
                    .reader
                    .node(&hash)?
                    .ok_or(TrieError::MissingNode(hash))?;
                decode_node(&rlp).map(Some)
            }
        }
    }

    fn insert_at(&self, slot: Slot, path: &[u8], value: Vec<u8>) -> Result<Slot, TrieError> {
        let node = match self.load(slot)? {
            None => Node::Leaf {
                path: path.to_vec(),
                value,
            },
            Some(Node::Leaf {
                path: old,
                value: old_value,
            }) => {
                if old == path {
                    Node::Leaf { path: old, value }
                } else {
                    let common = common_prefix(&old, path);
                    let mut branch = Node::empty_branch();
                    branch.put(&old[common..], old_value);
                    branch.put(&path[common..], value);
                    Node::extended(&path[..common], branch)
                }
            }
            Some(Node::Extension { path: ext, child }) => {
                let common = common_prefix(&ext, path);
                if common == ext.len() {
                    let child = self.insert_at(child, &path[common..], value)?;
                    Node::Extension { path: ext, child }
                } else {
                    let mut branch = Node::empty_branch();
                    let ext_rest = &ext[common + 1..];
                    let ext_child = if ext_rest.is_empty() {
                        child
                    } else {
                        Slot::node(Node::Extension {
                            path: ext_rest.to_vec(),
                            child,
                        })
                    };
                    branch.set_child(ext[common], ext_child);
                    branch.put(&path[common..], value);
                    Node::extended(&path[..common], branch)
                }
            }
            Some(Node::Branch {
                mut children,
                value: branch_value,
            }) => match path.split_first() {
                None => Node::Branch {
                    children,
                    value: Some(value),
                },
                Some((&i, tail)) => {
                    let child = std::mem::replace(&mut children[i as usize], Slot::Empty);
                    children[i as usize] = self.insert_at(child, tail, value)?;
                    Node::Branch {
                        children,
                        value: branch_value,
                    }
                }
            },
        };
        Ok(Slot::node(node))
    }

    fn remove_at(&self, slot: Slot, path: &[u8]) -> Result<Slot, TrieError> {
        let Some(node) = self.load(slot)? else {
            return Ok(Slot::Empty);
        };
        match node {
            Node::Leaf { path: key, value } => {
                if key == path {
                    Ok(Slot::Empty)
                } else {
                    Ok(Slot::node(Node::Leaf { path: key, value }))
                }
            }
            Node::Extension { path: ext, child } => {
                if !path.starts_with(&ext) {
                    return Ok(Slot::node(Node::Extension { path: ext, child }));
                }
                let child = self.remove_at(child, &path[ext.len()..])?;
                self.prefixed(ext, child)
            }
            Node::Branch {
                mut children,
                mut value,
            } => {
                match path.split_first() {
                    None => value = None,
                    Some((&i, tail)) => {
                        let child = std::mem::replace(&mut children[i as usize], Slot::Empty);
                        children[i as usize] = self.remove_at(child, tail)?;
                    }
                }
                self.normalize_branch(children, value)
            }
        }
    }

    /// A branch left with a single child or only a value collapses into its child.
    fn normalize_branch(
        &self,
        mut children: Box<[Slot; 16]>,
        value: Option<Vec<u8>>,
    ) -> Result<Slot, TrieError> {
        let mut occupied = children
            .iter()
            .enumerate()
            .filter(|(_, c)| !matches!(c, Slot::Empty));
        let first = occupied.next().map(|(i, _)| i);
        let more = occupied.next().is_some();
        match (first, more, value) {
            (None, _, None) => Ok(Slot::Empty),
            (None, _, Some(value)) => Ok(Slot::node(Node::Leaf {
                path: Vec::new(),
                value,
            })),
            (Some(i), false, None) => {
                let child = std::mem::replace(&mut children[i], Slot::Empty);
                self.prefixed(vec![i as u8], child)
            }
            (_, _, value) => Ok(Slot::node(Node::Branch { children, value })),
        }
    }

    /// Puts `prefix` in front of `child`, merging it into a leaf or extension child.
    fn prefixed(&self, prefix: Vec<u8>, child: Slot) -> Result<Slot, TrieError> {
        let node = match self.load(child)? {
            None => return Ok(Slot::Empty),
            Some(Node::Leaf { path, value }) => Node::Leaf {
                path: [prefix, path].concat(),
                value,
            },
            Some(Node::Extension { path, child }) => Node::Extension {
                path: [prefix, path].concat(),
                child,
            },
            Some(branch) => Node::Extension {
                path: prefix,
                child: Slot::node(branch),
            },
        };
        Ok(Slot::node(node))
    }
}

impl Slot {
    fn node(node: Node) -> Self {
        Slot::Node(Box::new(node))
    }
}

impl Node {
    fn empty_branch() -> Self {
        Node::Branch {
            children: Box::new(std::array::from_fn(|_| Slot::Empty)),
            value: None,
        }
    }

    fn set_child(&mut self, index: u8, child: Slot) {
        if let Node::Branch { children, .. } = self {
            children[index as usize] = child;
        }
    }

    /// Places a key whose path below this branch is `rest`: as the branch value when the path
    /// ends here, else as a leaf child.
    fn put(&mut self, rest: &[u8], value: Vec<u8>) {
        match rest.split_first() {
            None => {
                if let Node::Branch { value: slot, .. } = self {
                    *slot = Some(value);
                }
            }
            Some((&i, tail)) => self.set_child(
                i,
                Slot::node(Node::Leaf {
                    path: tail.to_vec(),
                    value,
                }),
            ),
        }
    }

    fn extended(prefix: &[u8], node: Node) -> Node {
        if prefix.is_empty() {
            node
        } else {
            Node::Extension {
                path: prefix.to_vec(),
                child: Slot::node(node),
            }
        }
    }
}

/// Builds the Merkle proof of `key` against `root`: the RLP of every stored node on its path.
pub fn proof<R: NodeReader>(reader: &R, root: B256, key: &[u8]) -> Result<Vec<Vec<u8>>, TrieError> {
    let mut out = Vec::new();
    if root == EMPTY_ROOT_HASH {
        return Ok(out);
    }
    let path = nibbles(key);
    let mut rest: &[u8] = &path;
    let mut slot = Slot::Hash(root);
    loop {
        let node = match slot {
            Slot::Empty => return Ok(out),
            Slot::Node(node) => *node,
            Slot::Hash(hash) => {
                let rlp = reader.node(&hash)?.ok_or(TrieError::MissingNode(hash))?;
                let node = decode_node(&rlp)?;
                out.push(rlp);
                node
            }
        };
        match node {
            Node::Leaf { .. } => return Ok(out),
            Node::Extension { path, child } => {
                if !rest.starts_with(&path) {
                    return Ok(out);
                }
                rest = &rest[path.len()..];
                slot = child;
            }
            Node::Branch { mut children, .. } => match rest.split_first() {
                None => return Ok(out),
                Some((&i, tail)) => {
                    slot = std::mem::replace(&mut children[i as usize], Slot::Empty);
                    rest = tail;
                }
            },
        }
    }
}

fn nibbles(key: &[u8]) -> Vec<u8> {
    key.iter().flat_map(|b| [b >> 4, b & 0x0f]).collect()
}

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Hex-prefix encoding of a nibble path (Yellow Paper, appendix C).
fn hex_prefix(path: &[u8], leaf: bool) -> Vec<u8> {
    let flag = if leaf { 2 } else { 0 };
    let mut out = Vec::with_capacity(path.len() / 2 + 1);
    let rest = if path.len() % 2 == 1 {
        out.push(((flag + 1) << 4) | path[0]);
        &path[1..]
    } else {
        out.push(flag << 4);
        path
    };
    out.extend(rest.chunks(2).map(|pair| (pair[0] << 4) | pair[1]));
    out
}

fn decode_hex_prefix(bytes: &[u8]) -> Result<(Vec<u8>, bool), TrieError> {
    let first = *bytes
        .first()
        .ok_or_else(|| TrieError::Corrupt("empty path".into()))?;
    let flag = first >> 4;
    if flag > 3 {
        return Err(TrieError::Corrupt(format!("bad hex-prefix flag {flag}")));
    }
    let mut path = Vec::with_capacity(bytes.len() * 2);
    if flag & 1 == 1 {
        path.push(first & 0x0f);
    }
    path.extend(nibbles(&bytes[1..]));
    Ok((path, flag & 2 == 2))
}

fn rlp_string(bytes: &[u8], out: &mut Vec<u8>) {
    alloy_rlp::Encodable::encode(bytes, out);
}

fn rlp_list(payload: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 4);
    Header {
        list: true,
        payload_length: payload.len(),
    }
    .encode(&mut out);
    out.extend(payload);
    out
}

/// Appends the reference to `slot` to a parent's payload, hashing and collecting large children.
fn encode_child(slot: Slot, payload: &mut Vec<u8>, nodes: &mut Vec<(B256, Vec<u8>)>) {
    match slot {
        Slot::Empty => payload.push(EMPTY_STRING_CODE),
        Slot::Hash(hash) => rlp_string(hash.as_slice(), payload),
        Slot::Node(node) => {
            let rlp = encode_node(*node, nodes);
            if rlp.len() < 32 {
                payload.extend(rlp);
            } else {
                let hash = keccak256(&rlp);
                rlp_string(hash.as_slice(), payload);
                nodes.push((hash, rlp));
            }
        }
    }
}

fn encode_node(node: Node, nodes: &mut Vec<(B256, Vec<u8>)>) -> Vec<u8> {
    let mut payload = Vec::new();
    match node {
        Node::Leaf { path, value } => {
            rlp_string(&hex_prefix(&path, true), &mut payload);
            rlp_string(&value, &mut payload);
        }
        Node::Extension { path, child } => {
            rlp_string(&hex_prefix(&path, false), &mut payload);
            encode_child(child, &mut payload, nodes);
        }
        Node::Branch { children, value } => {
            for child in *children {
                encode_child(child, &mut payload, nodes);
            }
            rlp_string(value.as_deref().unwrap_or_default(), &mut payload);
        }
    }
    rlp_list(payload)
}

fn decode_node(rlp: &[u8]) -> Result<Node, TrieError> {
    let mut buf = rlp;
    let mut items = Vec::with_capacity(17);
    let payload = Header::decode_bytes(&mut buf, true)?;
    let mut rest = payload;
    while !rest.is_empty() {
        let start = rest;
        let header = Header::decode(&mut rest)?;
        let consumed = start.len() - rest.len();
        rest = &rest[header.payload_length..];
        items.push((
            header.list,
            &start[..consumed + header.payload_length],
            &start[consumed..consumed + header.payload_length],
        ));
    }
    match items.len() {
        2 => {
            let (path, leaf) = decode_hex_prefix(items[0].2)?;
            if leaf {
                Ok(Node::Leaf {
                    path,
                    value: items[1].2.to_vec(),
                })
            } else {
                Ok(Node::Extension {
                    path,
                    child: decode_child(items[1])?,
                })
            }
        }
        17 => {
            let mut children: Box<[Slot; 16]> = Box::new(std::array::from_fn(|_| Slot::Empty));
            for (i, item) in items[..16].iter().enumerate() {
                children[i] = decode_child(*item)?;
            }
            let value = (!items[16].2.is_empty()).then(|| items[16].2.to_vec());
            Ok(Node::Branch { children, value })
        }
        n => Err(TrieError::Corrupt(format!("node with {n} items"))),
    }
}

fn decode_child((list, raw, payload): (bool, &[u8], &[u8])) -> Result<Slot, TrieError> {
    if list {
        return Ok(Slot::node(decode_node(raw)?));
    }
    match payload.len() {
        0 => Ok(Slot::Empty),
        32 => Ok(Slot::Hash(B256::from_slice(payload))),
        n => Err(TrieError::Corrupt(format!("child reference of {n} bytes"))),
    }
}

/// An in-memory node store, for tests and tools that build a trie without a database.
#[derive(Debug, Default, Clone)]
pub struct MemoryNodes(pub std::collections::HashMap<B256, Vec<u8>>);

impl NodeReader for MemoryNodes {
    fn node(&self, hash: &B256) -> Result<Option<Vec<u8>>, TrieError> {
        Ok(self.0.get(hash).cloned())
    }
}

impl MemoryNodes {
    /// Stores the nodes of a commit.
    pub fn absorb(&mut self, committed: &Committed) {
        self.0.extend(committed.nodes.iter().cloned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn root_of(pairs: &BTreeMap<Vec<u8>, Vec<u8>>) -> B256 {
        let store = MemoryNodes::default();
        let mut trie = Trie::open(EMPTY_ROOT_HASH, &store);
        for (k, v) in pairs {
            trie.insert(k, v.clone()).unwrap();
        }
        trie.commit().root
    }

    /// Block headers take their transactions and receipts roots from alloy-trie's list-trie
    /// builder; this trie must agree with it on list tries, across the index-encoding boundaries
    /// (0, 1..=0x7f, 0x80 and up).
    #[test]
    fn list_roots_agree_with_alloy_trie() {
        for len in [1usize, 2, 16, 127, 128, 129, 300] {
            let items: Vec<Vec<u8>> = (0..len).map(|i| vec![i as u8; 1 + i % 40]).collect();
            let pairs = items
                .iter()
                .enumerate()
                .map(|(i, v)| (alloy_rlp::encode(i), v.clone()))
                .collect();
            assert_eq!(
                root_of(&pairs),
                alloy_trie::root::ordered_trie_root_encoded(&items),
                "{len} items"
            );
        }
    }

    #[test]
    fn empty_trie_has_the_empty_root() {
        assert_eq!(root_of(&BTreeMap::new()), EMPTY_ROOT_HASH);
    }

    #[test]
    fn incremental_updates_match_a_fresh_build() {
        let mut store = MemoryNodes::default();
        let mut expected = BTreeMap::new();
        let mut root = EMPTY_ROOT_HASH;
        for round in 0u32..20 {
            let mut trie = Trie::open(root, &store);
            for i in 0u32..50 {
                let key = keccak256((i * 7 + round).to_be_bytes()).to_vec();
                if (i + round) % 3 == 0 {
                    trie.remove(&key).unwrap();
                    expected.remove(&key);
                } else {
                    let value = alloy_rlp::encode(round * 1000 + i);
                    trie.insert(&key, value.clone()).unwrap();
                    expected.insert(key, value);
                }
            }
            let committed = trie.commit();
            store.absorb(&committed);
            root = committed.root;
            assert_eq!(root, root_of(&expected), "round {round}");
        }
        let trie = Trie::open(root, &store);
        for (k, v) in &expected {
            assert_eq!(trie.get(k).unwrap().as_ref(), Some(v));
        }
    }

    #[test]
    fn proofs_verify_with_alloy_trie() {
        let mut store = MemoryNodes::default();
        let mut trie = Trie::open(EMPTY_ROOT_HASH, &store);
        let keys: Vec<B256> = (0u64..200).map(|i| keccak256(i.to_be_bytes())).collect();
        for (i, key) in keys.iter().enumerate() {
            trie.insert(key.as_slice(), alloy_rlp::encode(i as u64 + 1))
                .unwrap();
        }
        let committed = trie.commit();
        store.absorb(&committed);
        for (i, key) in keys.iter().enumerate().step_by(17) {
            let nodes = proof(&store, committed.root, key.as_slice()).unwrap();
            let nodes: Vec<_> = nodes.into_iter().map(Into::into).collect();
            alloy_trie::proof::verify_proof(
                committed.root,
                alloy_trie::Nibbles::unpack(key),
                Some(alloy_rlp::encode(i as u64 + 1)),
                &nodes,
            )
            .unwrap();
        }
        let absent = keccak256(b"absent");
        let nodes: Vec<_> = proof(&store, committed.root, absent.as_slice())
            .unwrap()
            .into_iter()
            .map(Into::into)
            .collect();
        alloy_trie::proof::verify_proof(
            committed.root,
            alloy_trie::Nibbles::unpack(absent),
            None,
            &nodes,
        )
        .unwrap();
    }
}
