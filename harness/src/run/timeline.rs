//! A boot's timeline, from what the harness observed: when the agent said hello, when the
//! probes answered, when each item's result arrived, all on the boot's own monotonic clock
//! (`BootOutput::started`), plus the wall-clock time it started. The agent runs items one after
//! another, so an item's start is the arrival of the event before it.

use std::time::{Instant, SystemTime};

use crate::backend::{ms_between, BootOutput};
use crate::cell::CellKey;
use crate::results::{BootTimeline, ItemSpan, TimeKind};

/// The timeline of `out`, whose item `i` is the cell and category `item(i)` says (`None`: an
/// item of no cell, which ends the list). An item
/// without a result that was running when the boot ended (the first one after the last
/// answered, in a boot that did not complete) gets the rest of the boot, marked unanswered.
pub fn observe(
    out: &BootOutput,
    completed: bool,
    item: impl Fn(usize) -> Option<(CellKey, TimeKind)>,
) -> BootTimeline {
    let now = Instant::now();
    let start = out.started;
    let at = |t: Instant| ms_between(start, t);
    let end_ms = at(now);
    let stream = &out.stream;
    let mut items = Vec::new();
    // The agent answers items in plan order; an item starts when the event before it arrived.
    let mut last = stream.capabilities_at.or(stream.hello_at);
    for (i, got) in stream.result_times().iter().enumerate() {
        let Ok(index) = u32::try_from(i) else {
            break;
        };
        let Some((cell, kind)) = item(i) else {
            break;
        };
        // In one filesystem's share of a shared guest, the item before it may have been
        // another filesystem's: the stream knows when that one ended.
        if let Some(prior) = stream.prior_at.get(i) {
            last = *prior;
        }
        match (last, got) {
            (Some(from), Some(to)) => {
                items.push(ItemSpan {
                    item: index,
                    cell,
                    kind,
                    start_ms: at(from),
                    end_ms: at(*to),
                    answered: true,
                });
                last = Some(*to);
            }
            (Some(from), None) if !completed => {
                items.push(ItemSpan {
                    item: index,
                    cell,
                    kind,
                    start_ms: at(from),
                    end_ms,
                    answered: false,
                });
                break;
            }
            _ => break,
        }
    }
    // The wall clock at the boot's start: now, less the monotonic time since.
    let started_at = SystemTime::now()
        .checked_sub(now.saturating_duration_since(start))
        .unwrap_or_else(SystemTime::now);
    BootTimeline {
        started_at: humantime::format_rfc3339_millis(started_at).to_string(),
        agent_ready_ms: stream.hello_at.map(at),
        probes_done_ms: stream.capabilities_at.map(at),
        items,
        end_ms,
    }
}
