//! PrivateHub media server. See ARCHITECTURE.md.
