//! Outages, restarts, kills and shutdowns.
