//! What a bisect step's kernel answered, and whether that makes the step good, bad or
//! untestable.
//!
//! An answer is a selected cell's outcome and errno, or a probe's verdict and errno in each
//! boot (`--probe`). A step is good when its answers equal those at `--good` (or, for cells,
//! meet `--expect`), bad otherwise; a step where a cell ended `infra-error` (our side broke:
//! QEMU, the disk image) says nothing about the kernel and is skipped, as is one that does not
//! build.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use protocol::kmsg::SplatKind;
use protocol::{Feature, Outcome};
use serde::{Deserialize, Serialize};

use crate::cell::{BootKey, CellKey};
use crate::results::{BootRecord, CellRecord};

/// What an answer is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Subject {
    Cell {
        cell: CellKey,
    },
    /// A kernel feature probe, as the agent ran it at the start of one boot.
    Probe {
        boot: BootKey,
        feature: Feature,
    },
    /// The kernel splats a cell's items printed (`--fail-on-kernel-warning`).
    KernelWarnings {
        cell: CellKey,
    },
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Cell { cell } => write!(f, "{cell}"),
            Subject::Probe { boot, feature } => write!(f, "{boot} probe {feature}"),
            Subject::KernelWarnings { cell } => write!(f, "{cell} kernel warnings"),
        }
    }
}

/// One answer. Errnos are numbers; names come from `protocol::errno` when shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Answer {
    Cell {
        outcome: Outcome,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        errno: Option<i32>,
    },
    Probe {
        supported: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        errno: Option<i32>,
    },
    /// The boot ended before the agent reported its probes (a panic at boot, say).
    NotProbed,
    /// The kinds of splat a cell's items printed, each once, in order: the lines themselves
    /// carry addresses and pids that differ between builds.
    KernelWarnings { kinds: Vec<SplatKind> },
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let errno = |e: &Option<i32>| {
            e.map(|n| format!(" ({})", protocol::errno::describe(n)))
                .unwrap_or_default()
        };
        match self {
            Answer::Cell { outcome, errno: e } => write!(f, "{outcome}{}", errno(e)),
            Answer::Probe {
                supported: true,
                errno: e,
            } => write!(f, "yes{}", errno(e)),
            Answer::Probe {
                supported: false,
                errno: e,
            } => write!(f, "no{}", errno(e)),
            Answer::NotProbed => f.write_str("not probed"),
            Answer::KernelWarnings { kinds } if kinds.is_empty() => f.write_str("none"),
            Answer::KernelWarnings { kinds } => {
                let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
                f.write_str(&names.join(", "))
            }
        }
    }
}

/// Every answer of one step, in subject order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answers(pub BTreeMap<Subject, Answer>);

/// One answer as the bisect log stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub subject: Subject,
    pub answer: Answer,
}

impl Answers {
    /// The answers in a step's boots: every cell they ran, each of `probes` per boot, and
    /// with `warnings` the kinds of kernel splat each cell printed.
    pub fn collect(
        boots: &[(BootRecord, Vec<CellRecord>)],
        probes: &[Feature],
        warnings: bool,
    ) -> Answers {
        let mut map = BTreeMap::new();
        for (boot, cells) in boots {
            for c in cells {
                if warnings {
                    let kinds: BTreeSet<SplatKind> =
                        c.kernel_warnings.iter().map(|w| w.kind).collect();
                    map.insert(
                        Subject::KernelWarnings {
                            cell: c.key.clone(),
                        },
                        Answer::KernelWarnings {
                            kinds: kinds.into_iter().collect(),
                        },
                    );
                }
                map.insert(
                    Subject::Cell {
                        cell: c.key.clone(),
                    },
                    Answer::Cell {
                        outcome: c.outcome,
                        errno: c.evidence.as_ref().and_then(|e| e.errno),
                    },
                );
            }
            for &feature in probes {
                let answer = match boot.capabilities.as_ref() {
                    None => Answer::NotProbed,
                    Some(caps) => match caps.get(feature) {
                        None => Answer::NotProbed,
                        Some(p) => Answer::Probe {
                            supported: p.supported,
                            errno: p.evidence.as_ref().and_then(|e| e.errno),
                        },
                    },
                };
                map.insert(
                    Subject::Probe {
                        boot: boot.key.clone(),
                        feature,
                    },
                    answer,
                );
            }
        }
        Answers(map)
    }

