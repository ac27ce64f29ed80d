#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| p2p_router::fuzzing::address(data));
