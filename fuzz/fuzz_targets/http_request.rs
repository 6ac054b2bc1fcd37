#![no_main]

#[path = "../../tests/fuzz_replay/http_request.rs"]
mod replay;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| replay::replay(data));
