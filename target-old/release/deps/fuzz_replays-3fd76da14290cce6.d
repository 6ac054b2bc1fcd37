/work/wt/target-old/release/deps/fuzz_replays-3fd76da14290cce6.d: tests/fuzz_replays.rs tests/fuzz_replay/http_request.rs tests/fuzz_replay/../../examples/http/request.rs tests/fuzz_replay/ids.rs tests/fuzz_replay/reactor.rs tests/fuzz_replay/state_machine.rs tests/fuzz_replay/timers.rs tests/fuzz_replay/write_queue.rs

/work/wt/target-old/release/deps/fuzz_replays-3fd76da14290cce6: tests/fuzz_replays.rs tests/fuzz_replay/http_request.rs tests/fuzz_replay/../../examples/http/request.rs tests/fuzz_replay/ids.rs tests/fuzz_replay/reactor.rs tests/fuzz_replay/state_machine.rs tests/fuzz_replay/timers.rs tests/fuzz_replay/write_queue.rs

tests/fuzz_replays.rs:
tests/fuzz_replay/http_request.rs:
tests/fuzz_replay/../../examples/http/request.rs:
tests/fuzz_replay/ids.rs:
tests/fuzz_replay/reactor.rs:
tests/fuzz_replay/state_machine.rs:
tests/fuzz_replay/timers.rs:
tests/fuzz_replay/write_queue.rs:

# env-dep:CARGO_MANIFEST_DIR=/tmp/oldwt
