//! The admin CLI, run as a real process.
