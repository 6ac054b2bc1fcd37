//! Socket and listener ids: a slab index plus a generation.
//!
//! The slab reuses the most recently freed slot first, so a bare index would let a late call
//! (or a late readiness event) for a destroyed socket land on the new socket in its slot. Every
//! id therefore carries the slot's generation, bumped each time the slot is freed, and every
//! event and call checks it. The same pair, packed, is the mio `Token`.

use std::fmt;

use mio::Token;

use crate::table::{GENERATION_MASK, Key};

/// Identifies one socket for its whole life. Copy it freely; once the socket is reclaimed,
/// calls with its id return [`Error::StaleId`](crate::Error::StaleId) and never reach a socket
/// that reuses the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

/// Identifies one listener (see [`Context::listen`](crate::Context::listen)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerId {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

/// Identifies one pipe (see [`Context::pipe`](crate::Context::pipe)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PipeId {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

impl fmt::Display for PipeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pipe {}.{}", self.index, self.generation)
    }
}

impl Key for PipeId {
    fn from_parts(index: u32, generation: u32) -> Self {
        PipeId { index, generation }
    }
    fn index(self) -> u32 {
        self.index
    }
    fn generation(self) -> u32 {
        self.generation
    }
}

impl SocketId {
    /// An id made from its parts, for driving a [`state::Conn`](crate::state::Conn) without a
    /// reactor (tests, fuzzing, benchmarks: the machine only logs it). Given to a reactor, a
    /// made-up id is checked like any other: it reaches a socket only if it names a live one
    /// exactly, and is [`Error::StaleId`](crate::Error::StaleId) otherwise.
    ///
    /// ```
    /// let id = finwait::SocketId::from_parts(3, 0);
    /// assert_eq!(id.index(), 3);
    /// ```
    #[doc(hidden)]
    pub fn from_parts(index: u32, generation: u32) -> SocketId {
        SocketId { index, generation }
    }

    /// The slab slot. Unique among live sockets, reused after reclaim: an index into a
    /// program's own per-connection table must drop its entry on `Close`. Per-connection
    /// state is usually simpler as an attachment ([`Reactor::with_attachment`]), which the
    /// reactor keeps beside the socket and clears with it.
    ///
    /// [`Reactor::with_attachment`]: crate::Reactor::with_attachment
    pub fn index(self) -> usize {
        self.index as usize
    }
}

impl ListenerId {
    /// The listener's slot index (unique among live listeners).
    pub fn index(self) -> usize {
        self.index as usize
    }
}

impl fmt::Display for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "socket {}.{}", self.index, self.generation)
    }
}

impl fmt::Display for ListenerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "listener {}.{}", self.index, self.generation)
    }
}

impl Key for SocketId {
    fn from_parts(index: u32, generation: u32) -> Self {
        SocketId { index, generation }
    }
    fn index(self) -> u32 {
        self.index
    }
    fn generation(self) -> u32 {
        self.generation
    }
}

impl Key for ListenerId {
    fn from_parts(index: u32, generation: u32) -> Self {
        ListenerId { index, generation }
    }
    fn index(self) -> u32 {
        self.index
    }
    fn generation(self) -> u32 {
        self.generation
    }
}

/// What a mio token refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenKind {
    Socket(SocketId),
    Listener(ListenerId),
    /// Reserved tokens (signals, wakers), numbered from 0.
    Reserved(u32),
}

// Layout of a token (64-bit usize): bits 0..32 slot index, bits 32..62 generation (30 bits,
// see `table.rs`), bits 62..64 kind.
const KIND_SHIFT: u32 = 62;
const GEN_MASK: u64 = GENERATION_MASK as u64;
const KIND_SOCKET: u64 = 0;
const KIND_LISTENER: u64 = 1;
const KIND_RESERVED: u64 = 2;

const _: () = assert!(usize::BITS == 64, "finwait packs ids into 64-bit tokens");

fn pack(kind: u64, index: u32, generation: u32) -> Token {
    let v = (kind << KIND_SHIFT) | ((generation as u64 & GEN_MASK) << 32) | index as u64;
    Token(v as usize)
}

impl TokenKind {
    pub(crate) fn to_token(self) -> Token {
        match self {
            TokenKind::Socket(id) => pack(KIND_SOCKET, id.index, id.generation),
            TokenKind::Listener(id) => pack(KIND_LISTENER, id.index, id.generation),
            TokenKind::Reserved(n) => pack(KIND_RESERVED, n, 0),
        }
    }

    pub(crate) fn from_token(token: Token) -> Option<TokenKind> {
        let v = token.0 as u64;
        let index = v as u32;
        let generation = ((v >> 32) & GEN_MASK) as u32;
        match v >> KIND_SHIFT {
            KIND_SOCKET => Some(TokenKind::Socket(SocketId { index, generation })),
            KIND_LISTENER => Some(TokenKind::Listener(ListenerId { index, generation })),
            KIND_RESERVED => Some(TokenKind::Reserved(index)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        for kind in [
            TokenKind::Socket(SocketId {
                index: 7,
                generation: 3,
            }),
            TokenKind::Listener(ListenerId {
                index: u32::MAX,
                generation: GEN_MASK as u32,
            }),
            TokenKind::Reserved(1),
        ] {
            assert_eq!(TokenKind::from_token(kind.to_token()), Some(kind));
        }
    }

    #[test]
    fn unknown_kind_bits_are_rejected() {
        assert_eq!(TokenKind::from_token(Token(usize::MAX)), None);
    }
}
