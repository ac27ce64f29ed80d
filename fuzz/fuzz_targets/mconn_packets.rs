#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| p2p_transport_mconn::fuzzing::packets(data));
