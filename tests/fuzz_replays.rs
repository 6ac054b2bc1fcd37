//! The fuzz targets' replay code (`tests/fuzz_replay/*.rs`, shared with the cargo-fuzz crate
//! in `fuzz/`), run on stable Rust as ordinary tests: every seed in
//! `tests/fuzz_corpus/<target>/` is decoded exactly as libfuzzer-sys decodes it and
//! replayed, then a fixed set of pseudo-random inputs. A crash file from `cargo fuzz` can be
//! dropped into the corpus directory to become a regression test.
//!
//! `FINWAIT_WRITE_SEEDS=1 cargo test --test fuzz_replays write_seed_corpus -- --ignored`
//! regenerates the seed corpus.
//!
//! The replay code and the corpus live under `tests/` rather than in the fuzz crate's own
//! directory so that the published package (which never holds a sub-package's files) still
//! carries them and this test runs there too.

#[path = "fuzz_replay/http_request.rs"]
mod http_request;
#[path = "fuzz_replay/ids.rs"]
mod ids;
#[path = "fuzz_replay/reactor.rs"]
mod reactor;
#[path = "fuzz_replay/state_machine.rs"]
mod state_machine;
#[path = "fuzz_replay/timers.rs"]
mod timers;
#[path = "fuzz_replay/write_queue.rs"]
mod write_queue;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use arbitrary::{Arbitrary, Unstructured};

/// The targets that open sockets count file descriptors, so tests in this file run one at a
/// time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz_corpus")
        .join(target)
}

/// Every seed file of a target, sorted by name.
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no seeds in {}", dir.display());
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).expect("read seed");
            (p, bytes)
        })
        .collect()
}

/// Decodes like `fuzz_target!(|ops: Vec<T>| ..)`: `arbitrary_take_rest`; `None` where
/// libfuzzer-sys would skip the input.
fn decode<T: for<'a> Arbitrary<'a>>(bytes: &[u8]) -> Option<Vec<T>> {
    Vec::<T>::arbitrary_take_rest(Unstructured::new(bytes)).ok()
}

