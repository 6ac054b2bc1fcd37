//! `finwait::write_queue::WriteQueue` against a plain byte-vector model.
//!
//! Every byte pushed comes from one running counter, so a byte that is lost, duplicated or
//! reordered shows up as a pattern mismatch, not only as a wrong length.

use std::collections::VecDeque;
use std::io::IoSlice;

use finwait::write_queue::{MAX_SLICES, WriteQueue};

/// One call on the queue.
#[derive(arbitrary::Arbitrary, Debug)]
pub enum Operation {
    /// `push` a copy of `len` pattern bytes (0 included: must be ignored).
    Push { len: u16 },
    /// `push_owned` `len` pattern bytes.
    PushOwned { len: u16 },
    /// `fill` into an array of `slices` (mod `MAX_SLICES + 3`) slots and check the contents.
    Fill { slices: u8 },
    /// `advance` by `n` (may exceed `len()`: clamped).
    Advance { n: u16 },
    /// `advance` by everything that `fill` offered (what one full vectored write does).
    AdvanceFilled,
    /// `clear`, checking the count of dropped bytes.
    Clear,
}

fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

struct Model {
    bytes: VecDeque<u8>,
    next: u64,
}

impl Model {
    fn take(&mut self, len: usize) -> Vec<u8> {
        let data: Vec<u8> = (0..len as u64).map(|k| pattern(self.next + k)).collect();
        self.next += len as u64;
        self.bytes.extend(&data);
        data
    }
}

/// The first `n` bytes of the model (slices compare with `memcmp`, fast even unoptimized).
fn prefix(model: &VecDeque<u8>, n: usize) -> Vec<u8> {
    let (a, b) = model.as_slices();
    let mut out = Vec::with_capacity(n);
    out.extend_from_slice(&a[..n.min(a.len())]);
    out.extend_from_slice(&b[..n.saturating_sub(a.len()).min(b.len())]);
    out
}

/// Concatenated bytes of `fill` with `n` slots; checks each slice is non-empty.
fn filled(q: &WriteQueue, n: usize, step: usize) -> (Vec<u8>, usize) {
    let mut slices = vec![IoSlice::new(&[]); n];
    let set = q.fill(&mut slices);
    assert!(set <= n, "step {step}: fill set {set} of {n} slots");
    let mut out = Vec::new();
    for (i, s) in slices[..set].iter().enumerate() {
        assert!(!s.is_empty(), "step {step}: fill returned empty slice #{i}");
        out.extend_from_slice(s);
    }
    (out, set)
}

pub fn replay(ops: &[Operation]) {
    let mut q = WriteQueue::new();
    let mut m = Model {
        bytes: VecDeque::new(),
        next: 0,
    };
    for (step, op) in ops.iter().enumerate() {
        match *op {
            Operation::Push { len } => {
                let data = m.take(usize::from(len % 5000));
                q.push(&data);
            }
            Operation::PushOwned { len } => {
                let data = m.take(usize::from(len % 5000));
                q.push_owned(data);
            }
            Operation::Fill { slices } => {
                let n = usize::from(slices) % (MAX_SLICES + 3);
                let (bytes, set) = filled(&q, n, step);
                if n == 0 {
                    assert_eq!(set, 0);
                }
                let model = prefix(&m.bytes, bytes.len());
                assert_eq!(
                    bytes, model,
                    "step {step}: fill({n}) is not a prefix of the model"
                );
                if set < n {
                    assert_eq!(
                        bytes.len(),
                        m.bytes.len(),
                        "step {step}: fill({n}) left bytes out although slots were free"
                    );
                }
            }
            Operation::Advance { n } => {
                let n = usize::from(n);
                q.advance(n);
                let k = n.min(m.bytes.len());
                m.bytes.drain(..k);
            }
            Operation::AdvanceFilled => {
                let (bytes, _) = filled(&q, MAX_SLICES, step);
                q.advance(bytes.len());
                m.bytes.drain(..bytes.len());
            }
            Operation::Clear => {
                let dropped = q.clear();
                assert_eq!(dropped, m.bytes.len(), "step {step}: clear() count");
                m.bytes.clear();
            }
        }
        assert_eq!(q.len(), m.bytes.len(), "step {step} ({op:?}): len");
        assert_eq!(q.is_empty(), m.bytes.is_empty(), "step {step}: is_empty");
        // The full view must match the model whenever it fits in MAX_SLICES slices.
        let (bytes, set) = filled(&q, MAX_SLICES, step);
        let model = prefix(&m.bytes, bytes.len());
        assert_eq!(
            bytes, model,
            "step {step} ({op:?}): queue contents diverge from the model"
        );
        if set < MAX_SLICES {
            assert_eq!(bytes.len(), m.bytes.len(), "step {step}: fill missed bytes");
        }
    }
}
