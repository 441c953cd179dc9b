//! `misc` operations (being written).
