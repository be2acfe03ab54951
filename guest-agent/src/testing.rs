//! What the agent's unit tests share: the rule for a missing precondition (not root, no
//! overlay). A test must not pass untested: with `CI=true` it fails with the reason; elsewhere it
//! says loudly that it is skipped, and returns.

/// Whether `test` can run: true when `cond` holds; otherwise fail under `CI=true`, or print a
/// loud SKIPPED line with the reason and return false.
pub fn require(cond: bool, test: &str, reason: &str) -> bool {
    if cond {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: {reason} (CI=true: a test whose precondition is missing fails)"
    );
    eprintln!("\n*** {test}: SKIPPED ({reason}) ***\n");
    false
}

/// True as root; otherwise [`require`]'s verdict.
pub fn require_root(test: &str, why: &str) -> bool {
    require(
        rustix::process::geteuid().is_root(),
        test,
        &format!("needs root: {why}"),
    )
}
