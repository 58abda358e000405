#![no_main]
//! Fuzz target: see `locker_node::fuzzing::peer_message`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    locker_node::fuzzing::peer_message(data);
});
