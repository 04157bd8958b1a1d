//! The program around the layers: the command line (`cli`), the daemon that wires the sensors,
//! the core and the outputs together and runs the loop (`daemon`), its configuration file
//! (`config`), logging, systemd's notify protocol, giving up privileges, and the assets a
//! package ships (man pages, completions), and the allocator it runs with (`alloc`). See
//! docs/ARCHITECTURE.md.

pub mod alloc;
pub mod assets;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod logging;
pub mod notify;
pub mod privileges;