/// xorshift64*: deterministic inputs without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A buffer of up to `max_len` random bytes.
    fn bytes(&mut self, max_len: usize) -> Vec<u8> {
        let len = (self.next() as usize) % (max_len + 1);
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Replays every seed of `target`, then `count` generated inputs of up to `max_len` bytes.
fn replay_all<T: for<'a> Arbitrary<'a>>(
    target: &str,
    count: usize,
    max_len: usize,
    run: impl Fn(&[T]),
) {
    for (path, bytes) in corpus(target) {
        if let Some(ops) = decode::<T>(&bytes) {
            eprintln!("{target}: {} ({} ops)", path.display(), ops.len());
            run(&ops);
        }
    }
    let mut rng = Rng(0x5eed_0000 ^ target.len() as u64 ^ 0x9e37_79b9_7f4a_7c15);
    for _ in 0..count {
        // Operations are taken one after the other until the bytes run out (no "continue"
        // byte between them as in `arbitrary_take_rest`), so the sequences are long.
        let bytes = rng.bytes(max_len);
        let mut u = Unstructured::new(&bytes);
        let mut ops = Vec::new();
        while !u.is_empty() {
            match T::arbitrary(&mut u) {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        run(&ops);
    }
}

#[test]
fn state_machine_replays() {
    let _g = serial();
    replay_all::<state_machine::Operation>("state_machine", 3000, 600, state_machine::replay);
}

#[test]
fn write_queue_replays() {
    let _g = serial();
    replay_all::<write_queue::Operation>("write_queue", 1000, 250, write_queue::replay);
}

#[test]
fn timers_replays() {
    let _g = serial();
    replay_all::<timers::Operation>("timers", 2000, 600, timers::replay);
}

#[test]
fn ids_replays() {
    let _g = serial();
    replay_all::<ids::Operation>("ids", 300, 200, ids::replay);
}

#[test]
fn reactor_replays() {
    let _g = serial();
    replay_all::<reactor::Operation>("reactor", 150, 300, reactor::replay);
}

#[test]
fn http_request_replays() {
    let _g = serial();
    for (path, bytes) in corpus("http_request") {
        eprintln!("http_request: {} ({} bytes)", path.display(), bytes.len());
        http_request::replay(&bytes);
    }
    let mut rng = Rng(0x4854_5450);
    let words: [&[u8]; 14] = [
        b"GET ",
        b"POST ",
        b"/x ",
        b"HTTP/1.1",
        b"HTTP/1.0",
        b"\r\n",
        b"\n",
        b"Host: a",
        b"Content-Length: 12",
        b"Connection: close, keep-alive",
        b"Transfer-Encoding: chunked",
        b":",
        b" \t",
        b"\r",
    ];
    for _ in 0..2000 {
        // Mostly well-formed-looking heads, with random bytes mixed in.
        let mut buf = Vec::new();
        for _ in 0..rng.next() % 24 {
            match rng.next() % 8 {
                0 => buf.push(rng.next() as u8),
                _ => buf.extend_from_slice(words[(rng.next() % words.len() as u64) as usize]),
            }
        }
        http_request::replay(&buf);
        let mut repeated = vec![0xf5];
        repeated.extend_from_slice(&buf);
        http_request::replay(&repeated);
    }
}

// ---- seed corpus -------------------------------------------------------------------------

/// Writes inputs in the encoding `arbitrary` decodes: a "continue" byte before each element
/// of the `Vec`, enum variants as a little-endian `u32` scaled to the variant count, integers
/// little-endian, `bool` as one byte.
#[derive(Default)]
struct Enc {
    buf: Vec<u8>,
    names: Vec<&'static str>,
}

impl Enc {
    /// Starts element `name`, variant `v` of an enum with `n` variants.
    fn op(&mut self, name: &'static str, v: u32, n: u32) -> &mut Self {
        self.buf.push(1);
        self.names.push(name);
        self.variant(v, n)
    }
    /// A nested enum's variant.
    fn variant(&mut self, v: u32, n: u32) -> &mut Self {
        let d = (u64::from(v) << 32).div_ceil(u64::from(n));
        self.buf.extend_from_slice(&(d as u32).to_le_bytes());
        self
    }
    fn u8(&mut self, x: u8) -> &mut Self {
        self.buf.push(x);
        self
    }
    fn u16(&mut self, x: u16) -> &mut Self {
        self.buf.extend_from_slice(&x.to_le_bytes());
        self
    }
    fn i8(&mut self, x: i8) -> &mut Self {
        self.buf.push(x as u8);
        self
    }
    fn bool(&mut self, x: bool) -> &mut Self {
        self.buf.push(u8::from(x));
        self
    }
}

/// Checks that `enc` decodes to the intended operations and returns its bytes.
fn seed<T: for<'a> Arbitrary<'a> + std::fmt::Debug>(enc: &Enc) -> Vec<u8> {
    let ops: Vec<T> = decode(&enc.buf).expect("seed decodes");
    let got: Vec<String> = ops.iter().map(|o| format!("{o:?}")).collect();
    assert_eq!(got.len(), enc.names.len(), "seed decodes to {got:?}");
    for (g, name) in got.iter().zip(&enc.names) {
        assert!(g.starts_with(name), "seed op {g} is not {name}: {got:?}");
    }
    enc.buf.clone()
}

/// State machine operation variants, in declaration order (23 of them).
mod sm {
    pub const N: u32 = 23;
    pub const CONFIG: u32 = 0;
    pub const WRITE: u32 = 1;
    pub const END: u32 = 4;
    pub const DESTROY: u32 = 6;
    pub const DESTROY_SOON: u32 = 7;
    pub const RESET: u32 = 8;
    pub const PAUSE: u32 = 9;
    pub const WRITTEN: u32 = 11;
    pub const WRITTEN_ALL: u32 = 12;
    pub const READ: u32 = 14;
    pub const EOF: u32 = 15;
    pub const CONNECTED: u32 = 18;
    pub const CONNECT_FAILED: u32 = 19;
    pub const DEADLINE: u32 = 20;
    pub const SHUTDOWN_OUTCOME: u32 = 21;
    pub const DELIVER_END: u32 = 22;
    pub const IO_KINDS: u32 = 7;
    pub const DEADLINES: u32 = 4;
}

fn state_machine_seeds() -> Vec<Vec<u8>> {
    use sm::*;
    type Op = state_machine::Operation;
    let config = |e: &mut Enc, connecting: bool, half_open: bool, hwm: u8| {
        e.op("Config", CONFIG, N)
            .bool(connecting)
            .bool(half_open)
            .u8(hwm);
    };
    let mut seeds = Vec::new();
    // 1. Accepted: write (part sent directly), flush, end, FIN, peer FIN: graceful.
    let mut e = Enc::default();
    e.op("Write", WRITE, N).u8(40).u8(10);
    e.op("Written", WRITTEN, N).u16(5);
    e.op("End", END, N);
    e.op("WrittenAll", WRITTEN_ALL, N);
    e.op("Eof", EOF, N);
    seeds.push(seed::<Op>(&e));
    // 2. Connecting: write and end before the connect completes.
    let mut e = Enc::default();
    config(&mut e, true, false, 7);
    e.op("Write", WRITE, N).u8(20).u8(0);
    e.op("End", END, N);
    e.op("Connected", CONNECTED, N);
    e.op("WrittenAll", WRITTEN_ALL, N);
    e.op("Eof", EOF, N);
    seeds.push(seed::<Op>(&e));
    // 3. Half-open: peer FIN, keep writing, end; the FIN fails with EPIPE.
    let mut e = Enc::default();
    config(&mut e, false, true, 15);
    e.op("Read", READ, N).u16(100);
    e.op("Eof", EOF, N);
    e.op("DeliverEnd", DELIVER_END, N);
    e.op("Write", WRITE, N).u8(30).u8(30);
    e.op("End", END, N);
    e.op("ShutdownOutcome", SHUTDOWN_OUTCOME, N)
        .variant(1, 2)
        .variant(1, IO_KINDS);
    seeds.push(seed::<Op>(&e));
    // 4. destroy_soon while paused: input is discarded, then the lingering close completes.
    let mut e = Enc::default();
    e.op("Write", WRITE, N).u8(50).u8(0);
    e.op("Pause", PAUSE, N);
    e.op("DestroySoon", DESTROY_SOON, N);
    e.op("Read", READ, N).u16(20);
    e.op("WrittenAll", WRITTEN_ALL, N);
    e.op("Eof", EOF, N);
    seeds.push(seed::<Op>(&e));
    // 5. Over the high-water mark, end, then reset: unsent counted.
    let mut e = Enc::default();
    e.op("Write", WRITE, N).u8(200).u8(0);
    e.op("Written", WRITTEN, N).u16(77);
    e.op("End", END, N);
    e.op("Reset", RESET, N);
    seeds.push(seed::<Op>(&e));
    // 6. FIN sent, the peer never answers: the FIN-wait deadline.
    let mut e = Enc::default();
    e.op("End", END, N);
    e.op("Deadline", DEADLINE, N).variant(1, DEADLINES);
    seeds.push(seed::<Op>(&e));
    // 7. Refused connect.
    let mut e = Enc::default();
    config(&mut e, true, false, 0);
    e.op("ConnectFailed", CONNECT_FAILED, N)
        .variant(4, IO_KINDS);
    seeds.push(seed::<Op>(&e));
    // 8. Peer FIN with bytes queued: auto-end waits for the flush; then destroy with error.
    let mut e = Enc::default();
    e.op("Write", WRITE, N).u8(64).u8(0);
    e.op("Eof", EOF, N);
    e.op("DeliverEnd", DELIVER_END, N);
    e.op("Written", WRITTEN, N).u16(10);
    e.op("Destroy", DESTROY, N).bool(true);
    seeds.push(seed::<Op>(&e));
    seeds
}

fn write_queue_seeds() -> Vec<Vec<u8>> {
    type Op = write_queue::Operation;
    const N: u32 = 6;
    let mut seeds = Vec::new();
    let mut e = Enc::default();
    e.op("Push", 0, N).u16(10);
    e.op("Push", 0, N).u16(4090);
    e.op("PushOwned", 1, N).u16(300);
    e.op("Fill", 2, N).u8(2);
    e.op("Advance", 3, N).u16(4095);
    e.op("AdvanceFilled", 4, N);
    seeds.push(seed::<Op>(&e));
    let mut e = Enc::default();
    for _ in 0..70 {
        e.op("PushOwned", 1, N).u16(3);
    }
    e.op("Fill", 2, N).u8(66);
    e.op("Advance", 3, N).u16(100);
    e.op("Clear", 5, N);
    seeds.push(seed::<Op>(&e));
    let mut e = Enc::default();
    e.op("Push", 0, N).u16(0);
    e.op("Push", 0, N).u16(1);
    e.op("Advance", 3, N).u16(5);
    e.op("Push", 0, N).u16(4999);
    e.op("Advance", 3, N).u16(4998);
    e.op("Push", 0, N).u16(2);
    e.op("Fill", 2, N).u8(1);
    seeds.push(seed::<Op>(&e));
    seeds
}

fn timers_seeds() -> Vec<Vec<u8>> {
    type Op = timers::Operation;
    const N: u32 = 10;
    let mut seeds = Vec::new();
    let mut e = Enc::default();
    e.op("ArmIdle", 0, N).u8(20);
    e.op("ArmDeadline", 2, N).i8(30);
    e.op("Advance", 7, N).u8(15);
    e.op("Touch", 3, N).u8(0);
    e.op("Advance", 7, N).u8(20);
    e.op("Expire", 9, N);
    e.op("AdvanceToWakeup", 8, N);
    e.op("Expire", 9, N);
    seeds.push(seed::<Op>(&e));
    let mut e = Enc::default();
    e.op("ArmDeadline", 2, N).i8(-5);
    e.op("ArmIdle", 0, N).u8(0);
    e.op("Cancel", 5, N).u8(0);
    e.op("ArmDeadline", 2, N).i8(1);
    e.op("Stale", 6, N).u8(0);
    e.op("Expire", 9, N);
    e.op("ArmIdleForever", 1, N);
    e.op("Advance", 7, N).u8(255);
    e.op("Expire", 9, N);
    seeds.push(seed::<Op>(&e));
    let mut e = Enc::default();
    e.op("ArmIdle", 0, N).u8(10);
    e.op("Advance", 7, N).u8(10);
    e.op("Expire", 9, N);
    e.op("Advance", 7, N).u8(30);
    e.op("Expire", 9, N);
    e.op("TouchEarlier", 4, N).u8(0).u8(5);
    e.op("AdvanceToWakeup", 8, N);
    e.op("Expire", 9, N);
    seeds.push(seed::<Op>(&e));
    seeds
}

fn ids_seeds() -> Vec<Vec<u8>> {
    type Op = ids::Operation;
    const N: u32 = 3;
    const CALLS: u32 = 9;
    let call = |e: &mut Enc, pick: u8, c: u32| {
        e.op("Call", 1, N).u8(pick).variant(c, CALLS);
    };
    let mut seeds = Vec::new();
    let mut e = Enc::default();
    e.op("Connect", 0, N);
    e.op("RunOnce", 2, N);
    e.op("RunOnce", 2, N);
    call(&mut e, 0, 2); // destroy the client
    e.op("RunOnce", 2, N);
    e.op("Connect", 0, N); // reuses the slot
    call(&mut e, 0, 0); // stale write
    e.u8(5);
    call(&mut e, 0, 8); // stale query
    e.op("RunOnce", 2, N);
    call(&mut e, 2, 8);
    seeds.push(seed::<Op>(&e));
    let mut e = Enc::default();
    for _ in 0..3 {
        e.op("Connect", 0, N);
    }
    e.op("RunOnce", 2, N);
    call(&mut e, 3, 4); // reset an accepted socket
    call(&mut e, 1, 1); // end
    e.op("RunOnce", 2, N);
    e.op("RunOnce", 2, N);
    e.op("RunOnce", 2, N);
    call(&mut e, 3, 5);
    call(&mut e, 3, 7);
    seeds.push(seed::<Op>(&e));
    let mut e = Enc::default();
    e.op("Connect", 0, N);
    call(&mut e, 0, 2);
    call(&mut e, 0, 2); // destroyed, not reclaimed
    e.op("RunOnce", 2, N);
    call(&mut e, 0, 3); // stale destroy_soon
    seeds.push(seed::<Op>(&e));
    seeds
}

fn reactor_seeds() -> Vec<Vec<u8>> {
    type Op = reactor::Operation;
    const N: u32 = 11;
    const LOCAL: u32 = 7;
    let local = |e: &mut Enc, peer: u8, c: u32| -> () {
        e.op("Local", 6, N).u8(peer).variant(c, LOCAL);
    };
    let mut seeds = Vec::new();
    // Request/response, then the server ends.
    let mut e = Enc::default();
    e.op("PeerConnect", 1, N);
    e.op("Run", 7, N);
    e.op("PeerWrite", 2, N).u8(0).u16(100);
    e.op("Run", 7, N);
    local(&mut e, 0, 0);
    e.buf.extend_from_slice(&5000u16.to_le_bytes());
    local(&mut e, 0, 1);
    e.op("Run", 7, N);
    e.op("PeerRead", 3, N).u8(0).u16(4000);
    seeds.push(seed::<Op>(&e));
    // The peer sends data the server never reads, then the server lingers (destroy_soon).
    let mut e = Enc::default();
    e.op("Config", 0, N).bool(false).u8(3).u8(0);
    e.op("PeerConnect", 1, N);
    e.op("Run", 7, N);
    local(&mut e, 0, 4); // pause
    e.op("PeerWrite", 2, N).u8(0).u16(9000);
    local(&mut e, 0, 0);
    e.buf.extend_from_slice(&700u16.to_le_bytes());
    local(&mut e, 0, 2); // destroy_soon
    e.op("Run", 7, N);
    e.op("PeerShutdown", 4, N).u8(0);
    e.op("Run", 7, N);
    seeds.push(seed::<Op>(&e));
    // Two peers: one resets while data is queued, the other half-closes first.
    let mut e = Enc::default();
    e.op("Config", 0, N).bool(true).u8(0).u8(4 | 1);
    e.op("PeerConnect", 1, N);
    e.op("PeerConnect", 1, N);
    e.op("Run", 7, N);
    local(&mut e, 0, 0);
    e.buf.extend_from_slice(&8000u16.to_le_bytes());
    e.op("PeerReset", 5, N).u8(0);
    e.op("PeerShutdown", 4, N).u8(1);
    e.op("Run", 7, N);
    local(&mut e, 1, 0);
    e.buf.extend_from_slice(&10u16.to_le_bytes());
    e.op("Run", 7, N);
    seeds.push(seed::<Op>(&e));
    // reset_and_destroy after end, and a plain destroy.
    let mut e = Enc::default();
    e.op("PeerConnect", 1, N);
    e.op("PeerConnect", 1, N);
    e.op("Run", 7, N);
    local(&mut e, 0, 1);
    local(&mut e, 0, 3);
    local(&mut e, 1, 6);
    e.op("Run", 7, N);
    seeds.push(seed::<Op>(&e));
    // Graceful listener shutdown with one connection still in the backlog.
    let mut e = Enc::default();
    e.op("Config", 0, N).bool(false).u8(10).u8(1);
    e.op("PeerConnect", 1, N);
    e.op("PeerConnect", 1, N);
    e.op("Run", 7, N);
    e.op("PeerWrite", 2, N).u8(0).u16(300);
    e.op("ShutdownListener", 8, N).u8(20);
    e.op("Run", 7, N);
    e.op("PeerRead", 3, N).u8(0).u16(1000);
    e.op("CloseListener", 9, N);
    seeds.push(seed::<Op>(&e));
    // Peer resets (B2.7), each reported as Error + Close(PeerReset) with no call from the
    // program after the RST. Local calls: 0 write, 1 end, 2 destroy_soon, 4 pause, 6 destroy.
    // One connection is accepted per turn: two turns after two connects. Config's limits
    // bit 3 (8) shrinks the kernel buffers so that local writes stay queued.
    let write = |e: &mut Enc, peer: u8, len: u16| {
        local(e, peer, 0);
        e.u16(len);
    };
    // 5. Paused, with unread input in the kernel.
    let mut e = Enc::default();
    e.op("PeerConnect", 1, N);
    e.op("Run", 7, N);
    local(&mut e, 0, 4);
    e.op("PeerWrite", 2, N).u8(0).u16(5000);
    e.op("Run", 7, N);
    e.op("PeerReset", 5, N).u8(0);
    e.op("Run", 7, N);
    seeds.push(seed::<Op>(&e));
    // 6. Half-closed remote: allow_half_open, 8 bytes and the peer's FIN, the program does
    // nothing; then the RST. And a second peer the same, paused with bytes queued.
    let mut e = Enc::default();
    e.op("Config", 0, N).bool(true).u8(0).u8(8);
    e.op("PeerConnect", 1, N);
    e.op("PeerConnect", 1, N);
    e.op("Run", 7, N);
    e.op("Run", 7, N);
    e.op("PeerWrite", 2, N).u8(0).u16(8);
    e.op("PeerShutdown", 4, N).u8(0);
    e.op("PeerShutdown", 4, N).u8(1);
    e.op("Run", 7, N);
    local(&mut e, 1, 4);
    for _ in 0..4 {
        write(&mut e, 1, 8191);
    }
    e.op("Run", 7, N);
    e.op("PeerReset", 5, N).u8(0);
    e.op("PeerReset", 5, N).u8(1);
    e.op("Run", 7, N);
    seeds.push(seed::<Op>(&e));
    // 7. Half-closed local: after end() (FIN sent), and after end() then pause().
    let mut e = Enc::default();
    e.op("PeerConnect", 1, N);
    e.op("PeerConnect", 1, N);
    e.op("Run", 7, N);
    e.op("Run", 7, N);
    local(&mut e, 0, 1);
    local(&mut e, 1, 1);
    local(&mut e, 1, 4);
    e.op("Run", 7, N);
    e.op("PeerWrite", 2, N).u8(1).u16(100);
    e.op("Run", 7, N);
    e.op("PeerReset", 5, N).u8(0);
    e.op("PeerReset", 5, N).u8(1);
    e.op("Run", 7, N);
    seeds.push(seed::<Op>(&e));
    // 8. Lingering: destroy_soon while the peer keeps sending, then the RST; a second
    // lingering socket still flushing its queue (small buffers).
    let mut e = Enc::default();
    e.op("Config", 0, N).bool(false).u8(0).u8(8);
    e.op("PeerConnect", 1, N);
    e.op("PeerConnect", 1, N);
    e.op("Run", 7, N);
    e.op("Run", 7, N);
    e.op("PeerWrite", 2, N).u8(0).u16(3000);
    local(&mut e, 0, 4);
    local(&mut e, 0, 2);
    for _ in 0..4 {
        write(&mut e, 1, 8191);
    }
    local(&mut e, 1, 2);
    e.op("Run", 7, N);
    e.op("PeerWrite", 2, N).u8(0).u16(3000);
    e.op("PeerReset", 5, N).u8(0);
    e.op("PeerReset", 5, N).u8(1);
    e.op("Run", 7, N);
    seeds.push(seed::<Op>(&e));
    // 9. Bytes queued (small buffers, the peers read nothing): one peer resets while open,
    // the other after end() left its FIN pending behind the queue.
    let mut e = Enc::default();
    e.op("Config", 0, N).bool(false).u8(0).u8(8);
    e.op("PeerConnect", 1, N);
    e.op("PeerConnect", 1, N);
    e.op("Run", 7, N);
    e.op("Run", 7, N);
    for _ in 0..4 {
        write(&mut e, 0, 8191);
        write(&mut e, 1, 8191);
    }
    local(&mut e, 1, 1);
    e.op("Run", 7, N);
    e.op("PeerReset", 5, N).u8(0);
    e.op("PeerReset", 5, N).u8(1);
    e.op("Run", 7, N);
    seeds.push(seed::<Op>(&e));
    // 10. A reset in the backlog (max_connections 1), accepted once the first socket closes.
    let mut e = Enc::default();
    e.op("Config", 0, N).bool(false).u8(0).u8(1);
    e.op("PeerConnect", 1, N);
    e.op("PeerConnect", 1, N);
    e.op("Run", 7, N);
    e.op("PeerWrite", 2, N).u8(1).u16(10);
    e.op("PeerReset", 5, N).u8(1);
    local(&mut e, 0, 6);
    e.op("Run", 7, N);
    e.op("Run", 7, N);
    seeds.push(seed::<Op>(&e));
    // 11. No RST at all: both FINs exchanged before the peer's close (its socket is CLOSE),
    // so the socket closes Graceful, never PeerReset. Then a reset overtaken by the
    // program's end() (any one Close will do).
    let mut e = Enc::default();
    e.op("PeerConnect", 1, N);
    e.op("PeerConnect", 1, N);
    e.op("Run", 7, N);
    e.op("Run", 7, N);
    local(&mut e, 0, 1);
    e.op("PeerShutdown", 4, N).u8(0);
    e.op("PeerReset", 5, N).u8(0);
    e.op("PeerReset", 5, N).u8(1);
    local(&mut e, 1, 1);
    e.op("Run", 7, N);
    seeds.push(seed::<Op>(&e));
    // A group exit: a sibling listener on the same address (SO_REUSEPORT) leaves while four
    // connects wait, spread over both accept queues; then the first listener closes with
    // more connects in flight. Nothing queued may be lost or reset.
    let mut e = Enc::default();
    e.op("Config", 0, N).bool(false).u8(0).u8(16);
    e.op("PeerConnect", 1, N);
    e.op("PeerConnect", 1, N);
    e.op("PeerWrite", 2, N).u8(0).u16(100);
    e.op("PeerWrite", 2, N).u8(1).u16(100);
    e.op("SiblingLeaves", 10, N).u8(50);
    e.op("PeerConnect", 1, N);
    e.op("Run", 7, N);
    e.op("PeerConnect", 1, N);
    e.op("CloseListener", 9, N);
    e.op("Run", 7, N);
    e.op("PeerRead", 3, N).u8(0).u16(4000);
    e.op("Run", 7, N);
    seeds.push(seed::<Op>(&e));
    seeds
}

fn http_request_seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = vec![
        b"GET /index.html HTTP/1.1\r\nHost: example.com\r\n\r\n".to_vec(),
        b"POST /a HTTP/1.1\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhelloGET /b HTTP/1.0\r\n\r\n".to_vec(),
        b"\r\n\nGET / HTTP/1.0\nConnection: Keep-Alive, close\nContent-Length: 3, 3\n\n".to_vec(),
        b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
        b"GET  / HTTP/1.1\r\n\r\n".to_vec(),
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(),
    ];
    // Repeated to beyond MAX_HEAD by the replay (first byte >= 0xf0): a 431.
    seeds.push(b"\xf5X-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n".to_vec());
    // Too many header fields.
    let mut many = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..101 {
        many.extend_from_slice(format!("h{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    seeds.push(many);
    seeds
}

/// Regenerates `tests/fuzz_corpus/*/seed-*` (run with `FINWAIT_WRITE_SEEDS=1` and `--ignored`).
/// Without the variable it only checks that every seed still decodes as intended.
#[test]
#[ignore = "writes the seed corpus; run on purpose"]
fn write_seed_corpus() {
    let all: [(&str, Vec<Vec<u8>>); 6] = [
        ("state_machine", state_machine_seeds()),
        ("write_queue", write_queue_seeds()),
        ("timers", timers_seeds()),
        ("ids", ids_seeds()),
        ("reactor", reactor_seeds()),
        ("http_request", http_request_seeds()),
    ];
    if std::env::var_os("FINWAIT_WRITE_SEEDS").is_none() {
        return;
    }
    for (target, seeds) in all {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).expect("corpus dir");
        for (i, bytes) in seeds.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:02}")), bytes).expect("write seed");
        }
    }
}