    pub fn entries(&self) -> Vec<Entry> {
        self.0
            .iter()
            .map(|(s, a)| Entry {
                subject: s.clone(),
                answer: a.clone(),
            })
            .collect()
    }

    pub fn from_entries(entries: &[Entry]) -> Answers {
        Answers(
            entries
                .iter()
                .map(|e| (e.subject.clone(), e.answer.clone()))
                .collect(),
        )
    }

    /// Whether our side broke in this step (a cell ended `infra-error`).
    pub fn untestable(&self) -> bool {
        self.0.values().any(|a| {
            matches!(
                a,
                Answer::Cell {
                    outcome: Outcome::InfraError,
                    ..
                }
            )
        })
    }

    /// The subjects whose answer is not as wanted: unlike `reference`'s, or, for cells when
    /// `expect` is given, not meeting it.
    pub fn departures(&self, reference: &Answers, expect: Option<&Expect>) -> Vec<Subject> {
        let mut out: Vec<Subject> = self
            .0
            .iter()
            .filter(|(s, a)| match (s, expect) {
                (Subject::Cell { .. }, Some(e)) => !e.is_met(a),
                _ => reference.0.get(s) != Some(a),
            })
            .map(|(s, _)| s.clone())
            .collect();
        // A subject the reference had and this step lacks is a change too.
        for s in reference.0.keys() {
            let judged_by_expect = matches!(s, Subject::Cell { .. }) && expect.is_some();
            if !self.0.contains_key(s) && !judged_by_expect {
                out.push(s.clone());
            }
        }
        out.sort();
        out
    }

    /// The step's verdict against `reference` (the answers at `--good`) or `expect`.
    pub fn judge(&self, reference: &Answers, expect: Option<&Expect>) -> Verdict {
        if self.untestable() {
            Verdict::Skip {
                why: SkipReason::Infra,
            }
        } else if self.departures(reference, expect).is_empty() {
            Verdict::Good
        } else {
            Verdict::Bad
        }
    }
}

/// `--expect outcome[:ERRNO]`: what every selected cell must answer for a step to be good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expect {
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<i32>,
}

impl Expect {
    /// `unsupported`, `unsupported:EINVAL`, `unsupported:22`.
    pub fn parse(s: &str) -> Result<Expect, String> {
        let (o, e) = match s.split_once(':') {
            Some((o, e)) => (o, Some(e)),
            None => (s, None),
        };
        let outcome = Outcome::ALL
            .into_iter()
            .find(|x| x.as_str() == o)
            .ok_or_else(|| {
                let names: Vec<&str> = Outcome::ALL.iter().map(|x| x.as_str()).collect();
                format!(
                    "`{o}` is not an outcome (expected one of {})",
                    names.join(", ")
                )
            })?;
        let errno = match e {
            None => None,
            Some(e) => Some(
                protocol::errno::number(e)
                    .or_else(|| e.parse::<i32>().ok().filter(|n| *n > 0))
                    .ok_or_else(|| format!("`{e}` is not an errno name (EINVAL) or number"))?,
            ),
        };
        Ok(Expect { outcome, errno })
    }

    pub fn is_met(&self, answer: &Answer) -> bool {
        match answer {
            Answer::Cell { outcome, errno } => {
                *outcome == self.outcome && self.errno.is_none_or(|want| *errno == Some(want))
            }
            Answer::Probe { .. } | Answer::NotProbed | Answer::KernelWarnings { .. } => false,
        }
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.outcome)?;
        if let Some(n) = self.errno {
            write!(f, ":{}", protocol::errno::name(n).unwrap_or("?"))?;
        }
        Ok(())
    }
}

