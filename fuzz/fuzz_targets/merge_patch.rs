//! A JSON merge patch applied to a YAML document, as a PATCH does: the
//! bytes before the first NUL are the document, the rest the patch. Never
//! panics; the patch is idempotent; the patched document written out as
//! YAML reads back unchanged, or is refused only for its depth.
#![no_main]

use chartsync_fuzz::{depth, split, text};
use chartsync_merge::{
    MAX_DEPTH, YamlError, apply_merge_patch, parse_json_exact, parse_yaml, stale_patch_conflicts,
    to_yaml,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parts = split(data, 2);
    let Ok(doc) = parse_yaml(&text(parts[0])) else {
        return;
    };
    let Ok(patch) = parse_json_exact(parts[1]) else {
        return;
    };
    let patched = apply_merge_patch(&doc, &patch);
    assert_eq!(
        apply_merge_patch(&patched, &patch),
        patched,
        "not idempotent"
    );
    assert!(
        stale_patch_conflicts(Some(&doc), Some(&doc), &patch).is_empty(),
        "a patch against an unchanged version conflicts"
    );
    let written = to_yaml(&patched);
    match parse_yaml(&written) {
        Ok(back) => {
            assert_eq!(back, patched, "does not read back:\n{written}");
            assert!(depth(&patched) <= MAX_DEPTH);
        }
        Err(YamlError::TooDeep { .. }) => assert!(depth(&patched) > MAX_DEPTH),
        Err(e) => panic!("to_yaml wrote what parse_yaml refuses: {e}\n{written}"),
    }
});
