#![no_main]

#[path = "../../tests/fuzz_replay/timers.rs"]
mod replay;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|ops: Vec<replay::Operation>| replay::replay(&ops));
