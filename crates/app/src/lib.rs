//! PrivateHub web app. See ARCHITECTURE.md.