/// git's three marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum Verdict {
    /// Answers as at `--good` (or as `--expect` says).
    Good,
    /// Answers changed.
    Bad,
    /// Nothing to say about this commit (`git bisect skip`).
    Skip { why: SkipReason },
}

impl Verdict {
    /// The `git bisect` subcommand that records it.
    pub fn git_word(self) -> &'static str {
        match self {
            Verdict::Good => "good",
            Verdict::Bad => "bad",
            Verdict::Skip { .. } => "skip",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Good => f.write_str("good"),
            Verdict::Bad => f.write_str("bad (answers changed)"),
            Verdict::Skip { why } => write!(f, "skip ({})", why.as_str()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SkipReason {
    /// The kernel does not build at this commit (or the recipe's patches do not apply).
    BuildFailed,
    /// A boot ended `infra-error`: our side broke, not the kernel.
    Infra,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::BuildFailed => "the kernel does not build",
            SkipReason::Infra => "infra error, not a kernel answer",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::Matrix;
    use protocol::Strategy;

    /// Keys as a matrix makes them: one kernel, one topology, tmpfs, two strategies.
    fn keys() -> Vec<CellKey> {
        let m = Matrix::parse(
            std::path::Path::new("m.toml"),
            "kernels = [\"k\"]\nfilesystems = [\"tmpfs\"]\n[[scenarios]]\nkind = \"mounts\"\n\
             strategies = [\"per-layer\", \"fsconfig-fd\"]\nlayers = [1]\ncontainers = [1]\n",
        )
        .unwrap();
        m.qemu_cells().into_iter().map(|c| c.key).collect()
    }

    fn boot() -> BootKey {
        keys()[0].boot()
    }

    fn cell(strategy: Strategy) -> Subject {
        let want = if strategy == Strategy::PerLayer {
            "per-layer"
        } else {
            "fsconfig-fd"
        };
        let cell = keys()
            .into_iter()
            .find(|k| k.to_string().contains(want))
            .unwrap();
        Subject::Cell { cell }
    }

    fn probe() -> Subject {
        Subject::Probe {
            boot: boot(),
            feature: Feature::LowerdirPlusString,
        }
    }

    fn answers(fd: Answer, probe_answer: Answer) -> Answers {
        Answers(BTreeMap::from([
            (
                cell(Strategy::PerLayer),
                Answer::Cell {
                    outcome: Outcome::Pass,
                    errno: None,
                },
            ),
            (cell(Strategy::FsconfigFd), fd),
            (probe(), probe_answer),
        ]))
    }

    const EBADF: i32 = 9;
    const EINVAL: i32 = 22;

    fn unsupported(errno: i32) -> Answer {
        Answer::Cell {
            outcome: Outcome::Unsupported,
            errno: Some(errno),
        }
    }

    #[test]
    fn a_step_is_good_when_every_answer_is_as_at_good() {
        let yes = Answer::Probe {
            supported: true,
            errno: None,
        };
        let no = Answer::Probe {
            supported: false,
            errno: Some(EINVAL),
        };
        let good = answers(unsupported(EBADF), yes.clone());
        assert_eq!(good.judge(&good, None), Verdict::Good);
        // Another errno is another answer.
        let errno = answers(unsupported(EINVAL), yes.clone());
        assert_eq!(errno.judge(&good, None), Verdict::Bad);
        assert_eq!(errno.departures(&good, None), [cell(Strategy::FsconfigFd)]);
        // The probe flipping alone makes the step bad.
        let flipped = answers(unsupported(EBADF), no);
        assert_eq!(flipped.judge(&good, None), Verdict::Bad);
        assert_eq!(flipped.departures(&good, None), [probe()]);
        // A boot that broke on our side is no answer.
        let infra = answers(
            Answer::Cell {
                outcome: Outcome::InfraError,
                errno: None,
            },
            Answer::NotProbed,
        );
        assert_eq!(
            infra.judge(&good, None),
            Verdict::Skip {
                why: SkipReason::Infra
            }
        );
        // A panic is an answer (and the probes are then missing).
        let panic = answers(
            Answer::Cell {
                outcome: Outcome::Panic,
                errno: None,
            },
            Answer::NotProbed,
        );
        assert_eq!(panic.judge(&good, None), Verdict::Bad);
    }

    #[test]
    fn expect_judges_cells_and_probes_stay_compared_with_good() {
        let yes = Answer::Probe {
            supported: true,
            errno: None,
        };
        let e = Expect::parse("unsupported:EBADF").unwrap();
        assert_eq!(
            e,
            Expect {
                outcome: Outcome::Unsupported,
                errno: Some(EBADF)
            }
        );
        assert_eq!(e.to_string(), "unsupported:EBADF");
        // per-layer passes, so `unsupported:EBADF` cannot hold for every cell.
        let good = answers(unsupported(EBADF), yes.clone());
        assert_eq!(good.judge(&good, Some(&e)), Verdict::Bad);
        let pass = Expect::parse("pass").unwrap();
        let all_pass = answers(
            Answer::Cell {
                outcome: Outcome::Pass,
                errno: None,
            },
            yes.clone(),
        );
        assert_eq!(all_pass.judge(&good, Some(&pass)), Verdict::Good);
        assert_eq!(
            good.departures(&good, Some(&pass)),
            [cell(Strategy::FsconfigFd)]
        );
        assert!(Expect::parse("broken")
            .unwrap_err()
            .contains("not an outcome"));
        assert!(Expect::parse("fail:ENOPE").unwrap_err().contains("errno"));
        assert_eq!(Expect::parse("fail:5").unwrap().errno, Some(5));
    }

    #[test]
    fn answers_read_as_people_say_them_and_round_trip() {
        assert_eq!(unsupported(EINVAL).to_string(), "unsupported (EINVAL)");
        let no = Answer::Probe {
            supported: false,
            errno: Some(EINVAL),
        };
        assert_eq!(no.to_string(), "no (EINVAL)");
        assert_eq!(
            probe().to_string(),
            "k/1s2c1t/tmpfs probe lowerdir-plus-string"
        );
        let a = answers(unsupported(EBADF), no);
        let json = serde_json::to_string(&a.entries()).unwrap();
        let back: Vec<Entry> = serde_json::from_str(&json).unwrap();
        assert_eq!(Answers::from_entries(&back), a);
    }

    /// With `--fail-on-kernel-warning`, a cell that starts printing a splat makes the step bad
    /// though its outcome holds, under `--expect` too; the lines do not count, the kind does.
    #[test]
    fn a_new_kernel_warning_makes_the_step_bad() {
        let Subject::Cell { cell: key } = cell(Strategy::PerLayer) else {
            unreachable!()
        };
        let warned = |kinds: Vec<SplatKind>| {
            let mut a = answers(unsupported(EBADF), Answer::NotProbed);
            a.0.insert(
                Subject::KernelWarnings { cell: key.clone() },
                Answer::KernelWarnings { kinds },
            );
            a
        };
        let good = warned(vec![]);
        assert_eq!(good.judge(&good, None), Verdict::Good);
        let bad = warned(vec![SplatKind::Warning]);
        assert_eq!(bad.judge(&good, None), Verdict::Bad);
        assert_eq!(
            bad.departures(&good, None),
            [Subject::KernelWarnings { cell: key.clone() }]
        );
        let expect = Expect::parse("pass").unwrap();
        assert_eq!(
            bad.departures(&good, Some(&expect)),
            [
                cell(Strategy::FsconfigFd),
                Subject::KernelWarnings { cell: key.clone() }
            ]
        );
        assert_eq!(
            Answer::KernelWarnings {
                kinds: vec![SplatKind::Warning, SplatKind::Lockdep]
            }
            .to_string(),
            "warning, lockdep"
        );
        assert_eq!(Answer::KernelWarnings { kinds: vec![] }.to_string(), "none");
    }
}
