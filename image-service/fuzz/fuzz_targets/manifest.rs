//! Manifests, indexes and configs as a registry (untrusted) serves them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    image_service::fuzzing::manifest_document(data);
});
