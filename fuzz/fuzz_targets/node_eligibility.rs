//! Nodes as Kilo annotates them (and as anyone with access to a Node can
//! edit them), through node eligibility and the whole plan of a three-
//! cluster mesh: the input is a scenario (`kcm_fuzz::scenario`) of nodes,
//! annotations, spec.podCIDRs, existing Peers and operator settings.
#![no_main]

use kcm_fuzz::{invariants::checked_plan, mesh_spec, scenario};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let world = scenario::parse(text);
    let plan = checked_plan(mesh_spec(), &world.settings, &world.observations);
    assert!(
        plan.report.spec_errors.is_empty(),
        "the fixed spec is valid"
    );
    // Every node is peered or skipped with a reason that renders.
    for report in &plan.report.clusters {
        for skipped in &report.skipped {
            assert!(
                !skipped
                    .reason
                    .message(&report.name, &skipped.name)
                    .is_empty()
            );
        }
    }
});
