//! The portal's pages (helper B).
