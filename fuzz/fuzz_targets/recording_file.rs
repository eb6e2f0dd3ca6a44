#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| privatehub_fuzz_entry::recording_file(data));
