#![no_main]
//! Fuzz target: see `locker_node::fuzzing::request_input`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    locker_node::fuzzing::request_input(data);
});
