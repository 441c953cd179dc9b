//! `external` operations (being written).
