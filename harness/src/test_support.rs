//! What the library's own unit tests share: the one rule for a missing precondition (a tool, root).

/// A test's precondition: true when it holds. When it does not, under `CI=true` the test fails
/// with the reason (CI must never pass what it did not test); elsewhere it says SKIPPED loudly
/// and the caller returns.
pub fn require(ok: bool, reason: &str) -> bool {
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true and a precondition is missing: {reason}"
        );
        eprintln!("\n*** SKIPPED ({reason}) ***\n");
    }
    ok
}
