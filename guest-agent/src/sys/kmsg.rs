//! The kernel log, written from user space: one `write(2)` is one record (`devkmsg_write`), so
//! a record is never split or interleaved with another.

use std::io::Write;

/// The sysctl that rate-limits writes to `/dev/kmsg` (`printk.devkmsg`): by default ten
/// records in five seconds, then the rest are dropped. A plan writes two per item.
const DEVKMSG_SYSCTL: &str = "/proc/sys/kernel/printk_devkmsg";

/// Write one record (`<level>text\n`). Best effort: a missing /dev/kmsg loses the record, not
/// the plan.
pub fn write_record(record: &str) {
    if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open("/dev/kmsg") {
        let _ = f.write_all(record.as_bytes());
    }
}

/// Let every record through (`on`), so no item's marks are dropped. Refused when the command
/// line fixed the setting; then the error says so.
pub fn allow_all_records() -> std::io::Result<()> {
    std::fs::write(DEVKMSG_SYSCTL, b"on\n")
}
