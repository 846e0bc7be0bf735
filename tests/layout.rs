//! The layout rules the code keeps: no module imports another that imports it back, directly or
//! through others, in any crate of the workspace (issue 19). `tests/py/module_cycles.py` reads the
//! `crate::`/`super::`/`self::` imports of each crate's sources and prints any cycle.

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let python = test_support::expect::python_with("re");
    let root = env!("CARGO_MANIFEST_DIR");
    let crates = ["operators/src", "src", "dev/dev-mongo/src", "dev/dev-tei/src", "dev/test-support/src"];
    let out = std::process::Command::new(python)
        .arg(format!("{root}/tests/py/module_cycles.py"))
        .args(crates.iter().map(|c| format!("{root}/{c}")))
        .output()
        .expect("run tests/py/module_cycles.py");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "module cycles:\n{printed}{}", String::from_utf8_lossy(&out.stderr));
}
