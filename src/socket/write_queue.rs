//! The per-socket queue of bytes accepted by `write` but not yet handed to the kernel.
//!
//! Chunks plus a head offset: a partial `writev` only moves the offset, so no byte is ever
//! copied twice. [`WriteQueue::fill`] exposes up to [`MAX_SLICES`] chunks at once so one
//! vectored write can span several user writes. Small writes are packed into the last chunk's
//! spare capacity, so a burst of tiny writes does not cost one allocation each.
//!
//! The queue is sans-IO: the reactor asks for slices, performs the syscall, and reports how
//! many bytes the kernel took with [`WriteQueue::advance`].

use std::collections::VecDeque;
use std::io::IoSlice;

/// Most slices handed to one vectored write (Linux allows 1024; 64 already covers any burst
/// that fits a socket send buffer, and keeps the `IoSlice` array on the stack).
pub const MAX_SLICES: usize = 64;

/// Smallest capacity of a freshly allocated chunk, so that many tiny writes share one buffer.
const MIN_CHUNK: usize = 4 * 1024;

/// FIFO of pending bytes. `len()` is Node's `bufferSize`: bytes not yet handed to the kernel.
///
/// ```
/// use finwait::write_queue::WriteQueue;
/// use std::io::IoSlice;
///
/// let mut q = WriteQueue::new();
/// q.push(b"hello ");
/// q.push(b"world");
/// let mut slices = [IoSlice::new(&[]); finwait::write_queue::MAX_SLICES];
/// let n = q.fill(&mut slices);
/// let first: Vec<u8> = slices[..n].iter().flat_map(|s| s.iter().copied()).collect();
/// assert_eq!(first, b"hello world");
/// q.advance(7); // the kernel took 7 bytes
/// assert_eq!(q.len(), 4);
/// ```
#[derive(Debug, Default)]
pub struct WriteQueue {
    chunks: VecDeque<Vec<u8>>,
    /// Bytes of `chunks[0]` already written.
    head: usize,
    /// Total unwritten bytes across all chunks.
    len: usize,
}

impl WriteQueue {
    /// An empty queue; allocates nothing until the first push.
    pub const fn new() -> Self {
        WriteQueue {
            chunks: VecDeque::new(),
            head: 0,
            len: 0,
        }
    }

    /// Bytes queued and not yet handed to the kernel.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends a copy of `data`. Empty slices are ignored.
    pub fn push(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.len += data.len();
        if let Some(last) = self.chunks.back_mut()
            && last.capacity() - last.len() >= data.len()
        {
            last.extend_from_slice(data);
            return;
        }
        let mut chunk = Vec::with_capacity(data.len().max(MIN_CHUNK));
        chunk.extend_from_slice(data);
        self.chunks.push_back(chunk);
    }

    /// Appends an owned buffer without copying it.
    pub fn push_owned(&mut self, data: Vec<u8>) {
        if data.is_empty() {
            return;
        }
        self.len += data.len();
        self.chunks.push_back(data);
    }

    /// Fills `slices` with the queued bytes, oldest first, and returns how many were set.
    pub fn fill<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (i, chunk) in self.chunks.iter().enumerate() {
            if n == slices.len() {
                break;
            }
            let bytes = if i == 0 {
                &chunk[self.head..]
            } else {
                &chunk[..]
            };
            slices[n] = IoSlice::new(bytes);
            n += 1;
        }
        n
    }

    /// Marks `n` bytes as handed to the kernel. `n` larger than `len()` is clamped.
    pub fn advance(&mut self, n: usize) {
        let mut n = n.min(self.len);
        self.len -= n;
        while n > 0 {
            let Some(front) = self.chunks.front() else {
                break;
            };
            let left = front.len() - self.head;
            if n < left {
                self.head += n;
                return;
            }
            n -= left;
            self.head = 0;
            self.chunks.pop_front();
        }
        if self.len == 0 {
            // Release the memory of a drained queue: idle sockets should cost only their slot.
            self.clear();
        }
    }

    /// Drops every queued byte and returns how many there were.
    pub fn clear(&mut self) -> usize {
        let dropped = self.len;
        self.chunks = VecDeque::new();
        self.head = 0;
        self.len = 0;
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain_all(q: &mut WriteQueue, step: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while !q.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let n = q.fill(&mut slices);
            let bytes: Vec<u8> = slices[..n].iter().flat_map(|s| s.iter().copied()).collect();
            let take = step.min(bytes.len());
            out.extend_from_slice(&bytes[..take]);
            q.advance(take);
        }
        out
    }

    #[test]
    fn partial_writes_keep_byte_order() {
        let mut q = WriteQueue::new();
        let mut expect = Vec::new();
        for i in 0..200u32 {
            let chunk: Vec<u8> = (0..(i * 37 % 9000)).map(|b| (b ^ i) as u8).collect();
            q.push(&chunk);
            expect.extend_from_slice(&chunk);
        }
        assert_eq!(q.len(), expect.len());
        assert_eq!(drain_all(&mut q, 7777), expect);
        assert!(q.is_empty());
    }

    #[test]
    fn small_writes_share_a_chunk() {
        let mut q = WriteQueue::new();
        for _ in 0..100 {
            q.push(b"0123456789");
        }
        assert_eq!(q.chunks.len(), 1);
        assert_eq!(q.len(), 1000);
    }

    #[test]
    fn fill_stops_at_slice_count() {
        let mut q = WriteQueue::new();
        for _ in 0..100 {
            q.push_owned(vec![1; 10]);
        }
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        assert_eq!(q.fill(&mut slices), MAX_SLICES);
    }

    #[test]
    fn advance_past_len_is_clamped_and_frees_memory() {
        let mut q = WriteQueue::new();
        q.push(b"abc");
        q.advance(10);
        assert!(q.is_empty());
        assert_eq!(q.chunks.capacity(), 0);
    }

    #[test]
    fn clear_reports_dropped_bytes() {
        let mut q = WriteQueue::new();
        q.push(b"abcdef");
        q.advance(2);
        assert_eq!(q.clear(), 4);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn empty_push_is_ignored() {
        let mut q = WriteQueue::new();
        q.push(b"");
        q.push_owned(Vec::new());
        assert!(q.chunks.is_empty());
    }
}
