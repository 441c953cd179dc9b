//! `integrations` operations (being written).
