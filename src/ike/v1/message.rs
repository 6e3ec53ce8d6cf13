//! A payload chain split by type, with the byte offsets the IKEv1 hashes need
//! (HASH(1) of Quick Mode and informational exchanges covers everything after the
//! HASH payload up to the end of the last payload, padding excluded; RFC 2409 §5.5).

use crate::wire::isakmp::{self, Malformed};

/// One payload: type and body (generic header excluded), and where the whole payload
/// (header included) sits in the chain.
#[derive(Clone, Copy, Debug)]
pub struct Item<'a> {
    /// Payload type.
    pub ty: u8,
    /// Body.
    pub body: &'a [u8],
    /// Offset of the generic header in the chain.
    pub start: usize,
    /// Offset after the body.
    pub end: usize,
}

/// A parsed chain.
#[derive(Debug)]
pub struct Chain<'a> {
    /// The payloads in order.
    pub items: Vec<Item<'a>>,
    bytes: &'a [u8],
}

impl<'a> Chain<'a> {
    /// Parses the chain that starts with payload type `first`.
    pub fn parse(first: u8, bytes: &'a [u8]) -> Result<Chain<'a>, Malformed> {
        let mut items = Vec::new();
        let mut off = 0usize;
        for p in isakmp::payloads(first, bytes) {
            let (ty, body) = p?;
            let start = off;
            off += 4 + body.len();
            items.push(Item {
                ty,
                body,
                start,
                end: off,
            });
            if items.len() > 64 {
                return Err(Malformed::new(
                    "payload chain",
                    crate::wire::Error::Unsupported,
                ));
            }
        }
        Ok(Chain { items, bytes })
    }

    /// The first payload of type `ty`.
    pub fn get(&self, ty: u8) -> Option<&'a [u8]> {
        self.items.iter().find(|i| i.ty == ty).map(|i| i.body)
    }

    /// Every payload of type `ty`.
    pub fn all(&self, ty: u8) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.items
            .iter()
            .filter(move |i| i.ty == ty)
            .map(|i| i.body)
    }

    /// True when the chain starts with a payload of type `ty`.
    pub fn starts_with(&self, ty: u8) -> bool {
        self.items.first().is_some_and(|i| i.ty == ty)
    }

    /// Everything after the first payload up to the end of the last one (what HASH(1)
    /// and HASH(2) cover after the message id and nonce).
    pub fn after_first(&self) -> &'a [u8] {
        match (self.items.first(), self.items.last()) {
            (Some(f), Some(l)) => &self.bytes[f.end..l.end],
            _ => &[],
        }
    }
}

/// The body of a HASH payload, to be placed first in a chain whose remaining payloads
/// are `rest` (already built): returns a builder with HASH then the rest.
pub fn with_hash_first(hash: &[u8], rest: &isakmp::ChainBuilder) -> isakmp::ChainBuilder {
    let mut b = isakmp::ChainBuilder::new();
    b.push(isakmp::payload::HASH, hash);
    // Re-push the already-built payloads: walk the chain we built ourselves.
    if let Ok(c) = Chain::parse(rest.first(), rest.bytes()) {
        for i in &c.items {
            b.push(i.ty, i.body);
        }
    }
    b
}
