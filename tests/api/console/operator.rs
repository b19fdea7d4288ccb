//! The operator console's pages (helper A).
