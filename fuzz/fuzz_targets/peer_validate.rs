//! Kilo's Peer checks (`PeerSpec::validate`) on any Peer spec a cluster may
//! hold (JSON, as the API server serves it): never a panic, the same answer
//! twice, and a valid Peer is still valid, and the same, once written out
//! and read back (the operator compares what it reads with what it wrote).
#![no_main]

use api::PeerSpec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = serde_json::from_slice::<PeerSpec>(data) else {
        return;
    };
    let verdict = spec.validate();
    assert_eq!(verdict, spec.validate());
    if let Err(why) = &verdict {
        assert!(!why.to_string().is_empty());
        return;
    }
    let json = serde_json::to_vec(&spec).expect("a PeerSpec serializes");
    let read: PeerSpec = serde_json::from_slice(&json).expect("what was written reads back");
    assert_eq!(read, spec);
    assert_eq!(read.validate(), Ok(()));
});
