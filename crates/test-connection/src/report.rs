//! One line per check: `PASS  name  reason`, or `FAIL  name  reason; hint: ...`.

use std::fmt;

/// Outcome of one check. Only `Fail` makes the tool exit non-zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pass,
    /// Works from here, but looks wrong for clients elsewhere.
    Warn,
    Fail,
    /// Not run because an earlier check failed.
    Skip,
}

impl fmt::Display for Status {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.pad(match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        })
    }
}

/// The result of one check, printed as one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// Short fixed name, e.g. `media health` or `rtc udp/40000`.
    pub name: String,
    pub status: Status,
    /// What was observed.
    pub reason: String,
    /// What to do about it; empty when nothing is needed.
    pub hint: String,
}

impl CheckResult {
    pub fn new(
        name: impl Into<String>,
        status: Status,
        reason: impl Into<String>,
        hint: impl Into<String>,
    ) -> CheckResult {
        CheckResult {
            name: name.into(),
            status,
            reason: reason.into(),
            hint: hint.into(),
        }
    }

    pub fn pass(name: impl Into<String>, reason: impl Into<String>) -> CheckResult {
        CheckResult::new(name, Status::Pass, reason, "")
    }

    pub fn fail(
        name: impl Into<String>,
        reason: impl Into<String>,
        hint: impl Into<String>,
    ) -> CheckResult {
        CheckResult::new(name, Status::Fail, reason, hint)
    }
}

impl fmt::Display for CheckResult {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keep each check on one line even if a server put newlines in its answer.
        let reason = self.reason.replace(['\r', '\n'], " ");
        write!(formatter, "{:<4}  {:<18} {reason}", self.status, self.name)?;
        if !self.hint.is_empty() {
            write!(formatter, "; hint: {}", self.hint)?;
        }
        Ok(())
    }
}

/// All results, in the order the checks ran.
#[derive(Debug, Default)]
pub struct Report {
    pub results: Vec<CheckResult>,
}

impl Report {
    pub fn push(&mut self, result: CheckResult) {
        self.results.push(result);
    }

    pub fn count(&self, status: Status) -> usize {
        self.results.iter().filter(|r| r.status == status).count()
    }

    /// `true` when no check failed.
    pub fn ok(&self) -> bool {
        self.count(Status::Fail) == 0
    }

    /// `3 passed, 1 warning, 1 failed, 0 skipped`.
    pub fn summary(&self) -> String {
        format!(
            "{} passed, {} warnings, {} failed, {} skipped",
            self.count(Status::Pass),
            self.count(Status::Warn),
            self.count(Status::Fail),
            self.count(Status::Skip)
        )
    }
}
