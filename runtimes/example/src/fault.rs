//! Chosen failures, so mmx's tests can see every way a runtime goes wrong: an `error` answer
//! with an errno on a named step, a crash, a hang, a garbage answer, a leaked mount.

use std::fmt;
use std::str::FromStr;

/// Environment variable that selects a fault when `--fault` is not given.
pub const FAULT_ENV: &str = "MMX_EXAMPLE_FAULT";

/// Where in a job a fault strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Making the container's user namespace from the id maps.
    Userns,
    /// Idmapping the layers (before the first one).
    Idmap,
    /// Mounting the overlay (after every layer is idmapped and attached).
    Overlay,
    /// An unmount job.
    Unmount,
}

impl Step {
    const ALL: [(&'static str, Step); 4] = [
        ("userns", Step::Userns),
        ("idmap", Step::Idmap),
        ("overlay", Step::Overlay),
        ("unmount", Step::Unmount),
    ];

    pub fn name(self) -> &'static str {
        Step::ALL
            .iter()
            .find(|(_, s)| *s == self)
            .map_or("?", |(n, _)| n)
    }
}

impl FromStr for Step {
    type Err = String;
    fn from_str(s: &str) -> Result<Step, String> {
        Step::ALL
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, step)| *step)
            .ok_or_else(|| format!("unknown step `{s}` (userns, idmap, overlay, unmount)"))
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The fault this process injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// At `step`, undo what the job did and answer `error` with `errno` instead of making the
    /// call.
    Error {
        step: Step,
        errno: i32,
    },
    /// abort() at `step` (whatever is attached stays attached).
    Crash(Step),
    /// Sleep forever at `step`.
    Hang(Step),
    /// Answer every job with a line that is not JSON.
    Garbage,
    /// Answer unmount jobs `ok` without unmounting.
    Leak,
}

impl Fault {
    /// `--fault SPEC` in `args`, else `$MMX_EXAMPLE_FAULT`, else none.
    pub fn from_args_and_env(args: &[String]) -> Result<Fault, String> {
        match args {
            [] => match std::env::var(FAULT_ENV) {
                Ok(spec) if !spec.is_empty() => {
                    spec.parse().map_err(|e| format!("{FAULT_ENV}={spec}: {e}"))
                }
                _ => Ok(Fault::None),
            },
            [flag, spec] if flag == "--fault" => {
                spec.parse().map_err(|e| format!("--fault {spec}: {e}"))
            }
            _ => Err(format!(
                "usage: mmx-example-runtime [--fault SPEC] (got {args:?}); SPEC is error:STEP:ERRNO, crash:STEP, hang:STEP, garbage or leak"
            )),
        }
    }

    /// Whether this fault strikes at `step` (error, crash and hang do).
    pub fn at(&self, step: Step) -> Option<&Fault> {
        match self {
            Fault::Error { step: s, .. } | Fault::Crash(s) | Fault::Hang(s) if *s == step => {
                Some(self)
            }
            _ => None,
        }
    }
}

impl FromStr for Fault {
    type Err = String;
    fn from_str(spec: &str) -> Result<Fault, String> {
        let parts: Vec<&str> = spec.split(':').collect();
        match parts[..] {
            ["error", step, errno] => Ok(Fault::Error {
                step: step.parse()?,
                errno: errno
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("errno `{errno}` is not a positive number"))?,
            }),
            ["crash", step] => Ok(Fault::Crash(step.parse()?)),
            ["hang", step] => Ok(Fault::Hang(step.parse()?)),
            ["garbage"] => Ok(Fault::Garbage),
            ["leak"] => Ok(Fault::Leak),
            _ => Err(format!(
                "unknown fault `{spec}` (error:STEP:ERRNO, crash:STEP, hang:STEP, garbage, leak)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        assert_eq!(
            "error:overlay:95".parse(),
            Ok(Fault::Error {
                step: Step::Overlay,
                errno: 95
            })
        );
        assert_eq!("crash:idmap".parse(), Ok(Fault::Crash(Step::Idmap)));
        assert_eq!("hang:unmount".parse(), Ok(Fault::Hang(Step::Unmount)));
        assert_eq!("leak".parse(), Ok(Fault::Leak));
        assert_eq!("garbage".parse(), Ok(Fault::Garbage));
        for bad in [
            "error:overlay",
            "error:overlay:x",
            "error:overlay:0",
            "crash:nowhere",
            "x",
        ] {
            assert!(bad.parse::<Fault>().is_err(), "{bad}");
        }
        let f: Fault = "crash:idmap".parse().unwrap();
        assert!(f.at(Step::Idmap).is_some() && f.at(Step::Overlay).is_none());
        assert!(Fault::Leak.at(Step::Unmount).is_none());
    }

    #[test]
    fn flag_beats_env_and_bad_usage_is_refused() {
        let args = ["--fault".to_string(), "leak".to_string()];
        assert_eq!(Fault::from_args_and_env(&args), Ok(Fault::Leak));
        assert!(Fault::from_args_and_env(&["--other".to_string()]).is_err());
    }
}
