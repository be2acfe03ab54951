//! What a visit does with the host's SMT control, decided here from the value mmx read in the
//! prepare step, before the agent was on the host — never from anything the run prints. The
//! run script writes the setting and restores the value this decision names; the harness's own
//! cleanup restores the same value. Only `on` and `off` are ever written.

use crate::cell::SmtSetting;

/// A value mmx writes to the SMT control file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtWrite {
    On,
    Off,
}

impl SmtWrite {
    /// The word the kernel takes.
    pub fn word(self) -> &'static str {
        match self {
            SmtWrite::On => "on",
            SmtWrite::Off => "off",
        }
    }
}

/// What a visit does with SMT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmtPlan {
    /// Nothing to write: `as-is`, or the host is already as asked (`off` on a host whose SMT is
    /// forced off or absent counts).
    Leave,
    /// Write `set` before the agent starts; write `restore` (the value mmx read) back after.
    Switch { set: SmtWrite, restore: SmtWrite },
    /// The host cannot be switched as asked: every cell is `unsupported` and the agent does not
    /// run. `current` is what the control file read (`missing` when there is none).
    Unsupported { current: String },
}

/// The plan for `want` on a host whose SMT control reads `current` (`missing`: no such file).
pub fn decide(want: SmtSetting, current: &str) -> SmtPlan {
    match (want, current) {
        (SmtSetting::AsIs, _) => SmtPlan::Leave,
        (SmtSetting::On, "on") => SmtPlan::Leave,
        (SmtSetting::Off, "off" | "forceoff" | "notsupported") => SmtPlan::Leave,
        (SmtSetting::On, "off") => SmtPlan::Switch {
            set: SmtWrite::On,
            restore: SmtWrite::Off,
        },
        (SmtSetting::Off, "on") => SmtPlan::Switch {
            set: SmtWrite::Off,
            restore: SmtWrite::On,
        },
        (SmtSetting::On | SmtSetting::Off, other) => SmtPlan::Unsupported {
            current: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_on_and_off_are_ever_written_and_the_value_read_is_restored() {
        use SmtSetting::{AsIs, Off, On};
        assert_eq!(decide(AsIs, "forceoff"), SmtPlan::Leave);
        assert_eq!(decide(On, "on"), SmtPlan::Leave);
        for already in ["off", "forceoff", "notsupported"] {
            assert_eq!(decide(Off, already), SmtPlan::Leave, "{already}");
        }
        assert_eq!(
            decide(Off, "on"),
            SmtPlan::Switch {
                set: SmtWrite::Off,
                restore: SmtWrite::On
            }
        );
        assert_eq!(
            decide(On, "off"),
            SmtPlan::Switch {
                set: SmtWrite::On,
                restore: SmtWrite::Off
            }
        );
        for cannot in ["forceoff", "notsupported", "notimplemented", "missing", ""] {
            assert_eq!(
                decide(On, cannot),
                SmtPlan::Unsupported {
                    current: cannot.into()
                }
            );
        }
        assert!(matches!(decide(Off, "weird"), SmtPlan::Unsupported { .. }));
    }
}
