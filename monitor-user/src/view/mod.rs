//! What people look at: the terminal dashboard (`tui`, live from the daemon's socket and history
//! from the store's read API) and the responders' history queries and learned scopes (`query`).
//! See docs/ARCHITECTURE.md.

pub mod query;
pub mod tui;
