#![no_main]

// str0m panics that the server's own catch_unwind contains are not crashes here either.
libfuzzer_sys::fuzz_target!(
    init: privatehub_fuzz_entry::let_contained_panics_unwind(),
    |data: &[u8]| privatehub_fuzz_entry::sdp_offer(data)
);
