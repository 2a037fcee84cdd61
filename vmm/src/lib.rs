//! credguard-vmm (being written).
