//! PID 1 in an mmx guest. (Scaffold: the QEMU backend work fills this in.)

/// Set the guest up, run `/plan.json`, power off. Never returns.
pub fn main() -> ! {
    eprintln!("mmx-agent: init mode is not built yet");
    let _ = rustix::system::reboot(rustix::system::RebootCommand::PowerOff);
    std::process::exit(1)
}
