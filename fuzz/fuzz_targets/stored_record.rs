#![no_main]
//! Fuzz target: see `locker_node::fuzzing::stored_record`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    locker_node::fuzzing::stored_record(data);
});
