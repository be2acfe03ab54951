//! Why a container's start stopped, as a type: only the kernel's answer to a call of the
//! strategy's own syscall sequence can make a cell `unsupported`; anything that goes wrong in the
//! agent's own machinery (its userns helpers and their pipes, its bookkeeping, a worker thread)
//! is a bug of ours and the cell `fail`s with "agent error" in its evidence, whatever errno came
//! with it. A runtime's cell stops for the runtime's reasons ([`RuntimeCause`]): its `error`
//! answer with the kernel's errno is read like a built-in strategy's failing call; a crash,
//! garbage or a hang is the runtime's failure.

use crate::sys::SysError;

/// What stopped a container's start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// A call of the strategy's sequence (ARCHITECTURE.md, "The three strategies") returned an
    /// errno: the step is the call.
    Kernel(SysError),
    /// The agent's own machinery failed.
    Agent(AgentError),
    /// The runtime under test answered `error`, broke the contract or went silent.
    Runtime(RuntimeCause),
}

/// What went wrong with a runtime (`mounts::runtime`). Texts are the runtime's own words with
/// the run's paths replaced by `<run>`, so one answer reads the same in every cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeCause {
    /// The executable could not be started (missing, not executable): our side (`infra-error`).
    Start {
        what: String,
        errno: Option<i32>,
        detail: String,
    },
    /// An `error` answer: the step the runtime names, the kernel's errno when a call failed.
    Error {
        step: String,
        errno: Option<i32>,
        message: String,
    },
    /// No answer within the per-job limit: the runtime was killed (`timeout`). `what` is
    /// stable; `detail` says which job and how its stderr ends.
    Hung { what: String, detail: String },
    /// It crashed, exited, wrote garbage or answered the wrong job (`fail`).
    Broke { what: String, detail: String },
}

/// A failure of the agent's own machinery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentError {
    /// A call outside the strategy's sequence: making or talking to the userns helper, opening
    /// the container's directory, reading the mount table for a check.
    Call(SysError),
    /// Bookkeeping that must not happen (a helper taken twice, a plan without its common
    /// directory): a bug.
    Bug(String),
    /// A worker thread panicked.
    Panic(String),
    /// The test hook `MMX_AGENT_TEST_HOOK=agent-error` (see [`super::TestHooks`]).
    Injected,
}

impl Cause {
    /// A call of the agent's machinery failed.
    pub fn agent(e: SysError) -> Cause {
        Cause::Agent(AgentError::Call(e))
    }

    /// Bookkeeping that must not happen.
    pub fn bug(what: impl Into<String>) -> Cause {
        Cause::Agent(AgentError::Bug(what.into()))
    }

    /// Add a variable detail (which layer, which path) to the failure.
    pub fn context(self, more: impl AsRef<str>) -> Cause {
        match self {
            Cause::Kernel(e) => Cause::Kernel(e.context(more)),
            Cause::Agent(AgentError::Call(e)) => Cause::Agent(AgentError::Call(e.context(more))),
            other => other,
        }
    }
}

impl AgentError {
    /// The stable step (no paths, pids or fd numbers) and the variable detail.
    pub fn step_and_detail(&self) -> (String, String, Option<i32>) {
        match self {
            AgentError::Call(e) => (
                e.call.clone(),
                e.context.clone(),
                (e.errno != 0).then_some(e.errno),
            ),
            AgentError::Bug(what) => ("bookkeeping".into(), what.clone(), None),
            AgentError::Panic(msg) => ("worker thread panicked".into(), msg.clone(), None),
            AgentError::Injected => (
                "injected internal error".into(),
                "MMX_AGENT_TEST_HOOK=agent-error".into(),
                // What an internal error used to look like: the errno that once passed for the
                // kernel's "unsupported".
                Some(libc::EINVAL),
            ),
        }
    }
}
