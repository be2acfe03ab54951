//! The CPU topology as this machine shows it. (Scaffold: the lockbench work fills this in.)

use protocol::ObservedTopology;

pub fn observe() -> ObservedTopology {
    ObservedTopology::default()
}
