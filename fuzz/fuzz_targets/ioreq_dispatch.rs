//! The ioreq-server runtime's request logic with any synchronous requests and any buffered
//! page (see `xen_devicemodel::server::fuzzing`, built with `--cfg fuzzing`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    xen_devicemodel::server::fuzzing::ioreqs(data);
});
